//! The entries a replica holds, compactly: per entry the token id as a `u128` (a UUID's bits;
//! any other id hashed to 128 bits), its expiry as `i64`, its ServiceKey as an interned `u32`
//! and one flag — 32 bytes in a `hashbrown` table (plus its control byte and spare capacity) —
//! and for a caller's entry a place in its ServiceKey's expiry order (quota, `Retry-After`).
//! The storage benchmark (`cargo bench --bench revocations`) measures the total.

use super::EXPIRY_SLACK_SECS;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A token id or session family id as held in memory: a UUID's 128 bits, or the first 128 bits
/// of a SHA-256 of any other id.
pub fn id_bits(id: &str) -> u128 {
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) => uuid.as_u128(),
        Err(_) => {
            let digest = Sha256::digest(id.as_bytes());
            u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"))
        }
    }
}

/// What an entry denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// One token, by `jti`.
    Token(u128),
    /// Every session of a family, by `sid`.
    Family(u128),
}

/// One entry: until when, for which ServiceKey, and whether a caller asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub expires_at: i64,
    pub(super) service_key: u32,
    pub caller: bool,
}

/// ServiceKey uids, each held once.
#[derive(Debug, Default)]
pub(super) struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    pub(super) fn intern(&mut self, uid: &str) -> u32 {
        if let Some(id) = self.ids.get(uid) {
            return *id;
        }
        let name: Arc<str> = uid.into();
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    pub(super) fn get(&self, uid: &str) -> Option<u32> {
        self.ids.get(uid).copied()
    }

    pub(super) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

/// Everything a replica holds, behind the [`super::Denylist`]'s lock.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) tokens: HashMap<u128, Entry>,
    pub(super) families: HashMap<u128, Entry>,
    /// Per ServiceKey: never-expiring guest tokens issued at or before this second are revoked.
    pub(super) markers: HashMap<u32, i64>,
    pub(super) uids: Interner,
    /// Per ServiceKey, its callers' live entries by expiry: the quota and `Retry-After`.
    pub(super) callers: HashMap<u32, BTreeSet<(i64, Slot)>>,
    /// How many entries `callers` holds in all: the capacity counts callers' entries only, so
    /// that the system's (deletions, a tenant's revoke annotations) never crowd them out.
    pub(super) caller_entries: usize,
    /// Entries per storage bucket, as last seen: where a writer finds room.
    pub(super) buckets: HashMap<String, usize>,
}

impl State {
    fn map(&mut self, slot: Slot) -> (&mut HashMap<u128, Entry>, u128) {
        match slot {
            Slot::Token(id) => (&mut self.tokens, id),
            Slot::Family(id) => (&mut self.families, id),
        }
    }

    pub(super) fn get(&self, slot: Slot) -> Option<&Entry> {
        match slot {
            Slot::Token(id) => self.tokens.get(&id),
            Slot::Family(id) => self.families.get(&id),
        }
    }

    /// Adds or extends an entry (a later expiry wins; a caller's entry stays a caller's).
    pub(super) fn insert(&mut self, slot: Slot, expires_at: i64, uid: &str, caller: bool) {
        let service_key = self.uids.intern(uid);
        let mut entry = Entry {
            expires_at,
            service_key,
            caller,
        };
        if let Some(old) = self.remove(slot) {
            entry.expires_at = entry.expires_at.max(old.expires_at);
            entry.caller |= old.caller;
        }
        if entry.caller
            && self
                .callers
                .entry(entry.service_key)
                .or_default()
                .insert((entry.expires_at, slot))
        {
            self.caller_entries += 1;
        }
        let (map, id) = self.map(slot);
        map.insert(id, entry);
    }

    pub(super) fn remove(&mut self, slot: Slot) -> Option<Entry> {
        let (map, id) = self.map(slot);
        let old = map.remove(&id)?;
        if old.caller
            && let Some(set) = self.callers.get_mut(&old.service_key)
        {
            if set.remove(&(old.expires_at, slot)) {
                self.caller_entries -= 1;
            }
            if set.is_empty() {
                self.callers.remove(&old.service_key);
            }
        }
        Some(old)
    }

    pub(super) fn raise_marker(&mut self, uid: &str, at: i64) -> bool {
        let key = self.uids.intern(uid);
        let marker = self.markers.entry(key).or_insert(i64::MIN);
        let raised = at > *marker;
        *marker = (*marker).max(at);
        raised
    }

    /// Drops a ServiceKey's caller entries that expired; returns how many are left.
    pub(super) fn live_callers(&mut self, service_key: u32, now: i64) -> usize {
        let expired: Vec<Slot> = self
            .callers
            .get(&service_key)
            .into_iter()
            .flatten()
            .take_while(|(exp, _)| expired(*exp, now))
            .map(|(_, slot)| *slot)
            .collect();
        for slot in expired {
            self.remove(slot);
        }
        self.callers.get(&service_key).map_or(0, BTreeSet::len)
    }

    pub(super) fn len(&self) -> usize {
        self.tokens.len() + self.families.len()
    }
}

/// Whether an entry expiring at `exp` denies nothing any more at `now` (past the verifiers'
/// leeway and then some).
pub(super) fn expired(exp: i64, now: i64) -> bool {
    exp + EXPIRY_SLACK_SECS < now
}
