//! A real Kubernetes control plane for aforo's tests: etcd and
//! kube-apiserver, built from their Go modules by scripts/controlplane.sh and
//! started on loopback by the tests themselves.
//!
//! [`ControlPlane::start`] finds the binaries (in `AFORO_CONTROLPLANE_BIN`,
//! else in the cache directory the script builds into), picks free loopback ports,
//! starts etcd and then kube-apiserver in a temporary directory, and polls
//! `/readyz` until the apiserver serves. The apiserver writes its own
//! self-signed serving certificate and CA into that directory, which clients
//! trust; it authenticates one admin by a static token (group
//! `system:masters`) and authorizes with RBAC, as a production apiserver
//! does. Tests get [`kube::Client`]s, a fresh namespace each
//! ([`ControlPlane::namespace`]), and CRD installation that waits until the
//! CRDs are Established ([`ControlPlane::install_crds`]).
//!
//! ```no_run
//! # async fn a_test() -> Result<(), aforo_kubetest::Error> {
//! use aforo_kubetest::ControlPlane;
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, ListParams};
//!
//! let control_plane = ControlPlane::shared().await?; // one per test binary
//! let namespace = control_plane.namespace("config-maps").await?; // one per test
//! let config_maps = Api::<ConfigMap>::namespaced(control_plane.client()?, &namespace);
//! assert!(config_maps.list(&ListParams::default()).await?.items.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! Only the apiserver and etcd run: no kubelet, scheduler or
//! controller-manager. Nothing reconciles what tests write (Deployments get no
//! Pods, namespaces never finish deleting, owner references are not garbage
//! collected), so tests assert on the objects written and isolate themselves
//! by namespace instead of cleaning up.
//!
//! Both processes stop, and the temporary directory goes, when the
//! [`ControlPlane`] is dropped. [`ControlPlane::shared`] keeps one control
//! plane per test binary in a static, stopped by an `atexit` handler when the
//! binary exits; should the binary die without running it (SIGKILL, an
//! abort), the kernel kills both processes anyway, since they are started
//! with a parent-death signal (see `process.rs`), and only the temporary
//! directory is left behind.

mod binaries;
mod error;
mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use binaries::Binaries;
pub use error::Error;
use process::{Process, log_tail};

/// How long kube-apiserver may take to become ready. Generous: on two cores
/// it competes with the test binaries for CPU.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a CRD may take to become Established.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);
/// How often readiness conditions are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often startup is retried when a picked port was taken meanwhile.
const START_ATTEMPTS: u32 = 3;
/// The field manager of what the harness applies.
const FIELD_MANAGER: &str = "aforo-kubetest";

/// etcd and kube-apiserver, running until dropped.
pub struct ControlPlane {
    running: Mutex<Option<Running>>,
    config: Config,
    kubeconfig: PathBuf,
    namespaces: AtomicUsize,
}

/// The processes and their directory, in the order they are stopped:
/// the apiserver before its storage, the directory last.
struct Running {
    _apiserver: Process,
    _etcd: Process,
    _dir: TempDir,
}

static SHARED: OnceCell<ControlPlane> = OnceCell::const_new();

extern "C" fn stop_shared() {
    if let Some(control_plane) = SHARED.get() {
        control_plane.stop();
    }
}

