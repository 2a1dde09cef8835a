//! What a replica holds of the revocations ([`super::entries`], compact) and the rules every
//! path shares: an entry learned from storage (watch, relist, start) or recorded by the system
//! is always kept; a caller's revocation is refused past its ServiceKey's quota (429) or past
//! this replica's capacity (503). Expired entries deny nothing and are dropped.

use super::entries::{Entry, Slot, State, expired, id_bits};
use super::{EXPIRY_SLACK_SECS, Origin, Revocation, RevocationError};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::{Arc, RwLock};

/// The revocations a replica knows.
#[derive(Debug)]
pub struct Denylist {
    state: RwLock<State>,
    /// `--max-revocations`: past so many callers' entries, this replica refuses callers'
    /// revocations (503); the system's entries do not count.
    capacity: usize,
    /// `--max-revocations-per-service-key`: a ServiceKey's callers' live entries (429 past it).
    quota: usize,
    size: Gauge,
    limit: Gauge,
    /// ServiceKey uids whose marker rose: whoever holds never-expiring guest tokens of theirs
    /// (the operator, the token-file agent) checks them again.
    raised: tokio::sync::broadcast::Sender<Arc<str>>,
}

impl Default for Denylist {
    fn default() -> Self {
        Denylist::new(
            crate::cli::DEFAULT_MAX_REVOCATIONS,
            crate::cli::DEFAULT_MAX_REVOCATIONS_PER_SERVICE_KEY,
        )
    }
}

impl Denylist {
    pub fn new(capacity: usize, quota: usize) -> Self {
        let limit = Gauge::default();
        limit.set(i64::try_from(capacity).unwrap_or(i64::MAX));
        Denylist {
            state: RwLock::default(),
            capacity,
            quota,
            size: Gauge::default(),
            limit,
            raised: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Registers `tokenmint_revocation_denylist_entries` and `..._capacity`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "tokenmint_revocation_denylist_entries",
            "Revoked tokens and session families this replica denies",
            self.size.clone(),
        );
        registry.register(
            "tokenmint_revocation_denylist_capacity",
            "Most callers' entries past which this replica refuses callers' revocations (--max-revocations); the system's are always recorded and not counted",
            self.limit.clone(),
        );
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn quota(&self) -> usize {
        self.quota
    }

    /// Entries held (tokens and session families; markers aside).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn sized(&self, state: &State) {
        self.size
            .set(i64::try_from(state.len()).unwrap_or(i64::MAX));
    }

