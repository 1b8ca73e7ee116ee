//! Customers and subscriptions: the checks both APIs (REST and gRPC) make
//! before the store is asked, and CSV import (`external_id,name,currency,
//! tax_region` and any further columns as metadata; every row gets its own
//! result, a bad row does not stop the others).

use std::sync::Arc;

use aforo_store::{Customer, CustomerInput, Store, StoreError, Subscription, SubscriptionInput};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::catalog::CatalogApi;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The business-data API shared by REST and gRPC.
#[derive(Clone)]
pub struct BusinessData {
    store: Arc<dyn Store>,
    catalog: CatalogApi,
}

impl BusinessData {
    pub fn new(store: Arc<dyn Store>, catalog: CatalogApi) -> Self {
        BusinessData { store, catalog }
    }

    /// One page of customers by external id, after `after`. `limit` is
    /// clamped to 1..=[`aforo_store::MAX_PAGE_SIZE`]; the page is full
    /// when there may be more.
    pub async fn customers(
        &self,
        tenant: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Customer>, u32), StoreError> {
        let limit = limit.clamp(1, aforo_store::MAX_PAGE_SIZE);
        Ok((
            self.store.list_customers(tenant, after, limit).await?,
            limit,
        ))
    }

    pub async fn customer(&self, tenant: Uuid, id: &str) -> Result<Option<Customer>, StoreError> {
        self.store.customer(tenant, id).await
    }

    /// Subscriptions with their phases, of one customer or all.
    pub async fn subscriptions(
        &self,
        tenant: Uuid,
        customer: Option<&str>,
    ) -> Result<Vec<Subscription>, StoreError> {
        self.store.subscriptions(tenant, customer).await
    }

    pub async fn upsert_customer(
        &self,
        tenant: Uuid,
        input: &CustomerInput,
    ) -> Result<(Customer, bool), AdminError> {
        check(input).map_err(AdminError::Invalid)?;
        let upserted = self.store.upsert_customer(tenant, input).await?;
        self.requeue(tenant).await?;
        Ok(upserted)
    }

    async fn require_plan(&self, tenant: Uuid, rate_plan: &str) -> Result<(), AdminError> {
        if self.catalog.has_rate_plan(tenant, rate_plan).await? {
            Ok(())
        } else {
            Err(AdminError::Invalid(format!(
                "no RatePlan {rate_plan:?} in the catalog in force"
            )))
        }
    }

    pub async fn create_subscription(
        &self,
        tenant: Uuid,
        input: &SubscriptionInput,
    ) -> Result<Subscription, AdminError> {
        self.require_plan(tenant, &input.rate_plan).await?;
        if input
            .billing_anchor_day
            .is_some_and(|d| !(1..=31).contains(&d))
        {
            return Err(AdminError::Invalid(
                "billing_anchor_day must be from 1 to 31".into(),
            ));
        }
        if input.ends_at.is_some_and(|end| end <= input.starts_at) {
            return Err(AdminError::Invalid(
                "ends_at must be after starts_at".into(),
            ));
        }
        let sub = self.store.create_subscription(tenant, input).await?;
        self.requeue(tenant).await?;
        Ok(sub)
    }

    pub async fn change_plan(
        &self,
        tenant: Uuid,
        subscription: Uuid,
        rate_plan: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription, AdminError> {
        self.require_plan(tenant, rate_plan).await?;
        let sub = self
            .store
            .change_plan(tenant, subscription, rate_plan, at)
            .await?;
        self.requeue(tenant).await?;
        Ok(sub)
    }

    /// After a customer's data changed, events that waited for a customer
    /// or subscription get another try. (The cached context of the customer
    /// went when the store wrote the change.)
    async fn requeue(&self, tenant: Uuid) -> Result<(), AdminError> {
        let n = self.store.requeue_waiting(tenant).await?;
        if n > 0 {
            tracing::info!(%tenant, events = n, "requeued events for enrichment");
        }
        Ok(())
    }
}

/// One row's reading: a customer, or why not.
pub type Row = Result<CustomerInput, String>;

/// Reads the CSV; fails as a whole only when the header is unusable.
pub fn read_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("cannot read the header: {e}"))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let external_id = column("external_id").ok_or("the header has no `external_id` column")?;
    let name = column("name").ok_or("the header has no `name` column")?;
    let currency = column("currency");
    let tax_region = column("tax_region");
    let known = [Some(external_id), Some(name), currency, tax_region];
    let mut rows = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let line = n + 2;
        let row = match record {
            Err(e) => Err(format!("line {line}: {e}")),
            Ok(record) => {
                let get = |i: Option<usize>| {
                    i.and_then(|i| record.get(i))
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                };
                let mut metadata = Map::new();
                for (i, header) in headers.iter().enumerate() {
                    if !known.contains(&Some(i))
                        && let Some(v) = record.get(i).filter(|v| !v.is_empty())
                    {
                        metadata.insert(header.to_owned(), Value::String(v.to_owned()));
                    }
                }
                match (get(Some(external_id)), get(Some(name))) {
                    (Some(external_id), Some(name)) => Ok(CustomerInput {
                        external_id,
                        name,
                        currency: get(currency),
                        tax_region: get(tax_region),
                        metadata,
                    }),
                    _ => Err(format!("line {line}: external_id and name are required")),
                }
            }
        };
        rows.push(row);
    }
    Ok(rows)
}

/// Checks a customer before it is stored.
pub fn check(customer: &CustomerInput) -> Result<(), String> {
    if customer.external_id.trim().is_empty() || customer.external_id.len() > 256 {
        return Err("external_id must be 1 to 256 bytes".into());
    }
    if customer.name.trim().is_empty() {
        return Err("name is required".into());
    }
    if let Some(code) = &customer.currency
        && aforo_crds::currency::minor_units(code).is_none()
    {
        return Err(format!(
            "currency {code:?} is not a known ISO 4217 currency"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_with_extra_columns_as_metadata() {
        let rows = read_csv(
            "external_id,name,currency,tax_region,segment\n\
             cus_1, Initech ,EUR,DE,smb\n\
             ,Nameless,EUR,DE,\n\
             cus_3,Globex,,,enterprise\n",
        )
        .unwrap();
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.name, "Initech");
        assert_eq!(first.metadata["segment"], "smb");
        assert!(rows[1].as_ref().unwrap_err().contains("line 3"));
        assert_eq!(rows[2].as_ref().unwrap().currency, None);
    }

    #[test]
    fn a_header_without_ids_is_refused() {
        assert!(
            read_csv("id,name\n1,a\n")
                .unwrap_err()
                .contains("external_id")
        );
    }

    #[test]
    fn currencies_are_checked() {
        let c = CustomerInput {
            external_id: "c".into(),
            name: "n".into(),
            currency: Some("EURO".into()),
            ..Default::default()
        };
        assert!(check(&c).unwrap_err().contains("EURO"));
    }
}
