//! The denylist of `serve --manifests`, kept in one file of the state directory so that a
//! revocation outlives the process: loaded at start, rewritten whole (atomically, see
//! [`crate::private_file`]) after every change. Small on purpose: one JSON document of the
//! entries, behind [`DenylistFile::load_into`] and [`DenylistFile::save`].

use super::{Denylist, Revocation, RevocationError};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the file in the state directory.
pub const FILE_NAME: &str = "revocations.json";

#[derive(Serialize, Deserialize)]
struct Document {
    revoked: Vec<Record>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
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

    /// Adds the revocations recorded in the file to `denylist`; returns how many. A missing
    /// file is an empty list; an unreadable one is an error (revocations are never dropped
    /// silently).
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
        let revocations: Vec<Revocation> = document
            .revoked
            .into_iter()
            .map(|r| Revocation {
                jti: r.jti,
                expires_at: r.expires_at,
                kid: r.kid,
                reason: String::new(),
            })
            .collect();
        denylist.restore(&revocations);
        Ok(revocations.len())
    }

    /// Rewrites the file with every entry of `denylist`.
    pub async fn save(&self, denylist: &Denylist) -> Result<(), RevocationError> {
        let _one_at_a_time = self.writing.lock().await;
        let document = Document {
            revoked: denylist
                .snapshot()
                .into_iter()
                .map(|r| Record {
                    jti: r.jti,
                    expires_at: r.expires_at,
                    kid: r.kid,
                })
                .collect(),
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

    #[tokio::test]
    async fn revocations_survive_a_reload() {
        let dir = std::env::temp_dir().join(format!(
            "tokenmint-denylist-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = DenylistFile::in_dir(&dir);
        let list = Denylist::new(10);
        assert_eq!(file.load_into(&list).unwrap(), 0, "no file yet");
        let expires = Timestamp::from_second(1_900_000_000).unwrap();
        for (jti, expires_at, kid) in [
            ("a", Some(expires), None),
            ("b", None, Some("hs256-1".to_owned())),
        ] {
            list.insert(&Revocation {
                jti: jti.into(),
                expires_at,
                kid,
                reason: "test".into(),
            })
            .unwrap();
        }
        file.save(&list).await.unwrap();
        // A smaller capacity still holds every recorded revocation.
        let reloaded = Denylist::new(1);
        assert_eq!(file.load_into(&reloaded).unwrap(), 2);
        assert!(reloaded.is_revoked("a") && reloaded.is_revoked("b"));
        assert_eq!(reloaded.snapshot(), list.snapshot());
        std::fs::write(file.path(), "not json").unwrap();
        assert!(
            file.load_into(&Denylist::new(1))
                .unwrap_err()
                .contains("not a revocation list")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