    /// Uids of ServiceKeys whose marker rose from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.raised.subscribe()
    }

    /// Whether the token `jti` is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        let state = self.read();
        !state.tokens.is_empty() && state.tokens.contains_key(&id_bits(jti))
    }

    /// Whether the session family `sid` is revoked.
    pub fn family_revoked(&self, sid: &str) -> bool {
        let state = self.read();
        !state.families.is_empty() && state.families.contains_key(&id_bits(sid))
    }

    /// The marker of a ServiceKey: its never-expiring guest tokens issued at or before this
    /// second are revoked.
    pub fn marker(&self, service_key_uid: &str) -> Option<i64> {
        let state = self.read();
        if state.markers.is_empty() {
            return None;
        }
        state
            .markers
            .get(&state.uids.get(service_key_uid)?)
            .copied()
    }

    /// Whether a never-expiring guest token of the ServiceKey `service_key_uid` issued at
    /// `issued_at` is revoked.
    pub fn never_expiring_revoked(&self, service_key_uid: &str, issued_at: i64) -> bool {
        self.marker(service_key_uid)
            .is_some_and(|marker| issued_at <= marker)
    }

    /// Whether, and why, a token with these claims is revoked: by its `jti`; a session by its
    /// family (`sid`); a guest token without `exp` by its ServiceKey's marker.
    pub fn denies(&self, claims: &serde_json::Value) -> Option<Denied> {
        let text = |claim: &str| claims.get(claim).and_then(serde_json::Value::as_str);
        if text("jti").is_some_and(|jti| self.is_revoked(jti)) {
            return Some(Denied::Token);
        }
        if let Some(sid) = text("sid") {
            return self.family_revoked(sid).then_some(Denied::Family);
        }
        if claims.get("exp").is_none() {
            let uid = text("service_key_uid")?;
            let iat = claims.get("iat").and_then(serde_json::Value::as_i64)?;
            let marker = self.marker(uid)?;
            return (iat <= marker).then_some(Denied::Marker(marker));
        }
        None
    }

    /// When a never-expiring guest token of the ServiceKey is issued, at `now` or later: after
    /// its marker, so that no fresh token is born revoked (a second at most, well inside the
    /// verifiers' leeway on `nbf`).
    pub fn issue_time(&self, service_key_uid: &str, now: jiff::Timestamp) -> jiff::Timestamp {
        match self.marker(service_key_uid) {
            Some(marker) if marker >= now.as_second() => {
                jiff::Timestamp::from_second(marker + 1).unwrap_or(now)
            }
            _ => now,
        }
    }

    /// Whether `revocation` asks for anything not recorded yet; for a caller's, refused past
    /// its ServiceKey's quota or this replica's capacity. The system's are never refused.
    pub fn admit(&self, revocation: &Revocation, now: i64) -> Result<bool, RevocationError> {
        let slot = match revocation.target.slot() {
            Some(slot) => slot,
            None => {
                let issued_at = revocation.target.at();
                return Ok(self
                    .marker(&revocation.service_key_uid)
                    .is_none_or(|marker| marker < issued_at));
            }
        };
        let until = revocation.target.at();
        let covered = |state: &State| state.get(slot).is_some_and(|e| e.expires_at >= until);
        if revocation.origin == Origin::System {
            return Ok(!covered(&self.read()));
        }
        let mut state = self.write();
        if covered(&state) {
            return Ok(false);
        }
        if let Some(key) = state.uids.get(&revocation.service_key_uid) {
            let live = state.live_callers(key, now);
            if live >= self.quota {
                let earliest = state
                    .callers
                    .get(&key)
                    .and_then(|set| set.first())
                    .map_or(now, |(exp, _)| *exp);
                let retry_after = (earliest + EXPIRY_SLACK_SECS + 1 - now).max(1);
                self.sized(&state);
                return Err(RevocationError::Quota {
                    quota: self.quota,
                    retry_after: u64::try_from(retry_after).unwrap_or(1),
                });
            }
        }
        if state.caller_entries >= self.capacity {
            return Err(RevocationError::Full {
                capacity: self.capacity,
            });
        }
        Ok(true)
    }

    /// Records a revocation, whatever the quotas and the capacity: they refuse new requests of
    /// callers, they never forget what was recorded.
    pub fn record(&self, revocation: &Revocation) {
        let caller = revocation.origin == Origin::Caller;
        let uid = &revocation.service_key_uid;
        let at = revocation.target.at();
        match revocation.target.slot() {
            None => self.raise_marker(uid, at),
            Some(slot) => {
                let mut state = self.write();
                state.insert(slot, at, uid, caller);
                self.sized(&state);
            }
        }
    }

    /// Raises the marker of the ServiceKey `uid` to `at` (never lowers it).
    pub fn raise_marker(&self, uid: &str, at: i64) {
        let raised = self.write().raise_marker(uid, at);
        if raised {
            let _ = self.raised.send(uid.into());
        }
    }

    /// An entry learned from storage.
    pub(super) fn learn(&self, slot: Slot, expires_at: i64, uid: &str, caller: bool, now: i64) {
        if expired(expires_at, now) {
            return;
        }
        let mut state = self.write();
        if state
            .get(slot)
            .is_some_and(|e| e.expires_at >= expires_at && (e.caller || !caller))
        {
            return;
        }
        state.insert(slot, expires_at, uid, caller);
        self.sized(&state);
    }

    /// How many entries the storage bucket `name` holds, as last seen.
    pub(super) fn bucket_count(&self, name: &str) -> Option<usize> {
        self.read().buckets.get(name).copied()
    }

    pub(super) fn set_bucket_count(&self, name: &str, count: Option<usize>) {
        let mut state = self.write();
        match count {
            Some(count) => {
                state.buckets.insert(name.to_owned(), count);
            }
            None => {
                state.buckets.remove(name);
            }
        }
    }

    /// Replaces everything with what a fresh list of the storage found (a relist): nothing it
    /// found is dropped, whatever the capacity. Markers that rose are announced.
    pub(super) fn replace(&self, fresh: Denylist) {
        let fresh = std::mem::take(&mut *fresh.write());
        let raised: Vec<Arc<str>> = {
            let mut state = self.write();
            let raised = fresh
                .markers
                .iter()
                .filter(|(key, at)| {
                    let uid = fresh.uids.name(**key);
                    state
                        .uids
                        .get(uid)
                        .and_then(|old| state.markers.get(&old))
                        .is_none_or(|old| old < at)
                })
                .map(|(key, _)| Arc::from(fresh.uids.name(*key)))
                .collect();
            *state = fresh;
            self.sized(&state);
            raised
        };
        for uid in raised {
            let _ = self.raised.send(uid);
        }
    }

    /// Drops the entries that deny nothing any more; returns how many.
    pub fn sweep(&self, now: jiff::Timestamp) -> usize {
        let now = now.as_second();
        let mut state = self.write();
        let gone: Vec<Slot> = state
            .tokens
            .iter()
            .filter(|(_, e)| expired(e.expires_at, now))
            .map(|(id, _)| Slot::Token(*id))
            .chain(
                state
                    .families
                    .iter()
                    .filter(|(_, e)| expired(e.expires_at, now))
                    .map(|(id, _)| Slot::Family(*id)),
            )
            .collect();
        for slot in &gone {
            state.remove(*slot);
        }
        self.sized(&state);
        gone.len()
    }

    /// Every entry and marker, as storage keeps them: (slot, expiry, ServiceKey uid, caller's)
    /// and (uid, marker).
    pub fn snapshot(&self) -> Snapshot {
        let state = self.read();
        let entry = |slot: Slot, e: &Entry| {
            (
                slot,
                e.expires_at,
                state.uids.name(e.service_key).to_owned(),
                e.caller,
            )
        };
        let mut entries: Vec<_> = state
            .tokens
            .iter()
            .map(|(id, e)| entry(Slot::Token(*id), e))
            .chain(
                state
                    .families
                    .iter()
                    .map(|(id, e)| entry(Slot::Family(*id), e)),
            )
            .collect();
        entries.sort();
        let mut markers: Vec<(String, i64)> = state
            .markers
            .iter()
            .map(|(key, at)| (state.uids.name(*key).to_owned(), *at))
            .collect();
        markers.sort();
        Snapshot { entries, markers }
    }

    /// Whether any ServiceKey has a marker.
    pub fn has_markers(&self) -> bool {
        !self.read().markers.is_empty()
    }
}

