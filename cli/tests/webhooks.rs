//! Webhook receivers end to end: deliveries signed by each provider's own
//! library (tests/webhooks/sign.py, installed by scripts/pyenv.sh) sent to a
//! real `aforo standalone` on SQLite and on PostgreSQL.
//!
//! Which library signs which provider is said in sign.py: stripe-python,
//! @octokit/webhooks-methods, slack_sdk, twilio-python, standardwebhooks,
//! and for SendGrid (whose SDK only verifies) `cryptography` as SendGrid
//! documents it, checked with sendgrid-python's EventWebhook helper.
//!
//! Dates: relative to now. Signed timestamps are checked against the
//! server's clock with the source's tolerance; nothing depends on a period.

mod common;

use std::path::Path;

use chrono::Utc;
use common::{Backend, Server};
use serde_json::{Value, json};

const SOURCES: &str = r#"
apiVersion: aforo.io/v1alpha1
kind: WebhookSource
metadata: {name: stripe, namespace: default}
spec:
  provider: stripe
  secretRef: {name: stripe-webhook, key: signing-secret}
  mappings:
    - filter: "$[?@.type == 'invoice.paid']"
      id: $.id
      customer: $.data.object.customer
      type: payment.succeeded
      time: $.created
      value: $.data.object.amount_paid
      properties: {currency: $.data.object.currency}
---
apiVersion: aforo.io/v1alpha1
kind: WebhookSource
metadata: {name: github, namespace: default}
spec:
  provider: github
  secretRef: {name: github-webhook, key: secret}
  mappings:
    - forEach: $.commits[*]
      customer: $.repository.owner.login
      type: git.commit
      properties: {sha: $.id}
---
apiVersion: aforo.io/v1alpha1
kind: WebhookSource
metadata: {name: slack, namespace: default}
spec:
  provider: slack
  secretRef: {name: slack-app, key: signing-secret}
  mappings:
    - filter: "$[?@.type == 'event_callback']"
      customer: $.team_id
      type: $.event.type
      time: $.event_time
---
apiVersion: aforo.io/v1alpha1
kind: WebhookSource
metadata: {name: twilio, namespace: default}
spec:
  provider: twilio
  secretRef: {name: twilio, key: auth-token}
  publicUrl: https://hooks.example.com/twilio/sms
  mappings:
    - id: $.MessageSid
      customer: $.AccountSid
      type: sms.sent
      value: $.NumSegments
---
apiVersion: aforo.io/v1alpha1
kind: WebhookSource
metadata: {name: standard, namespace: default}
spec:
  provider: standardWebhooks
  secretRef: {name: standard, key: secret}
  tolerance: 2m
  mappings:
    - customer: $.data.customer
      type: $.type
      value: $.data.units
---
apiVersion: aforo.io/v1alpha1
kind: WebhookSource
metadata: {name: sendgrid, namespace: default}
spec:
  provider: sendgrid
  secretRef: {name: sendgrid, key: public-key}
  mappings:
    - forEach: "$[?@.event == 'delivered']"
      id: $.sg_event_id
      customer: $.customer_id
      type: email.delivered
      time: $.timestamp
"#;

/// The signing helper's answer.
#[derive(Clone, Debug)]
struct Signed {
    headers: Vec<(String, String)>,
    body: String,
    url: String,
}

fn python() -> String {
    std::env::var("AFORO_WEBHOOK_PYTHON").expect(
        "AFORO_WEBHOOK_PYTHON is not set: run scripts/test.sh, or `eval \"$(scripts/pyenv.sh)\"` first",
    )
}

fn sign_py() -> String {
    format!(
        "{}/../tests/webhooks/sign.py",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    )
    .to_owned()
}

/// Runs sign.py with one request; returns its JSON answer.
async fn signer(request: Value) -> Value {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(python())
        .arg(sign_py())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the signer");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(request.to_string().as_bytes())
        .await
        .expect("write the request");
    drop(stdin);
    let out = child.wait_with_output().await.expect("the signer ran");
    assert!(
        out.status.success(),
        "sign.py failed on {request}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the signer prints JSON")
}

