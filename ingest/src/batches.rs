//! The batch front door: CSV or NDJSON uploads of any size, streamed.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/batches` | `application/x-ndjson` (one event per line) or `text/csv` (a header row, then one event per record) |
//! | `GET /v1/batches/{id}` | the batch's status and counters |
//! | `GET /v1/batches/{id}/results` | one NDJSON line per row: `row`, `id`, `status`, `stored_event_id`, and `reason`/`message`/`flags` |
//!
//! The body is never held whole: a [`RowSplitter`] cuts the byte stream
//! into rows (a CSV record may span lines inside quotes), each row bounded
//! by `max_body_bytes`. Rows go in chunks of [`CHUNK_ROWS`] to tasks that
//! decode them and run them through the four gates and the group committer
//! like any other events ([`Ingestor::ingest`]), at most [`IN_FLIGHT`]
//! chunks at a time; the per-row results are kept in the store in chunks
//! of [`RESULT_CHUNK_ROWS`] as they come. So memory is bounded by a few
//! chunks whatever the upload's size.
//!
//! Every row is an event of tier BATCH with `tier_detail` `batch/<id>`. A
//! row dated before the late-arrival bound is accepted and flagged LATE,
//! the path for events of periods that may be closed. An upload that
//! breaks off leaves its batch FAILED with the rows before the break
//! stored; uploading the file again is safe: stored rows answer DUPLICATE.

use std::sync::Arc;

use aforo_api::v1::batches::{self as v1, RowResult};
use aforo_api::v1::{ErrorBody, ErrorDetail};
use aforo_api::{ApiError, ApiQuery, Authed};
use aforo_crds::Tier;
use aforo_store::{Batch, BatchResultChunk, BatchStatus, Store, Tenant};
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::clock::Clock;
use crate::decode;
use crate::gates::EventCandidate;
use crate::pipeline::{BatchOutcome, Ingestor};
use crate::rest::json_depth;
use aforo_store::auth::Authenticator;

/// Rows per ingest call.
pub const CHUNK_ROWS: usize = 2000;
/// Chunks being gated and committed at once, per upload.
pub const IN_FLIGHT: usize = 4;
/// Rows per stored chunk of results.
pub const RESULT_CHUNK_ROWS: usize = 20_000;

#[derive(Clone)]
pub struct BatchState {
    pub ingestor: Arc<Ingestor>,
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub clock: Arc<dyn Clock>,
    /// The longest row.
    pub max_row_bytes: usize,
    pub max_json_depth: usize,
}

/// The documented routes with their OpenAPI operations.
fn routes() -> OpenApiRouter<BatchState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .routes(routes!(show))
        .routes(routes!(results))
}

pub fn router(state: BatchState) -> Router {
    routes().split_for_parts().0.with_state(state)
}

/// The batch routes' operations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

impl FromRef<BatchState> for Authenticator {
    fn from_ref(state: &BatchState) -> Authenticator {
        state.auth.clone()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }

    fn of(headers: &HeaderMap) -> Result<Format, ApiError> {
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match media.as_str() {
            "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
                Ok(Format::Ndjson)
            }
            "text/csv" => Ok(Format::Csv),
            other => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                format!(
                    "content type {other:?} is not a batch format; use application/x-ndjson or text/csv"
                ),
            )),
        }
    }
}

/// How much of an overlong row is kept, to be stored with its rejection.
const TOO_LONG_PREFIX: usize = 256;

/// One row as cut from the stream: its number and bytes, or how long it
/// was when it exceeded the bound (its bytes are then not kept).
#[derive(Debug, PartialEq, Eq)]
pub enum Row {
    Text { number: u64, bytes: Vec<u8> },
    TooLong { number: u64, prefix: Vec<u8> },
}

/// Cuts a byte stream into rows: lines in NDJSON; in CSV, records as
/// csv-core reads them (a line break inside a quoted field does not end the
/// record, a quote inside an unquoted field opens nothing). A row's number
/// is the line it starts on, from 1. Holds at most one row.
pub struct RowSplitter {
    csv: Option<CsvRecords>,
    max: usize,
    current: Vec<u8>,
    too_long: bool,
    /// The line being read, from 1; in NDJSON also the current row's.
    number: u64,
}

