//! Revocations in the cluster: ConfigMaps in the release namespace (`--namespace`), labelled
//! [`ROLE_REVOCATION`], far fewer than the revocations they hold.
//!
//! - Buckets, `tokenmint-revocations-<YYYYMMDD>-<n>`: the entries expiring on that UTC day, at
//!   most [`BUCKET_ENTRIES`] per bucket (about 100 bytes each, a fifth of the 1 MiB object
//!   limit). One data key per entry — the token id (`<uuid>`) or the session family
//!   (`s.<uuid>`), any other id by a UUID-shaped digest — valued `<expiry>,<ServiceKey
//!   uid>,<c|s>` (a caller's or the system's). A writer adds its entry with a JSON merge patch
//!   of that one key, so several replicas and the operator write at once without conflicts;
//!   a missing bucket is created (409: someone else just did; patch again). A writer picks the
//!   first bucket of the day with room, by its own view; a race may overfill one a little.
//!   The leader deletes a bucket whole once its day and the verifiers' leeway have passed.
//! - Markers, `tokenmint-revocation-markers-<h>` (16 shards by the uid's digest): one data key
//!   per ServiceKey uid, valued with the second up to which its never-expiring guest tokens
//!   are revoked. A marker only rises: read, compare, patch with the resourceVersion as a
//!   precondition, again on 409. The leader drops the markers of ServiceKeys that are gone.
//! - Legacy, `tokenmint-revoked-<jti>` (one per token, written before buckets): not held —
//!   every token they name predates the binding of tokens to their ServiceKey's uid and is
//!   refused anyway — and swept as before, once their token expired or its key left the
//!   keyring (so a rollback still finds them).
//!
//! What the leader deletes is [`super::sweep`].

use super::entries::{Slot, id_bits};
use super::{Denylist, Origin, Revocation, Target};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// `tokenmint.dev/secret-role` value of revocation ConfigMaps.
pub const ROLE_REVOCATION: &str = "revocation";
/// Most entries a writer puts in one bucket.
pub const BUCKET_ENTRIES: usize = 2_000;
/// Marker ConfigMaps, by the first hex digit of the uid's SHA-256.
pub const MARKER_SHARDS: usize = 16;
const BUCKET_PREFIX: &str = "tokenmint-revocations-";
const MARKERS_PREFIX: &str = "tokenmint-revocation-markers-";
const LEGACY_PREFIX: &str = "tokenmint-revoked-";
const FAMILY_PREFIX: &str = "s.";
/// Attempts of one write: conflicts and transient API failures are retried.
const ATTEMPTS: u32 = 6;

/// Label selector of the revocation ConfigMaps.
pub fn selector() -> String {
    format!(
        "{},{}={ROLE_REVOCATION}",
        crate::labels::MANAGED_SELECTOR,
        crate::labels::ROLE_LABEL
    )
}

/// The UTC day of a second, `YYYYMMDD`.
fn day_of(at: i64) -> String {
    let ts = Timestamp::from_second(at).unwrap_or(Timestamp::MAX);
    ts.strftime("%Y%m%d").to_string()
}

/// The `n`th bucket of `day`.
pub fn bucket_name(day: &str, n: usize) -> String {
    format!("{BUCKET_PREFIX}{day}-{n}")
}

/// The marker shard of a ServiceKey uid.
pub fn markers_name(uid: &str) -> String {
    let shard = Sha256::digest(uid.as_bytes())[0] as usize % MARKER_SHARDS;
    format!("{MARKERS_PREFIX}{shard:x}")
}

/// The data key of an entry.
pub fn entry_key(slot: Slot) -> String {
    match slot {
        Slot::Token(id) => uuid::Uuid::from_u128(id).to_string(),
        Slot::Family(id) => format!("{FAMILY_PREFIX}{}", uuid::Uuid::from_u128(id)),
    }
}

/// The data value of an entry.
pub fn entry_value(expires_at: i64, uid: &str, caller: bool) -> String {
    format!("{expires_at},{uid},{}", if caller { 'c' } else { 's' })
}

/// An entry from its data key and value.
pub fn parse_entry<'v>(key: &str, value: &'v str) -> Option<(Slot, i64, &'v str, bool)> {
    let slot = match key.strip_prefix(FAMILY_PREFIX) {
        Some(sid) => Slot::Family(id_bits(sid)),
        None => Slot::Token(id_bits(key)),
    };
    let (expires_at, rest) = value.split_once(',')?;
    let (uid, origin) = rest.rsplit_once(',')?;
    Some((slot, expires_at.parse().ok()?, uid, origin == "c"))
}

/// What a revocation ConfigMap is, by its name.
pub(super) enum Kind<'a> {
    Bucket { day: &'a str },
    Markers,
    Legacy,
    Other,
}

pub(super) fn kind(name: &str) -> Kind<'_> {
    if let Some(rest) = name.strip_prefix(BUCKET_PREFIX) {
        match rest.split_once('-') {
            Some((day, _)) => Kind::Bucket { day },
            None => Kind::Other,
        }
    } else if name.starts_with(MARKERS_PREFIX) {
        Kind::Markers
    } else if name.starts_with(LEGACY_PREFIX) {
        Kind::Legacy
    } else {
        Kind::Other
    }
}

