//! Signature verification, one scheme per provider.
//!
//! Every scheme reads the exact raw body bytes (never re-serialized JSON),
//! compares in constant time (`Mac::verify_slice`, `subtle`), accepts any of
//! several signatures where the provider sends several (secret rotation),
//! and, where the scheme signs a timestamp, rejects deliveries outside the
//! tolerance in both directions. Verification is a pure function of the
//! delivery, the secret and `now`: the receiver owns the I/O.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use aforo_crds::catalog::Provider;

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<Sha1>;

/// A delivery as the verifier sees it.
pub struct Delivery<'a> {
    /// `(lowercase name, value)`, in arrival order.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// The URL the provider called: the source's `publicUrl` (or the URL
    /// rebuilt from the request) with the request's query string.
    pub url: &'a str,
}

impl Delivery<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn require(&self, name: &'static str) -> Result<&str, VerifyError> {
        self.header(name).ok_or(VerifyError::MissingHeader(name))
    }

    fn is_form(&self) -> bool {
        self.header("content-type").is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim() == "application/x-www-form-urlencoded")
        })
    }
}

/// How a source verifies: its provider, its secret, its options.
pub struct Scheme<'a> {
    pub provider: Provider,
    pub secret: &'a [u8],
    pub tolerance: Duration,
    /// hmac only: the header carrying the signature (lowercase).
    pub signature_header: Option<&'a str>,
    /// hmac only: `base64` (default `hex`).
    pub base64: bool,
}

/// What a valid signature establishes beyond authenticity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// The provider's id of this delivery or event, when the scheme carries one.
    pub delivery_id: Option<String>,
    /// The signed timestamp, when the scheme signs one.
    pub timestamp: Option<DateTime<Utc>>,
}

/// Why a delivery is not authentic. The receiver stores this; the caller
/// only ever learns that verification failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the {header} header is malformed: {problem}")]
    Malformed {
        header: &'static str,
        problem: String,
    },
    #[error("no signature matches the body")]
    Mismatch,
    #[error("the body does not match the bodySHA256 query parameter")]
    BodyHashMismatch,
    #[error(
        "the signed timestamp {timestamp} is {skew}s from now, beyond the tolerance of {tolerance}s"
    )]
    Stale {
        timestamp: i64,
        skew: i64,
        tolerance: i64,
    },
    #[error("the secret is unusable: {0}")]
    BadSecret(String),
}

impl VerifyError {
    /// Whether the delivery failed on its timestamp alone.
    pub fn is_stale(&self) -> bool {
        matches!(self, VerifyError::Stale { .. })
    }
}

/// Verifies `delivery` under `scheme` at `now`.
pub fn verify(
    scheme: &Scheme<'_>,
    delivery: &Delivery<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    match scheme.provider {
        Provider::Stripe => stripe(scheme, delivery, now),
        Provider::Github => github(scheme, delivery),
        Provider::Slack => slack(scheme, delivery, now),
        Provider::Twilio => twilio(scheme, delivery),
        Provider::Sendgrid => sendgrid(scheme, delivery, now),
        Provider::StandardWebhooks => standard_webhooks(scheme, delivery, now),
        Provider::Hmac => generic_hmac(scheme, delivery),
    }
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of every length.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Whether any of `candidates` is the MAC; each comparison is constant-time.
fn any_matches<M: Mac + Clone>(mac: M, candidates: &[Vec<u8>]) -> bool {
    let mut found = false;
    for candidate in candidates {
        // No early exit: every candidate costs the same.
        found |= mac.clone().verify_slice(candidate).is_ok();
    }
    found
}

fn unix_timestamp(header: &'static str, text: &str) -> Result<i64, VerifyError> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| VerifyError::Malformed {
            header,
            problem: "the timestamp is not whole Unix seconds".into(),
        })
}

