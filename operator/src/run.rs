//! Wiring: the HTTP endpoints, leader election, and both controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aforo_crds::catalog::{Meter, MeteringPipeline, Product, RatePlan, UsageAlert, WebhookSource};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Config, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::build::{MANAGED_BY_LABEL, MANAGER};
use crate::catalog::CatalogClient;
use crate::lease::{Leadership, LeaseConfig};
use crate::metrics::{self, Metrics};
use crate::{Error, OperatorConfig, catalog_status, pipeline};

/// A running operator.
pub struct Operator {
    http_addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Operator {
    /// Checks the CRDs are installed, serves the HTTP endpoints, and starts
    /// leading (once it holds the Lease) in the background.
    pub async fn start(client: Client, config: OperatorConfig) -> Result<Operator, Error> {
        Api::<MeteringPipeline>::all(client.clone())
            .list(&ListParams::default().limit(1))
            .await
            .map_err(|e| match e {
                kube::Error::Api(ref status) if status.code == 404 => Error::CrdsMissing(e),
                other => Error::Kube(other),
            })?;
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.http_addr,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.http_addr,
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let router = metrics::router(metrics.clone());
        let mut http_stopped = stopped.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_stopped.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the operator's HTTP endpoints failed");
            }
        });
        let task = tokio::spawn(lead(client, config, metrics.clone(), stopped));
        Ok(Operator {
            http_addr,
            metrics,
            stop,
            task,
        })
    }

    /// Where /metrics, /healthz and /readyz are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops the controllers, releases the Lease, and waits for both.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| Error::Internal(format!("the operator task failed: {e}")))?
    }

    /// Runs until `shutdown` resolves (then stops gracefully) or the
    /// operator fails (the Lease lost, say).
    pub async fn run_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        tokio::select! {
            result = &mut self.task => {
                result.map_err(|e| Error::Internal(format!("the operator task failed: {e}")))?
            }
            _ = shutdown => self.stop().await,
        }
    }
}

async fn lead(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), Error> {
    let identity = config.identity();
    let lease = LeaseConfig {
        namespace: config.lease_namespace(),
        name: config.lease_name.clone(),
        identity: identity.clone(),
        duration: config.lease_duration(),
    };
    let Some(mut leadership) =
        Leadership::acquire(client.clone(), lease, metrics.clone(), stopped.clone()).await?
    else {
        return Ok(());
    };
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: Some(identity),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let (controllers_stop, controllers_stopped) = watch::channel(false);

    let pipeline_ctx = Arc::new(pipeline::Context {
        client: client.clone(),
        catalog: CatalogClient::new()?,
        catalog_endpoint: config.catalog_endpoint.clone(),
        metrics: metrics.clone(),
        recorder: recorder.clone(),
        resync: config.resync(),
    });
    let pipelines = tokio::spawn(pipelines(
        client.clone(),
        config.watch_namespace.clone(),
        pipeline_ctx,
        controllers_stopped.clone(),
    ));
    let catalog_ctx = Arc::new(catalog_status::Context {
        client,
        metrics: metrics.clone(),
        recorder,
    });
    let catalog = tokio::spawn(catalog_status::run(
        catalog_ctx,
        config.watch_namespace.clone(),
        controllers_stopped,
    ));
    metrics.set_ready(true);

    let lost = tokio::select! {
        _ = leadership.lost() => true,
        _ = stopped.wait_for(|s| *s) => false,
    };
    metrics.set_ready(false);
    let _ = controllers_stop.send(true);
    // Controllers finish the reconciles in flight, within reason.
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        let _ = pipelines.await;
        let _ = catalog.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("controllers did not stop within 20 s");
    }
    if lost {
        return Err(Error::LeaseLost);
    }
    leadership.release().await
}

fn scoped<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// The pipelines in the same namespace as `object`: a catalog change there
/// re-applies their catalog.
fn pipelines_beside<K: kube::Resource>(
    store: &Store<MeteringPipeline>,
    object: &K,
) -> Vec<ObjectRef<MeteringPipeline>> {
    let namespace = object.meta().namespace.clone();
    store
        .state()
        .iter()
        .filter(|p| p.metadata.namespace == namespace)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

async fn pipelines(
    client: Client,
    scope: Option<String>,
    ctx: Arc<pipeline::Context>,
    mut stopped: watch::Receiver<bool>,
) {
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let controller = Controller::new(
        scoped::<MeteringPipeline>(&client, &scope),
        watcher::Config::default(),
    );
    let store = controller.store();
    fn mapper<K: kube::Resource>(
        store: Store<MeteringPipeline>,
    ) -> impl Fn(K) -> Vec<ObjectRef<MeteringPipeline>> {
        move |object| pipelines_beside(&store, &object)
    }
    controller
        .with_config(Config::default().debounce(Duration::from_millis(300)))
        .owns(scoped::<Deployment>(&client, &scope), owned.clone())
        .owns(scoped::<Service>(&client, &scope), owned.clone())
        .owns(
            scoped::<HorizontalPodAutoscaler>(&client, &scope),
            owned.clone(),
        )
        .owns(
            scoped::<PodDisruptionBudget>(&client, &scope),
            owned.clone(),
        )
        .owns(scoped::<ServiceAccount>(&client, &scope), owned)
        .watches(
            scoped::<Meter>(&client, &scope),
            watcher::Config::default(),
            mapper(store.clone()),
        )
        .watches(
            scoped::<Product>(&client, &scope),
            watcher::Config::default(),
            mapper(store.clone()),
        )
        .watches(
            scoped::<RatePlan>(&client, &scope),
            watcher::Config::default(),
            mapper(store.clone()),
        )
        .watches(
            scoped::<WebhookSource>(&client, &scope),
            watcher::Config::default(),
            mapper(store.clone()),
        )
        .watches(
            scoped::<UsageAlert>(&client, &scope),
            watcher::Config::default(),
            mapper(store),
        )
        .graceful_shutdown_on(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .run(pipeline::reconcile, pipeline::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "pipeline controller");
            }
        })
        .await;
}
