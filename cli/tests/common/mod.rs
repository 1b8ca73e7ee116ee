//! The end-to-end harness: real `aforo` processes on loopback, a real store
//! (an SQLite file, or a fresh database on the PostgreSQL that
//! `scripts/test.sh` starts), and real clients (tonic, reqwest, grpcurl).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aforo_proto::v1 as pb;
use aforo_proto::v1::ingest_service_client::IngestServiceClient;
use serde_json::Value;
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_aforo");

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty PostgreSQL database for one test.
pub async fn postgres_database() -> String {
    let admin = std::env::var("AFORO_TEST_DATABASE_URL").expect(
        "AFORO_TEST_DATABASE_URL is not set: run scripts/test.sh, or `eval \"$(scripts/services.sh)\"` first",
    );
    let name = format!("aforo_e2e_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').expect("URL has a database").0;
    format!("{base}/{name}")
}

/// A running `aforo standalone`, on SQLite or PostgreSQL.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub http: String,
    pub grpc: String,
    pub key: String,
    extra: Vec<String>,
}

impl Server {
    pub async fn start(backend: Backend) -> Server {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("aforo.db").display()),
            Backend::Postgres => postgres_database().await,
        };
        let mut server = Server {
            child: None,
            dir,
            database_url,
            http: String::new(),
            grpc: String::new(),
            key: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch().await;
        server.key = std::fs::read_to_string(server.dir.path().join("dev-api-key"))
            .expect("standalone wrote its development key")
            .trim()
            .to_owned();
        server
    }

    async fn launch(&mut self) {
        let data_dir = self.dir.path().display().to_string();
        let mut args = vec![
            "standalone",
            "--data-dir",
            &data_dir,
            "--database-url",
            &self.database_url,
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let (child, ready) = spawn_ready(&args).await;
        self.http = ready.field("http=");
        self.grpc = format!("http://{}", ready.field("grpc="));
        self.child = Some(child);
    }

    /// `GET /metrics`: the OpenMetrics text.
    pub async fn metrics(&self) -> String {
        metrics_of(&self.http).await
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("send SIGKILL");
            child.wait().await.expect("reap aforo");
        }
    }

    pub async fn restart(&mut self) {
        self.kill9().await;
        self.launch().await;
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn grpc_client(&self) -> IngestServiceClient<Channel> {
        let channel = Channel::from_shared(self.grpc.clone())
            .expect("gRPC URL")
            .connect()
            .await
            .expect("connect gRPC");
        IngestServiceClient::new(channel)
    }

    /// `Ingest` with the development key.
    pub async fn grpc_ingest(
        &self,
        client: &mut IngestServiceClient<Channel>,
        events: Vec<pb::Event>,
    ) -> Result<pb::IngestResponse, tonic::Status> {
        let mut request = tonic::Request::new(pb::IngestRequest {
            batch_id: "t".into(),
            events,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.key).parse().expect("header"),
        );
        client.ingest(request).await.map(|r| r.into_inner())
    }

    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// POSTs a body to /v1/events; returns status and JSON answer.
    pub async fn post_events(&self, content_type: &str, body: String) -> (u16, Value) {
        let response = self
            .http_client()
            .post(format!("{}/v1/events", self.http))
            .bearer_auth(&self.key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST /v1/events");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        self.get_as(path_and_query, &self.key).await
    }

    pub async fn get_as(&self, path_and_query: &str, key: &str) -> (u16, Value) {
        let response = self
            .http_client()
            .get(format!("{}{path_and_query}", self.http))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    /// Every stored event of the development tenant, paging to the end.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = String::from("0");
        loop {
            let (status, page) = self
                .get(&format!("/v1/events?limit=1000&after={after}"))
                .await;
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().expect("events").clone();
            events.extend(items);
            match page["next_cursor"].as_str() {
                Some(next) => after = next.to_owned(),
                None => return events,
            }
        }
    }

    /// Runs an admin command (`tenants`, `keys`) on this server's store.
    pub async fn admin(&self, args: &[&str]) -> (bool, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--database-url", &self.database_url]);
        self.cli(&all).await
    }

    /// Runs `aforo ARGS… --data-dir DIR`; returns success, stdout, stderr.
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .env("AFORO_LOG", "warn")
            .output()
            .await
            .expect("run aforo");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// The line a role prints once it serves: `aforo ROLE ready: http=… grpc=…`.
pub struct Ready(pub String);

impl Ready {
    /// The value after `name` (e.g. `http=`).
    pub fn field(&self, name: &str) -> String {
        self.0
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.0))
            .to_owned()
    }
}

/// Waits (60 s at most) for a spawned role with piped stdout to say it is
/// ready, then keeps draining its stdout so it never blocks on a full pipe.
pub async fn ready_line(child: &mut Child) -> Ready {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.contains(" ready: ") {
                return line;
            }
        }
        panic!("aforo exited before it was ready");
    })
    .await
    .expect("aforo was not ready within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ready(ready)
}

/// `GET {base}/metrics` of any role: the OpenMetrics text.
pub async fn metrics_of(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text")
}

