//! The uids of the ServiceKeys in the manifests. The API server gives every object a uid when
//! it is created and never reuses one; every token carries its ServiceKey's uid, so that a
//! ServiceKey deleted and created again under its name does not revive the tokens of the one
//! before. Without a cluster the agent plays that part: a ServiceKey gets a fresh uid the first
//! time a pass sees it, kept in the state directory across restarts and forgotten once the
//! ServiceKey leaves DIR (a removal while stopped included: the first pass no longer finds it).
//! A uid the manifest sets is ignored, as the API server ignores one given on create: a copied
//! uid would let one ServiceKey spend another's revocation quota or raise its marker.

use crate::crd::ServiceKey;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the file in the state directory.
pub const FILE_NAME: &str = "service-key-uids.json";

/// The uids assigned so far, by `namespace/name`.
#[derive(Debug)]
pub struct Uids {
    path: PathBuf,
    assigned: BTreeMap<String, String>,
}

impl Uids {
    /// The uids kept in the state directory `state`. A missing file is none yet; an unreadable
    /// one is reported and starts afresh: every ServiceKey then gets a new uid, which voids the
    /// tokens bound to the old ones (they are minted again) rather than honouring a token of a
    /// ServiceKey that may have been deleted since.
    pub fn load(state: &Path) -> Self {
        let path = state.join(FILE_NAME);
        let assigned = match crate::private_file::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(file = %path.display(), error = %e, "not a list of ServiceKey uids; assigning new ones (tokens minted before are minted again)");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the ServiceKey uids; assigning new ones (tokens minted before are minted again)");
                BTreeMap::new()
            }
        };
        Uids { path, assigned }
    }

    /// `keys` with their uids: the one assigned before, else a new one (never the manifest's).
    /// ServiceKeys no longer in `keys` are forgotten, unless `held(namespace, name)`: one whose
    /// manifest is refused (or may sit in a file that cannot be read) is still the object the
    /// API server would keep, and its tokens stay bound to it. The file is rewritten when
    /// anything changed (a failure is logged: the uids hold while the process runs).
    pub fn assign(
        &mut self,
        keys: &[ServiceKey],
        held: impl Fn(&str, &str) -> bool,
    ) -> Vec<ServiceKey> {
        let mut current: BTreeMap<String, String> = self
            .assigned
            .iter()
            .filter(|(reference, _)| {
                reference
                    .split_once('/')
                    .is_some_and(|(namespace, name)| held(namespace, name))
            })
            .map(|(reference, uid)| (reference.clone(), uid.clone()))
            .collect();
        let keys: Vec<ServiceKey> = keys
            .iter()
            .map(|key| {
                let reference =
                    format!("{}/{}", key.namespace().unwrap_or_default(), key.name_any());
                let uid = self
                    .assigned
                    .get(&reference)
                    .cloned()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                current.insert(reference, uid.clone());
                let mut key = key.clone();
                key.metadata.uid = Some(uid);
                key
            })
            .collect();
        if current != self.assigned {
            self.assigned = current;
            let bytes = serde_json::to_vec_pretty(&self.assigned).unwrap_or_default();
            if let Err(e) = crate::private_file::write(&self.path, &bytes) {
                tracing::error!(file = %self.path.display(), error = %e, "cannot keep the ServiceKey uids; a restart will assign new ones (and mint their tokens again)");
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, uid: Option<&str>) -> ServiceKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"principal": {"id": "1", "email": "a@b.c", "name": "u"}}
        }))
        .unwrap()
    }

    fn uid_of(keys: &[ServiceKey], name: &str) -> String {
        keys.iter()
            .find(|k| k.name_any() == name)
            .and_then(|k| k.metadata.uid.clone())
            .unwrap()
    }

    #[test]
    fn uids_last_across_restarts_and_a_removed_service_key_comes_back_as_another() {
        let dir = std::env::temp_dir().join(format!("tokenmint-uids-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut uids = Uids::load(&dir);
        let none = |_: &str, _: &str| false;
        // `b` copies `a`'s uid: ignored, as the API server ignores a uid given on create.
        let first = uids.assign(&[key("a", None)], none);
        let a = uid_of(&first, "a");
        let both = uids.assign(&[key("a", None), key("b", Some(&a))], none);
        assert_eq!(uid_of(&both, "a"), a);
        assert_ne!(uid_of(&both, "b"), a, "a manifest's uid is not taken");
        // A restart: the same uid.
        let again = Uids::load(&dir).assign(&[key("a", None)], none);
        assert_eq!(uid_of(&again, "a"), a);
        // Removed (a pass without it), then added back: a new object, a new uid.
        let mut uids = Uids::load(&dir);
        uids.assign(&[], none);
        let back = uids.assign(&[key("a", None)], none);
        assert_ne!(uid_of(&back, "a"), a);
        // Held (its manifest refused for a while): still the same object when admitted again.
        let back_uid = uid_of(&back, "a");
        uids.assign(&[], |namespace, name| (namespace, name) == ("default", "a"));
        let admitted = uids.assign(&[key("a", None)], none);
        assert_eq!(uid_of(&admitted, "a"), back_uid);
        // A damaged file starts afresh.
        std::fs::write(dir.join(FILE_NAME), "not json").unwrap();
        assert_ne!(
            uid_of(&Uids::load(&dir).assign(&[key("a", None)], none), "a"),
            uid_of(&back, "a")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
