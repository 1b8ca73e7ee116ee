//! SQLite: rejected webhook deliveries and batch uploads.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::intake::*;
use crate::model::clamp_limit;
use crate::pg_intake::{headers_from_json, headers_to_json, status};
use crate::sqlite::{time, uuid};
use crate::{Page, Result, SqliteStore, StoreError};

fn webhook_rejection_from_row(row: &SqliteRow) -> Result<StoredWebhookRejection> {
    let tenant: Option<String> = row.try_get("tenant_id")?;
    Ok(StoredWebhookRejection {
        seq: row.try_get("seq")?,
        rejection: NewWebhookRejection {
            stored_id: uuid(row.try_get("id")?)?,
            tenant: tenant.as_deref().map(uuid).transpose()?,
            namespace: row.try_get("namespace")?,
            source: row.try_get("source")?,
            provider: row.try_get("provider")?,
            reason: row.try_get("reason")?,
            message: row.try_get("message")?,
            headers: headers_from_json(row.try_get("headers")?)?,
            body: row.try_get("body")?,
            received_at: time(row.try_get("received_at")?)?,
            node: row.try_get("node")?,
        },
    })
}

fn batch_from_row(row: &SqliteRow) -> Result<Batch> {
    let finished: Option<i64> = row.try_get("finished_at")?;
    Ok(Batch {
        id: uuid(row.try_get("id")?)?,
        tenant: uuid(row.try_get("tenant_id")?)?,
        format: row.try_get("format")?,
        status: status(row.try_get("status")?)?,
        rows: row.try_get("row_count")?,
        accepted: row.try_get("accepted")?,
        duplicates: row.try_get("duplicates")?,
        rejected: row.try_get("rejected")?,
        error: row.try_get("error")?,
        created_at: time(row.try_get("created_at")?)?,
        finished_at: finished.map(time).transpose()?,
    })
}

fn not_running(batch: Uuid) -> StoreError {
    StoreError::NotFound(format!(
        "batch {batch} is not a running batch of this tenant"
    ))
}

impl SqliteStore {
    pub(crate) async fn sqlite_record_webhook_rejection(
        &self,
        r: &NewWebhookRejection,
    ) -> Result<()> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO webhook_rejections (id, tenant_id, namespace, source, provider, reason,
                 message, headers, body, received_at, node)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(r.stored_id.to_string())
        .bind(r.tenant.map(|t| t.to_string()))
        .bind(&r.namespace)
        .bind(&r.source)
        .bind(&r.provider)
        .bind(&r.reason)
        .bind(&r.message)
        .bind(headers_to_json(&r.headers))
        .bind(&r.body)
        .bind(r.received_at.timestamp_micros())
        .bind(&r.node)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn sqlite_list_webhook_rejections(
        &self,
        tenant: Uuid,
        query: &WebhookRejectionQuery,
    ) -> Result<Page<StoredWebhookRejection>> {
        let limit = clamp_limit(query.limit);
        let rows = sqlx::query(
            "SELECT id, seq, tenant_id, namespace, source, provider, reason, message, headers,
                 body, received_at, node
             FROM webhook_rejections
             WHERE tenant_id = ?1 AND (?2 IS NULL OR source = ?2)
               AND (?3 IS NULL OR reason = ?3) AND seq > ?4
             ORDER BY seq
             LIMIT ?5",
        )
        .bind(tenant.to_string())
        .bind(&query.source)
        .bind(&query.reason)
        .bind(query.after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(self.readers())
        .await?;
        let items = rows
            .iter()
            .map(webhook_rejection_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::new(items, limit, |r| r.seq))
    }

    pub(crate) async fn sqlite_create_batch(&self, b: &Batch) -> Result<()> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO batches (id, tenant_id, format, status, row_count, accepted, duplicates,
                 rejected, error, created_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(b.id.to_string())
        .bind(b.tenant.to_string())
        .bind(&b.format)
        .bind(b.status.as_str())
        .bind(b.rows)
        .bind(b.accepted)
        .bind(b.duplicates)
        .bind(b.rejected)
        .bind(&b.error)
        .bind(b.created_at.timestamp_micros())
        .bind(b.finished_at.map(|t| t.timestamp_micros()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn sqlite_append_batch_results(
        &self,
        tenant: Uuid,
        batch: Uuid,
        c: &BatchResultChunk,
    ) -> Result<()> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let updated = sqlx::query(
            "UPDATE batches SET row_count = row_count + ?3, accepted = accepted + ?4,
                 duplicates = duplicates + ?5, rejected = rejected + ?6
             WHERE id = ?1 AND tenant_id = ?2 AND status = 'RUNNING'",
        )
        .bind(batch.to_string())
        .bind(tenant.to_string())
        .bind(c.rows)
        .bind(c.accepted)
        .bind(c.duplicates)
        .bind(c.rejected)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(not_running(batch));
        }
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT chunk FROM batch_results WHERE batch_id = ?1 AND chunk = ?2",
        )
        .bind(batch.to_string())
        .bind(c.chunk)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "batch {batch} already has chunk {}",
                c.chunk
            )));
        }
        sqlx::query(
            "INSERT INTO batch_results (batch_id, chunk, first_row, row_count, accepted,
                 duplicates, rejected, results)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(batch.to_string())
        .bind(c.chunk)
        .bind(c.first_row)
        .bind(c.rows)
        .bind(c.accepted)
        .bind(c.duplicates)
        .bind(c.rejected)
        .bind(&c.results)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn sqlite_finish_batch(
        &self,
        tenant: Uuid,
        batch: Uuid,
        status: BatchStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let updated = sqlx::query(
            "UPDATE batches SET status = ?3, error = ?4, finished_at = ?5
             WHERE id = ?1 AND tenant_id = ?2 AND status = 'RUNNING'",
        )
        .bind(batch.to_string())
        .bind(tenant.to_string())
        .bind(status.as_str())
        .bind(error)
        .bind(at.timestamp_micros())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(not_running(batch));
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn sqlite_batch(&self, tenant: Uuid, batch: Uuid) -> Result<Option<Batch>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, format, status, row_count, accepted, duplicates, rejected,
                 error, created_at, finished_at
             FROM batches WHERE id = ?1 AND tenant_id = ?2",
        )
        .bind(batch.to_string())
        .bind(tenant.to_string())
        .fetch_optional(self.readers())
        .await?;
        row.as_ref().map(batch_from_row).transpose()
    }

    pub(crate) async fn sqlite_batch_results(
        &self,
        tenant: Uuid,
        batch: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<BatchResultChunk>> {
        let rows = sqlx::query(
            "SELECT r.chunk, r.first_row, r.row_count, r.accepted, r.duplicates, r.rejected,
                 r.results
             FROM batch_results r JOIN batches b ON b.id = r.batch_id
             WHERE r.batch_id = ?1 AND b.tenant_id = ?2 AND r.chunk > ?3
             ORDER BY r.chunk
             LIMIT ?4",
        )
        .bind(batch.to_string())
        .bind(tenant.to_string())
        .bind(after.unwrap_or(-1))
        .bind(i64::from(limit.max(1)))
        .fetch_all(self.readers())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(BatchResultChunk {
                    chunk: row.try_get("chunk")?,
                    first_row: row.try_get("first_row")?,
                    rows: row.try_get("row_count")?,
                    accepted: row.try_get("accepted")?,
                    duplicates: row.try_get("duplicates")?,
                    rejected: row.try_get("rejected")?,
                    results: row.try_get("results")?,
                })
            })
            .collect()
    }
}
