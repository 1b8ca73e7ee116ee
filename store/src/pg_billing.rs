//! PostgreSQL: invoices, their lineage and deliveries, bill runs,
//! subscription discounts, and the reads a bill run makes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::billing::{
    BillEvent, BillRunRecord, Delivery, InvoiceQuery, NewInvoice, SettleOutcome, StoredInvoice,
    SubscriptionDiscount, invoice_number, pack_ids, unpack_ids,
};
use crate::enrichment::{TotalKey, TotalState};
use crate::model::clamp_limit;
use crate::pg_enrichment::total_from_row;
use crate::postgres::event_from_row;
use crate::{PgStore, Result, StoreError, StoredEvent};

macro_rules! event_columns {
    () => {
        "e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
    e.properties::text AS properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
    e.validation_hash, e.received_at, e.node, NULL::text AS enrichment"
    };
}

macro_rules! invoice_columns {
    () => {
        "id, number, subscription_id, customer, period_start, period_end,
    cutoff, currency, total, bill_run_id, document, document_hash, settled_at"
    };
}

fn invoice_from_row(r: &PgRow) -> Result<StoredInvoice> {
    Ok(StoredInvoice {
        id: r.try_get("id")?,
        number: r.try_get("number")?,
        subscription: r.try_get("subscription_id")?,
        customer: r.try_get("customer")?,
        period_start: r.try_get("period_start")?,
        period_end: r.try_get("period_end")?,
        cutoff: r.try_get("cutoff")?,
        currency: r.try_get("currency")?,
        total: r.try_get("total")?,
        bill_run: r.try_get("bill_run_id")?,
        document: r.try_get("document")?,
        document_hash: r.try_get("document_hash")?,
        settled_at: r.try_get("settled_at")?,
    })
}

fn run_from_row(r: &PgRow) -> Result<BillRunRecord> {
    Ok(BillRunRecord {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant_id")?,
        as_of: r.try_get("as_of")?,
        cutoff: r.try_get("cutoff")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        invoiced: i64::from(r.try_get::<i32, _>("invoiced")?),
        failed: i64::from(r.try_get::<i32, _>("failed")?),
        report: r.try_get("report")?,
    })
}

