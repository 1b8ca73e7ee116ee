use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why the control plane could not start or serve a test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no {binary} in {dir} ({source_of_dir}): build kube-apiserver and etcd with \
         `eval \"$(scripts/controlplane.sh)\"`, which prints the directory to use as \
         AFORO_CONTROLPLANE_BIN"
    )]
    BinaryMissing {
        binary: &'static str,
        dir: PathBuf,
        source_of_dir: &'static str,
    },

    #[error(
        "neither AFORO_CONTROLPLANE_BIN nor HOME is set, so the control-plane binaries \
         cannot be found; run `eval \"$(scripts/controlplane.sh)\"`"
    )]
    NoCacheDir,

    #[error("tests/controlplane/go.mod names no version of {module}")]
    VersionNotPinned { module: &'static str },

    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{process} exited ({status}) before the control plane was ready; the end of {log}:\n{tail}"
    )]
    Exited {
        process: &'static str,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "kube-apiserver was not ready within {timeout:?} (last answer to /readyz: {last}); \
         the end of {log}:\n{tail}"
    )]
    NotReady {
        timeout: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "CustomResourceDefinition {name} was not Established within {timeout:?} (conditions: {conditions})"
    )]
    NotEstablished {
        name: String,
        timeout: Duration,
        conditions: String,
    },

    #[error("the kubeconfig for the control plane: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    #[error(transparent)]
    Kube(#[from] kube::Error),
}

impl Error {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }
}