async fn sign(provider: &str, secret: &str, body: &Value, extra: Value) -> Signed {
    let mut request = json!({
        "provider": provider, "secret": secret, "body": body.to_string(),
        "url": "", "timestamp": Utc::now().timestamp(), "id": "",
    });
    for (k, v) in extra.as_object().expect("an object") {
        request[k] = v.clone();
    }
    let answer = signer(request).await;
    Signed {
        headers: answer["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_owned(),
                    h[1].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
        body: answer["body"].as_str().expect("body").to_owned(),
        url: answer["url"].as_str().expect("url").to_owned(),
    }
}

async fn post(server: &Server, source: &str, signed: &Signed) -> (u16, Value) {
    let query = signed
        .url
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    let mut request = server
        .http_client()
        .post(format!(
            "{}/v1/webhooks/default/{source}{query}",
            server.http
        ))
        .body(signed.body.clone());
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("POST a delivery");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

fn write_secret(dir: &Path, name: &str, key: &str, value: &str) {
    let folder = dir.join("secrets").join("default").join(name);
    std::fs::create_dir_all(&folder).expect("create the secret's folder");
    // As `echo` writes it: the trailing newline is not part of the secret.
    std::fs::write(folder.join(key), format!("{value}\n")).expect("write the secret");
}

struct Secrets {
    stripe: String,
    github: String,
    slack: String,
    twilio: String,
    standard: String,
    sendgrid_private: String,
}

async fn setup(backend: Backend) -> (Server, Secrets) {
    let server = Server::start(backend).await;
    let keys = signer(json!({"provider": "sendgrid-keygen"})).await;
    let secrets = Secrets {
        stripe: "whsec_e2e_stripe_secret".into(),
        github: "It's a Secret to Everybody".into(),
        slack: "8f742231b10e8888abcd99yyyzzz85a5".into(),
        twilio: "twilio-auth-token".into(),
        standard: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        sendgrid_private: keys["private_pem"].as_str().unwrap().to_owned(),
    };
    let dir = server.data_dir().to_owned();
    write_secret(&dir, "stripe-webhook", "signing-secret", &secrets.stripe);
    write_secret(&dir, "github-webhook", "secret", &secrets.github);
    write_secret(&dir, "slack-app", "signing-secret", &secrets.slack);
    write_secret(&dir, "twilio", "auth-token", &secrets.twilio);
    write_secret(&dir, "standard", "secret", &secrets.standard);
    write_secret(
        &dir,
        "sendgrid",
        "public-key",
        keys["public_key"].as_str().unwrap(),
    );
    let manifests = dir.join("sources.yaml");
    std::fs::write(&manifests, SOURCES).expect("write the sources");
    let (ok, out, err) = server
        .cli(&[
            "apply",
            "-f",
            manifests.to_str().unwrap(),
            "--http",
            &server.http.clone(),
        ])
        .await;
    assert!(ok, "apply failed: {out}{err}");
    (server, secrets)
}

/// Stored events by type, as (id, customer, properties).
async fn events_of(server: &Server, event_type: &str) -> Vec<(String, String, Value)> {
    server
        .all_events()
        .await
        .into_iter()
        .filter(|e| e["type"] == event_type)
        .map(|e| {
            assert_eq!(e["tier"], "WEBHOOK");
            (
                e["id"].as_str().unwrap().to_owned(),
                e["customer"].as_str().unwrap().to_owned(),
                e["properties"].clone(),
            )
        })
        .collect()
}

async fn rejection_reasons(server: &Server, source: &str) -> Vec<String> {
    let (status, page) = server
        .get(&format!("/v1/webhooks/rejections?source={source}"))
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect()
}

fn statuses(answer: &Value) -> Vec<&str> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect()
}

/// Asserts the delivery is turned away with 401 and nothing more said.
fn assert_unauthorized((status, answer): (u16, Value)) {
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        answer,
        json!({"error": {"code": "WEBHOOK_REJECTED", "message": "the delivery was not accepted"}})
    );
}

