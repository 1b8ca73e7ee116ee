use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// How `aforo operator` runs.
#[derive(Args, Clone, Debug)]
pub struct OperatorConfig {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "AFORO_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Apply every pipeline's catalog to this URL instead of the pipeline's
    /// billing Service (for an operator outside the cluster, and tests).
    #[arg(long, env = "AFORO_OPERATOR_CATALOG_ENDPOINT")]
    pub catalog_endpoint: Option<String>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "AFORO_OPERATOR_HTTP_ADDR",
        default_value = "127.0.0.1:8480"
    )]
    pub http_addr: SocketAddr,

    /// Namespace of the leader-election Lease (default: the pod's, from
    /// POD_NAMESPACE, else `default`).
    #[arg(long, env = "AFORO_OPERATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "AFORO_OPERATOR_LEASE_NAME",
        default_value = "aforo-operator"
    )]
    pub lease_name: String,

    /// Who this replica is in the Lease (default: POD_NAME, else the host name).
    #[arg(long, env = "AFORO_OPERATOR_IDENTITY")]
    pub identity: Option<String>,

    /// Seconds a Lease holds without renewal.
    #[arg(long, env = "AFORO_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

    /// Seconds between reconciles of an unchanged pipeline (catalog API
    /// retries come sooner).
    #[arg(long, env = "AFORO_OPERATOR_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
}

impl OperatorConfig {
    /// Defaults for a given namespace scope, as tests and embedders use it.
    pub fn for_namespace(namespace: &str) -> OperatorConfig {
        OperatorConfig {
            watch_namespace: Some(namespace.to_owned()),
            catalog_endpoint: None,
            http_addr: ([127, 0, 0, 1], 0).into(),
            lease_namespace: Some(namespace.to_owned()),
            lease_name: "aforo-operator".into(),
            identity: None,
            lease_seconds: 15,
            resync_seconds: 300,
        }
    }

    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into())
    }

    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("aforo-operator-{}", std::process::id()))
    }

    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.max(1))
    }

    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(1))
    }
}