/// What finds CSV records: csv-core's reader, with scratch space for the
/// fields it parses (unused: the decoder parses the row again whole).
struct CsvRecords {
    reader: csv_core::Reader,
    fields: Vec<u8>,
    ends: Vec<usize>,
    /// The line the current record started on.
    start: u64,
}

impl RowSplitter {
    pub fn new(format: Format, max: usize) -> Self {
        RowSplitter {
            csv: (format == Format::Csv).then(|| CsvRecords {
                reader: csv_core::Reader::new(),
                fields: vec![0; 4096],
                ends: vec![0; 256],
                start: 1,
            }),
            max,
            current: Vec::new(),
            too_long: false,
            number: 1,
        }
    }

    /// Ends the current row, numbered `number`.
    fn finish(&mut self, number: u64, out: &mut Vec<Row>) {
        while matches!(self.current.last(), Some(b'\r' | b'\n')) {
            self.current.pop();
        }
        let bytes = std::mem::take(&mut self.current);
        if std::mem::take(&mut self.too_long) {
            out.push(Row::TooLong {
                number,
                prefix: bytes,
            });
        } else if !bytes.iter().all(u8::is_ascii_whitespace) {
            out.push(Row::Text { number, bytes });
        }
    }

    /// Adds `piece` to the current row, keeping only a prefix of a row
    /// longer than the bound (to store with its rejection).
    fn keep(&mut self, piece: &[u8]) {
        if self.too_long {
            return;
        }
        if self.current.len() + piece.len() > self.max {
            let room = TOO_LONG_PREFIX
                .saturating_sub(self.current.len())
                .min(piece.len());
            self.current.extend_from_slice(&piece[..room]);
            self.current.truncate(TOO_LONG_PREFIX);
            self.too_long = true;
        } else {
            self.current.extend_from_slice(piece);
        }
    }

    /// Feeds bytes; completed rows are appended to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Row>) {
        if self.csv.is_some() {
            self.feed_csv(data, false, out);
        } else {
            self.feed_lines(data, out);
        }
    }

    fn feed_lines(&mut self, mut data: &[u8], out: &mut Vec<Row>) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.keep(&data[..i]);
                    let number = self.number;
                    self.number += 1;
                    self.finish(number, out);
                    data = &data[i + 1..];
                }
                None => {
                    self.keep(data);
                    data = &[];
                }
            }
        }
    }

    /// Runs `data` through csv-core; `end` says the stream has ended.
    fn feed_csv(&mut self, mut data: &[u8], end: bool, out: &mut Vec<Row>) {
        loop {
            let Some(csv) = self.csv.as_mut() else { return };
            let (result, read, _, _) = csv.reader.read_record(data, &mut csv.fields, &mut csv.ends);
            let (piece, rest) = data.split_at(read);
            data = rest;
            // Line breaks before a record are blank lines or the end of the
            // previous one: they start no row.
            let mut piece = piece;
            if self.current.is_empty() && !self.too_long {
                let blank = piece
                    .iter()
                    .position(|b| !matches!(b, b'\r' | b'\n'))
                    .unwrap_or(piece.len());
                self.number += piece[..blank].iter().filter(|&&b| b == b'\n').count() as u64;
                piece = &piece[blank..];
                if !piece.is_empty()
                    && let Some(csv) = self.csv.as_mut()
                {
                    csv.start = self.number;
                }
            }
            self.number += piece.iter().filter(|&&b| b == b'\n').count() as u64;
            self.keep(piece);
            match result {
                csv_core::ReadRecordResult::Record => {
                    let start = self.csv.as_ref().map_or(self.number, |c| c.start);
                    self.finish(start, out);
                }
                csv_core::ReadRecordResult::End => return,
                csv_core::ReadRecordResult::InputEmpty if !end => return,
                // Scratch space full (its content is not needed), or the
                // end: go on.
                _ => {}
            }
        }
    }

    /// The last row, when the stream does not end with a line break.
    pub fn end(&mut self, out: &mut Vec<Row>) {
        if self.csv.is_some() {
            self.feed_csv(&[], true, out);
        } else if !self.current.is_empty() || self.too_long {
            let number = self.number;
            self.finish(number, out);
        }
    }
}

/// Turns rows into candidates; CSV needs its header first.
#[derive(Clone)]
pub struct RowDecoder {
    format: Format,
    header: Option<Arc<Vec<String>>>,
    tier_detail: String,
    max_json_depth: usize,
}

