//! SQLite: invoices, their lineage and deliveries, bill runs, subscription
//! discounts, and the reads a bill run makes. Same contract as
//! `pg_billing.rs`; the single writer connection serializes settling.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::billing::{
    BillEvent, BillRunRecord, Delivery, InvoiceQuery, NewInvoice, SettleOutcome, StoredInvoice,
    SubscriptionDiscount, invoice_number, pack_ids, unpack_ids,
};
use crate::enrichment::{TotalKey, TotalState};
use crate::model::clamp_limit;
use crate::sqlite::{event_from_row, time, uuid};
use crate::sqlite_enrichment::{decimal, total_from_row};
use crate::{Result, SqliteStore, StoreError, StoredEvent};

macro_rules! event_columns {
    () => {
        "e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
    e.properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
    e.validation_hash, e.received_at, e.node, NULL AS enrichment"
    };
}

macro_rules! invoice_columns {
    () => {
        "id, number, subscription_id, customer, period_start, period_end,
    cutoff, currency, total, bill_run_id, document, document_hash, settled_at"
    };
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn opt_time(v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(time).transpose()
}

fn opt_decimal(v: Option<String>) -> Result<Option<rust_decimal::Decimal>> {
    v.as_deref().map(decimal).transpose()
}

fn invoice_from_row(r: &SqliteRow) -> Result<StoredInvoice> {
    Ok(StoredInvoice {
        id: uuid(r.try_get("id")?)?,
        number: r.try_get("number")?,
        subscription: uuid(r.try_get("subscription_id")?)?,
        customer: r.try_get("customer")?,
        period_start: time(r.try_get("period_start")?)?,
        period_end: time(r.try_get("period_end")?)?,
        cutoff: time(r.try_get("cutoff")?)?,
        currency: r.try_get("currency")?,
        total: decimal(r.try_get("total")?)?,
        bill_run: uuid(r.try_get("bill_run_id")?)?,
        document: r.try_get("document")?,
        document_hash: r.try_get("document_hash")?,
        settled_at: time(r.try_get("settled_at")?)?,
    })
}

impl SqliteStore {
    pub(crate) async fn sqlite_bill_events(
        &self,
        tenant: Uuid,
        customers: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        stored_until: DateTime<Utc>,
    ) -> Result<Vec<BillEvent>> {
        let rows = sqlx::query(
            "SELECT id, type, customer, time, properties, validation_hash, received_at
             FROM events
             WHERE tenant_id = ?1 AND customer IN (SELECT value FROM json_each(?2))
               AND time >= ?3 AND time < ?4 AND received_at <= ?5
             ",
        )
        .bind(tenant.to_string())
        .bind(serde_json::to_string(customers).unwrap_or_default())
        .bind(us(from))
        .bind(us(to))
        .bind(us(stored_until))
        .fetch_all(self.readers())
        .await?;
        rows.iter()
            .map(|r| {
                let properties: &str = r.try_get("properties")?;
                Ok(BillEvent {
                    stored_id: uuid(r.try_get("id")?)?,
                    event_type: r.try_get("type")?,
                    customer: r.try_get("customer")?,
                    time: time(r.try_get("time")?)?,
                    properties: serde_json::from_str(properties).map_err(|e| {
                        StoreError::Corrupt(format!("properties of a stored event: {e}"))
                    })?,
                    validation_hash: r.try_get("validation_hash")?,
                    received_at: time(r.try_get("received_at")?)?,
                })
            })
            .collect()
    }

    pub(crate) async fn sqlite_events_by_ids(
        &self,
        tenant: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<StoredEvent>> {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e
             WHERE e.tenant_id = ?1 AND e.id IN (SELECT value FROM json_each(?2)) ORDER BY e.id"
        );
        let rows = sqlx::query(sql)
            .bind(tenant.to_string())
            .bind(serde_json::to_string(&ids).unwrap_or_default())
            .fetch_all(self.readers())
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn sqlite_settle_invoices(
        &self,
        tenant: Uuid,
        invoices: &[NewInvoice],
    ) -> Result<Vec<SettleOutcome>> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let t = tenant.to_string();
        sqlx::query("INSERT OR IGNORE INTO invoice_counters (tenant_id, next) VALUES (?1, 1)")
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        let mut next: i64 =
            sqlx::query_scalar("SELECT next FROM invoice_counters WHERE tenant_id = ?1")
                .bind(&t)
                .fetch_one(&mut *tx)
                .await?;
        let now = us(Utc::now());
        let mut outcomes = Vec::with_capacity(invoices.len());
        for inv in invoices {
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT number FROM invoices WHERE subscription_id = ?1 AND period_start = ?2",
            )
            .bind(inv.subscription.to_string())
            .bind(us(inv.period_start))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(number) = existing {
                outcomes.push(SettleOutcome::AlreadyInvoiced { number });
                continue;
            }
            let number = invoice_number(next);
            next += 1;
            sqlx::query(
                "INSERT INTO invoices (id, tenant_id, number, subscription_id, customer,
                     period_start, period_end, cutoff, currency, total, bill_run_id, document,
                     document_hash, settled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )
            .bind(inv.id.to_string())
            .bind(&t)
            .bind(&number)
            .bind(inv.subscription.to_string())
            .bind(&inv.customer)
            .bind(us(inv.period_start))
            .bind(us(inv.period_end))
            .bind(us(inv.cutoff))
            .bind(&inv.currency)
            .bind(inv.total.to_string())
            .bind(inv.bill_run.to_string())
            .bind(&inv.document)
            .bind(&inv.document_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for (line, events) in &inv.lineage {
                sqlx::query(
                    "INSERT INTO bill_run_event_index (invoice_id, line_no, event_count, event_ids)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .bind(inv.id.to_string())
                .bind(i64::from(*line))
                .bind(events.len() as i64)
                .bind(pack_ids(events))
                .execute(&mut *tx)
                .await?;
            }
            for route in &inv.deliveries {
                sqlx::query(
                    "INSERT INTO invoice_deliveries (id, tenant_id, invoice_id, route, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .bind(Uuid::now_v7().to_string())
                .bind(&t)
                .bind(inv.id.to_string())
                .bind(route)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            outcomes.push(SettleOutcome::Settled { number });
        }
        sqlx::query("UPDATE invoice_counters SET next = ?2 WHERE tenant_id = ?1")
            .bind(&t)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    pub(crate) async fn sqlite_invoices(
        &self,
        tenant: Uuid,
        q: &InvoiceQuery,
    ) -> Result<Vec<StoredInvoice>> {
        let sql = concat!(
            "SELECT ",
            invoice_columns!(),
            " FROM invoices
             WHERE tenant_id = ?1 AND (?2 IS NULL OR customer = ?2)
               AND (?3 IS NULL OR subscription_id = ?3)
               AND (?4 IS NULL OR number > ?4)
             ORDER BY number LIMIT ?5"
        );
        let limit = if q.limit == 0 {
            i64::MAX
        } else {
            i64::from(clamp_limit(q.limit))
        };
        let rows = sqlx::query(sql)
            .bind(tenant.to_string())
            .bind(&q.customer)
            .bind(q.subscription.map(|s| s.to_string()))
            .bind(&q.after)
            .bind(limit)
            .fetch_all(self.readers())
            .await?;
        rows.iter().map(invoice_from_row).collect()
    }

    pub(crate) async fn sqlite_invoice(
        &self,
        tenant: Uuid,
        id_or_number: &str,
    ) -> Result<Option<StoredInvoice>> {
        let sql = concat!(
            "SELECT ",
            invoice_columns!(),
            " FROM invoices WHERE tenant_id = ?1 AND (id = ?2 OR number = ?2)"
        );
        let key = Uuid::parse_str(id_or_number).map_or(id_or_number.to_owned(), |u| u.to_string());
        let row = sqlx::query(sql)
            .bind(tenant.to_string())
            .bind(key)
            .fetch_optional(self.readers())
            .await?;
        row.as_ref().map(invoice_from_row).transpose()
    }

    pub(crate) async fn sqlite_invoiced_periods(
        &self,
        tenant: Uuid,
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT subscription_id, period_start FROM invoices WHERE tenant_id = ?1",
        )
        .bind(tenant.to_string())
        .fetch_all(self.readers())
        .await?;
        rows.into_iter()
            .map(|(s, p)| Ok((uuid(&s)?, time(p)?)))
            .collect()
    }

    pub(crate) async fn sqlite_line_events(
        &self,
        tenant: Uuid,
        invoice: Uuid,
        line: u32,
    ) -> Result<Option<Vec<Uuid>>> {
        let bytes: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT l.event_ids FROM bill_run_event_index l JOIN invoices i ON i.id = l.invoice_id
             WHERE i.tenant_id = ?1 AND l.invoice_id = ?2 AND l.line_no = ?3",
        )
        .bind(tenant.to_string())
        .bind(invoice.to_string())
        .bind(i64::from(line))
        .fetch_optional(self.readers())
        .await?;
        bytes
            .map(|b| {
                unpack_ids(&b).ok_or_else(|| {
                    StoreError::Corrupt(format!("lineage of invoice {invoice} line {line}"))
                })
            })
            .transpose()
    }

    pub(crate) async fn sqlite_record_bill_run(&self, run: &BillRunRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO bill_runs (id, tenant_id, as_of, cutoff, started_at, finished_at,
                 invoiced, failed, report)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(run.id.to_string())
        .bind(run.tenant.to_string())
        .bind(us(run.as_of))
        .bind(us(run.cutoff))
        .bind(us(run.started_at))
        .bind(us(run.finished_at))
        .bind(run.invoiced)
        .bind(run.failed)
        .bind(&run.report)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub(crate) async fn sqlite_bill_runs(
        &self,
        tenant: Uuid,
        limit: u32,
    ) -> Result<Vec<BillRunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM bill_runs WHERE tenant_id = ?1 ORDER BY started_at DESC LIMIT ?2",
        )
        .bind(tenant.to_string())
        .bind(i64::from(clamp_limit(limit)))
        .fetch_all(self.readers())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BillRunRecord {
                    id: uuid(r.try_get("id")?)?,
                    tenant: uuid(r.try_get("tenant_id")?)?,
                    as_of: time(r.try_get("as_of")?)?,
                    cutoff: time(r.try_get("cutoff")?)?,
                    started_at: time(r.try_get("started_at")?)?,
                    finished_at: time(r.try_get("finished_at")?)?,
                    invoiced: r.try_get("invoiced")?,
                    failed: r.try_get("failed")?,
                    report: r.try_get("report")?,
                })
            })
            .collect()
    }

    pub(crate) async fn sqlite_add_subscription_discount(
        &self,
        tenant: Uuid,
        d: &SubscriptionDiscount,
    ) -> Result<()> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM subscriptions WHERE tenant_id = ?1 AND id = ?2")
                .bind(tenant.to_string())
                .bind(d.subscription.to_string())
                .fetch_optional(self.readers())
                .await?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!(
                "subscription {}",
                d.subscription
            )));
        }
        sqlx::query(
            "INSERT INTO subscription_discounts (id, tenant_id, subscription_id, percent, amount,
                 valid_from, valid_until, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(d.id.to_string())
        .bind(tenant.to_string())
        .bind(d.subscription.to_string())
        .bind(d.percent.map(|p| p.to_string()))
        .bind(d.amount.map(|a| a.to_string()))
        .bind(d.valid_from.map(us))
        .bind(d.valid_until.map(us))
        .bind(us(d.created_at))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub(crate) async fn sqlite_subscription_discounts(
        &self,
        tenant: Uuid,
    ) -> Result<Vec<SubscriptionDiscount>> {
        let rows = sqlx::query(
            "SELECT * FROM subscription_discounts WHERE tenant_id = ?1 ORDER BY created_at, id",
        )
        .bind(tenant.to_string())
        .fetch_all(self.readers())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SubscriptionDiscount {
                    id: uuid(r.try_get("id")?)?,
                    subscription: uuid(r.try_get("subscription_id")?)?,
                    percent: opt_decimal(r.try_get("percent")?)?,
                    amount: opt_decimal(r.try_get("amount")?)?,
                    valid_from: opt_time(r.try_get("valid_from")?)?,
                    valid_until: opt_time(r.try_get("valid_until")?)?,
                    created_at: time(r.try_get("created_at")?)?,
                })
            })
            .collect()
    }

    pub(crate) async fn sqlite_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, invoice_id, route, attempts FROM invoice_deliveries
             WHERE delivered_at IS NULL AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, id LIMIT ?2",
        )
        .bind(us(now))
        .bind(i64::from(limit))
        .fetch_all(self.readers())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    id: uuid(r.try_get("id")?)?,
                    tenant: uuid(r.try_get("tenant_id")?)?,
                    invoice: uuid(r.try_get("invoice_id")?)?,
                    route: r.try_get("route")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    pub(crate) async fn sqlite_finish_delivery(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        error: Option<&str>,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE invoice_deliveries SET attempts = attempts + 1, last_error = ?3,
                 delivered_at = CASE WHEN ?3 IS NULL THEN ?2 END,
                 next_attempt_at = ?4
             WHERE id = ?1",
        )
        .bind(id.to_string())
        .bind(us(at))
        .bind(error)
        .bind(us(retry_at))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub(crate) async fn sqlite_running_totals_between(
        &self,
        tenant: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(TotalKey, TotalState)>> {
        let rows = sqlx::query(
            "SELECT subscription_id, meter, dimension, period_start, plan_terms, quantity, price,
                 latest_time
             FROM running_totals WHERE tenant_id = ?1 AND period_start >= ?2 AND period_start <= ?3",
        )
        .bind(tenant.to_string())
        .bind(us(from))
        .bind(us(to))
        .fetch_all(self.readers())
        .await?;
        rows.iter().map(|r| total_from_row(tenant, r)).collect()
    }
}
