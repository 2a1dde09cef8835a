//! The keys the agent keeps: the signing keyring (from the manifests, else in the state
//! directory) and the key of each ServiceKey without a key Secret, generated once into its
//! tree `OUT/<namespace>/<secretName>/`, as the operator generates it into a Secret.

use super::files::{Found, Meta};
use super::plan::Claim;
use super::state::KEYRING_FILE;
use super::trees::TreeName;
use super::{Agent, KEY, Pass, Paths, USERNAME};
use crate::desired::Failure;
use crate::http::metrics::FileError;
use crate::keyring::{Algorithm, Keyring};
use crate::manifests::{Held, Manifests};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;
use std::io;

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
    // Tokens signed by any other keyring would not verify where that one is trusted.
    let held = manifests.held("Secret", namespace, secret);
    if let Some(why @ Held::Refused { message, .. }) = held {
        return Err(format!(
            "cannot sign: the keyring Secret {namespace}/{secret}: {why}: {message}"
        )
        .into());
    }
    let path = paths.state.join(KEYRING_FILE);
    match crate::private_file::read(&path) {
        Ok(bytes) => {
            let ring = Keyring::from_json(&bytes)
                .map_err(|e| format!("{}: {e}; delete it to start over", path.display()))?;
            Ok((ring, path.display().to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(why) = held {
                return Err(format!(
                    "no keyring in {}, and the keyring Secret {namespace}/{secret}: {why}; a new keyring would replace it: fix or remove that manifest",
                    paths.state.display()
                )
                .into());
            }
            let ring = Keyring::generate(algorithm, Timestamp::now())?;
            crate::private_file::write(&path, &ring.to_json())
                .map_err(|e| format!("cannot persist the keyring in {}: {e}", path.display()))?;
            Ok((ring, format!("{} (created)", path.display())))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display()).into()),
    }
}

impl Agent {
    /// The keys of the ServiceKeys whose key trees this pass keeps: generated once into files,
    /// read back after. Returns them as the Secrets the key index joins.
    pub(super) fn generated_keys(
        &self,
        claims: Vec<(Claim<'_>, TreeName, io::Result<Found>)>,
        manifests: &Manifests,
        pass: &mut Pass,
    ) -> Vec<Secret> {
        let mut secrets = Vec::new();
        for (claim, tree, found) in claims {
            let super::plan::Role::Key(key) = claim.role else {
                continue;
            };
            let owner = &claim.owner;
            let dir = self.trees.path(&tree);
            let username = key.spec.principal.name.as_bytes().to_vec();
            let value = match found {
                Ok(Found::Ours(current)) => {
                    match current.files.get(KEY).filter(|k| !k.is_empty()) {
                        // Never rewritten; only a changed user name is.
                        Some(value) => {
                            if current.files.get(USERNAME) != Some(&username)
                                && let Err(e) = self.write_key(&tree, owner, value, &username)
                            {
                                failure!(self, pass, owner, dir = %dir.display(), error = %e, "cannot update the key's user name; retrying");
                                pass.error(owner, super::tokens::classify(&e));
                            }
                            Some(value.clone())
                        }
                        None => self.generate_key(&tree, owner, &username, pass),
                    }
                }
                Ok(Found::Nothing) => {
                    match manifests.held("Secret", tree.namespace(), tree.secret()) {
                        // The key may be that Secret's: none is generated in its place.
                        Some(why) => {
                            failure!(self, pass, owner, owner = %owner, reason = %why, "no key: its key Secret is held");
                            pass.failed.push(owner.clone());
                            None
                        }
                        None => self.generate_key(&tree, owner, &username, pass),
                    }
                }
                Ok(Found::Foreign(why)) => {
                    let failure = Failure::secret_conflict(&claim.secret, claim.kind);
                    failure!(self, pass, owner, owner = %owner, reason = failure.reason.as_str(), message = %failure.message, detail = %why, "no key");
                    pass.error(owner, FileError::conflict);
                    None
                }
                Err(e) => {
                    failure!(self, pass, owner, dir = %dir.display(), error = %e, "cannot read the generated key; retrying");
                    pass.error(owner, super::tokens::classify(&e));
                    None
                }
            };
            let Some(value) = value else { continue };
            let mut secret = Secret::default();
            secret.metadata.name = Some(tree.secret().to_owned());
            secret.metadata.namespace = Some(tree.namespace().to_owned());
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
        tree: &TreeName,
        owner: &str,
        key: &[u8],
        username: &[u8],
    ) -> io::Result<()> {
        let content = BTreeMap::from([
            (KEY.to_owned(), key.to_vec()),
            (USERNAME.to_owned(), username.to_vec()),
        ]);
        let meta = Meta {
            owner: owner.to_owned(),
            ..Meta::default()
        };
        self.trees.write(tree, &content, &meta)
    }

    fn generate_key(
        &self,
        tree: &TreeName,
        owner: &str,
        username: &[u8],
        pass: &mut Pass,
    ) -> Option<Vec<u8>> {
        let key = crate::reconcile::service_key::generate_key().into_bytes();
        let dir = self.trees.path(tree);
        match self.write_key(tree, owner, &key, username) {
            Ok(()) => {
                tracing::info!(service_key = %owner, file = %dir.join(KEY).display(), "generated the service key");
                pass.minted.push(owner.to_owned());
                Some(key)
            }
            Err(e) => {
                failure!(self, pass, owner, dir = %dir.display(), error = %e, "cannot write the generated key; retrying");
                pass.error(owner, super::tokens::classify(&e));
                None
            }
        }
    }
}
