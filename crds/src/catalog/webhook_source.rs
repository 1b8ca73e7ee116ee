use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{CatalogStatus, SecretKeyRef};

/// Whose signature scheme a webhook source verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    Stripe,
    Github,
    Slack,
    Twilio,
    Sendgrid,
    StandardWebhooks,
    Hmac,
}

/// How one kind of delivery becomes events. JSONPaths (RFC 9535) read the
/// delivery's JSON body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMapping {
    /// JSONPath filter selecting the deliveries that bill, e.g. `$[?@.type == 'invoice.paid']`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Where each event comes from when one delivery yields several (a JSONPath to an array).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// JSONPath of the event id (default: the provider's delivery id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// JSONPath of the customer.
    #[schemars(length(min = 1))]
    pub customer: String,
    /// The event type: a literal, or a JSONPath when it starts with `$`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub event_type: String,
    /// JSONPath of the event time (default: the delivery's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// JSONPath of the value, stored as the `value` property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Further properties: name → JSONPath.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// A third party whose signed webhooks become billable events.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aforo.io",
    version = "v1alpha1",
    kind = "WebhookSource",
    namespaced,
    status = "CatalogStatus",
    shortname = "whs",
    category = "aforo",
    cel,
    doc = "A WebhookSource verifies a provider's signed webhooks and maps them to events.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.provider == 'hmac' || (!has(self.signatureHeader) && !has(self.signatureEncoding))").message("signatureHeader and signatureEncoding are for the hmac provider only"))]
#[serde(rename_all = "camelCase")]
pub struct WebhookSourceSpec {
    pub provider: Provider,
    /// The signing secret (or, for SendGrid, the public key).
    pub secret_ref: SecretKeyRef,
    /// How old (or how far ahead) a timestamped delivery may be: a whole
    /// number and a unit, us, ms, s, m, h or d, e.g. "300s" or "5m".
    #[serde(default = "default_tolerance")]
    #[schemars(pattern(crate::duration::PATTERN))]
    pub tolerance: String,
    /// The URL the provider calls, when a proxy changes it (Twilio signs the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// hmac only: the header carrying the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_header: Option<String>,
    /// hmac only: hex or base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(hex|base64)$"))]
    pub signature_encoding: Option<String>,
    #[schemars(length(min = 1, max = 32))]
    pub mappings: Vec<WebhookMapping>,
}

fn default_tolerance() -> String {
    "5m".to_owned()
}
