//! Revocation: a denylist of token ids, honoured by every route that accepts a token.
//!
//! In a cluster each revoked token is one ConfigMap in the release namespace (`--namespace`),
//! named after its `jti` and labelled [`ROLE_REVOCATION`]: written by whoever revokes (a
//! `serve` replica for `POST /oauth/revoke`, the operator for `tokenmint.dev/revoke`, a deleted
//! resource or a withdrawn permission), watched by every `serve` replica, so a revocation is
//! honoured everywhere as fast as a watch event travels and survives every restart. With
//! `--manifests` the denylist is kept in a file of the state directory ([`DenylistFile`]),
//! rewritten on every change and loaded at start.
//!
//! Bounded: an entry is dropped once the token it names would have expired (the operator's
//! leader sweeps; every replica ignores such entries meanwhile). A guest token that never
//! expires is denied until its signing key leaves the keyring — after which it does not verify
//! anyway — so its entry is dropped then. [`Denylist::capacity`] caps what a replica holds;
//! past it, new revocations are refused (503) rather than forgotten.

use crate::keyring::Keyring;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

mod persisted;
pub use persisted::DenylistFile;

/// `tokenmint.dev/secret-role` value of revocation ConfigMaps.
pub const ROLE_REVOCATION: &str = "revocation";
/// Label selector of the revocation ConfigMaps.
pub fn selector() -> String {
    format!(
        "{},{}={ROLE_REVOCATION}",
        crate::labels::MANAGED_SELECTOR,
        crate::labels::ROLE_LABEL
    )
}
/// Slack on expiry before an entry is dropped (the verifiers' clock-skew leeway).
const EXPIRY_SLACK_SECS: i64 = crate::keyring::LEEWAY_SECS as i64 + 30;

const JTI_KEY: &str = "jti";
const EXPIRES_AT_KEY: &str = "expires-at";
const KID_KEY: &str = "kid";
const REASON_KEY: &str = "reason";