const CSV_FIELDS: [&str; 6] = ["id", "source", "type", "customer", "time", "properties"];

impl RowDecoder {
    pub fn new(format: Format, batch: Uuid, max_json_depth: usize) -> Self {
        RowDecoder {
            format,
            header: None,
            tier_detail: format!("batch/{batch}"),
            max_json_depth,
        }
    }

    /// Reads the CSV header row. Every column that is not an event field
    /// is a property.
    pub fn set_header(&mut self, bytes: &[u8]) -> Result<(), String> {
        let record = csv_record(bytes).map_err(|e| format!("the header row is not CSV: {e}"))?;
        let names: Vec<String> = record.iter().map(|s| s.trim().to_owned()).collect();
        for required in ["id", "type", "customer", "time"] {
            if !names.iter().any(|n| n == required) {
                return Err(format!(
                    "the header row has no {required:?} column; it needs id, type, customer and time (source and properties are optional, other columns are properties)"
                ));
            }
        }
        self.header = Some(Arc::new(names));
        Ok(())
    }

    pub fn decode(&self, bytes: &[u8]) -> EventCandidate {
        let mut candidate = match self.format {
            Format::Ndjson => self.ndjson(bytes),
            Format::Csv => self.csv(bytes),
        };
        candidate.tier = None;
        candidate.tier_detail = Some(self.tier_detail.clone());
        candidate
    }

    fn malformed(problem: String) -> EventCandidate {
        EventCandidate {
            malformed: Some(problem),
            ..Default::default()
        }
    }

    fn ndjson(&self, bytes: &[u8]) -> EventCandidate {
        let depth = json_depth(bytes);
        if depth > self.max_json_depth {
            return Self::malformed(format!(
                "the row nests {depth} levels deep; the limit is {}",
                self.max_json_depth
            ));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(value) => decode::from_json(&value),
            Err(e) => Self::malformed(format!("the row is not JSON: {e}")),
        }
    }

    fn csv(&self, bytes: &[u8]) -> EventCandidate {
        let Some(header) = &self.header else {
            return Self::malformed("no header row".into());
        };
        let record = match csv_record(bytes) {
            Ok(record) => record,
            Err(e) => return Self::malformed(format!("the row is not CSV: {e}")),
        };
        if record.len() != header.len() {
            return Self::malformed(format!(
                "the row has {} fields; the header has {}",
                record.len(),
                header.len()
            ));
        }
        let mut object = Map::new();
        let mut properties = Map::new();
        let mut problems = Vec::new();
        for (name, cell) in header.iter().zip(record.iter()) {
            if cell.is_empty() {
                continue;
            }
            match name.as_str() {
                "properties" => match serde_json::from_str::<Value>(cell) {
                    Ok(Value::Object(map)) => properties.extend(map),
                    _ => problems.push("`properties` is not a JSON object".to_owned()),
                },
                field if CSV_FIELDS.contains(&field) => {
                    object.insert(field.to_owned(), Value::String(cell.to_owned()));
                }
                property => {
                    // A number stays a number (as its text, exactly); the rest is text.
                    let value = match serde_json::from_str::<Value>(cell) {
                        Ok(n @ Value::Number(_)) => n,
                        _ => Value::String(cell.to_owned()),
                    };
                    properties.insert(property.to_owned(), value);
                }
            }
        }
        object.insert("properties".into(), Value::Object(properties));
        let mut candidate = decode::from_json(&Value::Object(object));
        if !problems.is_empty() {
            candidate.malformed = Some(problems.join("; "));
        }
        candidate
    }
}

fn csv_record(bytes: &[u8]) -> Result<csv::StringRecord, csv::Error> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::StringRecord::new();
    reader.read_record(&mut record)?;
    Ok(record)
}

/// A chunk of rows on its way: numbers, and the answer once committed.
struct ChunkOutcome {
    numbers: Vec<u64>,
    outcome: BatchOutcome,
}

/// The per-row results of one chunk, as NDJSON lines.
fn result_lines(chunk: &ChunkOutcome, out: &mut String) {
    let results = crate::rest::outcome(&chunk.outcome).results;
    for (&row, r) in chunk.numbers.iter().zip(results) {
        let line = RowResult {
            row,
            id: r.id,
            status: r.status,
            stored_event_id: r.stored_event_id,
            reason: r.reason,
            message: r.message,
            flags: r.flags,
        };
        match serde_json::to_string(&line) {
            Ok(text) => {
                out.push_str(&text);
                out.push('\n');
            }
            // Strings and numbers always serialize; should that ever
            // change, say so rather than lose the line unseen.
            Err(e) => tracing::error!(row, error = %e, "a row's result cannot be written"),
        }
    }
}

