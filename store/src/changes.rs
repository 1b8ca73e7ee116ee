//! What changed in the store, told to whatever caches what it holds.
//!
//! The store's write path announces every change a cache could be holding
//! stale: a new catalog version, a customer's subscriptions. In the process
//! that wrote, the listeners run before the write returns, so a caller that
//! changed a plan prices its next event by the new plan. Other processes
//! hear it through PostgreSQL: the write's transaction sends a `NOTIFY` on
//! [`CHANNEL`], delivered when (and only if) it commits, and every
//! [`crate::PgStore`] listens. A listener that lost its connection may have
//! missed some, so it announces [`Change::Unknown`] once it is back, and the
//! caches drop everything. The caches keep a TTL as a last resort.
//!
//! Caches subscribe here ([`Changes::listen`]); no API code invalidates
//! anything.

use std::future::Future;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The PostgreSQL notification channel of changes.
pub const CHANNEL: &str = "aforo_changes";

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A tenant has a new catalog version.
    Catalog { tenant: Uuid },
    /// A customer's subscriptions changed (one was created, or a plan
    /// changed).
    Customer { tenant: Uuid, customer: String },
    /// Changes may have been missed: anything may have changed.
    Unknown,
}

/// A change as sent over [`CHANNEL`]: with the process that made it, which
/// has told its own listeners already.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Notice {
    pub origin: Uuid,
    pub change: Change,
}

type Listener = Arc<dyn Fn(Change) -> BoxFuture<'static, ()> + Send + Sync>;

/// The listeners of one store, and the id this process signs its notices
/// with.
#[derive(Clone)]
pub struct Changes {
    origin: Uuid,
    listeners: Arc<RwLock<Vec<Listener>>>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            origin: Uuid::now_v7(),
            listeners: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("origin", &self.origin)
            .field("listeners", &self.read().len())
            .finish()
    }
}

impl Changes {
    /// Calls `listener` with every change from now on, the writes of this
    /// process before they return. A listener must be quick and must not
    /// fail: it drops cache entries.
    pub fn listen<F, Fut>(&self, listener: F)
    where
        F: Fn(Change) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener: Listener = Arc::new(move |change| Box::pin(listener(change)));
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Tells the listeners that `customer`'s subscriptions changed.
    pub async fn customer_changed(&self, tenant: Uuid, customer: &str) {
        self.publish(Change::Customer {
            tenant,
            customer: customer.to_owned(),
        })
        .await;
    }

    /// Tells every listener, and returns when all have taken it in.
    pub async fn publish(&self, change: Change) {
        let listeners = self.read().clone();
        for listener in listeners {
            listener(change.clone()).await;
        }
    }

    /// The notice of `change` for other processes, as JSON.
    pub(crate) fn notice(&self, change: &Change) -> String {
        let notice = Notice {
            origin: self.origin,
            change: change.clone(),
        };
        serde_json::to_string(&notice).unwrap_or_else(|e| {
            // A change is uuids and strings: this cannot happen; if it did,
            // the other processes must drop everything rather than nothing.
            tracing::error!(error = %e, "cannot write a change notice");
            r#"{"origin":"00000000-0000-0000-0000-000000000000","change":{"kind":"unknown"}}"#
                .to_owned()
        })
    }

    /// A notice received from PostgreSQL: published unless this process
    /// sent it (its listeners heard it already).
    pub(crate) async fn received(&self, payload: &str) {
        match serde_json::from_str::<Notice>(payload) {
            Ok(notice) if notice.origin == self.origin => {}
            Ok(notice) => self.publish(notice.change).await,
            Err(e) => {
                tracing::warn!(error = %e, payload, "an unreadable change notice: dropping every cache");
                self.publish(Change::Unknown).await;
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Listener>> {
        self.listeners.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn listeners_hear_published_changes_and_other_processes_notices_only() {
        let changes = Changes::default();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        changes.listen(move |change| {
            log.lock().unwrap().push(change);
            async {}
        });
        let tenant = Uuid::now_v7();
        changes.publish(Change::Catalog { tenant }).await;
        // Its own notice comes back from PostgreSQL: already heard.
        let own = changes.notice(&Change::Catalog { tenant });
        changes.received(&own).await;
        // Another process's is heard.
        let other = Changes::default().notice(&Change::Customer {
            tenant,
            customer: "acme".into(),
        });
        changes.received(&other).await;
        changes.received("not json").await;
        assert_eq!(
            *heard.lock().unwrap(),
            [
                Change::Catalog { tenant },
                Change::Customer {
                    tenant,
                    customer: "acme".into()
                },
                Change::Unknown,
            ]
        );
    }
}