/// Checks a signed Unix timestamp against the tolerance, both ways.
fn fresh(
    timestamp: i64,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<DateTime<Utc>, VerifyError> {
    let skew = now.timestamp().saturating_sub(timestamp);
    if skew.unsigned_abs() > tolerance.num_seconds().unsigned_abs() {
        return Err(VerifyError::Stale {
            timestamp,
            skew,
            tolerance: tolerance.num_seconds(),
        });
    }
    DateTime::from_timestamp(timestamp, 0).ok_or(VerifyError::Stale {
        timestamp,
        skew,
        tolerance: tolerance.num_seconds(),
    })
}

fn hex_signature(header: &'static str, text: &str) -> Result<Vec<u8>, VerifyError> {
    hex::decode(text.trim()).map_err(|_| VerifyError::Malformed {
        header,
        problem: "the signature is not hex".into(),
    })
}

fn base64_signature(header: &'static str, text: &str) -> Result<Vec<u8>, VerifyError> {
    BASE64
        .decode(text.trim())
        .map_err(|_| VerifyError::Malformed {
            header,
            problem: "the signature is not base64".into(),
        })
}

/// `Stripe-Signature: t=…,v1=…[,v1=…][,v0=…]` over `{t}.{body}`. Only `v1`
/// counts: other schemes are ignored, so a downgrade cannot be forced.
fn stripe(
    scheme: &Scheme<'_>,
    delivery: &Delivery<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    const HEADER: &str = "stripe-signature";
    let value = delivery.require(HEADER)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(unix_timestamp(HEADER, t)?),
            Some(("v1", s)) => signatures.push(hex_signature(HEADER, s)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| VerifyError::Malformed {
        header: HEADER,
        problem: "no t= timestamp".into(),
    })?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed {
            header: HEADER,
            problem: "no v1= signature".into(),
        });
    }
    let t = timestamp.to_string();
    let mac = hmac256(scheme.secret, &[t.as_bytes(), b".", delivery.body]);
    if !any_matches(mac, &signatures) {
        return Err(VerifyError::Mismatch);
    }
    let at = fresh(timestamp, now, scheme.tolerance)?;
    Ok(Verified {
        // Stripe names the event in the body (`$.id`), not in a header.
        delivery_id: None,
        timestamp: Some(at),
    })
}

/// `X-Hub-Signature-256: sha256=<hex>` over the body; the delivery is
/// named by `X-GitHub-Delivery`. GitHub signs no timestamp.
fn github(scheme: &Scheme<'_>, delivery: &Delivery<'_>) -> Result<Verified, VerifyError> {
    const HEADER: &str = "x-hub-signature-256";
    let value = delivery.require(HEADER)?;
    let hex = value
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(|| VerifyError::Malformed {
            header: HEADER,
            problem: "the value does not start with sha256=".into(),
        })?;
    let signature = hex_signature(HEADER, hex)?;
    if !any_matches(hmac256(scheme.secret, &[delivery.body]), &[signature]) {
        return Err(VerifyError::Mismatch);
    }
    Ok(Verified {
        delivery_id: delivery.header("x-github-delivery").map(str::to_owned),
        timestamp: None,
    })
}

/// `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.
fn slack(
    scheme: &Scheme<'_>,
    delivery: &Delivery<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    const HEADER: &str = "x-slack-signature";
    const TIMESTAMP: &str = "x-slack-request-timestamp";
    let value = delivery.require(HEADER)?;
    let ts_text = delivery.require(TIMESTAMP)?.trim();
    let timestamp = unix_timestamp(TIMESTAMP, ts_text)?;
    let hex = value
        .trim()
        .strip_prefix("v0=")
        .ok_or_else(|| VerifyError::Malformed {
            header: HEADER,
            problem: "the value does not start with v0=".into(),
        })?;
    let signature = hex_signature(HEADER, hex)?;
    let mac = hmac256(
        scheme.secret,
        &[b"v0:", ts_text.as_bytes(), b":", delivery.body],
    );
    if !any_matches(mac, &[signature]) {
        return Err(VerifyError::Mismatch);
    }
    let at = fresh(timestamp, now, scheme.tolerance)?;
    Ok(Verified {
        delivery_id: None,
        timestamp: Some(at),
    })
}

/// The query parameters of a URL, decoded.
fn query_params(url: &str) -> Vec<(String, String)> {
    url.split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or_default())
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