impl ControlPlane {
    /// Starts a control plane of its own for the caller; it stops when
    /// dropped.
    pub async fn start() -> Result<ControlPlane, Error> {
        let binaries = Binaries::locate()?;
        let dir = tempfile::Builder::new()
            .prefix("aforo-controlplane-")
            .tempdir()
            .map_err(Error::io("create a temporary directory"))?;
        let mut attempt = 1;
        loop {
            match Self::launch(&binaries, dir.path().join(attempt.to_string())).await {
                Ok((apiserver, etcd, config, kubeconfig)) => {
                    return Ok(ControlPlane {
                        running: Mutex::new(Some(Running {
                            _apiserver: apiserver,
                            _etcd: etcd,
                            _dir: dir,
                        })),
                        config,
                        kubeconfig,
                        namespaces: AtomicUsize::new(0),
                    });
                }
                // Ports are picked free but handed over only when the
                // process binds them; someone else may have taken one since.
                Err(Error::Exited { ref tail, .. })
                    if attempt < START_ATTEMPTS && tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The control plane shared by every test of this test binary, started
    /// by the first caller. Tests sharing it isolate themselves by
    /// [`namespace`](Self::namespace). It stops when the binary exits.
    pub async fn shared() -> Result<&'static ControlPlane, Error> {
        SHARED
            .get_or_try_init(|| async {
                let control_plane = ControlPlane::start().await?;
                // SAFETY: stop_shared is a plain function that only reads a
                // static; atexit has no other precondition.
                if unsafe { libc::atexit(stop_shared) } != 0 {
                    return Err(Error::Io {
                        action: "register the control plane's stop at exit".into(),
                        source: std::io::Error::other("atexit failed"),
                    });
                }
                Ok(control_plane)
            })
            .await
    }

    /// For tests: the shared control plane with `crds` installed and
    /// Established, and a fresh namespace named after `test`. Panics, with
    /// the reason, if any of that fails.
    pub async fn shared_with(
        crds: &[CustomResourceDefinition],
        test: &str,
    ) -> (&'static ControlPlane, String) {
        let control_plane = ControlPlane::shared()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        control_plane
            .install_crds(crds)
            .await
            .unwrap_or_else(|e| panic!("install the CRDs: {e}"));
        let namespace = control_plane
            .namespace(test)
            .await
            .unwrap_or_else(|e| panic!("create a namespace: {e}"));
        (control_plane, namespace)
    }

    /// A client authenticated as the admin (group `system:masters`). Make one
    /// per test: a client belongs to the Tokio runtime it was made in.
    pub fn client(&self) -> Result<Client, Error> {
        Ok(Client::try_from(self.config.clone())?)
    }

    /// A kubeconfig file for the admin, for tools such as kubectl and helm.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Creates a namespace of its own for a test, `<prefix>-<n>`, and returns
    /// its name. `prefix` must be a DNS label of at most 50 characters.
    pub async fn namespace(&self, prefix: &str) -> Result<String, Error> {
        let name = format!(
            "{prefix}-{}",
            self.namespaces.fetch_add(1, Ordering::Relaxed)
        );
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client()?)
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(name)
    }

    /// Applies the CRDs (server-side apply, so tests sharing a control plane
    /// may install the same ones) and waits until each is Established, that
    /// is, served.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
        let api = Api::<CustomResourceDefinition>::all(self.client()?);
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        for crd in crds {
            let name = crd.metadata.name.as_deref().unwrap_or_default();
            api.patch(name, &apply, &Patch::Apply(crd)).await?;
        }
        for crd in crds {
            let name = crd.metadata.name.as_deref().unwrap_or_default();
            let deadline = Instant::now() + ESTABLISHED_TIMEOUT;
            loop {
                let conditions = api
                    .get_status(name)
                    .await?
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default();
                if conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::NotEstablished {
                        name: name.to_owned(),
                        timeout: ESTABLISHED_TIMEOUT,
                        conditions: serde_json::to_string(&conditions)
                            .unwrap_or_else(|e| e.to_string()),
                    });
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        // Nothing panics while holding the lock; recover the value if it did.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kills both processes, waits for them, and removes the directory.
    fn stop(&self) {
        drop(self.lock().take());
    }

    /// Starts etcd and kube-apiserver with their state in `dir` and waits
    /// until the apiserver is ready.
    async fn launch(
        binaries: &Binaries,
        dir: PathBuf,
    ) -> Result<(Process, Process, Config, PathBuf), Error> {
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let [etcd_client, etcd_peer, secure] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let mut etcd = Process::start(
            "etcd",
            &binaries.etcd,
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                // The data lives as long as the test; durability only costs.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            dir.join("etcd.log"),
        )?;

        let token = format!("{:032x}", rand::random::<u128>());
        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{token},aforo-test-admin,aforo-test-admin,system:masters\n"),
        )
        .map_err(Error::io(format!("write {}", tokens.display())))?;
        let certs = dir.join("certs");
        // The apiserver generates a CA and a serving certificate for
        // 127.0.0.1 into --cert-dir before it reads the service-account
        // key, so its serving key doubles as the token signing key.
        let serving_key = certs.join("apiserver.key");
        let server = format!("https://127.0.0.1:{secure}");
        let mut apiserver = Process::start(
            "kube-apiserver",
            &binaries.apiserver,
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={secure}"),
                format!("--cert-dir={}", certs.display()),
                format!("--token-auth-file={}", tokens.display()),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-issuer={server}"),
                format!("--service-account-key-file={}", serving_key.display()),
                format!(
                    "--service-account-signing-key-file={}",
                    serving_key.display()
                ),
                // No controller-manager mints service-account tokens.
                "--disable-admission-plugins=ServiceAccount".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allow-privileged=true".into(),
            ],
            dir.join("kube-apiserver.log"),
        )?;

        let kubeconfig = dir.join("kubeconfig");
        let document = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "aforo-test", "cluster": {
                "server": server,
                // The serving certificate followed by the CA that signed it.
                "certificate-authority": certs.join("apiserver.crt"),
            }}],
            "users": [{"name": "aforo-test-admin", "user": {"token": token}}],
            "contexts": [{"name": "aforo-test", "context": {
                "cluster": "aforo-test", "user": "aforo-test-admin",
            }}],
            "current-context": "aforo-test",
        });
        let document = document.to_string();
        std::fs::write(&kubeconfig, &document)
            .map_err(Error::io(format!("write {}", kubeconfig.display())))?;
        // JSON is YAML: the client reads what kubectl would.
        let kubeconfig_value = Kubeconfig::from_yaml(&document)?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            etcd.check_running()?;
            apiserver.check_running()?;
            let answer = match ready(&kubeconfig_value).await {
                Ok(config) => return Ok((apiserver, etcd, config, kubeconfig)),
                Err(answer) => answer,
            };
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    timeout: READY_TIMEOUT,
                    last: answer,
                    log: apiserver.log().to_owned(),
                    tail: log_tail(apiserver.log()),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client configuration once `/readyz` answers 200, or why not yet.
/// The configuration is rebuilt on every try: the CA file it trusts appears
/// only once the apiserver has started.
async fn ready(kubeconfig: &Kubeconfig) -> Result<Config, String> {
    let config = Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let client = Client::try_from(config.clone()).map_err(|e| e.to_string())?;
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await {
        Ok(Ok(_)) => Ok(config),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5s".into()),
    }
}

/// Distinct free loopback ports: all are held until all are picked.
fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::io("pick a free loopback port"))?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(Error::io("read a picked port"))?
            .port();
    }
    Ok(ports)
}

/// How long a condition may take to hold in a test. Generous: two cores
/// run the apiserver, etcd and every test binary.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` every 100 ms until it answers `Ok`, for at most [`WAIT`];
/// then panics with `what` and the last state `check` reported.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not within {WAIT:?}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
