//! The harness itself: the apiserver it starts authenticates and authorizes
//! as a real one does, and neither process outlives the control plane or the
//! test binary that started it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use aforo_kubetest::ControlPlane;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The directory a control plane keeps its state in (its kubeconfig sits in
/// a subdirectory per start attempt).
fn state_dir(control_plane: &ControlPlane) -> PathBuf {
    state_dir_of(control_plane.kubeconfig())
}

fn state_dir_of(kubeconfig: &Path) -> PathBuf {
    kubeconfig
        .parent()
        .and_then(Path::parent)
        .expect("<dir>/<attempt>/kubeconfig")
        .to_owned()
}

/// Processes whose command line mentions `dir`: etcd and kube-apiserver are
/// given their data, certificate and log paths under it. A killed process
/// not yet reaped has an empty command line, so it does not count.
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_str().expect("a UTF-8 path");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{}: {cmdline}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

async fn config_from(kubeconfig: &Path) -> Config {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("the harness's kubeconfig");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client configuration")
}

#[tokio::test]
async fn the_admin_is_served_and_rbac_forbids_a_user_without_bindings() {
    let control_plane = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let admin = control_plane.client().expect("a client");
    let version = admin.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");

    // The admin's group, system:masters, may do anything.
    Api::<Namespace>::all(admin)
        .list(&ListParams::default())
        .await
        .expect("the admin lists namespaces");

    // Impersonating a user nobody bound a role to: with RBAC (and not
    // AlwaysAllow) authorizing, the apiserver says no.
    let mut config = config_from(control_plane.kubeconfig()).await;
    config.auth_info.impersonate = Some("nobody".into());
    let nobody = Client::try_from(config).expect("a client");
    match Api::<Namespace>::all(nobody)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden for an unbound user, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_token_is_unauthorized() {
    let control_plane = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut config = config_from(control_plane.kubeconfig()).await;
    config.auth_info.token = Some("not-the-token".to_owned().into());
    let stranger = Client::try_from(config).expect("a client");
    match Api::<Namespace>::all(stranger)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => panic!("expected 401 Unauthorized for an unknown token, got {other:?}"),
    }
}

#[tokio::test]
async fn each_call_creates_a_fresh_namespace() {
    let control_plane = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = control_plane.namespace("fresh").await.expect("a namespace");
    let second = control_plane.namespace("fresh").await.expect("a namespace");
    assert_ne!(first, second);
    let namespaces = Api::<Namespace>::all(control_plane.client().expect("a client"));
    for name in [&first, &second] {
        let namespace = namespaces.get(name).await.expect("the namespace exists");
        assert_eq!(namespace.metadata.name.as_ref(), Some(name));
    }
}

#[tokio::test]
async fn dropping_the_control_plane_stops_both_processes_and_removes_its_directory() {
    let control_plane = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = state_dir(&control_plane);
    let running = processes_using(&dir);
    assert_eq!(running.len(), 2, "etcd and kube-apiserver: {running:#?}");

    drop(control_plane);

    assert_eq!(processes_using(&dir), Vec::<String>::new());
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

/// A child process running this test binary's
/// `child_holds_the_shared_control_plane`, and the state directory of the
/// control plane it started.
struct Child {
    process: std::process::Child,
    stdout: BufReader<ChildStdout>,
    dir: PathBuf,
}

fn child_with_shared_control_plane() -> Child {
    let mut process = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "child_holds_the_shared_control_plane",
            "--ignored",
            "--nocapture",
        ])
        .env("AFORO_KUBETEST_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child test");
    let mut stdout = BufReader::new(process.stdout.take().expect("the child's stdout"));
    let mut line = String::new();
    let kubeconfig = loop {
        line.clear();
        let read = stdout.read_line(&mut line).expect("the child's output");
        assert!(read > 0, "the child ended without reporting its kubeconfig");
        if let Some(path) = line.trim_end().strip_prefix("KUBECONFIG=") {
            break PathBuf::from(path);
        }
    };
    Child {
        process,
        stdout,
        dir: state_dir_of(&kubeconfig),
    }
}

/// Not a test of its own: the child process of the two tests below. It
/// starts the shared control plane, reports where, and returns once its
/// stdin closes (the parent either closes it or kills the child first).
#[tokio::test]
#[ignore = "run as a child process by the tests of the shared control plane's end"]
async fn child_holds_the_shared_control_plane() {
    assert!(
        std::env::var_os("AFORO_KUBETEST_CHILD").is_some(),
        "run only by the shared control plane tests"
    );
    let control_plane = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("KUBECONFIG={}", control_plane.kubeconfig().display());
    let mut rest = String::new();
    std::io::stdin()
        .read_line(&mut rest)
        .expect("read until the parent closes stdin");
}

#[test]
fn the_shared_control_plane_stops_when_the_test_binary_exits() {
    let mut child = child_with_shared_control_plane();
    let dir = child.dir.clone();
    assert_eq!(
        processes_using(&dir).len(),
        2,
        "etcd and kube-apiserver run"
    );

    drop(child.process.stdin.take()); // the child test returns; its binary exits
    let mut output = String::new();
    child
        .stdout
        .read_to_string(&mut output)
        .expect("the child's output");
    let status = child.process.wait().expect("the child exits");
    assert!(
        status.success(),
        "the child test failed ({status}):\n{output}"
    );

    assert_eq!(processes_using(&dir), Vec::<String>::new());
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

#[test]
fn a_killed_test_binary_takes_its_control_plane_with_it() {
    let mut child = child_with_shared_control_plane();
    let dir = child.dir.clone();
    assert_eq!(
        processes_using(&dir).len(),
        2,
        "etcd and kube-apiserver run"
    );

    child.process.kill().expect("SIGKILL the child");
    child.process.wait().expect("reap the child");

    // The kernel sends the parent-death signal as the child dies; the two
    // processes end as soon as they are scheduled.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_using(&dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_using(&dir), Vec::<String>::new());
    // Nothing ran to remove the directory; the test does.
    std::fs::remove_dir_all(&dir).expect("remove the killed child's directory");
}
