//! Batch uploads end to end: `aforo batch upload` streaming a file to a real
//! `aforo standalone` on SQLite and PostgreSQL, whose request bodies are
//! capped far below the file's size, so the upload can only work streamed.
//!
//! Dates: relative to now (the gates measure from the server's clock);
//! nothing depends on a period.

mod common;

use std::fmt::Write;

use chrono::{Duration, Utc};
use common::{Backend, Server};
use serde_json::{Value, json};

/// Rows in the NDJSON file; the file is ~10x the server's body cap.
const ROWS: usize = 5000;
const BODY_CAP: &str = "65536";

/// The NDJSON file: ROWS valid events, among them (1-based line numbers)
/// line 10 repeats line 1's id, line 20 is 2 days old (LATE), line 30 is an
/// hour ahead (TIMESTAMP_IN_FUTURE), line 40 is not JSON, line 50 is blank.
fn ndjson() -> String {
    let now = Utc::now();
    let mut out = String::new();
    for line in 1..=ROWS {
        let mut time = now - Duration::minutes(1);
        let mut id = format!("row-{line}");
        match line {
            10 => id = "row-1".into(),
            20 => time = now - Duration::days(2),
            30 => time = now + Duration::hours(1),
            40 => {
                out.push_str("{\"id\": \"broken\",\n");
                continue;
            }
            50 => {
                out.push('\n');
                continue;
            }
            _ => {}
        }
        let event = json!({
            "id": id, "source": "import", "type": "api.call", "customer": "acme",
            "time": time.to_rfc3339(), "properties": {"ms": line}
        });
        writeln!(out, "{event}").unwrap();
    }
    out
}

async fn upload(
    server: &Server,
    file: &std::path::Path,
    results: &std::path::Path,
) -> (String, String) {
    let (ok, out, err) = server
        .cli(&[
            "batch",
            "upload",
            file.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
            "--http",
            &server.http.clone(),
        ])
        .await;
    assert!(ok, "upload failed: {out}{err}");
    (out, err)
}

fn results_of(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("the results file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn row(results: &[Value], number: u64) -> &Value {
    results
        .iter()
        .find(|r| r["row"] == number)
        .unwrap_or_else(|| panic!("no result for row {number}"))
}

async fn ndjson_upload(backend: Backend) {
    let server =
        Server::start_with(backend, &["--max-body-bytes", BODY_CAP, "--enrichers", "0"]).await;
    let file = server.data_dir().join("events.ndjson");
    let text = ndjson();
    assert!(text.len() > 10 * BODY_CAP.parse::<usize>().unwrap());
    std::fs::write(&file, &text).unwrap();
    let results_file = server.data_dir().join("results.ndjson");

    let (out, err) = upload(&server, &file, &results_file).await;
    assert!(err.contains("(100%)"), "progress: {err}");
    // 4999 rows (line 50 is blank): 4996 accepted (one LATE), one
    // duplicate, the future one and the broken one rejected.
    assert!(
        out.contains("COMPLETE: 4999 rows, 4996 accepted, 1 duplicates, 2 rejected"),
        "{out}"
    );
    let results = results_of(&results_file);
    assert_eq!(results.len(), ROWS - 1);
    assert_eq!(row(&results, 1)["status"], "ACCEPTED");
    assert_eq!(row(&results, 10)["status"], "DUPLICATE");
    assert_eq!(
        row(&results, 10)["stored_event_id"],
        row(&results, 1)["stored_event_id"]
    );
    assert_eq!(row(&results, 20)["flags"], json!(["LATE"]));
    assert_eq!(row(&results, 30)["reason"], "TIMESTAMP_IN_FUTURE");
    assert_eq!(row(&results, 40)["reason"], "SCHEMA_MALFORMED");
    assert!(
        row(&results, 40)["message"]
            .as_str()
            .unwrap()
            .contains("the row is not JSON"),
        "{}",
        row(&results, 40)
    );
    assert!(results.iter().all(|r| r["row"] != 50));

    let events = server.all_events().await;
    assert_eq!(events.len(), 4996);
    assert!(events.iter().all(|e| e["tier"] == "BATCH"));
    let (_, rejections) = server.get("/v1/rejections").await;
    let rejected = rejections["items"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[1]["payload"], "{\"id\": \"broken\",");

    // The same file again: nothing new is stored.
    let again_file = server.data_dir().join("again.ndjson");
    let (out, _) = upload(&server, &file, &again_file).await;
    assert!(
        out.contains("COMPLETE: 4999 rows, 0 accepted, 4997 duplicates, 2 rejected"),
        "{out}"
    );
    assert_eq!(server.all_events().await.len(), 4996);
}

#[tokio::test]
async fn an_ndjson_file_larger_than_any_request_streams_through_the_gates_on_sqlite() {
    ndjson_upload(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_ndjson_file_larger_than_any_request_streams_through_the_gates_on_postgres() {
    ndjson_upload(Backend::Postgres).await;
}

#[tokio::test]
async fn csv_columns_become_event_fields_and_properties() {
    let server = Server::start(Backend::Sqlite).await;
    let now = Utc::now().to_rfc3339();
    let file = server.data_dir().join("events.csv");
    std::fs::write(
        &file,
        format!(
            "id,source,type,customer,time,tokens,note\n\
             c1,import,llm.tokens,acme,{now},1200,\"two\nlines\"\n\
             c2,import,llm.tokens,acme,{now},7\n\
             c3,import,llm.tokens,,{now},5,x\n"
        ),
    )
    .unwrap();
    let results_file = server.data_dir().join("results.ndjson");
    let (out, _) = upload(&server, &file, &results_file).await;
    assert!(
        out.contains("COMPLETE: 3 rows, 1 accepted, 0 duplicates, 2 rejected"),
        "{out}"
    );
    let results = results_of(&results_file);
    // Rows are numbered by the line they start on: the header is row 1,
    // c1 spans lines 2 and 3, so c2 is row 4.
    assert_eq!(row(&results, 2)["status"], "ACCEPTED");
    assert_eq!(
        row(&results, 4)["message"],
        "the row has 6 fields; the header has 7"
    );
    assert_eq!(row(&results, 5)["reason"], "SCHEMA_MISSING_CUSTOMER");
    let events = server.all_events().await;
    assert_eq!(
        events[0]["properties"],
        json!({"tokens": 1200, "note": "two\nlines"})
    );

    // What the CLI downloaded is what the API serves, and the batch is listed.
    let id = out.split_whitespace().nth(1).unwrap();
    let (status, batch) = server.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(
        (batch["status"].as_str(), batch["rows"].as_i64()),
        (Some("COMPLETE"), Some(3))
    );
    let (ok, downloaded, err) = server
        .cli(&["batch", "results", id, "--http", &server.http.clone()])
        .await;
    assert!(ok, "{err}");
    assert_eq!(downloaded, std::fs::read_to_string(&results_file).unwrap());

    // A CSV without the columns an event needs is refused whole, and says why.
    let bad = server.data_dir().join("bad.csv");
    std::fs::write(&bad, "id,time\n1,2\n").unwrap();
    let (ok, _, err) = server
        .cli(&[
            "batch",
            "upload",
            bad.to_str().unwrap(),
            "--http",
            &server.http.clone(),
        ])
        .await;
    assert!(!ok);
    assert!(
        err.contains(r#"422: the header row has no "type" column"#),
        "{err}"
    );
}
