//! Where webhook secrets come from: files laid out the way Kubernetes mounts
//! Secrets, `<dir>/<namespace>/<secret name>/<key>`.
//!
//! In a cluster each referenced Secret is mounted (read-only) at
//! `<dir>/<namespace>/<name>`, and the kubelet keeps the files current, so a
//! rotated secret takes effect without a restart. In standalone the folder
//! is `<data dir>/secrets` and anyone who can write it can add a secret:
//! `printf %s "$SECRET" > aforo-data/secrets/default/stripe-webhook/signing-secret`.
//! A secret is read on every delivery, for the same reason; never logged,
//! never stored.

use std::path::PathBuf;

/// The secret files under one folder.
#[derive(Clone, Debug)]
pub struct SecretFiles {
    dir: Option<PathBuf>,
}

/// A Kubernetes object name or Secret key: what may safely be a path
/// segment. (Keys may also hold `.`, `_` and `-`; never `/` or `..`.)
fn is_segment(text: &str) -> bool {
    !text.is_empty()
        && text != "."
        && text != ".."
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl SecretFiles {
    pub fn new(dir: Option<PathBuf>) -> Self {
        SecretFiles { dir }
    }

    /// The value of `key` in Secret `name` of `namespace`. Trailing line
    /// breaks and spaces are dropped (a file written by `echo` ends in one;
    /// no provider's secret does).
    pub fn read(&self, namespace: &str, name: &str, key: &str) -> Result<Vec<u8>, String> {
        let dir = self.dir.as_ref().ok_or_else(|| {
            "no secrets folder is configured (--secrets-dir or AFORO_SECRETS_DIR)".to_owned()
        })?;
        for (what, text) in [
            ("namespace", namespace),
            ("secret name", name),
            ("key", key),
        ] {
            if !is_segment(text) {
                return Err(format!("{what} {text:?} is not a valid Kubernetes name"));
            }
        }
        let path = dir.join(namespace).join(name).join(key);
        let mut value = std::fs::read(&path)
            .map_err(|e| format!("cannot read secret {namespace}/{name} key {key:?}: {e}"))?;
        while value.last().is_some_and(|b| b.is_ascii_whitespace()) {
            value.pop();
        }
        if value.is_empty() {
            return Err(format!("secret {namespace}/{name} key {key:?} is empty"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_from_the_mounted_layout_and_never_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("default").join("stripe-webhook");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("signing-secret"), "whsec_abc\n").unwrap();
        let files = SecretFiles::new(Some(dir.path().to_owned()));
        assert_eq!(
            files
                .read("default", "stripe-webhook", "signing-secret")
                .unwrap(),
            b"whsec_abc"
        );
        assert!(files.read("default", "stripe-webhook", "other").is_err());
        let escape = files.read("default", "..", "signing-secret").unwrap_err();
        assert!(escape.contains("not a valid Kubernetes name"), "{escape}");
        assert!(files.read("default", "stripe-webhook", "../x").is_err());
        assert!(SecretFiles::new(None).read("default", "a", "b").is_err());
    }
}