/// The URL with its default port added when absent, or removed when
/// present: Twilio's own validators try both, because which one Twilio
/// signed depends on how the URL was configured.
fn port_variant(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let host_port_out = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host_port.starts_with('[') => {
            if port == default {
                host.to_owned()
            } else {
                return None;
            }
        }
        _ => format!("{host_port}:{default}"),
    };
    Some(format!("{scheme}://{userinfo}{host_port_out}{tail}"))
}

/// `X-Twilio-Signature`: base64 HMAC-SHA1 under the Auth Token of the full
/// URL followed, for form posts, by every parameter as `name` + `value`,
/// sorted by name (then value). JSON bodies are bound instead by the
/// `bodySHA256` query parameter (hex SHA-256 of the body), and the URL alone
/// is signed. The delivery is named by `I-Twilio-Idempotency-Token`.
fn twilio(scheme: &Scheme<'_>, delivery: &Delivery<'_>) -> Result<Verified, VerifyError> {
    const HEADER: &str = "x-twilio-signature";
    let signature = base64_signature(HEADER, delivery.require(HEADER)?)?;
    let mut signed_params = String::new();
    if let Some((_, body_hash)) = query_params(delivery.url)
        .into_iter()
        .find(|(k, _)| k == "bodySHA256")
    {
        let actual = hex::encode(Sha256::digest(delivery.body));
        if !bool::from(
            actual
                .as_bytes()
                .ct_eq(body_hash.to_ascii_lowercase().as_bytes()),
        ) {
            return Err(VerifyError::BodyHashMismatch);
        }
    } else if delivery.is_form() {
        let mut params: Vec<(String, String)> = serde_urlencoded::from_bytes(delivery.body)
            .map_err(|_| VerifyError::Malformed {
                header: "content-type",
                problem: "the form body cannot be decoded".into(),
            })?;
        params.sort();
        params.dedup();
        for (name, value) in params {
            signed_params.push_str(&name);
            signed_params.push_str(&value);
        }
    }
    let mut candidates = vec![delivery.url.to_owned()];
    candidates.extend(port_variant(delivery.url));
    let mut found = false;
    for url in candidates {
        let mut mac = match HmacSha1::new_from_slice(scheme.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        mac.update(url.as_bytes());
        mac.update(signed_params.as_bytes());
        found |= mac.verify_slice(&signature).is_ok();
    }
    if !found {
        return Err(VerifyError::Mismatch);
    }
    Ok(Verified {
        delivery_id: delivery
            .header("i-twilio-idempotency-token")
            .map(str::to_owned),
        timestamp: None,
    })
}

/// The SendGrid verification key: base64 DER SubjectPublicKeyInfo, as the
/// Mail Settings page shows it, or the same in a PEM block.
fn sendgrid_key(secret: &[u8]) -> Result<p256::ecdsa::VerifyingKey, VerifyError> {
    use p256::pkcs8::DecodePublicKey;
    let text = std::str::from_utf8(secret)
        .map_err(|_| VerifyError::BadSecret("the SendGrid public key is not text".into()))?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = BASE64
        .decode(body.trim())
        .map_err(|_| VerifyError::BadSecret("the SendGrid public key is not base64".into()))?;
    p256::ecdsa::VerifyingKey::from_public_key_der(&der).map_err(|_| {
        VerifyError::BadSecret("the SendGrid public key is not a P-256 SubjectPublicKeyInfo".into())
    })
}

/// SendGrid's Signed Event Webhook: ECDSA P-256 / SHA-256 over
/// `{timestamp}{body}`, base64 DER signature. The public key is the secret.
fn sendgrid(
    scheme: &Scheme<'_>,
    delivery: &Delivery<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    use p256::ecdsa::signature::Verifier;
    const HEADER: &str = "x-twilio-email-event-webhook-signature";
    const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";
    let key = sendgrid_key(scheme.secret)?;
    let der = base64_signature(HEADER, delivery.require(HEADER)?)?;
    let ts_text = delivery.require(TIMESTAMP)?;
    let timestamp = unix_timestamp(TIMESTAMP, ts_text)?;
    let signature = p256::ecdsa::Signature::from_der(&der).map_err(|_| VerifyError::Malformed {
        header: HEADER,
        problem: "the signature is not a DER ECDSA signature".into(),
    })?;
    let mut message = Vec::with_capacity(ts_text.len() + delivery.body.len());
    message.extend_from_slice(ts_text.as_bytes());
    message.extend_from_slice(delivery.body);
    key.verify(&message, &signature)
        .map_err(|_| VerifyError::Mismatch)?;
    let at = fresh(timestamp, now, scheme.tolerance)?;
    Ok(Verified {
        delivery_id: None,
        timestamp: Some(at),
    })
}

/// Standard Webhooks (and Svix, which names its headers `svix-*`):
/// `webhook-signature: v1,<base64> [v1,<base64> …]` over
/// `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the base64-decoded
/// `whsec_` secret. The delivery is named by `webhook-id`.
fn standard_webhooks(
    scheme: &Scheme<'_>,
    delivery: &Delivery<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    let svix = delivery.header("webhook-signature").is_none();
    let (id_header, ts_header, sig_header) = if svix {
        ("svix-id", "svix-timestamp", "svix-signature")
    } else {
        ("webhook-id", "webhook-timestamp", "webhook-signature")
    };
    let id = delivery.require(id_header)?;
    let ts_text = delivery.require(ts_header)?.trim();
    let timestamp = unix_timestamp(ts_header, ts_text)?;
    let value = delivery.require(sig_header)?;
    let secret = std::str::from_utf8(scheme.secret)
        .map_err(|_| VerifyError::BadSecret("the whsec_ secret is not text".into()))?
        .trim();
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| VerifyError::BadSecret("the whsec_ secret is not base64".into()))?;
    let mut signatures = Vec::new();
    for entry in value.split_whitespace() {
        if let Some(("v1", b64)) = entry.split_once(',') {
            signatures.push(base64_signature(sig_header, b64)?);
        }
    }
    if signatures.is_empty() {
        return Err(VerifyError::Malformed {
            header: sig_header,
            problem: "no v1, signature".into(),
        });
    }
    let mac = hmac256(
        &key,
        &[id.as_bytes(), b".", ts_text.as_bytes(), b".", delivery.body],
    );
    if !any_matches(mac, &signatures) {
        return Err(VerifyError::Mismatch);
    }
    let at = fresh(timestamp, now, scheme.tolerance)?;
    Ok(Verified {
        delivery_id: Some(id.to_owned()),
        timestamp: Some(at),
    })
}