/// One revoked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub jti: String,
    /// When the token expires; `None` for a guest token that never does.
    pub expires_at: Option<Timestamp>,
    /// The key that signed it (bounds the entry of a token that never expires).
    pub kid: Option<String>,
    /// Who revoked it and why, for audit (`kubectl get cm -l tokenmint.dev/secret-role=revocation`).
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("cannot record the revocation: {0}")]
    Kube(#[from] kube::Error),
    #[error("the revocation denylist is full ({capacity} entries); raise --max-revocations")]
    Full { capacity: usize },
    #[error("cannot record the revocation in {}: {source}", path.display())]
    Persist {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    expires_at: Option<i64>,
    kid: Option<String>,
}

impl From<&Revocation> for Entry {
    fn from(revocation: &Revocation) -> Self {
        Entry {
            expires_at: revocation.expires_at.map(|t| t.as_second()),
            kid: revocation.kid.clone(),
        }
    }
}

impl Entry {
    /// Whether the entry can go: its token expired, or (never expiring) its key is no longer
    /// among `kids` (the keyring's).
    fn obsolete(&self, now: i64, kids: Option<&[String]>) -> bool {
        match (self.expires_at, &self.kid, kids) {
            (Some(exp), _, _) => exp + EXPIRY_SLACK_SECS < now,
            (None, Some(kid), Some(kids)) => !kids.contains(kid),
            (None, _, _) => false,
        }
    }
}

/// How often revocations of tokens that can no longer verify are dropped.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// The revoked token ids a replica knows.
#[derive(Debug)]
pub struct Denylist {
    entries: RwLock<HashMap<String, Entry>>,
    capacity: usize,
    size: Gauge,
    limit: Gauge,
}

impl Default for Denylist {
    fn default() -> Self {
        Denylist::new(crate::cli::DEFAULT_MAX_REVOCATIONS)
    }
}

impl Denylist {
    pub fn new(capacity: usize) -> Self {
        let limit = Gauge::default();
        limit.set(i64::try_from(capacity).unwrap_or(i64::MAX));
        Denylist {
            entries: RwLock::default(),
            capacity,
            size: Gauge::default(),
            limit,
        }
    }

    /// Registers `tokenmint_revocation_denylist_entries` and `..._capacity`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "tokenmint_revocation_denylist_entries",
            "Revoked tokens this replica denies",
            self.size.clone(),
        );
        registry.register(
            "tokenmint_revocation_denylist_capacity",
            "Most revoked tokens a replica holds (--max-revocations); past it revocations are refused",
            self.limit.clone(),
        );
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        // An empty list (the common case) costs no hashing.
        let entries = self.read();
        !entries.is_empty() && entries.contains_key(jti)
    }

    /// Whether one more entry fits.
    pub fn has_room(&self) -> bool {
        self.len() < self.capacity
    }

    /// Adds a revocation; refused when full (an entry already present always fits).
    pub fn insert(&self, revocation: &Revocation) -> Result<(), RevocationError> {
        let mut entries = self.write();
        if entries.len() >= self.capacity && !entries.contains_key(&revocation.jti) {
            return Err(RevocationError::Full {
                capacity: self.capacity,
            });
        }
        entries.insert(revocation.jti.clone(), Entry::from(revocation));
        self.size.set(entries.len() as i64);
        Ok(())
    }

    pub fn remove(&self, jti: &str) {
        let mut entries = self.write();
        entries.remove(jti);
        self.size.set(entries.len() as i64);
    }

    /// Every entry, as revocations (without their reasons, which the list does not keep).
    pub fn snapshot(&self) -> Vec<Revocation> {
        let mut all: Vec<Revocation> = self
            .read()
            .iter()
            .map(|(jti, e)| Revocation {
                jti: jti.clone(),
                expires_at: e.expires_at.and_then(|s| Timestamp::from_second(s).ok()),
                kid: e.kid.clone(),
                reason: String::new(),
            })
            .collect();
        all.sort_by(|a, b| a.jti.cmp(&b.jti));
        all
    }

    /// Adds revocations recorded earlier, whatever the capacity: the capacity refuses new
    /// revocations, it never forgets one.
    pub fn restore(&self, revocations: &[Revocation]) {
        let mut entries = self.write();
        for revocation in revocations {
            entries.insert(revocation.jti.clone(), Entry::from(revocation));
        }
        self.size.set(entries.len() as i64);
    }

    /// Replaces every entry (a fresh list of the ConfigMaps).
    fn replace(&self, fresh: HashMap<String, Entry>) {
        let mut entries = self.write();
        *entries = fresh;
        self.size.set(entries.len() as i64);
    }

    /// Drops entries whose tokens can no longer verify; returns their ids.
    pub fn sweep(&self, now: Timestamp, keyring: Option<&Keyring>) -> Vec<String> {
        let now = now.as_second();
        let kids: Option<Vec<String>> = keyring.map(|k| k.kids().map(str::to_owned).collect());
        let mut entries = self.write();
        let gone: Vec<String> = entries
            .iter()
            .filter(|(_, e)| e.obsolete(now, kids.as_deref()))
            .map(|(jti, _)| jti.clone())
            .collect();
        for jti in &gone {
            entries.remove(jti);
        }
        self.size.set(entries.len() as i64);
        gone
    }
}

