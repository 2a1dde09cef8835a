//! What this replica knows of the content of each Secret it wrote or read.
//!
//! The watch cache holds tokenmint's Secrets as metadata only (a token Secret's data is most of
//! its size, and is not needed to decide anything while it is unchanged). A Secret's content is
//! known when this replica wrote it, or fetched and verified it, at a resourceVersion; as long
//! as the cache shows that version (or an older one: the cache lags our own write), the record
//! stands for the content. Any other version means someone else wrote it: the reconciler fetches
//! it with a GET and verifies it again. After a restart nothing is known, so every Secret is read
//! once — reads only, never a write.

use crate::token::assess::Held;
use std::collections::HashMap;
use std::sync::Mutex;

/// The verified content of one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A token Secret (or a session token Secret).
    Token(TokenRecord),
    /// A key Secret, whose key has this fingerprint, written with this user name.
    Key {
        fingerprint: String,
        username: String,
    },
    /// Someone else's Secret (a conflict): not cached (it lacks our label), so the next check
    /// reads it rather than attempting a create.
    Foreign,
}

/// A token Secret as written: the token and the annotations that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub held: Held,
    pub owner_uid: String,
    pub role: String,
    pub spec_hash: String,
    /// `tokenmint.dev/restarted-for`.
    pub restarted_for: Option<String>,
    /// `tokenmint.dev/revoke-handled`.
    pub revoke_handled: Option<String>,
    /// `tokenmint.dev/renew-handled`.
    pub renew_handled: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    resource_version: u64,
    content: Content,
}

/// Resource versions are opaque, but etcd's are increasing integers; one that does not parse
/// is never trusted (the Secret is fetched).
pub fn resource_version(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

#[derive(Debug, Default)]
pub struct Verified {
    entries: Mutex<HashMap<String, Entry>>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Verified {
    /// Records `content` for the Secret `namespace/name` at `resource_version`.
    pub fn remember(
        &self,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
        content: Content,
    ) {
        let Some(resource_version) = self::resource_version(resource_version) else {
            return;
        };
        self.entries.lock().expect("verified lock").insert(
            key(namespace, name),
            Entry {
                resource_version,
                content,
            },
        );
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        self.entries
            .lock()
            .expect("verified lock")
            .remove(&key(namespace, name));
    }

    /// The known content of `namespace/name`, given the resourceVersion the cache shows
    /// (`None`: not in the cache). Known when the cache shows our version or an older one, or
    /// nothing yet (a delete removes the record, so absence means the cache has not caught up).
    /// Returns the content and the resourceVersion to write against.
    pub fn current(
        &self,
        namespace: &str,
        name: &str,
        cached: Option<Option<&str>>,
    ) -> Option<(Content, String)> {
        let entries = self.entries.lock().expect("verified lock");
        let entry = entries.get(&key(namespace, name))?;
        let fresh = match cached {
            None => true,
            Some(rv) => resource_version(rv).is_some_and(|rv| rv <= entry.resource_version),
        };
        fresh.then(|| (entry.content.clone(), entry.resource_version.to_string()))
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("verified lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_content(f: &str) -> Content {
        Content::Key {
            fingerprint: f.into(),
            username: "u".into(),
        }
    }

    #[test]
    fn content_is_known_only_at_our_version_or_before() {
        let v = Verified::default();
        v.remember("ns", "s", Some("10"), key_content("a"));
        assert_eq!(
            v.current("ns", "s", Some(Some("10"))),
            Some((key_content("a"), "10".into()))
        );
        // The cache lags our write, or has not seen the create yet.
        assert!(v.current("ns", "s", Some(Some("9"))).is_some());
        assert!(v.current("ns", "s", None).is_some());
        // Someone wrote after us; or a version that is not a number.
        assert!(v.current("ns", "s", Some(Some("11"))).is_none());
        assert!(v.current("ns", "s", Some(Some("x"))).is_none());
        assert!(v.current("ns", "other", Some(Some("10"))).is_none());
        v.forget("ns", "s");
        assert!(v.current("ns", "s", None).is_none());
        // A version that does not parse is never recorded.
        v.remember("ns", "s", Some("abc"), key_content("a"));
        assert!(v.is_empty());
    }
}
