//! Delivering settled invoices to their routes: the `invoice.finalized`
//! webhook, signed the Standard Webhooks way (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">` under the base64 key after `whsec_`), and CSV/JSON
//! files. Deliveries come from the outbox the store wrote with the invoice;
//! a failed attempt is retried with backoff, and a delivery id is stable
//! across attempts so receivers can deduplicate.

use std::path::Path;

use aforo_store::Store;
use aforo_store::billing::Delivery;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::runner::{RunError, parse_invoice};
use super::{Invoice, Route, RoutingConfig};

/// Signs a webhook body: the three Standard Webhooks headers.
pub fn sign(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<[(&'static str, String); 3], String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| "the webhook secret is not base64 (whsec_…)".to_owned())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    Ok([
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", format!("v1,{signature}")),
    ])
}

/// The `invoice.finalized` payload.
pub fn payload(invoice: &Invoice) -> serde_json::Value {
    let mut doc = serde_json::to_value(invoice).unwrap_or_default();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("number".into(), invoice.number.clone().into());
    }
    serde_json::json!({ "type": "invoice.finalized", "data": doc })
}

/// The invoice as CSV: one row per line.
pub fn csv(invoice: &Invoice) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let e = |e: csv::Error| e.to_string();
    w.write_record([
        "invoice",
        "line",
        "kind",
        "description",
        "meter",
        "dimension",
        "period_start",
        "period_end",
        "quantity",
        "included",
        "amount_unrounded",
        "amount",
        "currency",
        "event_count",
        "merkle_root",
    ])
    .map_err(e)?;
    for l in &invoice.lines {
        let key = l.key.as_ref();
        w.write_record([
            invoice.number.as_str(),
            &l.number.to_string(),
            l.kind.as_str(),
            &l.description,
            key.map_or("", |k| k.meter.as_str()),
            key.map_or("", |k| k.dimension.as_str()),
            &aforo_crds::event::format_time(&l.period.start),
            &aforo_crds::event::format_time(&l.period.end),
            &l.quantity.to_string(),
            &l.included.to_string(),
            &l.amount_unrounded.to_string(),
            &l.amount.to_string(),
            &invoice.currency,
            &l.event_count.to_string(),
            l.merkle_root.as_deref().unwrap_or(""),
        ])
        .map_err(e)?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(|e| format!("cannot rename into {name}: {e}"))
}

async fn attempt(
    http: &reqwest::Client,
    config: &RoutingConfig,
    delivery: &Delivery,
    invoice: &Invoice,
) -> Result<(), String> {
    let route: Route = serde_json::from_str(&delivery.route)
        .map_err(|e| format!("unreadable route {}: {e}", delivery.route))?;
    match route {
        Route::Ledger => Ok(()),
        Route::Webhook { url } => {
            let secret = config
                .webhook_secret
                .as_deref()
                .ok_or("no webhook secret is configured")?;
            let body = serde_json::to_vec(&payload(invoice)).map_err(|e| e.to_string())?;
            let headers = sign(
                secret,
                &format!("msg_{}", delivery.id.simple()),
                Utc::now().timestamp(),
                &body,
            )?;
            let mut request = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("POST {url}: {}", response.status()))
            }
        }
        Route::Export { dir, format } => {
            let dir = Path::new(&dir);
            match format.as_str() {
                "json" => {
                    let body = serde_json::to_vec_pretty(&payload(invoice)["data"])
                        .map_err(|e| e.to_string())?;
                    write_atomically(dir, &format!("{}.json", invoice.number), &body)
                }
                "csv" => write_atomically(dir, &format!("{}.csv", invoice.number), &csv(invoice)?),
                other => Err(format!("unknown export format {other:?}")),
            }
        }
    }
}

/// The wait before attempt `n + 1`: 10 s doubling, at most an hour.
fn backoff(attempts: i32) -> Duration {
    Duration::seconds((10i64 << attempts.clamp(0, 9)).min(3600))
}

/// Makes every due delivery once; returns (delivered, failed).
pub async fn deliver_due(
    store: &dyn Store,
    config: &RoutingConfig,
    now: DateTime<Utc>,
) -> Result<(u64, u64), RunError> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| RunError::Internal(format!("cannot build the webhook client: {e}")))?;
    let (mut delivered, mut failed) = (0, 0);
    loop {
        let due = store.due_deliveries(now, 100).await?;
        if due.is_empty() {
            break;
        }
        for d in due {
            let result = match store.invoice(d.tenant, &d.invoice.to_string()).await? {
                Some(stored) => attempt(&http, config, &d, &parse_invoice(&stored)?).await,
                None => Err(format!("invoice {} is gone", d.invoice)),
            };
            let at = Utc::now();
            match &result {
                Ok(()) => delivered += 1,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(delivery = %d.id, invoice = %d.invoice, error = %e, "invoice delivery failed; will retry");
                }
            }
            store
                .finish_delivery(
                    d.id,
                    at,
                    result.err().as_deref(),
                    at.max(now) + backoff(d.attempts),
                )
                .await?;
        }
    }
    Ok((delivered, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_test_vector() {
        // The Standard Webhooks specification's example.
        let headers = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(
            headers[2].1,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::seconds(10));
        assert_eq!(backoff(3), Duration::seconds(80));
        assert_eq!(backoff(50), Duration::seconds(3600));
    }
}
