//! What this replica knows of the content of each Secret it wrote or read.
//!
//! The watch cache holds tokenmint's Secrets as metadata only (a token Secret's data is most of
//! its size, and is not needed to decide anything while it is unchanged). A Secret's content is
//! known when this replica wrote it, or fetched and verified it, at a resourceVersion; as long
//! as the cache shows that version (or an older one: the cache lags our own write), the record
//! stands for the content. Any other version means someone else wrote it: the reconciler fetches
//! it with a GET and verifies it again. After a restart nothing is known, so every Secret is read
//! once — reads only, never a write. A record is a fact about one resourceVersion, true in any
//! term of leadership: the process keeps them across terms, so that a new term after an outage
//! reads only the Secrets that changed meanwhile.

use super::cached_secret::Role;
use super::compact::Id;
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

/// [`Content`] as kept, one per managed Secret for as long as the operator leads: the same
/// facts, with ids in 16 bytes and a token's record in a box of its own (the table's slots, of
/// which a hash map keeps up to twice as many as it holds, stay small).
#[derive(Debug, Clone)]
enum Kept {
    Token(Box<KeptToken>),
    Key {
        fingerprint: Box<str>,
        username: Box<str>,
    },
    Foreign,
}

#[derive(Debug, Clone)]
struct KeptToken {
    jti: Id,
    kid: Box<str>,
    issued_at: jiff::Timestamp,
    expires_at: Option<jiff::Timestamp>,
    owner_uid: Id,
    role: Role,
    spec_hash: Box<str>,
    restarted_for: Option<Id>,
    revoke_handled: Option<Box<str>>,
    renew_handled: Option<Box<str>>,
}

impl Kept {
    /// `None`: a record of a role no Secret has (never kept; the Secret is read instead).
    fn of(content: Content) -> Option<Kept> {
        Some(match content {
            Content::Token(record) => Kept::Token(Box::new(KeptToken {
                jti: Id::new(&record.held.jti),
                kid: record.held.kid.into(),
                issued_at: record.held.issued_at,
                expires_at: record.held.expires_at,
                owner_uid: Id::new(&record.owner_uid),
                role: Role::from_label(&record.role)?,
                spec_hash: record.spec_hash.into(),
                restarted_for: record.restarted_for.as_deref().map(Id::new),
                revoke_handled: record.revoke_handled.map(Into::into),
                renew_handled: record.renew_handled.map(Into::into),
            })),
            Content::Key {
                fingerprint,
                username,
            } => Kept::Key {
                fingerprint: fingerprint.into(),
                username: username.into(),
            },
            Content::Foreign => Kept::Foreign,
        })
    }

    fn content(&self) -> Content {
        match self {
            Kept::Token(token) => Content::Token(TokenRecord {
                held: Held {
                    jti: token.jti.to_string(),
                    kid: token.kid.to_string(),
                    issued_at: token.issued_at,
                    expires_at: token.expires_at,
                },
                owner_uid: token.owner_uid.to_string(),
                role: token.role.label().to_owned(),
                spec_hash: token.spec_hash.to_string(),
                restarted_for: token.restarted_for.as_ref().map(ToString::to_string),
                revoke_handled: token.revoke_handled.as_deref().map(str::to_owned),
                renew_handled: token.renew_handled.as_deref().map(str::to_owned),
            }),
            Kept::Key {
                fingerprint,
                username,
            } => Content::Key {
                fingerprint: fingerprint.to_string(),
                username: username.to_string(),
            },
            Kept::Foreign => Content::Foreign,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    resource_version: u64,
    kept: Kept,
}

/// Resource versions are opaque, but etcd's are increasing integers; one that does not parse
/// is never trusted (the Secret is fetched).
pub fn resource_version(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

#[derive(Debug, Default)]
pub struct Verified {
    /// By `namespace/name`.
    entries: Mutex<HashMap<Box<str>, Entry>>,
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
        let mut entries = self.entries.lock().expect("verified lock");
        match Kept::of(content) {
            Some(kept) => {
                let entry = Entry {
                    resource_version,
                    kept,
                };
                entries.insert(key(namespace, name).into(), entry);
            }
            None => {
                entries.remove(key(namespace, name).as_str());
            }
        }
    }

    /// Keeps, of the records in `namespace` (`None`: all), only those of Secrets `present`
    /// says exist: after a relist, the Secrets deleted while no watch ran leave no record.
    pub fn retain_present(&self, namespace: Option<&str>, present: impl Fn(&str, &str) -> bool) {
        self.entries
            .lock()
            .expect("verified lock")
            .retain(|key, _| match key.split_once('/') {
                Some((ns, name)) => namespace.is_some_and(|scope| scope != ns) || present(ns, name),
                None => false,
            });
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        self.entries
            .lock()
            .expect("verified lock")
            .remove(key(namespace, name).as_str());
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
        let entry = entries.get(key(namespace, name).as_str())?;
        let fresh = match cached {
            None => true,
            Some(rv) => resource_version(rv).is_some_and(|rv| rv <= entry.resource_version),
        };
        fresh.then(|| (entry.kept.content(), entry.resource_version.to_string()))
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

    #[test]
    fn a_relist_drops_the_records_of_secrets_gone_in_its_scope_only() {
        let v = Verified::default();
        for (ns, name) in [("a", "kept"), ("a", "gone"), ("b", "gone")] {
            v.remember(ns, name, Some("10"), key_content("k"));
        }
        let present = |ns: &str, name: &str| ns == "a" && name == "kept";
        // A scope of namespace `a`: `b`'s records are another scope's business.
        v.retain_present(Some("a"), present);
        assert!(v.current("a", "kept", None).is_some());
        assert!(v.current("a", "gone", None).is_none());
        assert!(v.current("b", "gone", None).is_some());
        // All namespaces.
        v.retain_present(None, present);
        assert!(v.current("b", "gone", None).is_none());
        assert_eq!(v.len(), 1);
    }

    fn token(role: &str, owner: &str) -> Content {
        Content::Token(TokenRecord {
            held: Held {
                jti: "0b5c8c54-7f3c-4f8e-9d6a-6f1d2e3c4b5a".into(),
                kid: "hs256-1".into(),
                issued_at: jiff::Timestamp::from_second(1_900_000_000).unwrap(),
                expires_at: Some(jiff::Timestamp::from_second(1_900_003_600).unwrap()),
            },
            owner_uid: owner.into(),
            role: role.into(),
            spec_hash: "0123456789abcdef".into(),
            restarted_for: Some("not-a-uuid".into()),
            revoke_handled: None,
            renew_handled: None,
        })
    }

    #[test]
    fn a_token_record_comes_back_as_it_was_kept() {
        let v = Verified::default();
        for owner in ["uid-grant-1", "1f0e5a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"] {
            v.remember("ns", "s", Some("7"), token("token", owner));
            assert_eq!(
                v.current("ns", "s", None),
                Some((token("token", owner), "7".into()))
            );
        }
        // A role no Secret has is not kept, and replaces what was.
        v.remember("ns", "s", Some("8"), token("bogus", "uid"));
        assert!(v.is_empty());
    }
}