/// Why a token is revoked ([`Denylist::denies`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Its own id.
    Token,
    /// Its session family.
    Family,
    /// Its ServiceKey's marker: never-expiring guest tokens issued at or before this second.
    Marker(i64),
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Token => f.write_str("the token is revoked"),
            Denied::Family => f.write_str("its session family is revoked"),
            Denied::Marker(at) => write!(
                f,
                "never-expiring guest tokens of its ServiceKey issued up to {} are revoked",
                crate::token::assess::rfc3339(crate::token::assess::ts(*at))
            ),
        }
    }
}

/// What [`Denylist::snapshot`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: Vec<(Slot, i64, String, bool)>,
    pub markers: Vec<(String, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::Target;

    fn token(jti: &str, exp: i64, uid: &str, origin: Origin) -> Revocation {
        Revocation {
            target: Target::Token {
                jti: jti.into(),
                expires_at: exp,
            },
            service_key_uid: uid.into(),
            origin,
            reason: "test".into(),
        }
    }

    fn admit_and_record(list: &Denylist, r: &Revocation, now: i64) -> Result<(), RevocationError> {
        if list.admit(r, now)? {
            list.record(r);
        }
        Ok(())
    }

    #[test]
    fn a_service_keys_callers_are_held_to_its_quota_and_told_when_to_retry() {
        let now = 1_000_000;
        let list = Denylist::new(100, 2);
        let id = |i: u32| uuid::Uuid::from_u128(i.into()).to_string();
        admit_and_record(&list, &token(&id(1), now + 600, "b", Origin::Caller), now).unwrap();
        admit_and_record(&list, &token(&id(2), now + 60, "b", Origin::Caller), now).unwrap();
        // Again: already there, nothing new, no refusal.
        admit_and_record(&list, &token(&id(2), now + 60, "b", Origin::Caller), now).unwrap();
        match admit_and_record(&list, &token(&id(3), now + 600, "b", Origin::Caller), now) {
            Err(RevocationError::Quota { quota, retry_after }) => {
                assert_eq!(quota, 2);
                // Until the earliest of b's entries (60 s) has gone, with the slack.
                assert_eq!(retry_after, (60 + EXPIRY_SLACK_SECS + 1) as u64);
            }
            other => panic!("{other:?}"),
        }
        // Another ServiceKey, and the system, are not held to b's quota.
        admit_and_record(&list, &token(&id(4), now + 600, "a", Origin::Caller), now).unwrap();
        admit_and_record(&list, &token(&id(5), now + 600, "b", Origin::System), now).unwrap();
        assert!(list.is_revoked(&id(5)));
        // Once b's earliest entry has expired, b may revoke again.
        let later = now + 60 + EXPIRY_SLACK_SECS + 1;
        admit_and_record(
            &list,
            &token(&id(3), later + 600, "b", Origin::Caller),
            later,
        )
        .unwrap();
        assert!(list.is_revoked(&id(3)) && !list.is_revoked(&id(2)));
    }

    #[test]
    fn the_capacity_refuses_callers_and_never_the_system_or_storage() {
        let now = 1_000_000;
        let list = Denylist::new(2, 100);
        for jti in ["a", "b"] {
            admit_and_record(&list, &token(jti, now + 60, jti, Origin::Caller), now).unwrap();
        }
        assert!(matches!(
            admit_and_record(&list, &token("c", now + 60, "c", Origin::Caller), now),
            Err(RevocationError::Full { capacity: 2 })
        ));
        admit_and_record(&list, &token("d", now + 60, "d", Origin::System), now).unwrap();
        list.learn(Slot::Token(id_bits("e")), now + 60, "e", true, now);
        assert_eq!(list.len(), 4);
        assert_eq!(list.read().caller_entries, 3, "d is the system's");
        assert!(list.is_revoked("d") && list.is_revoked("e") && !list.is_revoked("c"));
        // An expired entry is not learned, and is swept.
        list.learn(Slot::Token(id_bits("old")), now - 3_600, "e", false, now);
        assert!(!list.is_revoked("old"));
        let later = jiff::Timestamp::from_second(now + 60 + EXPIRY_SLACK_SECS + 1).unwrap();
        assert_eq!(list.sweep(later), 4);
        assert!(list.is_empty());
    }

    #[test]
    fn the_systems_entries_never_crowd_out_callers() {
        // A tenant's revoke annotations or deleted grants fill the list with the system's
        // entries: another tenant's own revocation still has its room.
        let now = 1_000_000;
        let list = Denylist::new(2, 100);
        for jti in ["s1", "s2", "s3"] {
            admit_and_record(&list, &token(jti, now + 60, "b", Origin::System), now).unwrap();
        }
        admit_and_record(&list, &token("a1", now + 60, "a", Origin::Caller), now).unwrap();
        admit_and_record(&list, &token("a2", now + 60, "a", Origin::Caller), now).unwrap();
        assert!(list.is_revoked("a1") && list.is_revoked("a2"));
        assert!(matches!(
            admit_and_record(&list, &token("a3", now + 60, "a", Origin::Caller), now),
            Err(RevocationError::Full { capacity: 2 })
        ));
        // A caller's entry that the system revokes again stays one caller's entry.
        admit_and_record(&list, &token("a1", now + 600, "a", Origin::System), now).unwrap();
        assert_eq!(list.read().caller_entries, 2);
        // Expired caller entries give their room back.
        let later = jiff::Timestamp::from_second(now + 60 + EXPIRY_SLACK_SECS + 1).unwrap();
        list.sweep(later);
        assert_eq!(list.read().caller_entries, 1, "a1 was extended to 600 s");
    }

    #[test]
    fn markers_and_families() {
        let list = Denylist::default();
        let mut rx = list.subscribe();
        let guest = |iat| Revocation {
            target: Target::NeverExpiring { issued_at: iat },
            service_key_uid: "u".into(),
            origin: Origin::Caller,
            reason: "test".into(),
        };
        assert!(list.admit(&guest(100), 0).unwrap());
        list.record(&guest(100));
        assert_eq!(rx.try_recv().unwrap().as_ref(), "u");
        assert!(list.never_expiring_revoked("u", 100) && list.never_expiring_revoked("u", 99));
        assert!(!list.never_expiring_revoked("u", 101) && !list.never_expiring_revoked("v", 1));
        // Never lowered; nothing to do for an older token.
        assert!(!list.admit(&guest(50), 0).unwrap());
        list.record(&guest(50));
        assert_eq!(list.marker("u"), Some(100));
        assert!(rx.try_recv().is_err());
        // A token issued in the marker's second is issued just after it.
        let now = jiff::Timestamp::from_second(100).unwrap();
        assert_eq!(list.issue_time("u", now).as_second(), 101);
        assert_eq!(list.issue_time("v", now), now);
        // No entry: markers do not count.
        assert!(list.is_empty());
        let family = Revocation {
            target: Target::Family {
                sid: "s-1".into(),
                until: 2_000,
            },
            ..guest(0)
        };
        list.record(&family);
        assert!(list.family_revoked("s-1") && !list.is_revoked("s-1"));
        assert_eq!(list.len(), 1);
    }
}