fn tampered(signed: &Signed, from: &str, to: &str) -> Signed {
    assert!(signed.body.contains(from), "{from} in {}", signed.body);
    Signed {
        body: signed.body.replacen(from, to, 1),
        ..signed.clone()
    }
}

async fn stripe(server: &Server, secret: &str) {
    let invoice = |kind: &str| {
        json!({
            "id": "evt_1Ok", "object": "event", "type": kind, "created": Utc::now().timestamp(),
            "data": {"object": {"customer": "cus_acme", "amount_paid": 1250, "currency": "usd"}}
        })
    };
    let signed = sign("stripe", secret, &invoice("invoice.paid"), json!({})).await;
    let (status, first) = post(server, "stripe", &signed).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(statuses(&first), ["ACCEPTED"]);
    // Stripe retries with a fresh timestamp and the same event id.
    let later = Utc::now().timestamp() + 30;
    let retried = sign(
        "stripe",
        secret,
        &invoice("invoice.paid"),
        json!({"timestamp": later}),
    )
    .await;
    let (status, again) = post(server, "stripe", &retried).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(statuses(&again), ["DUPLICATE"]);
    assert_eq!(
        again["results"][0]["stored_event_id"],
        first["results"][0]["stored_event_id"]
    );
    assert_eq!(
        events_of(server, "payment.succeeded").await,
        [(
            "evt_1Ok".to_owned(),
            "cus_acme".to_owned(),
            json!({"value": 1250, "currency": "usd"})
        )]
    );

    assert_unauthorized(post(server, "stripe", &tampered(&signed, "1250", "9250")).await);
    let wrong = sign(
        "stripe",
        "whsec_not_it",
        &invoice("invoice.paid"),
        json!({}),
    )
    .await;
    assert_unauthorized(post(server, "stripe", &wrong).await);
    let stale_at = Utc::now().timestamp() - 600;
    let stale = sign(
        "stripe",
        secret,
        &invoice("invoice.paid"),
        json!({"timestamp": stale_at}),
    )
    .await;
    assert_unauthorized(post(server, "stripe", &stale).await);
    // Authentic but not billable: stored, and answered so Stripe stops retrying.
    let other = sign("stripe", secret, &invoice("customer.created"), json!({})).await;
    let (status, ignored) = post(server, "stripe", &other).await;
    assert_eq!((status, ignored), (200, json!({"status": "IGNORED"})));
    assert_eq!(
        rejection_reasons(server, "stripe").await,
        [
            "WEBHOOK_SIGNATURE_INVALID",
            "WEBHOOK_SIGNATURE_INVALID",
            "WEBHOOK_TIMESTAMP_STALE",
            "WEBHOOK_UNMATCHED"
        ]
    );
}

async fn github(server: &Server, secret: &str) {
    let push = json!({
        "ref": "refs/heads/main",
        "repository": {"owner": {"login": "acme-org"}},
        "commits": [{"id": "c0ffee1"}, {"id": "c0ffee2"}]
    });
    let signed = sign("github", secret, &push, json!({"id": "72d3162e-cc78-11e3"})).await;
    let (status, first) = post(server, "github", &signed).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(statuses(&first), ["ACCEPTED", "ACCEPTED"]);
    // The same delivery again (GitHub's "Redeliver" keeps the GUID): counted once.
    let (_, again) = post(server, "github", &signed).await;
    assert_eq!(statuses(&again), ["DUPLICATE", "DUPLICATE"]);
    assert_eq!(
        events_of(server, "git.commit").await,
        [
            (
                "72d3162e-cc78-11e3#0".to_owned(),
                "acme-org".to_owned(),
                json!({"sha": "c0ffee1"})
            ),
            (
                "72d3162e-cc78-11e3#1".to_owned(),
                "acme-org".to_owned(),
                json!({"sha": "c0ffee2"})
            ),
        ]
    );
    assert_unauthorized(post(server, "github", &tampered(&signed, "c0ffee2", "c0ffee3")).await);
    let wrong = sign("github", "not it", &push, json!({"id": "x"})).await;
    assert_unauthorized(post(server, "github", &wrong).await);
    let unsigned = Signed {
        headers: vec![("content-type".into(), "application/json".into())],
        ..signed.clone()
    };
    assert_unauthorized(post(server, "github", &unsigned).await);
    assert_eq!(
        rejection_reasons(server, "github").await,
        [
            "WEBHOOK_SIGNATURE_INVALID",
            "WEBHOOK_SIGNATURE_INVALID",
            "WEBHOOK_SIGNATURE_MISSING"
        ]
    );
}