impl PgStore {
    pub(crate) async fn pg_bill_events(
        &self,
        tenant: Uuid,
        customers: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        stored_until: DateTime<Utc>,
    ) -> Result<Vec<BillEvent>> {
        let rows = sqlx::query(
            "SELECT id, type, customer, time, properties::text AS properties, validation_hash,
                 received_at
             FROM events
             WHERE tenant_id = $1 AND customer = ANY($2)
               AND time >= $3 AND time < $4 AND received_at <= $5
             ",
        )
        .bind(tenant)
        .bind(customers)
        .bind(from)
        .bind(to)
        .bind(stored_until)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let properties: &str = r.try_get("properties")?;
                Ok(BillEvent {
                    stored_id: r.try_get("id")?,
                    event_type: r.try_get("type")?,
                    customer: r.try_get("customer")?,
                    time: r.try_get("time")?,
                    properties: serde_json::from_str(properties).map_err(|e| {
                        StoreError::Corrupt(format!("properties of a stored event: {e}"))
                    })?,
                    validation_hash: r.try_get("validation_hash")?,
                    received_at: r.try_get("received_at")?,
                })
            })
            .collect()
    }

    pub(crate) async fn pg_events_by_ids(
        &self,
        tenant: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<StoredEvent>> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e
             WHERE e.tenant_id = $1 AND e.id = ANY($2) ORDER BY e.id"
        );
        let rows = sqlx::query(sql)
            .bind(tenant)
            .bind(ids)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn pg_settle_invoices(
        &self,
        tenant: Uuid,
        invoices: &[NewInvoice],
    ) -> Result<Vec<SettleOutcome>> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO invoice_counters (tenant_id, next) VALUES ($1, 1)
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        // The counter row's lock serializes settling per tenant: numbers are
        // gapless and the existence check below cannot race.
        let mut next: i64 =
            sqlx::query_scalar("SELECT next FROM invoice_counters WHERE tenant_id = $1 FOR UPDATE")
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
        let subs: Vec<Uuid> = invoices.iter().map(|i| i.subscription).collect();
        let existing: Vec<(Uuid, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT subscription_id, period_start, number FROM invoices
             WHERE subscription_id = ANY($1)",
        )
        .bind(&subs)
        .fetch_all(&mut *tx)
        .await?;
        let mut outcomes = Vec::with_capacity(invoices.len());
        let mut fresh: Vec<(&NewInvoice, String)> = Vec::new();
        for inv in invoices {
            let done = existing
                .iter()
                .find(|(s, p, _)| *s == inv.subscription && *p == inv.period_start);
            match done {
                Some((_, _, number)) => outcomes.push(SettleOutcome::AlreadyInvoiced {
                    number: number.clone(),
                }),
                None if fresh.iter().any(|(f, _)| {
                    f.subscription == inv.subscription && f.period_start == inv.period_start
                }) =>
                {
                    return Err(StoreError::Invalid(format!(
                        "subscription {} period {} appears twice in one settlement",
                        inv.subscription, inv.period_start
                    )));
                }
                None => {
                    let number = invoice_number(next);
                    next += 1;
                    outcomes.push(SettleOutcome::Settled {
                        number: number.clone(),
                    });
                    fresh.push((inv, number));
                }
            }
        }
        if !fresh.is_empty() {
            let now = Utc::now();
            let col =
                |f: fn(&NewInvoice) -> Uuid| fresh.iter().map(|(i, _)| f(i)).collect::<Vec<_>>();
            let ids = col(|i| i.id);
            let subs = col(|i| i.subscription);
            let runs = col(|i| i.bill_run);
            let numbers: Vec<&str> = fresh.iter().map(|(_, n)| n.as_str()).collect();
            let customers: Vec<&str> = fresh.iter().map(|(i, _)| i.customer.as_str()).collect();
            let starts: Vec<DateTime<Utc>> = fresh.iter().map(|(i, _)| i.period_start).collect();
            let ends: Vec<DateTime<Utc>> = fresh.iter().map(|(i, _)| i.period_end).collect();
            let cutoffs: Vec<DateTime<Utc>> = fresh.iter().map(|(i, _)| i.cutoff).collect();
            let currencies: Vec<&str> = fresh.iter().map(|(i, _)| i.currency.as_str()).collect();
            let totals: Vec<Decimal> = fresh.iter().map(|(i, _)| i.total).collect();
            let documents: Vec<&str> = fresh.iter().map(|(i, _)| i.document.as_str()).collect();
            let hashes: Vec<&str> = fresh
                .iter()
                .map(|(i, _)| i.document_hash.as_str())
                .collect();
            sqlx::query(
                "INSERT INTO invoices (id, tenant_id, number, subscription_id, customer,
                     period_start, period_end, cutoff, currency, total, bill_run_id, document,
                     document_hash, settled_at)
                 SELECT u.id, $1, u.number, u.sub, u.customer, u.ps, u.pe, u.cutoff, u.currency,
                     u.total, u.run, u.document, u.hash, $14
                 FROM UNNEST($2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::timestamptz[],
                     $7::timestamptz[], $8::timestamptz[], $9::text[], $10::numeric[], $11::uuid[],
                     $12::text[], $13::text[])
                     AS u(id, number, sub, customer, ps, pe, cutoff, currency, total, run, document, hash)",
            )
            .bind(tenant)
            .bind(&ids)
            .bind(&numbers)
            .bind(&subs)
            .bind(&customers)
            .bind(&starts)
            .bind(&ends)
            .bind(&cutoffs)
            .bind(&currencies)
            .bind(&totals)
            .bind(&runs)
            .bind(&documents)
            .bind(&hashes)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let mut l_inv = Vec::new();
            let mut l_no = Vec::new();
            let mut l_count = Vec::new();
            let mut l_ids = Vec::new();
            let mut d_ids = Vec::new();
            let mut d_inv = Vec::new();
            let mut d_route = Vec::new();
            for (inv, _) in &fresh {
                for (line, events) in &inv.lineage {
                    l_inv.push(inv.id);
                    l_no.push(*line as i32);
                    l_count.push(events.len() as i32);
                    l_ids.push(pack_ids(events));
                }
                for route in &inv.deliveries {
                    d_ids.push(Uuid::now_v7());
                    d_inv.push(inv.id);
                    d_route.push(route.as_str());
                }
            }
            sqlx::query(
                "INSERT INTO bill_run_event_index (invoice_id, line_no, event_count, event_ids)
                 SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::int[], $4::bytea[])",
            )
            .bind(&l_inv)
            .bind(&l_no)
            .bind(&l_count)
            .bind(&l_ids)
            .execute(&mut *tx)
            .await?;
            if !d_ids.is_empty() {
                sqlx::query(
                    "INSERT INTO invoice_deliveries (id, tenant_id, invoice_id, route, next_attempt_at)
                     SELECT u.id, $1, u.inv, u.route, $5
                     FROM UNNEST($2::uuid[], $3::uuid[], $4::text[]) AS u(id, inv, route)",
                )
                .bind(tenant)
                .bind(&d_ids)
                .bind(&d_inv)
                .bind(&d_route)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE invoice_counters SET next = $2 WHERE tenant_id = $1")
                .bind(tenant)
                .bind(next)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    pub(crate) async fn pg_invoices(
        &self,
        tenant: Uuid,
        q: &InvoiceQuery,
    ) -> Result<Vec<StoredInvoice>> {
        let sql = concat!(
            "SELECT ",
            invoice_columns!(),
            " FROM invoices
             WHERE tenant_id = $1 AND ($2::text IS NULL OR customer = $2)
               AND ($3::uuid IS NULL OR subscription_id = $3)
               AND ($4::text IS NULL OR number > $4)
             ORDER BY number LIMIT $5"
        );
        let limit = if q.limit == 0 {
            i64::MAX
        } else {
            i64::from(clamp_limit(q.limit))
        };
        let rows = sqlx::query(sql)
            .bind(tenant)
            .bind(&q.customer)
            .bind(q.subscription)
            .bind(&q.after)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(invoice_from_row).collect()
    }

    pub(crate) async fn pg_invoice(
        &self,
        tenant: Uuid,
        id_or_number: &str,
    ) -> Result<Option<StoredInvoice>> {
        let id = Uuid::parse_str(id_or_number).ok();
        let sql = concat!(
            "SELECT ",
            invoice_columns!(),
            " FROM invoices
             WHERE tenant_id = $1 AND (id = $2 OR number = $3)"
        );
        let row = sqlx::query(sql)
            .bind(tenant)
            .bind(id)
            .bind(id_or_number)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(invoice_from_row).transpose()
    }

    pub(crate) async fn pg_invoiced_periods(
        &self,
        tenant: Uuid,
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        Ok(sqlx::query_as(
            "SELECT subscription_id, period_start FROM invoices WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?)
    }

    pub(crate) async fn pg_line_events(
        &self,
        tenant: Uuid,
        invoice: Uuid,
        line: u32,
    ) -> Result<Option<Vec<Uuid>>> {
        let bytes: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT l.event_ids FROM bill_run_event_index l JOIN invoices i ON i.id = l.invoice_id
             WHERE i.tenant_id = $1 AND l.invoice_id = $2 AND l.line_no = $3",
        )
        .bind(tenant)
        .bind(invoice)
        .bind(line as i32)
        .fetch_optional(self.pool())
        .await?;
        bytes
            .map(|b| {
                unpack_ids(&b).ok_or_else(|| {
                    StoreError::Corrupt(format!("lineage of invoice {invoice} line {line}"))
                })
            })
            .transpose()
    }

    pub(crate) async fn pg_record_bill_run(&self, run: &BillRunRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO bill_runs (id, tenant_id, as_of, cutoff, started_at, finished_at,
                 invoiced, failed, report)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(run.id)
        .bind(run.tenant)
        .bind(run.as_of)
        .bind(run.cutoff)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(run.invoiced as i32)
        .bind(run.failed as i32)
        .bind(&run.report)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn pg_bill_runs(
        &self,
        tenant: Uuid,
        limit: u32,
    ) -> Result<Vec<BillRunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM bill_runs WHERE tenant_id = $1 ORDER BY started_at DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(i64::from(clamp_limit(limit)))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub(crate) async fn pg_add_subscription_discount(
        &self,
        tenant: Uuid,
        d: &SubscriptionDiscount,
    ) -> Result<()> {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM subscriptions WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(d.subscription)
                .fetch_optional(self.pool())
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(d.id)
        .bind(tenant)
        .bind(d.subscription)
        .bind(d.percent)
        .bind(d.amount)
        .bind(d.valid_from)
        .bind(d.valid_until)
        .bind(d.created_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn pg_subscription_discounts(
        &self,
        tenant: Uuid,
    ) -> Result<Vec<SubscriptionDiscount>> {
        let rows = sqlx::query(
            "SELECT * FROM subscription_discounts WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SubscriptionDiscount {
                    id: r.try_get("id")?,
                    subscription: r.try_get("subscription_id")?,
                    percent: r.try_get("percent")?,
                    amount: r.try_get("amount")?,
                    valid_from: r.try_get("valid_from")?,
                    valid_until: r.try_get("valid_until")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub(crate) async fn pg_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, invoice_id, route, attempts FROM invoice_deliveries
             WHERE delivered_at IS NULL AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.try_get("id")?,
                    tenant: r.try_get("tenant_id")?,
                    invoice: r.try_get("invoice_id")?,
                    route: r.try_get("route")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    pub(crate) async fn pg_finish_delivery(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        error: Option<&str>,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE invoice_deliveries SET attempts = attempts + 1, last_error = $3,
                 delivered_at = CASE WHEN $3::text IS NULL THEN $2 END,
                 next_attempt_at = $4
             WHERE id = $1",
        )
        .bind(id)
        .bind(at)
        .bind(error)
        .bind(retry_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn pg_running_totals_between(
        &self,
        tenant: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(TotalKey, TotalState)>> {
        let rows = sqlx::query(
            "SELECT subscription_id, meter, dimension, period_start, plan_terms, quantity, price,
                 latest_time
             FROM running_totals WHERE tenant_id = $1 AND period_start >= $2 AND period_start <= $3",
        )
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| total_from_row(tenant, r)).collect()
    }
}