/// Generic HMAC-SHA256 of the body in a configured header, hex or base64;
/// a `sha256=` prefix is allowed. No timestamp, no delivery id.
fn generic_hmac(scheme: &Scheme<'_>, delivery: &Delivery<'_>) -> Result<Verified, VerifyError> {
    let header = scheme
        .signature_header
        .ok_or_else(|| VerifyError::BadSecret("the source names no signatureHeader".into()))?;
    let value = delivery
        .header(header)
        .ok_or(VerifyError::MissingHeader("signature"))?;
    let value = value.trim();
    let value = value.strip_prefix("sha256=").unwrap_or(value);
    let signature = if scheme.base64 {
        base64_signature("signature", value)?
    } else {
        hex_signature("signature", value)?
    };
    if !any_matches(hmac256(scheme.secret, &[delivery.body]), &[signature]) {
        return Err(VerifyError::Mismatch);
    }
    Ok(Verified::default())
}

#[cfg(test)]
mod tests {
    //! The vectors are those of protocols reference §2: published by the
    //! provider, the spec or its SDK (Stripe's computed with its documented
    //! algorithm).
    use super::*;

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap()
    }

    fn scheme(provider: Provider, secret: &[u8]) -> Scheme<'_> {
        Scheme {
            provider,
            secret,
            tolerance: Duration::minutes(5),
            signature_header: None,
            base64: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn check(
        scheme: &Scheme<'_>,
        pairs: &[(&str, &str)],
        body: &[u8],
        url: &str,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let headers = headers(pairs);
        verify(
            scheme,
            &Delivery {
                headers: &headers,
                body,
                url,
            },
            at(now),
        )
    }

    const STRIPE_BODY: &[u8] = br#"{"id":"evt_test","object":"event"}"#;
    const STRIPE_SIG: &str =
        "t=1700000000,v1=8042376f6ca064adbe037642a718227dfd59047137eb49497a54c49eb0cfb724";

    #[test]
    fn stripe_accepts_its_vector_and_any_v1_of_several() {
        let s = scheme(Provider::Stripe, b"whsec_test_secret");
        let ok = check(
            &s,
            &[("stripe-signature", STRIPE_SIG)],
            STRIPE_BODY,
            "",
            1_700_000_100,
        );
        assert_eq!(ok.unwrap().timestamp, Some(at(1_700_000_000)));
        let rotated = format!("t=1700000000,v1={},{}", "00".repeat(32), &STRIPE_SIG[13..]);
        assert!(
            check(
                &s,
                &[("stripe-signature", &rotated)],
                STRIPE_BODY,
                "",
                1_700_000_000
            )
            .is_ok()
        );
    }

    #[test]
    fn stripe_rejects_tampering_wrong_secret_staleness_and_v0_only() {
        let s = scheme(Provider::Stripe, b"whsec_test_secret");
        let h = [("stripe-signature", STRIPE_SIG)];
        assert_eq!(
            check(
                &s,
                &h,
                br#"{"id":"evt_test","object":"evenT"}"#,
                "",
                1_700_000_000
            ),
            Err(VerifyError::Mismatch)
        );
        let wrong = scheme(Provider::Stripe, b"whsec_other");
        assert_eq!(
            check(&wrong, &h, STRIPE_BODY, "", 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
        assert!(
            check(&s, &h, STRIPE_BODY, "", 1_700_000_301)
                .unwrap_err()
                .is_stale()
        );
        assert!(
            check(&s, &h, STRIPE_BODY, "", 1_699_999_699)
                .unwrap_err()
                .is_stale()
        );
        let v0 = STRIPE_SIG.replace("v1=", "v0=");
        assert!(matches!(
            check(
                &s,
                &[("stripe-signature", &v0)],
                STRIPE_BODY,
                "",
                1_700_000_000
            ),
            Err(VerifyError::Malformed { .. })
        ));
        assert_eq!(
            check(&s, &[], STRIPE_BODY, "", 1_700_000_000),
            Err(VerifyError::MissingHeader("stripe-signature"))
        );
    }

    #[test]
    fn github_accepts_the_documented_example() {
        let s = scheme(Provider::Github, b"It's a Secret to Everybody");
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let ok = check(
            &s,
            &[("x-hub-signature-256", sig), ("x-github-delivery", "d-1")],
            b"Hello, World!",
            "",
            0,
        )
        .unwrap();
        assert_eq!(ok.delivery_id.as_deref(), Some("d-1"));
        assert_eq!(
            check(&s, &[("x-hub-signature-256", sig)], b"Hello, World?", "", 0),
            Err(VerifyError::Mismatch)
        );
    }

    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

    #[test]
    fn slack_accepts_the_documented_example_within_five_minutes() {
        let s = scheme(Provider::Slack, b"8f742231b10e8888abcd99yyyzzz85a5");
        let h = [
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
            ("x-slack-request-timestamp", "1531420618"),
        ];
        assert!(check(&s, &h, SLACK_BODY.as_bytes(), "", 1_531_420_618 + 299).is_ok());
        assert!(
            check(&s, &h, SLACK_BODY.as_bytes(), "", 1_531_420_618 + 301)
                .unwrap_err()
                .is_stale()
        );
        let forged_ts = [h[0], ("x-slack-request-timestamp", "1531420619")];
        assert_eq!(
            check(&s, &forged_ts, SLACK_BODY.as_bytes(), "", 1_531_420_619),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn twilio_signs_url_and_sorted_form_parameters() {
        let s = scheme(Provider::Twilio, b"12345");
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let body = b"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
        let h = [
            ("x-twilio-signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        assert!(check(&s, &h, body, url, 0).is_ok());
        // The same URL with its default port written out also verifies.
        assert!(
            check(
                &s,
                &h,
                body,
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                0
            )
            .is_ok()
        );
        assert_eq!(
            check(
                &s,
                &h,
                body,
                "https://mycompany.com/other.php?foo=1&bar=2",
                0
            ),
            Err(VerifyError::Mismatch)
        );
        let tampered = b"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=9999&From=%2B12349013030&To=%2B18005551212";
        assert_eq!(check(&s, &h, tampered, url, 0), Err(VerifyError::Mismatch));
    }

    #[test]
    fn twilio_json_bodies_are_bound_by_their_hash() {
        let s = scheme(Provider::Twilio, b"token");
        let body = br#"{"a":1}"#;
        let hash = hex::encode(Sha256::digest(body));
        let url = format!("https://h.example/hook?bodySHA256={hash}");
        let mut mac = HmacSha1::new_from_slice(b"token").unwrap();
        mac.update(url.as_bytes());
        let sig = BASE64.encode(mac.finalize().into_bytes());
        let h = [
            ("x-twilio-signature", sig.as_str()),
            ("content-type", "application/json"),
        ];
        assert!(check(&s, &h, body, &url, 0).is_ok());
        assert_eq!(
            check(&s, &h, br#"{"a":2}"#, &url, 0),
            Err(VerifyError::BodyHashMismatch)
        );
    }

    #[test]
    fn sendgrid_accepts_the_sdk_vector() {
        let key = b"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
        let s = scheme(Provider::Sendgrid, key);
        let body =
            br#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;
        let h = [
            (
                "x-twilio-email-event-webhook-signature",
                "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=",
            ),
            ("x-twilio-email-event-webhook-timestamp", "1588788367"),
        ];
        assert!(check(&s, &h, body, "", 1_588_788_367).is_ok());
        let tampered =
            br#"{"category":"example_payload","event":"test_event","message_id":"message_iD"}"#;
        assert_eq!(
            check(&s, &h, tampered, "", 1_588_788_367),
            Err(VerifyError::Mismatch)
        );
        assert!(
            check(&s, &h, body, "", 1_588_788_367 + 600)
                .unwrap_err()
                .is_stale()
        );
        let bad_key = scheme(Provider::Sendgrid, b"not a key");
        assert!(matches!(
            check(&bad_key, &h, body, "", 1_588_788_367),
            Err(VerifyError::BadSecret(_))
        ));
    }

    #[test]
    fn standard_webhooks_accepts_the_spec_and_svix_vectors() {
        let s = scheme(
            Provider::StandardWebhooks,
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        let h = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1a,ignored v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        let ok = check(&s, &h, br#"{"test": 2432232314}"#, "", 1_614_265_330).unwrap();
        assert_eq!(
            ok.delivery_id.as_deref(),
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek")
        );
        assert_eq!(
            check(&s, &h, br#"{"test": 2432232315}"#, "", 1_614_265_330),
            Err(VerifyError::Mismatch)
        );
        let svix = scheme(
            Provider::StandardWebhooks,
            b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        );
        let h = [
            ("svix-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
            ("svix-timestamp", "1649367553"),
            (
                "svix-signature",
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            ),
        ];
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert!(check(&svix, &h, body, "", 1_649_367_553).is_ok());
        assert!(
            check(&svix, &h, body, "", 1_649_367_553 - 400)
                .unwrap_err()
                .is_stale()
        );
    }

    #[test]
    fn generic_hmac_reads_its_configured_header_and_encoding() {
        let mac = hmac256(b"k", &[b"body"]).finalize().into_bytes();
        let mut s = scheme(Provider::Hmac, b"k");
        s.signature_header = Some("x-signature");
        let hex_sig = format!("sha256={}", hex::encode(mac));
        assert!(check(&s, &[("x-signature", &hex_sig)], b"body", "", 0).is_ok());
        s.base64 = true;
        let b64 = BASE64.encode(mac);
        assert!(check(&s, &[("x-signature", &b64)], b"body", "", 0).is_ok());
        assert_eq!(
            check(&s, &[("x-signature", &b64)], b"bodY", "", 0),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(&s, &[], b"body", "", 0),
            Err(VerifyError::MissingHeader("signature"))
        );
    }

    #[test]
    fn port_variants_toggle_the_default_port() {
        assert_eq!(
            port_variant("https://a.example/x?y=1").as_deref(),
            Some("https://a.example:443/x?y=1")
        );
        assert_eq!(
            port_variant("http://a.example:80/x").as_deref(),
            Some("http://a.example/x")
        );
        assert_eq!(port_variant("http://a.example:8080/x"), None);
    }
}