async fn slack(server: &Server, secret: &str) {
    let now = Utc::now().timestamp();
    let callback = json!({
        "type": "event_callback", "event_id": "Ev08MFMKH6", "event_time": now,
        "team_id": "T1DC2JH3J", "event": {"type": "app_mention", "user": "U2CERLKJA"}
    });
    let signed = sign("slack", secret, &callback, json!({})).await;
    let (status, first) = post(server, "slack", &signed).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(statuses(&first), ["ACCEPTED"]);
    // Slack retries (X-Slack-Retry-Num) carry the same event_id.
    let (_, again) = post(server, "slack", &signed).await;
    assert_eq!(statuses(&again), ["DUPLICATE"]);
    assert_eq!(
        events_of(server, "app_mention").await,
        [("Ev08MFMKH6".to_owned(), "T1DC2JH3J".to_owned(), json!({}))]
    );
    assert_unauthorized(post(server, "slack", &tampered(&signed, "U2CERLKJA", "U0")).await);
    let stale = sign("slack", secret, &callback, json!({"timestamp": now - 301})).await;
    assert_unauthorized(post(server, "slack", &stale).await);
    assert_eq!(
        rejection_reasons(server, "slack").await,
        ["WEBHOOK_SIGNATURE_INVALID", "WEBHOOK_TIMESTAMP_STALE"]
    );
}

async fn twilio(server: &Server, secret: &str) {
    // Twilio calls the public URL; a proxy forwards to aforo's own address.
    let public = "https://hooks.example.com/twilio/sms";
    let form = json!({
        "MessageSid": "SM0001", "AccountSid": "AC-acme", "From": "+15005550006",
        "To": "+15005550001", "NumSegments": "2", "Body": "hello"
    });
    let signed = sign(
        "twilio",
        secret,
        &json!(null),
        json!({"url": public, "form": form}),
    )
    .await;
    let (status, first) = post(server, "twilio", &signed).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(statuses(&first), ["ACCEPTED"]);
    let (_, again) = post(server, "twilio", &signed).await;
    assert_eq!(statuses(&again), ["DUPLICATE"]);
    // A JSON body is bound by bodySHA256 in the signed URL's query.
    let json_body = json!({"MessageSid": "SM0002", "AccountSid": "AC-acme", "NumSegments": 1});
    let signed_json = sign("twilio", secret, &json_body, json!({"url": public})).await;
    assert!(
        signed_json.url.contains("bodySHA256="),
        "{}",
        signed_json.url
    );
    let (status, answer) = post(server, "twilio", &signed_json).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), ["ACCEPTED"]);
    assert_eq!(
        events_of(server, "sms.sent").await,
        [
            (
                "SM0001".to_owned(),
                "AC-acme".to_owned(),
                json!({"value": "2"})
            ),
            (
                "SM0002".to_owned(),
                "AC-acme".to_owned(),
                json!({"value": 1})
            ),
        ]
    );
    assert_unauthorized(
        post(
            server,
            "twilio",
            &tampered(&signed, "NumSegments=2", "NumSegments=9"),
        )
        .await,
    );
    assert_unauthorized(post(server, "twilio", &tampered(&signed_json, "1}", "7}")).await);
    // Signed for another URL than the one configured.
    let elsewhere = sign(
        "twilio",
        secret,
        &json!(null),
        json!({"url": "https://evil.example.com/twilio/sms", "form": form}),
    )
    .await;
    assert_unauthorized(post(server, "twilio", &elsewhere).await);
    assert_eq!(
        rejection_reasons(server, "twilio").await,
        [
            "WEBHOOK_SIGNATURE_INVALID",
            "WEBHOOK_SIGNATURE_INVALID",
            "WEBHOOK_SIGNATURE_INVALID"
        ]
    );
}

