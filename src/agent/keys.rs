//! The keys the agent keeps: the signing keyring (from the manifests, else in the state
//! directory) and the key of each ServiceKey without a key Secret, generated once into files.

use super::files::{self, Found, Meta};
use super::{Agent, KEY, KEYRING_FILE, Pass, Paths, USERNAME};
use crate::keyring::{Algorithm, Keyring};
use crate::manifests::Manifests;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::path::Path;

/// The signing keyring: from the manifests, else persisted in the state directory (created
/// once). Returns it and where it came from, for the log.
pub fn keyring(
    manifests: &Manifests,
    paths: &Paths,
    namespace: &str,
    secret: &str,
    algorithm: Algorithm,
) -> Result<(Keyring, String), crate::BoxError> {
    if let Some(ring) = manifests.keyring(namespace, secret)? {
        return Ok((
            ring,
            format!("the keyring Secret {namespace}/{secret} in the manifests"),
        ));
    }
    let path = paths.state.join(KEYRING_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let ring = Keyring::from_json(&bytes)
                .map_err(|e| format!("{}: {e}; delete it to start over", path.display()))?;
            Ok((ring, path.display().to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ring = Keyring::generate(algorithm, Timestamp::now())?;
            files::write_private(&path, &ring.to_json())
                .map_err(|e| format!("cannot persist the keyring in {}: {e}", path.display()))?;
            Ok((ring, format!("{} (created)", path.display())))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display()).into()),
    }
}

impl Agent {
    /// The keys of the ServiceKeys without a key Secret in the manifests: generated once into
    /// files, read back after. Returns them as the Secrets the key index joins.
    pub(super) fn generated_keys(&self, manifests: &Manifests, pass: &mut Pass) -> Vec<Secret> {
        let mut secrets = Vec::new();
        for key in &manifests.service_keys {
            let namespace = key.namespace().unwrap_or_default();
            let name = key.key_secret_name();
            if manifests.declares_secret(&namespace, &name) {
                continue;
            }
            let dir = self.dir(&namespace, &name);
            let owner = format!("ServiceKey {namespace}/{}", key.name_any());
            let username = key.spec.principal.name.as_bytes().to_vec();
            let value = match files::read(&dir) {
                Ok(Found::Ours(current)) if current.meta.owner == owner => {
                    match current.files.get(KEY).filter(|k| !k.is_empty()) {
                        // Never rewritten; only a changed user name is.
                        Some(value) => {
                            if current.files.get(USERNAME) != Some(&username)
                                && let Err(e) = self.write_key(&dir, &owner, value, &username)
                            {
                                tracing::error!(dir = %dir.display(), error = %e, "cannot update the key's user name");
                            }
                            value.clone()
                        }
                        None => self.generate_key(&dir, &owner, &username, pass),
                    }
                }
                Ok(Found::Nothing) => self.generate_key(&dir, &owner, &username, pass),
                Ok(_) => {
                    tracing::error!(dir = %dir.display(), service_key = %owner, "a file tree not written by tokenmint is in the way of the generated key; it is never overwritten");
                    pass.failed.push(owner);
                    continue;
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot read the generated key");
                    pass.failed.push(owner);
                    continue;
                }
            };
            if value.is_empty() {
                continue;
            }
            pass.kept_dirs.insert(dir);
            let mut secret = Secret::default();
            secret.metadata.name = Some(name);
            secret.metadata.namespace = Some(namespace);
            secret.data = Some(BTreeMap::from([(
                KEY.to_owned(),
                k8s_openapi::ByteString(value),
            )]));
            secrets.push(secret);
        }
        secrets
    }

    fn write_key(
        &self,
        dir: &Path,
        owner: &str,
        key: &[u8],
        username: &[u8],
    ) -> std::io::Result<()> {
        let content = BTreeMap::from([
            (KEY.to_owned(), key.to_vec()),
            (USERNAME.to_owned(), username.to_vec()),
        ]);
        files::write(
            dir,
            &content,
            &Meta {
                owner: owner.to_owned(),
                ..Meta::default()
            },
        )
    }

    fn generate_key(&self, dir: &Path, owner: &str, username: &[u8], pass: &mut Pass) -> Vec<u8> {
        let key = crate::reconcile::service_key::generate_key().into_bytes();
        match self.write_key(dir, owner, &key, username) {
            Ok(()) => {
                tracing::info!(service_key = %owner, file = %dir.join(KEY).display(), "generated the service key");
                pass.minted.push(owner.to_owned());
                key
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot write the generated key");
                pass.failed.push(owner.to_owned());
                Vec::new()
            }
        }
    }
}
