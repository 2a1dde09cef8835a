//! Status writes newer than the watch cache may yet show, so that a reconcile triggered by our
//! own write (the Secret's event arrives before the status's) does not act on a cached object
//! that has not caught up — which would write the same status twice.
//!
//! An entry lives from the write until the watch delivers the object at that version or later
//! ([`Recent::caught_up`], called by the cache's feed): at rest there is none.

use crate::crd::TokenStatus;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Recent {
    entries: Mutex<HashMap<String, (u64, TokenStatus)>>,
}

/// Resource versions are opaque, but etcd's are increasing integers; when one does not parse,
/// the entry is ignored and the watch cache wins.
fn rv(v: Option<&str>) -> Option<u64> {
    v?.parse().ok()
}

/// The key of the status of the `kind` object `namespace/name`.
pub fn key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

impl Recent {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, TokenStatus)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn remember(&self, key: String, resource_version: Option<&str>, status: TokenStatus) {
        if let Some(rv) = rv(resource_version) {
            self.lock().insert(key, (rv, status));
        }
    }

    /// Our own write when the cached object (of `cached_rv`) is older than it; `None` when
    /// the cache has caught up (the entry is dropped then).
    pub fn newer_than(&self, key: &str, cached_rv: Option<&str>) -> Option<TokenStatus> {
        let mut entries = self.lock();
        let (written, status) = entries.get(key)?;
        // An object missing from the cache is looked up with a GET instead: it may have
        // been deleted since our write.
        match rv(cached_rv) {
            Some(cached) if cached < *written => Some(status.clone()),
            _ => {
                entries.remove(key);
                None
            }
        }
    }

    /// The watch shows the object `key` at `resource_version`: a write it covers is forgotten.
    pub fn caught_up(&self, key: &str, resource_version: Option<&str>) {
        let mut entries = self.lock();
        if entries.is_empty() {
            return;
        }
        let covered = match (entries.get(key), rv(resource_version)) {
            (Some((written, _)), Some(seen)) => seen >= *written,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if covered {
            entries.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lasts_until_the_cache_shows_the_write() {
        let recent = Recent::default();
        let status = TokenStatus {
            token_id: Some("t".into()),
            ..TokenStatus::default()
        };
        recent.remember(key("K", "ns", "a"), Some("10"), status.clone());
        recent.remember(key("K", "ns", "b"), Some("12"), status.clone());
        assert_eq!(
            recent.newer_than(&key("K", "ns", "a"), Some("9")),
            Some(status)
        );
        // The watch delivers an older version, then the write itself.
        recent.caught_up(&key("K", "ns", "a"), Some("9"));
        assert_eq!(recent.len(), 2);
        recent.caught_up(&key("K", "ns", "a"), Some("10"));
        assert_eq!(recent.len(), 1);
        // A lookup once the cache has caught up drops it too.
        assert_eq!(recent.newer_than(&key("K", "ns", "b"), Some("12")), None);
        assert!(recent.is_empty());
    }
}