async fn standard(server: &Server, secret: &str) {
    let body = json!({"type": "usage.reported", "data": {"customer": "cust_9", "units": 7}});
    let signed = sign("standard", secret, &body, json!({"id": "msg_2Lq"})).await;
    let (status, first) = post(server, "standard", &signed).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(statuses(&first), ["ACCEPTED"]);
    // A redelivery: same webhook-id, signed again later.
    let later = Utc::now().timestamp() + 20;
    let redelivered = sign(
        "standard",
        secret,
        &body,
        json!({"id": "msg_2Lq", "timestamp": later}),
    )
    .await;
    let (_, again) = post(server, "standard", &redelivered).await;
    assert_eq!(statuses(&again), ["DUPLICATE"]);
    assert_eq!(
        events_of(server, "usage.reported").await,
        [(
            "msg_2Lq".to_owned(),
            "cust_9".to_owned(),
            json!({"value": 7})
        )]
    );
    // The source's tolerance is 2 minutes: 3 minutes old is stale.
    let stale_at = Utc::now().timestamp() - 180;
    let stale = sign(
        "standard",
        secret,
        &body,
        json!({"id": "msg_3", "timestamp": stale_at}),
    )
    .await;
    assert_unauthorized(post(server, "standard", &stale).await);
    let wrong = sign(
        "standard",
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        &body,
        json!({"id": "msg_4"}),
    )
    .await;
    assert_unauthorized(post(server, "standard", &wrong).await);
    assert_eq!(
        rejection_reasons(server, "standard").await,
        ["WEBHOOK_TIMESTAMP_STALE", "WEBHOOK_SIGNATURE_INVALID"]
    );
}

async fn sendgrid(server: &Server, private_pem: &str) {
    let now = Utc::now().timestamp();
    let events = json!([
        {"email": "a@acme.test", "event": "delivered", "sg_event_id": "sg-1", "timestamp": now, "customer_id": "acme"},
        {"email": "a@acme.test", "event": "open", "sg_event_id": "sg-2", "timestamp": now, "customer_id": "acme"},
        {"email": "b@acme.test", "event": "delivered", "sg_event_id": "sg-3", "timestamp": now, "customer_id": "acme"}
    ]);
    let signed = sign("sendgrid", private_pem, &events, json!({})).await;
    let (status, first) = post(server, "sendgrid", &signed).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(statuses(&first), ["ACCEPTED", "ACCEPTED"]);
    let (_, again) = post(server, "sendgrid", &signed).await;
    assert_eq!(statuses(&again), ["DUPLICATE", "DUPLICATE"]);
    let ids: Vec<String> = events_of(server, "email.delivered")
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(ids, ["sg-1", "sg-3"]);
    assert_unauthorized(post(server, "sendgrid", &tampered(&signed, "b@acme", "c@acme")).await);
    let other_key = signer(json!({"provider": "sendgrid-keygen"})).await;
    let wrong = sign(
        "sendgrid",
        other_key["private_pem"].as_str().unwrap(),
        &events,
        json!({}),
    )
    .await;
    assert_unauthorized(post(server, "sendgrid", &wrong).await);
    assert_eq!(
        rejection_reasons(server, "sendgrid").await,
        ["WEBHOOK_SIGNATURE_INVALID", "WEBHOOK_SIGNATURE_INVALID"]
    );
}

