//! The denylist of `serve --manifests`, kept in one file of the state directory so that a
//! revocation outlives the process: loaded at start, rewritten whole (atomically, see
//! [`crate::private_file`]) after every change. Its entries and markers have the form of the
//! cluster's ([`super::store`]), and go through the same rules when loaded: every one is kept,
//! whatever the capacity.

use super::store::{entry_key, entry_value, parse_entry};
use super::{Denylist, RevocationError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the file in the state directory.
pub const FILE_NAME: &str = "revocations.json";

#[derive(Serialize, Deserialize, Default)]
struct Document {
    /// Entries by data key, as in a bucket.
    #[serde(default)]
    entries: BTreeMap<String, String>,
    /// Markers by ServiceKey uid.
    #[serde(default)]
    markers: BTreeMap<String, i64>,
    /// The per-token list written before tokens were bound to their ServiceKey's uid: every
    /// token it names is refused anyway, so it is read (to accept the file) and not kept.
    #[serde(default, skip_serializing)]
    revoked: Vec<serde_json::Value>,
}

/// Where a denylist persists.
#[derive(Debug)]
pub struct DenylistFile {
    path: PathBuf,
    /// One rewrite at a time, each of the whole list as it is when the rewrite starts, so the
    /// last one to finish holds every revocation made before it.
    writing: tokio::sync::Mutex<()>,
}

impl DenylistFile {
    /// The denylist file of the state directory `state`.
    pub fn in_dir(state: &Path) -> Self {
        DenylistFile {
            path: state.join(FILE_NAME),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds the entries and markers recorded in the file to `denylist`; returns how many. A
    /// missing file is an empty list; an unreadable one is an error (revocations are never
    /// dropped silently).
    pub fn load_into(&self, denylist: &Denylist) -> Result<usize, String> {
        let bytes = match crate::private_file::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let document: Document = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is not a revocation list: {e}; move it away to start without its revocations",
                self.path.display()
            )
        })?;
        if !document.revoked.is_empty() {
            tracing::info!(
                file = %self.path.display(),
                count = document.revoked.len(),
                "revocations of tokens minted before tokens were bound to their ServiceKey's uid are not needed: those tokens are refused anyway"
            );
        }
        let now = jiff::Timestamp::now().as_second();
        let mut loaded = 0;
        for (key, value) in &document.entries {
            if let Some((slot, expires_at, uid, caller)) = parse_entry(key, value) {
                denylist.learn(slot, expires_at, uid, caller, now);
                loaded += 1;
            }
        }
        for (uid, at) in &document.markers {
            denylist.raise_marker(uid, *at);
            loaded += 1;
        }
        Ok(loaded)
    }

    /// Rewrites the file with every entry and marker of `denylist`.
    pub async fn save(&self, denylist: &Denylist) -> Result<(), RevocationError> {
        let _one_at_a_time = self.writing.lock().await;
        let snapshot = denylist.snapshot();
        let document = Document {
            entries: snapshot
                .entries
                .iter()
                .map(|(slot, expires_at, uid, caller)| {
                    (entry_key(*slot), entry_value(*expires_at, uid, *caller))
                })
                .collect(),
            markers: snapshot.markers.into_iter().collect(),
            revoked: Vec::new(),
        };
        let persist = |source| RevocationError::Persist {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(&document).map_err(|e| persist(e.into()))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || crate::private_file::write(&path, &bytes))
            .await
            .map_err(|e| persist(std::io::Error::other(e)))?
            .map_err(persist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::{Origin, Revocation, Target};

    #[tokio::test]
    async fn revocations_survive_a_reload() {
        let dir = std::env::temp_dir().join(format!(
            "tokenmint-denylist-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = DenylistFile::in_dir(&dir);
        let list = Denylist::new(10, 10);
        assert_eq!(file.load_into(&list).unwrap(), 0, "no file yet");
        let exp = jiff::Timestamp::now().as_second() + 3_600;
        for (target, origin) in [
            (
                Target::Token {
                    jti: "0b6f0e3c-5d2a-4d7e-9a51-1f7c6f0e2a11".into(),
                    expires_at: exp,
                },
                Origin::Caller,
            ),
            (
                Target::Family {
                    sid: "9a6f0e3c-5d2a-4d7e-9a51-1f7c6f0e2a11".into(),
                    until: exp,
                },
                Origin::System,
            ),
            (Target::NeverExpiring { issued_at: 1_000 }, Origin::System),
        ] {
            list.record(&Revocation {
                target,
                service_key_uid: "uid-1".into(),
                origin,
                reason: "test".into(),
            });
        }
        file.save(&list).await.unwrap();
        // A smaller capacity still holds every recorded revocation.
        let reloaded = Denylist::new(1, 1);
        assert_eq!(file.load_into(&reloaded).unwrap(), 3);
        assert!(reloaded.is_revoked("0b6f0e3c-5d2a-4d7e-9a51-1f7c6f0e2a11"));
        assert!(reloaded.family_revoked("9a6f0e3c-5d2a-4d7e-9a51-1f7c6f0e2a11"));
        assert!(reloaded.never_expiring_revoked("uid-1", 1_000));
        assert_eq!(reloaded.snapshot(), list.snapshot());
        // The list of an earlier version loads, and holds nothing needed.
        std::fs::write(
            file.path(),
            r#"{"revoked": [{"jti": "a", "expiresAt": "2030-01-01T00:00:00Z"}]}"#,
        )
        .unwrap();
        assert_eq!(file.load_into(&Denylist::new(1, 1)).unwrap(), 0);
        std::fs::write(file.path(), "not json").unwrap();
        assert!(
            file.load_into(&Denylist::new(1, 1))
                .unwrap_err()
                .contains("not a revocation list")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
