//! SQLite: catalog versions, customers and subscriptions.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::model::check_plan_change;
use crate::sqlite::{time, uuid};
use crate::{
    AppliedCatalog, CatalogVersion, Customer, CustomerInput, NewCatalogVersion, Result,
    SqliteStore, StoreError, Subscription, SubscriptionInput, SubscriptionPhase,
};

fn opt_time(micros: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    micros.map(time).transpose()
}

fn version_from_row(row: &SqliteRow) -> Result<CatalogVersion> {
    Ok(CatalogVersion {
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        effective_from: opt_time(row.try_get("effective_from")?)?,
        snapshot: row.try_get("snapshot")?,
        applied_at: time(row.try_get("applied_at")?)?,
    })
}

fn customer_from_row(row: &SqliteRow) -> Result<Customer> {
    let metadata: String = row.try_get("metadata")?;
    Ok(Customer {
        id: uuid(row.try_get("id")?)?,
        external_id: row.try_get("external_id")?,
        name: row.try_get("name")?,
        currency: row.try_get("currency")?,
        tax_region: row.try_get("tax_region")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("customer metadata: {e}")))?,
        created_at: time(row.try_get("created_at")?)?,
        updated_at: time(row.try_get("updated_at")?)?,
    })
}

impl SqliteStore {
    pub(crate) async fn sqlite_apply_catalog(
        &self,
        tenant: Uuid,
        new: &NewCatalogVersion,
    ) -> Result<AppliedCatalog> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let tenant = tenant.to_string();
        let latest = sqlx::query(
            "SELECT version, content_hash, effective_from, snapshot, applied_at FROM catalog_versions
             WHERE tenant_id = ?1 ORDER BY version DESC LIMIT 1",
        )
        .bind(&tenant)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(version_from_row)
        .transpose()?;
        if let Some(latest) = latest
            .clone()
            .filter(|l| l.content_hash == new.content_hash)
        {
            tx.rollback().await?;
            return Ok(AppliedCatalog {
                version: latest,
                created: false,
            });
        }
        let version = latest.map(|l| l.version).unwrap_or(0) + 1;
        let applied_at = Utc::now().timestamp_micros();
        sqlx::query(
            "INSERT INTO catalog_versions (tenant_id, version, content_hash, effective_from, snapshot, applied_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&tenant)
        .bind(version)
        .bind(&new.content_hash)
        .bind(new.effective_from.map(|t| t.timestamp_micros()))
        .bind(&new.snapshot)
        .bind(applied_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AppliedCatalog {
            version: CatalogVersion {
                version,
                content_hash: new.content_hash.clone(),
                effective_from: new.effective_from,
                snapshot: new.snapshot.clone(),
                applied_at: time(applied_at)?,
            },
            created: true,
        })
    }

    pub(crate) async fn sqlite_catalog_version(
        &self,
        tenant: Uuid,
        version: Option<i64>,
    ) -> Result<Option<CatalogVersion>> {
        let row = sqlx::query(
            "SELECT version, content_hash, effective_from, snapshot, applied_at FROM catalog_versions
             WHERE tenant_id = ?1 AND (?2 IS NULL OR version = ?2)
             ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant.to_string())
        .bind(version)
        .fetch_optional(self.readers())
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    pub(crate) async fn sqlite_catalog_versions(
        &self,
        tenant: Uuid,
    ) -> Result<Vec<CatalogVersion>> {
        let rows = sqlx::query(
            "SELECT version, content_hash, effective_from, snapshot, applied_at FROM catalog_versions
             WHERE tenant_id = ?1 ORDER BY version",
        )
        .bind(tenant.to_string())
        .fetch_all(self.readers())
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    pub(crate) async fn sqlite_upsert_customer(
        &self,
        tenant: Uuid,
        c: &CustomerInput,
    ) -> Result<(Customer, bool)> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let now = Utc::now().timestamp_micros();
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM customers WHERE tenant_id = ?1 AND external_id = ?2",
        )
        .bind(tenant.to_string())
        .bind(&c.external_id)
        .fetch_optional(&mut *tx)
        .await?;
        let metadata = serde_json::Value::Object(c.metadata.clone()).to_string();
        let created = existing.is_none();
        if created {
            sqlx::query(
                "INSERT INTO customers (id, tenant_id, external_id, name, currency, tax_region, metadata, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            )
            .bind(Uuid::now_v7().to_string())
            .bind(tenant.to_string())
            .bind(&c.external_id)
            .bind(&c.name)
            .bind(&c.currency)
            .bind(&c.tax_region)
            .bind(&metadata)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE customers SET name = ?3, currency = ?4, tax_region = ?5, metadata = ?6, updated_at = ?7
                 WHERE tenant_id = ?1 AND external_id = ?2",
            )
            .bind(tenant.to_string())
            .bind(&c.external_id)
            .bind(&c.name)
            .bind(&c.currency)
            .bind(&c.tax_region)
            .bind(&metadata)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let customer = self
            .sqlite_customer(tenant, &c.external_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("customer {:?} vanished", c.external_id)))?;
        Ok((customer, created))
    }

