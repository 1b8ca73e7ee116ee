//! Where `kube-apiserver` and `etcd` are: `AFORO_CONTROLPLANE_BIN`, or the
//! cache directory scripts/controlplane.sh builds into, keyed by the versions
//! pinned in tests/controlplane/go.mod.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::Error;

/// The Go module that pins both versions; scripts/controlplane.sh reads the
/// same file, so the harness looks where the script builds.
const GO_MOD: &str = include_str!("../../tests/controlplane/go.mod");

/// The two programs of the control plane.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub etcd: PathBuf,
    pub apiserver: PathBuf,
}

impl Binaries {
    pub(crate) fn locate() -> Result<Binaries, Error> {
        Self::locate_with(|name| std::env::var_os(name))
    }

    /// [`locate`](Self::locate) with the environment given, for tests.
    fn locate_with(env: impl Fn(&str) -> Option<OsString>) -> Result<Binaries, Error> {
        let (dir, source_of_dir) = match env("AFORO_CONTROLPLANE_BIN") {
            Some(dir) => (PathBuf::from(dir), "AFORO_CONTROLPLANE_BIN"),
            None => {
                let cache = match env("AFORO_CACHE_DIR") {
                    Some(dir) => PathBuf::from(dir),
                    None => {
                        PathBuf::from(env("HOME").ok_or(Error::NoCacheDir)?).join(".cache/aforo")
                    }
                };
                (default_dir(&cache)?, "the default cache directory")
            }
        };
        let binary = |name: &'static str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::BinaryMissing {
                    binary: name,
                    dir: dir.clone(),
                    source_of_dir,
                })
            }
        };
        Ok(Binaries {
            etcd: binary("etcd")?,
            apiserver: binary("kube-apiserver")?,
        })
    }
}

/// `<cache>/controlplane/<k8s-version>-etcd-<etcd-version>`, as
/// scripts/controlplane.sh names it.
fn default_dir(cache: &Path) -> Result<PathBuf, Error> {
    let kubernetes = pinned_version("k8s.io/kubernetes")?;
    let etcd = pinned_version("go.etcd.io/etcd/server/v3")?;
    Ok(cache
        .join("controlplane")
        .join(format!("{kubernetes}-etcd-{etcd}")))
}

/// The version go.mod requires `module` at, from either a `require` block
/// line (`module vX // indirect`) or a one-line `require module vX`.
fn pinned_version(module: &'static str) -> Result<&'static str, Error> {
    GO_MOD
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["require", m, version, ..] | [m, version, ..]
                    if *m == module && version.starts_with('v') =>
                {
                    Some(*version)
                }
                _ => None,
            }
        })
        .ok_or(Error::VersionNotPinned { module })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_directory_is_keyed_by_the_pinned_kubernetes_and_etcd_versions() {
        let dir = default_dir(Path::new("cache")).expect("go.mod pins both");
        let name = dir
            .strip_prefix("cache/controlplane")
            .expect("under <cache>/controlplane")
            .to_str()
            .expect("UTF-8");
        let (kubernetes, etcd) = name.split_once("-etcd-").expect("<k8s>-etcd-<etcd>");
        assert!(kubernetes.starts_with("v1."), "{name}");
        assert!(etcd.starts_with("v3."), "{name}");
    }

    #[test]
    fn missing_binaries_name_the_script_that_builds_them() {
        let empty = tempfile::tempdir().expect("a temporary directory");
        let error = Binaries::locate_with(|name| {
            (name == "AFORO_CONTROLPLANE_BIN").then(|| empty.path().into())
        })
        .expect_err("an empty directory has no binaries");
        let message = error.to_string();
        assert!(message.contains("no etcd in"), "{message}");
        assert!(message.contains("AFORO_CONTROLPLANE_BIN"), "{message}");
        assert!(message.contains("scripts/controlplane.sh"), "{message}");
    }

    #[test]
    fn without_the_variable_the_binaries_are_looked_for_in_the_cache() {
        let cache = tempfile::tempdir().expect("a temporary directory");
        let error =
            Binaries::locate_with(|name| (name == "AFORO_CACHE_DIR").then(|| cache.path().into()))
                .expect_err("an empty cache has no binaries");
        match error {
            Error::BinaryMissing { dir, .. } => {
                assert_eq!(dir, default_dir(cache.path()).expect("pinned versions"));
            }
            other => panic!("expected BinaryMissing, got {other}"),
        }
        assert!(matches!(
            Binaries::locate_with(|_| None),
            Err(Error::NoCacheDir)
        ));
    }

    #[test]
    fn replaced_staging_modules_are_not_mistaken_for_requires() {
        // k8s.io/sample-apiserver appears only as `k8s.io/sample-apiserver =>
        // k8s.io/sample-apiserver v0.x`: replaced, never required.
        assert!(GO_MOD.contains("k8s.io/sample-apiserver => "));
        assert!(matches!(
            pinned_version("k8s.io/sample-apiserver"),
            Err(Error::VersionNotPinned { .. })
        ));
    }
}
