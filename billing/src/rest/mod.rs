//! The billing role's HTTP API: one module per resource, every handler
//! annotated for the OpenAPI document ([`openapi`]), every body and answer a
//! typed [`aforo_api::v1`] or billing-domain type.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/catalog/apply` | `{"resources": [...]}`; all or nothing; 422 lists every error |
//! | `GET /v1/catalog` | the version in force, with its snapshot |
//! | `GET /v1/catalog/versions` | every version, without snapshots |
//! | `GET /v1/catalog/versions/{n}` | one version, with its snapshot |
//! | `POST /v1/customers`, `GET /v1/customers`, `GET /v1/customers/{id}` | upsert by external id; list by cursor |
//! | `POST /v1/customers/import` | CSV (`text/csv`); a result per row |
//! | `POST /v1/subscriptions`, `GET /v1/subscriptions?customer=` | create; list with phases |
//! | `POST /v1/subscriptions/{id}/plan` | `{"rate_plan", "effective_at"}`: a plan change |
//! | `POST /v1/subscriptions/{id}/discounts` | `{"percent" or "amount", "valid_from"?, "valid_until"?}` |
//! | `GET /v1/revenue?customer=&from=&to=` | revenue, cost and margin by customer, meter and currency, from the ledger |
//! | `GET /v1/events/{id}/revenue` | what each meter made of one stored event |
//! | `GET /v1/revenue/hourly?customer=` | revenue and cost per hour over the last 24 hours |
//! | `GET /v1/margin/cohorts?key=&from=&to=` | revenue, cost and margin by a customer metadata key |
//! | `GET /v1/entitlements?customer=&meter=` | included, used and remaining this period |
//! | `POST /v1/bill-runs` | `{"as_of"?, "cutoff"?, "subscription"?}`: bill the periods that ended |
//! | `GET /v1/bill-runs` | recorded runs, latest first, with their reports |
//! | `POST /v1/bill-runs/replay` | `{"period_start", "subscription"?}`: recompute and diff |
//! | `GET /v1/invoices?customer=&subscription=&after=&limit=` | invoices by number |
//! | `GET /v1/invoices/{id or number}` | one invoice: document, lines, totals, hash |
//! | `GET /v1/invoices/{id}/lines` | an invoice's lines |
//! | `GET /v1/invoices/{id}/lines/{n}/events?after=&limit=` | the events behind a line |
//! | `GET /v1/invoices/{id}/lines/{n}/attribution` | a line's usage by source and tier |
//! | `GET /v1/invoices/{id}/audit?format=json\|csv` | the audit export |
//! | `GET /v1/events/{id}/proof` | where an event was billed, with its Merkle proof |
//!
//! Every listing is a [`aforo_api::v1::Page`]. The handlers hold services,
//! never the store: whatever a write must also do (drop cached contexts,
//! requeue waiting events) the service does for REST and gRPC alike.

mod bill_runs;
mod catalog;
mod customers;
mod invoices;
mod subscriptions;
mod usage;

pub use bill_runs::{BillRun, Replay};
pub use invoices::{Invoice, InvoiceLines, LineAttribution};

use aforo_api::ApiError;
use aforo_store::auth::Authenticator;
use axum::Router;
use axum::extract::FromRef;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::catalog::CatalogApi;
use crate::customers::BusinessData;
use crate::invoices::InvoiceApi;
use crate::usage::UsageApi;

#[derive(Clone)]
pub struct BillingState {
    pub catalog: CatalogApi,
    pub business: BusinessData,
    pub usage: UsageApi,
    pub auth: Authenticator,
    pub invoices: InvoiceApi,
}

impl FromRef<BillingState> for Authenticator {
    fn from_ref(state: &BillingState) -> Authenticator {
        state.auth.clone()
    }
}

/// Every route with its OpenAPI operation: one list, so the router and the
/// document cannot disagree.
fn routes() -> OpenApiRouter<BillingState> {
    OpenApiRouter::new()
        .routes(routes!(catalog::latest))
        .routes(routes!(catalog::apply))
        .routes(routes!(catalog::versions))
        .routes(routes!(catalog::version))
        .routes(routes!(customers::list, customers::upsert))
        .routes(routes!(customers::import))
        .routes(routes!(customers::get))
        .routes(routes!(subscriptions::list, subscriptions::create))
        .routes(routes!(subscriptions::change_plan))
        .routes(routes!(subscriptions::add_discount))
        .routes(routes!(usage::revenue))
        .routes(routes!(usage::hourly))
        .routes(routes!(usage::cohorts))
        .routes(routes!(usage::entitlement))
        .routes(routes!(usage::event_revenue))
        .routes(routes!(bill_runs::list, bill_runs::run))
        .routes(routes!(bill_runs::replay))
        .routes(routes!(invoices::list))
        .routes(routes!(invoices::show))
        .routes(routes!(invoices::lines))
        .routes(routes!(invoices::line_events))
        .routes(routes!(invoices::attribution))
        .routes(routes!(invoices::audit))
        .routes(routes!(invoices::proof))
}

pub fn router(state: BillingState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(state)
}

/// The billing routes' operations (without the shared parts that
/// [`aforo_api::openapi::document`] adds).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The billing role's whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    aforo_api::openapi::document(
        "aforo billing API",
        "The catalog, customers and subscriptions, revenue and margin, bill runs, invoices \
         and their audit trail.",
        openapi(),
    )
}

fn parse_uuid(what: &str, text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_path(format!("{text:?} is not {what} id")))
}