    pub(crate) async fn sqlite_customer(
        &self,
        tenant: Uuid,
        external_id: &str,
    ) -> Result<Option<Customer>> {
        let row = sqlx::query(
            "SELECT id, external_id, name, currency, tax_region, metadata, created_at, updated_at
             FROM customers WHERE tenant_id = ?1 AND external_id = ?2",
        )
        .bind(tenant.to_string())
        .bind(external_id)
        .fetch_optional(self.readers())
        .await?;
        row.as_ref().map(customer_from_row).transpose()
    }

    pub(crate) async fn sqlite_list_customers(
        &self,
        tenant: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Customer>> {
        let rows = sqlx::query(
            "SELECT id, external_id, name, currency, tax_region, metadata, created_at, updated_at
             FROM customers WHERE tenant_id = ?1 AND (?2 IS NULL OR external_id > ?2)
             ORDER BY external_id LIMIT ?3",
        )
        .bind(tenant.to_string())
        .bind(after)
        .bind(i64::from(crate::model::clamp_limit(limit)))
        .fetch_all(self.readers())
        .await?;
        rows.iter().map(customer_from_row).collect()
    }

    pub(crate) async fn sqlite_create_subscription(
        &self,
        tenant: Uuid,
        s: &SubscriptionInput,
    ) -> Result<Subscription> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let customer: String = sqlx::query_scalar(
            "SELECT id FROM customers WHERE tenant_id = ?1 AND external_id = ?2",
        )
        .bind(tenant.to_string())
        .bind(&s.customer)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no customer {:?}", s.customer)))?;
        let id = Uuid::now_v7();
        let now = Utc::now().timestamp_micros();
        sqlx::query(
            "INSERT INTO subscriptions (id, tenant_id, customer_id, starts_at, ends_at, billing_anchor_day, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(&customer)
        .bind(s.starts_at.timestamp_micros())
        .bind(s.ends_at.map(|t| t.timestamp_micros()))
        .bind(s.billing_anchor_day.map(i64::from))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO subscription_phases (subscription_id, starts_at, ends_at, rate_plan, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(id.to_string())
        .bind(s.starts_at.timestamp_micros())
        .bind(s.ends_at.map(|t| t.timestamp_micros()))
        .bind(&s.rate_plan)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.sqlite_load_subscriptions(tenant, None, Some(id))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt(format!("subscription {id} vanished")))
    }

    pub(crate) async fn sqlite_load_subscriptions(
        &self,
        tenant: Uuid,
        customer: Option<&str>,
        id: Option<Uuid>,
    ) -> Result<Vec<Subscription>> {
        let rows = sqlx::query(
            "SELECT s.id, c.external_id, s.starts_at, s.ends_at, s.billing_anchor_day, s.created_at,
                 p.starts_at AS phase_start, p.ends_at AS phase_end, p.rate_plan, p.recorded_at
             FROM subscriptions s
             JOIN customers c ON c.id = s.customer_id
             JOIN subscription_phases p ON p.subscription_id = s.id
             WHERE s.tenant_id = ?1 AND (?2 IS NULL OR c.external_id = ?2) AND (?3 IS NULL OR s.id = ?3)
             ORDER BY s.id, p.starts_at",
        )
        .bind(tenant.to_string())
        .bind(customer)
        .bind(id.map(|i| i.to_string()))
        .fetch_all(self.readers())
        .await?;
        let mut out: Vec<Subscription> = Vec::new();
        for row in rows {
            let id = uuid(row.try_get("id")?)?;
            let phase = SubscriptionPhase {
                starts_at: time(row.try_get("phase_start")?)?,
                ends_at: opt_time(row.try_get("phase_end")?)?,
                rate_plan: row.try_get("rate_plan")?,
                recorded_at: time(row.try_get("recorded_at")?)?,
            };
            match out.last_mut().filter(|s| s.id == id) {
                Some(sub) => sub.phases.push(phase),
                None => out.push(Subscription {
                    id,
                    customer: row.try_get("external_id")?,
                    starts_at: time(row.try_get("starts_at")?)?,
                    ends_at: opt_time(row.try_get("ends_at")?)?,
                    billing_anchor_day: row
                        .try_get::<Option<i64>, _>("billing_anchor_day")?
                        .and_then(|d| u8::try_from(d).ok()),
                    phases: vec![phase],
                    created_at: time(row.try_get("created_at")?)?,
                }),
            }
        }
        Ok(out)
    }

    pub(crate) async fn sqlite_change_plan(
        &self,
        tenant: Uuid,
        id: Uuid,
        rate_plan: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let current = self
            .sqlite_load_subscriptions(tenant, None, Some(id))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("no subscription {id}")))?;
        check_plan_change(&current, at)?;
        let open_start = current
            .phases
            .last()
            .map(|p| p.starts_at.timestamp_micros());
        sqlx::query("UPDATE subscription_phases SET ends_at = ?3 WHERE subscription_id = ?1 AND starts_at = ?2")
            .bind(id.to_string())
            .bind(open_start)
            .bind(at.timestamp_micros())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO subscription_phases (subscription_id, starts_at, ends_at, rate_plan, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(id.to_string())
        .bind(at.timestamp_micros())
        .bind(current.ends_at.map(|t| t.timestamp_micros()))
        .bind(rate_plan)
        .bind(Utc::now().timestamp_micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.sqlite_load_subscriptions(tenant, None, Some(id))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt(format!("subscription {id} vanished")))
    }
}
