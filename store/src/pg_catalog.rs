//! PostgreSQL: catalog versions, customers and subscriptions.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::Store;
use crate::changes::Change;
use crate::model::check_plan_change;
use crate::{
    AppliedCatalog, CatalogVersion, Customer, CustomerInput, NewCatalogVersion, PgStore, Result,
    StoreError, Subscription, SubscriptionInput, SubscriptionPhase,
};

fn version_from_row(row: &PgRow) -> Result<CatalogVersion> {
    Ok(CatalogVersion {
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        effective_from: row.try_get("effective_from")?,
        snapshot: row.try_get("snapshot")?,
        applied_at: row.try_get("applied_at")?,
    })
}

fn customer_from_row(row: &PgRow) -> Result<Customer> {
    let metadata: String = row.try_get("metadata")?;
    Ok(Customer {
        id: row.try_get("id")?,
        external_id: row.try_get("external_id")?,
        name: row.try_get("name")?,
        currency: row.try_get("currency")?,
        tax_region: row.try_get("tax_region")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("customer metadata: {e}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl PgStore {
    pub(crate) async fn pg_apply_catalog(
        &self,
        tenant: Uuid,
        new: &NewCatalogVersion,
    ) -> Result<AppliedCatalog> {
        let mut tx = self.pool().begin().await?;
        // Serializes applies of one tenant.
        sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no tenant {tenant}")))?;
        let latest = sqlx::query(
            "SELECT version, content_hash, effective_from, snapshot, applied_at FROM catalog_versions
             WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(version_from_row)
        .transpose()?;
        if let Some(latest) = latest.filter(|l| l.content_hash == new.content_hash) {
            tx.rollback().await?;
            return Ok(AppliedCatalog {
                version: latest,
                created: false,
            });
        }
        let row = sqlx::query(
            "INSERT INTO catalog_versions (tenant_id, version, content_hash, effective_from, snapshot, applied_at)
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 FROM catalog_versions WHERE tenant_id = $1
             RETURNING version, content_hash, effective_from, snapshot, applied_at",
        )
        .bind(tenant)
        .bind(&new.content_hash)
        .bind(new.effective_from)
        .bind(&new.snapshot)
        .bind(crate::postgres::micros(Utc::now()))
        .fetch_one(&mut *tx)
        .await?;
        let version = version_from_row(&row)?;
        crate::postgres::notify(&mut tx, self.changes(), &Change::Catalog { tenant }).await?;
        tx.commit().await?;
        Ok(AppliedCatalog {
            version,
            created: true,
        })
    }

    pub(crate) async fn pg_catalog_version(
        &self,
        tenant: Uuid,
        version: Option<i64>,
    ) -> Result<Option<CatalogVersion>> {
        let row = sqlx::query(
            "SELECT version, content_hash, effective_from, snapshot, applied_at FROM catalog_versions
             WHERE tenant_id = $1 AND ($2::bigint IS NULL OR version = $2)
             ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    pub(crate) async fn pg_catalog_versions(&self, tenant: Uuid) -> Result<Vec<CatalogVersion>> {
        let rows = sqlx::query(
            "SELECT version, content_hash, effective_from, snapshot, applied_at FROM catalog_versions
             WHERE tenant_id = $1 ORDER BY version",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    pub(crate) async fn pg_upsert_customer(
        &self,
        tenant: Uuid,
        c: &CustomerInput,
    ) -> Result<(Customer, bool)> {
        let now = crate::postgres::micros(Utc::now());
        let row = sqlx::query(
            "INSERT INTO customers (id, tenant_id, external_id, name, currency, tax_region, metadata, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (tenant_id, external_id) DO UPDATE SET
                 name = EXCLUDED.name, currency = EXCLUDED.currency, tax_region = EXCLUDED.tax_region,
                 metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at
             RETURNING id, external_id, name, currency, tax_region, metadata, created_at, updated_at,
                 (xmax = 0) AS created",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(&c.external_id)
        .bind(&c.name)
        .bind(&c.currency)
        .bind(&c.tax_region)
        .bind(serde_json::Value::Object(c.metadata.clone()).to_string())
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok((customer_from_row(&row)?, row.try_get("created")?))
    }

    pub(crate) async fn pg_customer(
        &self,
        tenant: Uuid,
        external_id: &str,
    ) -> Result<Option<Customer>> {
        let row = sqlx::query(
            "SELECT id, external_id, name, currency, tax_region, metadata, created_at, updated_at
             FROM customers WHERE tenant_id = $1 AND external_id = $2",
        )
        .bind(tenant)
        .bind(external_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(customer_from_row).transpose()
    }

    pub(crate) async fn pg_list_customers(
        &self,
        tenant: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Customer>> {
        let rows = sqlx::query(
            "SELECT id, external_id, name, currency, tax_region, metadata, created_at, updated_at
             FROM customers WHERE tenant_id = $1 AND ($2::text IS NULL OR external_id > $2)
             ORDER BY external_id LIMIT $3",
        )
        .bind(tenant)
        .bind(after)
        .bind(i64::from(crate::model::clamp_limit(limit)))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(customer_from_row).collect()
    }

    pub(crate) async fn pg_create_subscription(
        &self,
        tenant: Uuid,
        s: &SubscriptionInput,
    ) -> Result<Subscription> {
        let mut tx = self.pool().begin().await?;
        let customer: Uuid = sqlx::query_scalar(
            "SELECT id FROM customers WHERE tenant_id = $1 AND external_id = $2",
        )
        .bind(tenant)
        .bind(&s.customer)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no customer {:?}", s.customer)))?;
        let id = Uuid::now_v7();
        let now = crate::postgres::micros(Utc::now());
        sqlx::query(
            "INSERT INTO subscriptions (id, tenant_id, customer_id, starts_at, ends_at, billing_anchor_day, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(tenant)
        .bind(customer)
        .bind(s.starts_at)
        .bind(s.ends_at)
        .bind(s.billing_anchor_day.map(i16::from))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO subscription_phases (subscription_id, starts_at, ends_at, rate_plan, recorded_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(s.starts_at)
        .bind(s.ends_at)
        .bind(&s.rate_plan)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let change = Change::Customer {
            tenant,
            customer: s.customer.clone(),
        };
        crate::postgres::notify(&mut tx, self.changes(), &change).await?;
        tx.commit().await?;
        self.pg_subscription(tenant, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("subscription {id} vanished")))
    }

    async fn pg_subscription(&self, tenant: Uuid, id: Uuid) -> Result<Option<Subscription>> {
        Ok(self
            .pg_load_subscriptions(tenant, None, Some(id))
            .await?
            .pop())
    }

    pub(crate) async fn pg_load_subscriptions(
        &self,
        tenant: Uuid,
        customer: Option<&str>,
        id: Option<Uuid>,
    ) -> Result<Vec<Subscription>> {
        // One static statement per filter: the enricher asks by customer on
        // every cache miss, and a generic plan for `($2 IS NULL OR …)` would
        // scan instead of using the (tenant_id, external_id) index.
        let query = match (customer, id) {
            (Some(customer), _) => sqlx::query(
                "SELECT s.id, c.external_id, s.starts_at, s.ends_at, s.billing_anchor_day, s.created_at,
                     p.starts_at AS phase_start, p.ends_at AS phase_end, p.rate_plan, p.recorded_at
                 FROM customers c
                 JOIN subscriptions s ON s.customer_id = c.id
                 JOIN subscription_phases p ON p.subscription_id = s.id
                 WHERE c.tenant_id = $1 AND c.external_id = $2 AND ($3::uuid IS NULL OR s.id = $3)
                 ORDER BY s.id, p.starts_at",
            )
            .bind(tenant)
            .bind(customer)
            .bind(id),
            (None, Some(id)) => sqlx::query(
                "SELECT s.id, c.external_id, s.starts_at, s.ends_at, s.billing_anchor_day, s.created_at,
                     p.starts_at AS phase_start, p.ends_at AS phase_end, p.rate_plan, p.recorded_at
                 FROM subscriptions s
                 JOIN customers c ON c.id = s.customer_id
                 JOIN subscription_phases p ON p.subscription_id = s.id
                 WHERE s.tenant_id = $1 AND s.id = $2
                 ORDER BY s.id, p.starts_at",
            )
            .bind(tenant)
            .bind(id),
            (None, None) => sqlx::query(
                "SELECT s.id, c.external_id, s.starts_at, s.ends_at, s.billing_anchor_day, s.created_at,
                     p.starts_at AS phase_start, p.ends_at AS phase_end, p.rate_plan, p.recorded_at
                 FROM subscriptions s
                 JOIN customers c ON c.id = s.customer_id
                 JOIN subscription_phases p ON p.subscription_id = s.id
                 WHERE s.tenant_id = $1
                 ORDER BY s.id, p.starts_at",
            )
            .bind(tenant),
        };
        let rows = query.fetch_all(self.pool()).await?;
        let mut out: Vec<Subscription> = Vec::new();
        for row in rows {
            let id: Uuid = row.try_get("id")?;
            let phase = SubscriptionPhase {
                starts_at: row.try_get("phase_start")?,
                ends_at: row.try_get("phase_end")?,
                rate_plan: row.try_get("rate_plan")?,
                recorded_at: row.try_get("recorded_at")?,
            };
            match out.last_mut().filter(|s| s.id == id) {
                Some(sub) => sub.phases.push(phase),
                None => out.push(Subscription {
                    id,
                    customer: row.try_get("external_id")?,
                    starts_at: row.try_get("starts_at")?,
                    ends_at: row.try_get("ends_at")?,
                    billing_anchor_day: row
                        .try_get::<Option<i16>, _>("billing_anchor_day")?
                        .and_then(|d| u8::try_from(d).ok()),
                    phases: vec![phase],
                    created_at: row.try_get("created_at")?,
                }),
            }
        }
        Ok(out)
    }

    pub(crate) async fn pg_change_plan(
        &self,
        tenant: Uuid,
        id: Uuid,
        rate_plan: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT id FROM subscriptions WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no subscription {id}")))?;
        let current = self
            .pg_subscription(tenant, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no subscription {id}")))?;
        check_plan_change(&current, at)?;
        let open_start = current.phases.last().map(|p| p.starts_at);
        sqlx::query("UPDATE subscription_phases SET ends_at = $3 WHERE subscription_id = $1 AND starts_at = $2")
            .bind(id)
            .bind(open_start)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO subscription_phases (subscription_id, starts_at, ends_at, rate_plan, recorded_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(at)
        .bind(current.ends_at)
        .bind(rate_plan)
        .bind(crate::postgres::micros(Utc::now()))
        .execute(&mut *tx)
        .await?;
        let change = Change::Customer {
            tenant,
            customer: current.customer.clone(),
        };
        crate::postgres::notify(&mut tx, self.changes(), &change).await?;
        tx.commit().await?;
        self.pg_subscription(tenant, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("subscription {id} vanished")))
    }
}