/// Runs `grpcurl -plaintext FLAGS ADDRESS VERB…` (asserting it
/// succeeds); its stdout.
pub fn grpcurl_out(flags: &[&str], address: &str, verb: &[&str]) -> String {
    let args: Vec<&str> = ["-plaintext"]
        .iter()
        .chain(flags)
        .chain(&[address])
        .chain(verb)
        .copied()
        .collect();
    let output = std::process::Command::new(grpcurl())
        .args(&args)
        .output()
        .expect("run grpcurl");
    assert!(
        output.status.success(),
        "grpcurl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Spawns `aforo ARGS` with quiet logs and piped stdout, and waits for its
/// ready line.
pub async fn spawn_ready(args: &[&str]) -> (Child, Ready) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("AFORO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn aforo");
    let ready = ready_line(&mut child).await;
    (child, ready)
}

/// Starts one role (`ingest`, `billing`, `enrich`, …) with `args` on a
/// fresh SQLite store in `dir`; returns it and its ready line.
pub async fn single_role(args: &[&str], dir: &Path) -> (Child, Ready) {
    let database = format!("sqlite://{}", dir.join("aforo.db").display());
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--database-url", database.as_str()])
        .collect();
    spawn_ready(&args).await
}

/// The example catalog of the repository.
pub fn examples() -> PathBuf {
    PathBuf::from(format!(
        "{}/../examples",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    ))
}

/// A copy of the example catalog under `dir`, with `edit` applied to
/// rate-plans.yaml; returns the copy's folder.
pub fn examples_with(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let out = dir.join("catalog");
    std::fs::create_dir_all(&out).expect("create the copy's folder");
    for entry in std::fs::read_dir(examples()).expect("read examples/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let mut text = std::fs::read_to_string(&path).expect("read an example");
            if path.file_name().is_some_and(|n| n == "rate-plans.yaml") {
                text = edit(text);
            }
            std::fs::write(out.join(path.file_name().expect("a file name")), text)
                .expect("write the copy");
        }
    }
    out
}

/// A gRPC request carrying `authorization: Bearer KEY`.
pub fn authed<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("a header value"),
    );
    request
}

pub fn grpcurl() -> PathBuf {
    PathBuf::from(std::env::var("AFORO_GRPCURL").expect(
        "AFORO_GRPCURL is not set: run scripts/test.sh, or `eval \"$(scripts/services.sh)\"` first",
    ))
}

pub fn proto_event(id: &str, time: chrono::DateTime<chrono::Utc>) -> pb::Event {
    pb::Event {
        id: id.into(),
        source: "e2e".into(),
        r#type: "api.call".into(),
        customer: "acme".into(),
        time: Some(prost_types::Timestamp {
            seconds: time.timestamp(),
            nanos: time.timestamp_subsec_nanos() as i32,
        }),
        properties: Some(aforo_ingest::decode::json_to_struct(
            serde_json::json!({"ms": 12, "route": "/v1/translate"})
                .as_object()
                .expect("object"),
        )),
        tier: 0,
        tier_detail: String::new(),
    }
}

/// The calendar the end-to-end tests date their data by: months counted
/// back from the one the test started in, so that a test means the same on
/// whatever day it runs (and under `faketime` on the hard days that
/// `scripts/test.sh` picks: a month's last and first minute, 28 and
/// 29 February of a leap year, New Year's Eve).
///
/// Tests that bill closed periods date their events in `start(1)` and
/// earlier; tests of "this period" use `start(0)..now` and check the period
/// the server answers for, since a test that starts in a month's last
/// seconds ends in the next month.
#[derive(Clone, Copy, Debug)]
pub struct Months {
    pub now: chrono::DateTime<chrono::Utc>,
    this: chrono::DateTime<chrono::Utc>,
}

impl Months {
    pub fn now() -> Months {
        use chrono::{Datelike, TimeZone};
        let now = chrono::Utc::now();
        let this = chrono::Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .expect("the first of this month");
        Months { now, this }
    }

    /// Midnight UTC on the first of the month `back` months before this one
    /// (`back` = 0: this month; it may be negative for months ahead).
    pub fn start(&self, back: i32) -> chrono::DateTime<chrono::Utc> {
        let months = chrono::Months::new(back.unsigned_abs());
        if back >= 0 {
            self.this.checked_sub_months(months)
        } else {
            self.this.checked_add_months(months)
        }
        .expect("a month within range")
    }

    /// `day` (1–28, so every month has it) of that month at `hour`:00 UTC.
    pub fn at(&self, back: i32, day: u32, hour: u32) -> chrono::DateTime<chrono::Utc> {
        assert!(
            (1..=28).contains(&day) && hour < 24,
            "day {day} hour {hour}"
        );
        self.start(back)
            + chrono::Duration::days(i64::from(day) - 1)
            + chrono::Duration::hours(i64::from(hour))
    }

    /// `n` instants spread over this month so far (its first instant up to
    /// `now`), at most `within` before `now`: "recent" usage that is in the
    /// current period even in its first minute.
    pub fn recent(&self, n: usize, within: chrono::Duration) -> Vec<chrono::DateTime<chrono::Utc>> {
        let from = self.this.max(self.now - within);
        let span = (self.now - from).num_milliseconds().max(0);
        (0..n)
            .map(|i| {
                self.now - chrono::Duration::milliseconds(span * (i as i64 + 1) / (n as i64 + 1))
            })
            .collect()
    }
}

/// RFC 3339 with whole seconds, as a user types it (`…T00:00:00Z`).
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// RFC 3339 with microseconds, as the REST API writes times.
pub fn api_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `text` with the quoted value of the first `key: "…"` replaced by
/// `value`: dates the example catalog's fields relative to the test's
/// [`Months`] without naming the dates the examples carry.
pub fn set_first(text: &str, key: &str, value: &str) -> String {
    let marker = format!("{key}: \"");
    let at = text
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker}… in the text"))
        + marker.len();
    let end = at + text[at..].find('"').expect("a closing quote");
    format!("{}{value}{}", &text[..at], &text[end..])
}
