//! Leader election by a `coordination.k8s.io/v1` Lease, so that several
//! operator replicas can run and only one reconciles.
//!
//! A candidate takes the Lease when it is free (no holder, or not renewed
//! within its duration) and then renews it every third of the duration.
//! Every write carries the `resourceVersion` it read, so two candidates
//! racing for a free Lease cannot both win: the apiserver refuses the second
//! with a conflict. A leader that cannot renew before its Lease would expire
//! stops leading; one that shuts down releases the Lease, so a successor
//! takes over at once instead of after the duration.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::Error;
use crate::metrics::Metrics;

/// Which Lease, and who asks for it.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate, e.g. its pod name.
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub duration: Duration,
}

/// A Lease this process holds; dropping it does not release it, call
/// [`Leadership::release`].
pub struct Leadership {
    api: Api<Lease>,
    config: LeaseConfig,
    metrics: Arc<Metrics>,
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Waits until this candidate holds the Lease (or `stop` turns true:
    /// then `None`), and keeps renewing it.
    pub async fn acquire(
        client: Client,
        config: LeaseConfig,
        metrics: Arc<Metrics>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Option<Leadership>, Error> {
        let api = Api::<Lease>::namespaced(client, &config.namespace);
        let retry = (config.duration / 5).max(Duration::from_millis(200));
        loop {
            if let Some(lease) = try_acquire(&api, &config, &metrics).await? {
                tracing::info!(lease = %config.name, identity = %config.identity, "leading");
                metrics.set_leader(true);
                let (lost_tx, lost) = watch::channel(false);
                let renewer = tokio::spawn(renew(
                    api.clone(),
                    config.clone(),
                    lease,
                    metrics.clone(),
                    lost_tx,
                ));
                return Ok(Some(Leadership {
                    api,
                    config,
                    metrics,
                    lost,
                    renewer,
                }));
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.wait_for(|s| *s) => return Ok(None),
            }
        }
    }

    /// Resolves when the Lease is lost (not renewed in time, or taken).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|l| *l).await;
    }

    /// Stops renewing and frees the Lease for the next candidate.
    pub async fn release(self) -> Result<(), Error> {
        self.renewer.abort();
        self.metrics.set_leader(false);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        self.metrics.lease_write();
        tracing::info!(lease = %self.config.name, "released the lease");
        Ok(())
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// Whether `spec` is held by someone whose renewal has not yet expired.
fn held_by_other(spec: &LeaseSpec, identity: &str, at: Timestamp) -> bool {
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return false;
    };
    if holder == identity {
        return false;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return false;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    renewed.0 + duration > at
}

async fn try_acquire(
    api: &Api<Lease>,
    config: &LeaseConfig,
    metrics: &Metrics,
) -> Result<Option<Lease>, Error> {
    let at = now();
    let ours = |transitions: i32| LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(seconds(config.duration)),
        acquire_time: Some(at.clone()),
        renew_time: Some(at.clone()),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let result = match api.get_opt(&config.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(ours(0)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            if held_by_other(&spec, &config.identity, at.0) {
                return Ok(None);
            }
            let transitions = spec.lease_transitions.unwrap_or(0)
                + i32::from(spec.holder_identity.as_deref() != Some(config.identity.as_str()));
            lease.spec = Some(ours(transitions));
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(lease) => {
            metrics.lease_write();
            Ok(Some(lease))
        }
        // Another candidate wrote first.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn renew(
    api: Api<Lease>,
    config: LeaseConfig,
    mut lease: Lease,
    metrics: Arc<Metrics>,
    lost: watch::Sender<bool>,
) {
    let every = config.duration / 3;
    let mut deadline = tokio::time::Instant::now() + config.duration;
    loop {
        tokio::time::sleep(every).await;
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
            break;
        }
        spec.renew_time = Some(now());
        match api
            .replace(&config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(renewed) => {
                metrics.lease_write();
                lease = renewed;
                deadline = tokio::time::Instant::now() + config.duration;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the lease");
                // Re-read: a conflict may be our own earlier write.
                match api.get_opt(&config.name).await {
                    Ok(Some(current)) => lease = current,
                    Ok(None) => break,
                    Err(e) => tracing::warn!(error = %e, "cannot read the lease"),
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    tracing::error!(lease = %config.name, "lost the lease");
    metrics.set_leader(false);
    let _ = lost.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("a time"))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("a time")
    }

    #[test]
    fn a_lease_renewed_within_its_duration_is_held_by_its_holder() {
        assert!(held_by_other(&spec(Some("a"), 100, 15), "b", at(110)));
        assert!(!held_by_other(&spec(Some("a"), 100, 15), "a", at(110)));
    }

    #[test]
    fn an_expired_or_released_lease_is_free() {
        assert!(!held_by_other(&spec(Some("a"), 100, 15), "b", at(116)));
        assert!(!held_by_other(&spec(None, 100, 15), "b", at(101)));
        assert!(!held_by_other(&spec(Some(""), 100, 15), "b", at(101)));
    }
}