/// Results waiting to be stored.
#[derive(Default)]
struct PendingResults {
    next_chunk: i64,
    first_row: i64,
    rows: i64,
    accepted: i64,
    duplicates: i64,
    rejected: i64,
    text: String,
}

impl PendingResults {
    fn add(&mut self, chunk: &ChunkOutcome) {
        if self.rows == 0 {
            self.first_row = chunk.numbers.first().map_or(0, |&n| n as i64);
        }
        self.rows += chunk.numbers.len() as i64;
        self.accepted += i64::from(chunk.outcome.accepted);
        self.duplicates += i64::from(chunk.outcome.duplicates);
        self.rejected += i64::from(chunk.outcome.rejected);
        result_lines(chunk, &mut self.text);
    }

    async fn flush(&mut self, store: &dyn Store, tenant: Uuid, batch: Uuid) -> Result<(), String> {
        if self.rows == 0 {
            return Ok(());
        }
        let chunk = BatchResultChunk {
            chunk: self.next_chunk,
            first_row: self.first_row,
            rows: self.rows,
            accepted: self.accepted,
            duplicates: self.duplicates,
            rejected: self.rejected,
            results: std::mem::take(&mut self.text),
        };
        store
            .append_batch_results(tenant, batch, &chunk)
            .await
            .map_err(|e| {
                format!(
                    "the results of rows from {} were not stored: {e}",
                    chunk.first_row
                )
            })?;
        *self = PendingResults {
            next_chunk: self.next_chunk + 1,
            ..Default::default()
        };
        Ok(())
    }
}

type Ingesting = tokio::task::JoinHandle<Result<ChunkOutcome, String>>;

/// Sends a chunk of rows to be decoded, gated and committed on its own task.
fn spawn_chunk(
    state: &BatchState,
    tenant: &Tenant,
    decoder: &RowDecoder,
    rows: Vec<Row>,
) -> Ingesting {
    let ingestor = state.ingestor.clone();
    let tenant = tenant.clone();
    let decoder = decoder.clone();
    let max = state.max_row_bytes;
    tokio::spawn(async move {
        let mut numbers = Vec::with_capacity(rows.len());
        let mut candidates = Vec::with_capacity(rows.len());
        let mut raw = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Row::Text { number, bytes } => {
                    numbers.push(number);
                    candidates.push(decoder.decode(&bytes));
                    raw.push(String::from_utf8_lossy(&bytes).into_owned());
                }
                Row::TooLong { number, prefix } => {
                    numbers.push(number);
                    candidates.push(RowDecoder::malformed(format!(
                        "the row is longer than {max} bytes (its first bytes are kept)"
                    )));
                    raw.push(String::from_utf8_lossy(&prefix).into_owned());
                }
            }
        }
        let outcome = ingestor
            .ingest(&tenant, Tier::Batch, candidates, &|i| raw[i].clone())
            .await
            .map_err(|e| {
                format!(
                    "rows from {} were not stored ({e})",
                    numbers.first().copied().unwrap_or(0)
                )
            })?;
        Ok(ChunkOutcome { numbers, outcome })
    })
}

fn batch_view(b: &Batch) -> v1::Batch {
    v1::Batch {
        batch_id: b.id,
        format: b.format.clone(),
        status: match b.status {
            BatchStatus::Running => v1::BatchStatus::Running,
            BatchStatus::Complete => v1::BatchStatus::Complete,
            BatchStatus::Failed => v1::BatchStatus::Failed,
        },
        rows: b.rows,
        accepted: b.accepted,
        duplicates: b.duplicates,
        rejected: b.rejected,
        error: b.error.clone(),
        created_at: b.created_at,
        finished_at: b.finished_at,
        results: format!("/v1/batches/{}/results", b.id),
    }
}