/// Takes in what a revocation ConfigMap holds (a bucket's entries, a shard's markers).
fn learn(denylist: &Denylist, cm: &ConfigMap, now: i64) {
    let name = cm.name_any();
    let data = cm.data.as_ref();
    match kind(&name) {
        Kind::Bucket { .. } => {
            for (key, value) in data.into_iter().flatten() {
                if let Some((slot, expires_at, uid, caller)) = parse_entry(key, value) {
                    denylist.learn(slot, expires_at, uid, caller, now);
                }
            }
            denylist.set_bucket_count(&name, Some(data.map_or(0, BTreeMap::len)));
        }
        Kind::Markers => {
            for (uid, at) in data.into_iter().flatten() {
                if let Ok(at) = at.parse() {
                    denylist.raise_marker(uid, at);
                }
            }
        }
        Kind::Legacy | Kind::Other => {}
    }
}

/// A revocation ConfigMap holding `data`.
fn config_map(namespace: &str, name: &str, data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
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

/// The ConfigMap a first writer creates for `revocation` in `namespace`: the first bucket of
/// its day holding its entry alone, or its ServiceKey's marker shard holding its marker alone.
pub fn config_map_of(namespace: &str, revocation: &Revocation) -> ConfigMap {
    let uid = &revocation.service_key_uid;
    let at = revocation.target.at();
    match revocation.target.slot() {
        Some(slot) => {
            let caller = revocation.origin == Origin::Caller;
            let data = BTreeMap::from([(entry_key(slot), entry_value(at, uid, caller))]);
            config_map(namespace, &bucket_name(&day_of(at), 0), data)
        }
        None => {
            let data = BTreeMap::from([(uid.clone(), at.to_string())]);
            config_map(namespace, &markers_name(uid), data)
        }
    }
}

/// Whether a failed request may succeed if tried again.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 409 | 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

async fn pause(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
}

pub(super) fn params() -> (PatchParams, PostParams) {
    (
        PatchParams {
            field_manager: Some(crate::labels::FIELD_MANAGER.into()),
            ..PatchParams::default()
        },
        PostParams {
            field_manager: Some(crate::labels::FIELD_MANAGER.into()),
            ..PostParams::default()
        },
    )
}

/// Records `revocation` in the ConfigMaps of `api`'s namespace, and in `denylist` (so this
/// replica honours it at once, and knows the bucket's size from the API server's answer).
pub(super) async fn record(
    api: &Api<ConfigMap>,
    denylist: &Denylist,
    revocation: &Revocation,
) -> Result<(), kube::Error> {
    let now = Timestamp::now().as_second();
    let uid = &revocation.service_key_uid;
    match (&revocation.target, revocation.target.slot()) {
        (Target::NeverExpiring { issued_at }, _) => raise(api, denylist, uid, *issued_at).await,
        (target, Some(slot)) => {
            let caller = revocation.origin == Origin::Caller;
            let key = entry_key(slot);
            let value = entry_value(target.at(), uid, caller);
            let cm = add(api, denylist, &day_of(target.at()), &key, &value).await?;
            // Only the bucket's size from the answer (where the next entry finds room): the
            // other entries of the bucket come with the watch, not again here on every
            // revocation. The answer may predate a concurrent write of ours; the entry is ours
            // anyway.
            let size = cm.data.as_ref().map_or(0, BTreeMap::len);
            denylist.set_bucket_count(&cm.name_any(), Some(size));
            denylist.learn(slot, target.at(), uid, caller, now);
            Ok(())
        }
        (_, None) => Ok(()),
    }
}

/// Adds one data key to the first bucket of `day` with room.
async fn add(
    api: &Api<ConfigMap>,
    denylist: &Denylist,
    day: &str,
    key: &str,
    value: &str,
) -> Result<ConfigMap, kube::Error> {
    let (patch_params, post_params) = params();
    let namespace = api.namespace().unwrap_or_default().to_owned();
    let mut attempt = 0;
    loop {
        let name = (0..)
            .map(|n| bucket_name(day, n))
            .find(|name| {
                denylist
                    .bucket_count(name)
                    .is_none_or(|n| n < BUCKET_ENTRIES)
            })
            .expect("an endless range");
        let patch = json!({"data": {key: value}});
        let error = match api.patch(&name, &patch_params, &Patch::Merge(&patch)).await {
            Ok(cm) => return Ok(cm),
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                let data = BTreeMap::from([(key.to_owned(), value.to_owned())]);
                match api
                    .create(&post_params, &config_map(&namespace, &name, data))
                    .await
                {
                    Ok(cm) => return Ok(cm),
                    // Created by another writer since: patch it.
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        attempt += 1;
        if attempt >= ATTEMPTS || !transient(&error) {
            return Err(error);
        }
        pause(attempt).await;
    }
}

/// Raises the marker of `uid` to `at` (never lowers it), with the shard's resourceVersion as a
/// precondition.
async fn raise(
    api: &Api<ConfigMap>,
    denylist: &Denylist,
    uid: &str,
    at: i64,
) -> Result<(), kube::Error> {
    let (patch_params, post_params) = params();
    let namespace = api.namespace().unwrap_or_default().to_owned();
    let name = markers_name(uid);
    let now = Timestamp::now().as_second();
    let mut attempt = 0;
    loop {
        let written = match api.get_opt(&name).await {
            Ok(None) => {
                let data = BTreeMap::from([(uid.to_owned(), at.to_string())]);
                api.create(&post_params, &config_map(&namespace, &name, data))
                    .await
            }
            Ok(Some(cm)) => {
                let current = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(uid))
                    .and_then(|v| v.parse::<i64>().ok());
                learn(denylist, &cm, now);
                if current.is_some_and(|current| current >= at) {
                    return Ok(());
                }
                let patch = json!({
                    "metadata": {"resourceVersion": cm.resource_version()},
                    "data": {uid: at.to_string()},
                });
                api.patch(&name, &patch_params, &Patch::Merge(&patch)).await
            }
            Err(e) => Err(e),
        };
        let error = match written {
            Ok(cm) => {
                learn(denylist, &cm, now);
                denylist.raise_marker(uid, at);
                return Ok(());
            }
            Err(e) => e,
        };
        attempt += 1;
        if attempt >= ATTEMPTS || !transient(&error) {
            return Err(error);
        }
        pause(attempt).await;
    }
}

/// The revocations of the ConfigMaps of `api`'s namespace, as a replica holds them after a
/// list at `now` (what `kubectl tokenmint inspect` checks a token against).
pub async fn load(api: &Api<ConfigMap>, now: Timestamp) -> Result<Denylist, kube::Error> {
    let list = api.list(&ListParams::default().labels(&selector())).await?;
    let denylist = Denylist::new(usize::MAX, usize::MAX);
    let now = now.as_second();
    for cm in &list {
        learn(&denylist, cm, now);
    }
    Ok(denylist)
}

/// Keeps `denylist` equal to the revocation ConfigMaps of `api`'s namespace, through a
/// self-healing watch; drops expired entries every [`super::SWEEP_EVERY`]. Runs until the
/// process ends. A relist replaces the whole list with what it found, whatever the capacity.
pub async fn follow(api: Api<ConfigMap>, denylist: Arc<Denylist>, probe: crate::watch::Probe) {
    let config = watcher::Config::default().labels(&selector());
    let events =
        crate::watch::resilient(move || watcher(api.clone(), config.clone()).boxed(), probe);
    let mut events = std::pin::pin!(events);
    let mut relist: Option<Denylist> = None;
    let mut sweep = tokio::time::interval(super::SWEEP_EVERY);
    loop {
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => event,
                None => return,
            },
            _ = sweep.tick() => {
                denylist.sweep(Timestamp::now());
                continue;
            }
        };
        let now = Timestamp::now().as_second();
        match event {
            watcher::Event::Init => {
                relist = Some(Denylist::new(denylist.capacity(), denylist.quota()));
            }
            watcher::Event::InitApply(cm) => {
                if let Some(fresh) = &relist {
                    learn(fresh, &cm, now);
                }
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = relist.take() {
                    denylist.replace(fresh);
                }
            }
            watcher::Event::Apply(cm) => learn(&denylist, &cm, now),
            // A bucket goes once its entries have expired (the sweep drops them here); one
            // deleted by hand keeps its entries here until they expire: never dropped early.
            watcher::Event::Delete(cm) => {
                if let Kind::Bucket { .. } = kind(&cm.name_any()) {
                    denylist.set_bucket_count(&cm.name_any(), None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_data_keys() {
        let jti = "0b6f0e3c-5d2a-4d7e-9a51-1f7c6f0e2a11";
        for (slot, caller) in [
            (Slot::Token(id_bits(jti)), true),
            (Slot::Family(id_bits(jti)), false),
            (Slot::Token(id_bits("not a uuid, hashed")), false),
        ] {
            let key = entry_key(slot);
            // Valid ConfigMap keys.
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
                "{key}"
            );
            let value = entry_value(1_900_000_000, "uid,with,commas", caller);
            assert_eq!(
                parse_entry(&key, &value),
                Some((slot, 1_900_000_000, "uid,with,commas", caller))
            );
        }
        assert_eq!(entry_key(Slot::Token(id_bits(jti))), jti);
        assert!(parse_entry("x", "no-commas").is_none());
    }

    #[test]
    fn buckets_are_named_by_day() {
        assert_eq!(day_of(1_765_000_000), "20251206");
        let name = bucket_name(&day_of(1_765_000_000), 3);
        assert_eq!(name, "tokenmint-revocations-20251206-3");
        assert!(matches!(kind(&name), Kind::Bucket { day: "20251206" }));
        assert!(matches!(kind(&markers_name("u")), Kind::Markers));
        assert!(matches!(kind("tokenmint-revoked-x"), Kind::Legacy));
    }
}