/// What every provider shares: unknown sources, unmappable deliveries, the
/// stored record of a rejection and the metrics.
async fn the_rest(server: &Server, secrets: &Secrets) {
    let body = json!({"id": "evt_x", "type": "invoice.paid", "created": Utc::now().timestamp()});
    let signed = sign("stripe", &secrets.stripe, &body, json!({})).await;
    assert_unauthorized(post(server, "no-such-source", &signed).await);
    // A mapped delivery without the customer the mapping reads.
    let (status, answer) = post(server, "stripe", &signed).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "WEBHOOK_UNMAPPABLE");
    let (_, page) = server
        .get("/v1/webhooks/rejections?reason=webhook_unmappable")
        .await;
    let stored = &page["items"][0];
    assert_eq!(stored["source"], "stripe");
    assert_eq!(
        stored["message"], "mapping 0: customer selects nothing",
        "{stored}"
    );
    assert_eq!(stored["body"], signed.body);
    let headers: Vec<(String, String)> = serde_json::from_value(stored["headers"].clone()).unwrap();
    let signature = signed
        .headers
        .iter()
        .find(|(n, _)| n == "stripe-signature")
        .unwrap();
    assert!(headers.contains(signature), "{headers:?}");
    assert_eq!(
        rejection_reasons(server, "no-such-source").await,
        ["WEBHOOK_UNKNOWN_SOURCE"]
    );
    // A delivery to an unknown tenant is stored too, under no tenant (so
    // no tenant lists it), and answered the same way.
    let response = server
        .http_client()
        .post(format!("{}/v1/webhooks/nobody/stripe", server.http))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let metrics = server.metrics().await;
    for line in [
        r#"aforo_ingest_webhook_deliveries_total{source="default/stripe",outcome="accepted",reason=""} 1"#,
        r#"aforo_ingest_webhook_deliveries_total{source="default/stripe",outcome="duplicate",reason=""} 1"#,
        r#"aforo_ingest_webhook_deliveries_total{source="default/stripe",outcome="rejected",reason="WEBHOOK_SIGNATURE_INVALID"} 2"#,
        r#"aforo_ingest_webhook_deliveries_total{source="default/stripe",outcome="ignored",reason="WEBHOOK_UNMATCHED"} 1"#,
        r#"aforo_ingest_webhook_deliveries_total{source="(unknown)",outcome="rejected",reason="WEBHOOK_UNKNOWN_SOURCE"} 2"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
}

async fn every_provider(backend: Backend) {
    let (server, secrets) = setup(backend).await;
    stripe(&server, &secrets.stripe).await;
    github(&server, &secrets.github).await;
    slack(&server, &secrets.slack).await;
    twilio(&server, &secrets.twilio).await;
    standard(&server, &secrets.standard).await;
    sendgrid(&server, &secrets.sendgrid_private).await;
    the_rest(&server, &secrets).await;
}

#[tokio::test]
async fn every_provider_signed_by_its_own_library_on_sqlite() {
    every_provider(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_provider_signed_by_its_own_library_on_postgres() {
    every_provider(Backend::Postgres).await;
}

#[tokio::test]
async fn a_missing_secret_rejects_and_a_written_one_takes_effect_without_restart() {
    let server = Server::start(Backend::Sqlite).await;
    let manifests = server.data_dir().join("sources.yaml");
    std::fs::write(&manifests, SOURCES).unwrap();
    let (ok, out, err) = server
        .cli(&[
            "apply",
            "-f",
            manifests.to_str().unwrap(),
            "--http",
            &server.http.clone(),
        ])
        .await;
    assert!(ok, "{out}{err}");
    let body = json!({"type": "usage.reported", "data": {"customer": "c", "units": 1}});
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let signed = sign("standard", secret, &body, json!({"id": "msg_1"})).await;
    assert_unauthorized(post(&server, "standard", &signed).await);
    assert_eq!(
        rejection_reasons(&server, "standard").await,
        ["WEBHOOK_SECRET_UNAVAILABLE"]
    );
    write_secret(server.data_dir(), "standard", "secret", secret);
    let (status, answer) = post(&server, "standard", &signed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), ["ACCEPTED"]);
}