/// Upload events: a CSV file or NDJSON, of any size, streamed.
///
/// Every row is gated and stored like an event sent to `/v1/events`; the
/// answer comes when the last row is stored, with the counters, and each
/// row's result is at `results`. A row dated before the late-arrival bound
/// is accepted and flagged `LATE`. An upload that stops early answers the
/// error with the batch as far as it got: the rows before the stop are
/// stored, and uploading the same file again is safe (they answer
/// `DUPLICATE`).
#[utoipa::path(operation_id = "upload_batch", post, path = "/v1/batches", tag = "batches",
    request_body(description = "One event per line (aforo JSON), or a CSV header row \
        (`id`, `source`, `type`, `customer`, `time`, `subject`; other columns are properties) \
        and one event per record.",
        content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
    responses(
        (status = 200, description = "Every row read and answered", body = v1::Batch),
        (status = 415, description = "Neither CSV nor NDJSON", body = ErrorBody),
        (status = 422, description = "The file is unusable, e.g. a CSV without a header row", body = v1::BatchFailed),
        (status = 503, description = "The upload broke off or the store failed; retry the file", body = v1::BatchFailed),
    ))]
async fn upload(
    State(state): State<BatchState>,
    Authed(tenant): Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let format = Format::of(&headers)?;
    let batch = Batch {
        id: Uuid::now_v7(),
        tenant: tenant.id,
        format: format.as_str().to_owned(),
        status: BatchStatus::Running,
        rows: 0,
        accepted: 0,
        duplicates: 0,
        rejected: 0,
        error: None,
        created_at: state.clock.now(),
        finished_at: None,
    };
    state.store.create_batch(&batch).await?;
    let outcome = run(&state, &tenant, &batch, format, body).await;
    let (status, error) = match &outcome {
        Ok(()) => (BatchStatus::Complete, None),
        Err(e) => (BatchStatus::Failed, Some(e.message())),
    };
    state
        .store
        .finish_batch(tenant.id, batch.id, status, error, state.clock.now())
        .await?;
    let stored = state
        .store
        .batch(tenant.id, batch.id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the batch vanished",
            )
        })?;
    let summary = batch_view(&stored);
    Ok(match outcome {
        Ok(()) => Json(summary).into_response(),
        // Rows before the failure stand; uploading again is safe, since
        // stored rows answer DUPLICATE.
        Err(e) => {
            let (status, code) = match e {
                Stopped::Input(_) => (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BATCH"),
                Stopped::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            };
            let failed = v1::BatchFailed {
                error: ErrorDetail {
                    code: code.to_owned(),
                    message: e.message().to_owned(),
                    details: None,
                },
                batch: summary,
            };
            (status, Json(failed)).into_response()
        }
    })
}

/// Why an upload stopped before its end.
#[derive(Debug)]
enum Stopped {
    /// The file itself is unusable (no CSV header, say).
    Input(String),
    /// The connection broke, or the store failed: retry.
    Unavailable(String),
}

impl Stopped {
    fn message(&self) -> &str {
        match self {
            Stopped::Input(m) | Stopped::Unavailable(m) => m,
        }
    }
}

impl From<String> for Stopped {
    fn from(message: String) -> Self {
        Stopped::Unavailable(message)
    }
}

