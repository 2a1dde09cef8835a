//! Status writes newer than the watch cache may yet show, so that a reconcile triggered by our
//! own write (the Secret's event arrives before the status's) does not act on a cached object
//! that has not caught up — which would write the same status twice.
//!
//! An entry lives from the write until the watch delivers the object at that version or later
//! ([`Recent::caught_up`], called by the cache's feed once the store shows it): at rest there is
//! none. A reconcile that took its copy of the object before that looks here first and then at
//! the store's latest version ([`super::status::apply`]), so one of the two has the write.

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

    /// Our own last write of `key`, at its resourceVersion: to be compared with the cache's
    /// version by the caller, which looks here *before* it looks at the cache (an entry is
    /// forgotten only after the cache shows the write, so one of the two has it).
    pub fn written(&self, key: &str) -> Option<(u64, TokenStatus)> {
        self.lock().get(key).cloned()
    }

    /// The watch shows the object `key` at `resource_version`: a write it covers is forgotten.
    pub fn caught_up(&self, key: &str, resource_version: Option<&str>) {
        let mut entries = self.lock();
        if entries.is_empty() {
            return;
        }
        // A version that does not parse: the cache wins.
        let covered = match (entries.get(key), rv(resource_version)) {
            (Some((written, _)), Some(seen)) => seen >= *written,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if covered {
            entries.remove(key);
            // A cold start's worth of writes leaves a table behind: give it back at rest.
            if entries.is_empty() {
                *entries = HashMap::new();
            }
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
        recent.remember(key("K", "ns", "c"), Some("not a number"), status.clone());
        assert_eq!(recent.written(&key("K", "ns", "a")), Some((10, status)));
        assert_eq!(recent.len(), 2, "a version that does not parse is not kept");
        // The watch delivers an older version, then the write itself.
        recent.caught_up(&key("K", "ns", "a"), Some("9"));
        assert_eq!(recent.len(), 2);
        recent.caught_up(&key("K", "ns", "a"), Some("10"));
        assert_eq!(recent.written(&key("K", "ns", "a")), None);
        recent.caught_up(&key("K", "ns", "b"), Some("x"));
        assert!(
            recent.is_empty(),
            "a cached version that does not parse wins"
        );
    }
}