/// Name of the ConfigMap recording the revocation of `jti`: the jti itself when it is a valid
/// object name (our uuids), else a digest of it.
pub fn object_name(jti: &str) -> String {
    let plain = !jti.is_empty()
        && jti.len() <= 200
        && jti
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !jti.starts_with('-')
        && !jti.ends_with('-');
    if plain {
        format!("tokenmint-revoked-{jti}")
    } else {
        let digest = Sha256::digest(jti.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("tokenmint-revoked-{hex}")
    }
}

/// The ConfigMap recording `revocation` in `namespace`.
pub fn config_map(namespace: &str, revocation: &Revocation) -> ConfigMap {
    let mut data = BTreeMap::from([
        (JTI_KEY.to_owned(), revocation.jti.clone()),
        (REASON_KEY.to_owned(), revocation.reason.clone()),
    ]);
    if let Some(exp) = revocation.expires_at {
        data.insert(
            EXPIRES_AT_KEY.to_owned(),
            crate::token::assess::rfc3339(exp),
        );
    }
    if let Some(kid) = &revocation.kid {
        data.insert(KID_KEY.to_owned(), kid.clone());
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(object_name(&revocation.jti)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    crate::labels::MANAGED_BY_LABEL.to_owned(),
                    crate::labels::MANAGED_BY_VALUE.to_owned(),
                ),
                (
                    crate::labels::ROLE_LABEL.to_owned(),
                    ROLE_REVOCATION.to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The revocation a ConfigMap records, if it is one.
pub fn parse(config_map: &ConfigMap) -> Option<Revocation> {
    let data = config_map.data.as_ref()?;
    let jti = data.get(JTI_KEY).filter(|j| !j.is_empty())?;
    Some(Revocation {
        jti: jti.clone(),
        expires_at: data.get(EXPIRES_AT_KEY).and_then(|t| t.parse().ok()),
        kid: data.get(KID_KEY).cloned(),
        reason: data.get(REASON_KEY).cloned().unwrap_or_default(),
    })
}

/// Where revocations are recorded. (A handful exist per process: their size does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Default)]
pub enum Revoker {
    /// Revocations are dropped (tests of paths that do not exercise them).
    #[default]
    Disabled,
    /// In memory only (tests).
    Memory(Arc<Denylist>),
    /// In memory and in a file that outlives the process (`serve --manifests`).
    File {
        denylist: Arc<Denylist>,
        file: Arc<DenylistFile>,
    },
    /// ConfigMaps in the release namespace; `local` (a `serve` replica's own denylist) also
    /// learns at once, before its watch brings the ConfigMap back.
    Kube {
        api: Api<ConfigMap>,
        local: Option<Arc<Denylist>>,
    },
}

impl Revoker {
    pub fn disabled() -> Self {
        Revoker::Disabled
    }

    /// Records `revocation`. Idempotent: revoking a revoked token succeeds.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), RevocationError> {
        match self {
            Revoker::Disabled => Ok(()),
            Revoker::Memory(denylist) => denylist.insert(revocation),
            Revoker::File { denylist, file } => {
                denylist.insert(revocation)?;
                file.save(denylist).await?;
                tracing::info!(token_id = %revocation.jti, reason = %revocation.reason, "revoked token");
                Ok(())
            }
            Revoker::Kube { api, local } => {
                if let Some(local) = local
                    && !local.has_room()
                {
                    return Err(RevocationError::Full {
                        capacity: local.capacity(),
                    });
                }
                let namespace = api.namespace().unwrap_or_default().to_owned();
                let params = PostParams {
                    field_manager: Some(crate::labels::FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                match api
                    .create(&params, &config_map(&namespace, revocation))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(token_id = %revocation.jti, reason = %revocation.reason, "revoked token");
                if let Some(local) = local {
                    local.insert(revocation)?;
                }
                Ok(())
            }
        }
    }
}

/// Keeps `denylist` equal to the revocation ConfigMaps of `api`'s namespace, through a
/// self-healing watch. Runs until the process ends.
pub async fn follow(api: Api<ConfigMap>, denylist: Arc<Denylist>, probe: crate::watch::Probe) {
    let config = watcher::Config::default().labels(&selector());
    let events =
        crate::watch::resilient(move || watcher(api.clone(), config.clone()).boxed(), probe);
    let mut events = std::pin::pin!(events);
    let mut relist: Option<HashMap<String, Entry>> = None;
    while let Some(event) = events.next().await {
        let entry = |cm: &ConfigMap| parse(cm).map(|r| (r.jti.clone(), Entry::from(&r)));
        match event {
            watcher::Event::Init => relist = Some(HashMap::new()),
            watcher::Event::InitApply(cm) => {
                if let (Some(fresh), Some((jti, e))) = (&mut relist, entry(&cm)) {
                    fresh.insert(jti, e);
                }
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = relist.take() {
                    denylist.replace(fresh);
                }
            }
            watcher::Event::Apply(cm) => {
                if let Some(revocation) = parse(&cm)
                    && let Err(e) = denylist.insert(&revocation)
                {
                    tracing::error!(token_id = %revocation.jti, error = %e, "cannot hold a revocation");
                }
            }
            watcher::Event::Delete(cm) => {
                if let Some(revocation) = parse(&cm) {
                    denylist.remove(&revocation.jti);
                }
            }
        }
    }
}

/// Deletes the revocation ConfigMaps whose tokens can no longer verify, given the keyring's
/// `kids` (operator leader, periodically). Returns how many were deleted.
pub async fn sweep(
    api: &Api<ConfigMap>,
    kids: &[String],
    now: Timestamp,
    may_write: impl Fn() -> bool,
) -> Result<usize, kube::Error> {
    let list = api.list(&ListParams::default().labels(&selector())).await?;
    let mut deleted = 0;
    for cm in list {
        let Some(revocation) = parse(&cm) else {
            continue;
        };
        let entry = Entry::from(&revocation);
        if !entry.obsolete(now.as_second(), Some(kids)) || !may_write() {
            continue;
        }
        match api.delete(&cm.name_any(), &DeleteParams::default()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    if deleted > 0 {
        tracing::info!(
            deleted,
            "dropped revocations of tokens that can no longer verify"
        );
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Algorithm;

    fn revocation(jti: &str, expires_at: Option<i64>, kid: Option<&str>) -> Revocation {
        Revocation {
            jti: jti.into(),
            expires_at: expires_at.map(|s| Timestamp::from_second(s).unwrap()),
            kid: kid.map(str::to_owned),
            reason: "test".into(),
        }
    }

    #[test]
    fn the_denylist_is_bounded_and_swept() {
        let now = Timestamp::now();
        let ring = Keyring::generate(Algorithm::HS256, now).unwrap();
        let live_kid = ring.active_kid().to_owned();
        let list = Denylist::new(3);
        let t = now.as_second();
        list.insert(&revocation("expired", Some(t - 3_600), None))
            .unwrap();
        list.insert(&revocation("live", Some(t + 3_600), None))
            .unwrap();
        list.insert(&revocation("forever", None, Some(&live_kid)))
            .unwrap();
        assert!(list.is_revoked("live") && list.is_revoked("expired"));
        assert!(!list.is_revoked("other"));
        // Full: a new entry is refused, an existing one is not.
        assert!(matches!(
            list.insert(&revocation("more", Some(t), None)),
            Err(RevocationError::Full { capacity: 3 })
        ));
        list.insert(&revocation("live", Some(t + 3_600), None))
            .unwrap();
        assert_eq!(list.sweep(now, Some(&ring)), vec!["expired".to_owned()]);
        assert_eq!(list.len(), 2);
        // A never-expiring token's entry goes with its key.
        let orphan = Denylist::new(10);
        orphan
            .insert(&revocation("forever", None, Some("gone-kid")))
            .unwrap();
        orphan
            .insert(&revocation("kept", None, Some(&live_kid)))
            .unwrap();
        assert_eq!(orphan.sweep(now, Some(&ring)), vec!["forever".to_owned()]);
        assert!(orphan.is_revoked("kept"));
    }

    #[test]
    fn config_maps_round_trip_and_are_named_safely() {
        let r = revocation(
            "0b6f0e3c-5d2a-4d7e-9a51-1f7c6f0e2a11",
            Some(1_900_000_000),
            Some("hs256-abc"),
        );
        let cm = config_map("tokenmint-system", &r);
        assert_eq!(
            cm.metadata.name.as_deref(),
            Some("tokenmint-revoked-0b6f0e3c-5d2a-4d7e-9a51-1f7c6f0e2a11")
        );
        assert_eq!(parse(&cm), Some(r));
        let odd = object_name("Not/A Name");
        assert!(
            odd.starts_with("tokenmint-revoked-") && odd.len() == 18 + 32,
            "{odd}"
        );
        assert!(parse(&ConfigMap::default()).is_none());
    }
}