/// Streams the body through the gates; `Err` says why it stopped early.
async fn run(
    state: &BatchState,
    tenant: &Tenant,
    batch: &Batch,
    format: Format,
    body: Body,
) -> Result<(), Stopped> {
    let mut stream = body.into_data_stream();
    let mut splitter = RowSplitter::new(format, state.max_row_bytes);
    let mut decoder = RowDecoder::new(format, batch.id, state.max_json_depth);
    let mut needs_header = format == Format::Csv;
    let mut rows: Vec<Row> = Vec::new();
    let mut in_flight: FuturesOrdered<Ingesting> = FuturesOrdered::new();
    let mut pending = PendingResults::default();
    let store = state.store.as_ref();

    // Takes finished chunks off the front, keeping at most `keep` in flight.
    async fn drain(
        in_flight: &mut FuturesOrdered<Ingesting>,
        keep: usize,
        pending: &mut PendingResults,
        store: &dyn Store,
        metrics: &crate::metrics::Metrics,
        tenant: Uuid,
        batch: Uuid,
    ) -> Result<(), String> {
        while in_flight.len() > keep {
            let Some(done) = in_flight.next().await else {
                break;
            };
            let chunk = done.map_err(|e| format!("a chunk's task failed: {e}"))??;
            metrics.count_batch_rows(
                u64::from(chunk.outcome.accepted),
                u64::from(chunk.outcome.duplicates),
                u64::from(chunk.outcome.rejected),
            );
            pending.add(&chunk);
            if pending.rows as usize >= RESULT_CHUNK_ROWS {
                pending.flush(store, tenant, batch).await?;
            }
        }
        Ok(())
    }
    let metrics = state.ingestor.metrics().clone();

    let mut ended = false;
    while !ended {
        let data: Bytes = match stream.next().await {
            Some(Ok(data)) => data,
            Some(Err(e)) => {
                drain(
                    &mut in_flight,
                    0,
                    &mut pending,
                    store,
                    &metrics,
                    tenant.id,
                    batch.id,
                )
                .await?;
                pending.flush(store, tenant.id, batch.id).await?;
                return Err(Stopped::Unavailable(format!("the upload broke off: {e}")));
            }
            None => {
                ended = true;
                Bytes::new()
            }
        };
        splitter.feed(&data, &mut rows);
        if ended {
            splitter.end(&mut rows);
        }
        if needs_header && !rows.is_empty() {
            match rows.remove(0) {
                Row::Text { bytes, .. } => decoder.set_header(&bytes).map_err(Stopped::Input)?,
                Row::TooLong { .. } => {
                    return Err(Stopped::Input("the header row is too long".into()));
                }
            }
            needs_header = false;
        }
        while rows.len() >= CHUNK_ROWS || (ended && !rows.is_empty()) {
            let rest = rows.split_off(rows.len().min(CHUNK_ROWS));
            let chunk = std::mem::replace(&mut rows, rest);
            in_flight.push_back(spawn_chunk(state, tenant, &decoder, chunk));
            drain(
                &mut in_flight,
                IN_FLIGHT - 1,
                &mut pending,
                store,
                &metrics,
                tenant.id,
                batch.id,
            )
            .await?;
        }
    }
    if needs_header {
        return Err(Stopped::Input(
            "the upload is empty: a CSV batch needs a header row".into(),
        ));
    }
    drain(
        &mut in_flight,
        0,
        &mut pending,
        store,
        &metrics,
        tenant.id,
        batch.id,
    )
    .await?;
    Ok(pending.flush(store, tenant.id, batch.id).await?)
}

fn batch_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{text:?} is not a batch id"),
        )
    })
}

/// An upload's status and counters.
#[utoipa::path(operation_id = "get_batch", get, path = "/v1/batches/{id}", tag = "batches",
    params(("id" = String, Path, description = "The `batch_id` of the upload")),
    responses(
        (status = 200, body = v1::Batch),
        (status = 404, description = "No such batch for this key", body = ErrorBody),
    ))]
async fn show(
    State(state): State<BatchState>,
    Authed(tenant): Authed,
    Path(id): Path<String>,
) -> Result<Json<v1::Batch>, ApiError> {
    let id = batch_id(&id)?;
    match state.store.batch(tenant.id, id).await? {
        Some(b) => Ok(Json(batch_view(&b))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no batch {id}"),
        )),
    }
}

/// A route that takes no query parameters: any is an error, not ignored.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParameters {}

/// Each row's result: one NDJSON line per row, in file order.
///
/// Streamed as stored, a few thousand rows at a time, so a file of
/// millions of rows is read with bounded memory on both sides.
#[utoipa::path(operation_id = "get_batch_results", get, path = "/v1/batches/{id}/results", tag = "batches",
    params(("id" = String, Path, description = "The `batch_id` of the upload")),
    responses(
        (status = 200, description = "One `RowResult` per line", content_type = "application/x-ndjson", body = RowResult),
        (status = 404, description = "No such batch for this key", body = ErrorBody),
    ))]
