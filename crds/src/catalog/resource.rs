//! Reading catalog resources from manifests: multi-document YAML (or JSON),
//! dispatched on `apiVersion` and `kind`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource as _;
use serde_json::Value;

use super::*;
use crate::validate::CatalogError;

/// One catalog resource of any kind.
// A catalog holds tens of resources, read once per apply: boxing the
// larger variants would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Resource {
    Meter(Meter),
    Product(Product),
    RatePlan(RatePlan),
    WebhookSource(WebhookSource),
    UsageAlert(UsageAlert),
    MeteringPipeline(MeteringPipeline),
}

impl Resource {
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Meter(_) => "Meter",
            Resource::Product(_) => "Product",
            Resource::RatePlan(_) => "RatePlan",
            Resource::WebhookSource(_) => "WebhookSource",
            Resource::UsageAlert(_) => "UsageAlert",
            Resource::MeteringPipeline(_) => "MeteringPipeline",
        }
    }

    /// The resource's metadata, whatever its kind.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Resource::Meter(r) => r.meta(),
            Resource::Product(r) => r.meta(),
            Resource::RatePlan(r) => r.meta(),
            Resource::WebhookSource(r) => r.meta(),
            Resource::UsageAlert(r) => r.meta(),
            Resource::MeteringPipeline(r) => r.meta(),
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// Reads one resource from its JSON form. `origin` (a file and document
    /// number) goes into errors, so a reader can find the broken document.
    pub fn from_value(value: Value, origin: &str) -> Result<Resource, CatalogError> {
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let fail = |field: &str, message: String| CatalogError {
            kind: if kind.is_empty() {
                "?".into()
            } else {
                kind.clone()
            },
            name: if name.is_empty() {
                origin.to_owned()
            } else {
                name.clone()
            },
            field: field.to_owned(),
            message,
        };
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let expected = format!("{GROUP}/{VERSION}");
        if api_version != expected {
            return Err(fail(
                "apiVersion",
                format!("{api_version:?} is not {expected:?} ({origin})"),
            ));
        }
        if name.is_empty() {
            return Err(fail("metadata.name", format!("is required ({origin})")));
        }
        fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
            serde_json::from_value(value).map_err(|e| e.to_string())
        }
        let parsed = match kind.as_str() {
            "Meter" => typed(value).map(Resource::Meter),
            "Product" => typed(value).map(Resource::Product),
            "RatePlan" => typed(value).map(Resource::RatePlan),
            "WebhookSource" => typed(value).map(Resource::WebhookSource),
            "UsageAlert" => typed(value).map(Resource::UsageAlert),
            "MeteringPipeline" => typed(value).map(Resource::MeteringPipeline),
            other => {
                return Err(fail(
                    "kind",
                    format!(
                        "{other:?} is not an aforo kind (Meter, Product, RatePlan, WebhookSource, UsageAlert, MeteringPipeline) ({origin})"
                    ),
                ));
            }
        };
        parsed.map_err(|e| fail("spec", format!("{e} ({origin})")))
    }

    /// The resource as JSON, for the catalog API.
    pub fn to_value(&self) -> Value {
        let value = match self {
            Resource::Meter(r) => serde_json::to_value(r),
            Resource::Product(r) => serde_json::to_value(r),
            Resource::RatePlan(r) => serde_json::to_value(r),
            Resource::WebhookSource(r) => serde_json::to_value(r),
            Resource::UsageAlert(r) => serde_json::to_value(r),
            Resource::MeteringPipeline(r) => serde_json::to_value(r),
        };
        value.unwrap_or(Value::Null)
    }
}

/// Splits a multi-document YAML stream into JSON values; empty documents
/// (a trailing `---`, comments only) are skipped.
pub fn yaml_documents(text: &str, file: &str) -> Result<Vec<(String, Value)>, CatalogError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (n, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let origin = format!("{file}, document {}", n + 1);
        let value = Value::deserialize(document).map_err(|e| CatalogError {
            kind: "?".into(),
            name: origin.clone(),
            field: String::new(),
            message: format!("not YAML: {e}"),
        })?;
        if !value.is_null() {
            out.push((origin, value));
        }
    }
    Ok(out)
}