async fn results(
    State(state): State<BatchState>,
    Authed(tenant): Authed,
    Path(id): Path<String>,
    ApiQuery(NoParameters {}): ApiQuery<NoParameters>,
) -> Result<Response, ApiError> {
    let id = batch_id(&id)?;
    if state.store.batch(tenant.id, id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no batch {id}"),
        ));
    }
    let store = state.store.clone();
    let pages = futures::stream::unfold(Some(None), move |after: Option<Option<i64>>| {
        let store = store.clone();
        async move {
            let after = after?;
            match store.batch_results(tenant.id, id, after, 8).await {
                Ok(chunks) if chunks.is_empty() => None,
                Ok(chunks) => {
                    let last = chunks.last().map(|c| c.chunk);
                    let text: String = chunks.into_iter().map(|c| c.results).collect();
                    Some((
                        Ok::<_, aforo_store::StoreError>(Bytes::from(text)),
                        Some(last),
                    ))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn split(format: Format, max: usize, pieces: &[&[u8]]) -> Vec<Row> {
        let mut splitter = RowSplitter::new(format, max);
        let mut out = Vec::new();
        for piece in pieces {
            splitter.feed(piece, &mut out);
        }
        splitter.end(&mut out);
        out
    }

    fn text(number: u64, s: &str) -> Row {
        Row::Text {
            number,
            bytes: s.as_bytes().to_vec(),
        }
    }

    #[test]
    fn rows_are_cut_at_line_breaks_across_pieces_and_blank_lines_skipped() {
        let rows = split(
            Format::Ndjson,
            100,
            &[b"{\"a\":1}\r\n{\"b\"", b":2}\n\n", b"{\"c\":3}"],
        );
        assert_eq!(
            rows,
            [
                text(1, "{\"a\":1}"),
                text(2, "{\"b\":2}"),
                text(4, "{\"c\":3}")
            ]
        );
    }

    #[test]
    fn a_quoted_csv_field_may_hold_a_line_break() {
        let rows = split(
            Format::Csv,
            100,
            &[b"id,note\n1,\"two\nlines\"\n2,\"say \"\"hi\"\"\"\n"],
        );
        assert_eq!(
            rows,
            [
                text(1, "id,note"),
                text(2, "1,\"two\nlines\""),
                // The row starts on line 4.
                text(4, "2,\"say \"\"hi\"\"\"")
            ]
        );
    }

    #[test]
    fn a_quote_inside_an_unquoted_csv_field_opens_nothing() {
        // A toggle on every quote would read rows 2 and 3 as one record.
        let rows = split(Format::Csv, 100, &[b"id,note\n1,a 5\" scr", b"een\n2,ok\n"]);
        assert_eq!(
            rows,
            [
                text(1, "id,note"),
                text(2, "1,a 5\" screen"),
                text(3, "2,ok")
            ]
        );
    }

    #[test]
    fn csv_rows_are_numbered_by_their_first_line_whatever_the_line_ends() {
        let rows = split(Format::Csv, 100, &[b"h\r\n\r", b"\n1,\"x\r\ny\"\r\n\n2,z"]);
        assert_eq!(
            rows,
            [text(1, "h"), text(3, "1,\"x\r\ny\""), text(6, "2,z")]
        );
        let long = split(Format::Csv, 10, &[b"h\n", &[b'x'; 100], b"\n1,y\n"]);
        assert!(
            matches!(&long[1], Row::TooLong { number: 2, .. }),
            "{long:?}"
        );
        assert_eq!(long[2], text(3, "1,y"));
    }

    #[test]
    fn an_overlong_row_is_cut_off_not_held() {
        let long = vec![b'x'; 1000];
        let rows = split(Format::Ndjson, 10, &[&long, b"\n{}\n"]);
        assert!(matches!(&rows[0], Row::TooLong { number: 1, prefix } if prefix.len() <= 256));
        assert_eq!(rows[1], text(2, "{}"));
    }

    #[test]
    fn csv_columns_beyond_the_event_fields_are_properties() {
        let mut d = RowDecoder::new(Format::Csv, Uuid::nil(), 16);
        d.set_header(b"id,type,customer,time,tokens,model,properties")
            .unwrap();
        let c = d.decode(
            b"e1,tokens,acme,2026-11-29T12:00:00Z,1200,gpt,\"{\"\"region\"\":\"\"eu\"\"}\"",
        );
        assert_eq!(c.id.as_deref(), Some("e1"));
        assert_eq!(
            c.properties,
            Some(json!({"tokens": 1200, "model": "gpt", "region": "eu"}))
        );
        assert_eq!(c.tier, None);
        assert_eq!(
            c.tier_detail.as_deref(),
            Some("batch/00000000-0000-0000-0000-000000000000")
        );
        assert!(c.malformed.is_none());
        let short = d.decode(b"e2,tokens");
        assert_eq!(
            short.malformed.as_deref(),
            Some("the row has 2 fields; the header has 7")
        );
        let err = d.clone().set_header(b"id,type,time").unwrap_err();
        assert!(err.contains("no \"customer\" column"), "{err}");
    }
}
