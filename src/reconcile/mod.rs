//! Reconcilers of the three kinds (the operator).
//!
//! Layout:
//! - [`token_secret`]: the one mint-and-store path every kind uses (keep or mint + apply).
//! - [`status`]: status conditions without churn, applied only when they change.
//! - [`service_key`], [`datasource_grant`], [`guest_token`]: one reconcile function per kind.
//! - [`keyring`]: the keyring Secret (create once, load, rotate on request).
//! - [`controllers`]: wiring of the kube-runtime Controllers, stores and triggers.
//! - [`metrics`], [`events`]: what the operator reports.
//!
//! Every reconciler reads from reflector stores and writes with server-side apply under one
//! field manager, and only when what it would write differs from what is there: a resync of an
//! object whose token is in place makes no API request at all.

pub mod controllers;
pub mod datasource_grant;
pub mod events;
pub mod guest_token;
pub mod keyring;
pub mod metrics;
pub mod restart;
pub mod service_key;
pub mod status;
pub mod token_secret;

use crate::crd::ServiceKey;
use crate::keyring::{Keyring, KeyringError};
use events::Events;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use datasource_grant::reconcile_datasource_grant;
pub use guest_token::reconcile_guest_token;
pub use service_key::reconcile_service_key;

/// The one server-side-apply field manager of every write.
pub const FIELD_MANAGER: &str = "tokenmint";
/// Label on every Secret tokenmint manages; the operator watches only Secrets carrying it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "tokenmint";
/// `app.kubernetes.io/managed-by=tokenmint`: the Secret watch's label selector.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=tokenmint";
/// Kind of the resource owning a Secret.
pub const OWNER_KIND_LABEL: &str = "tokenmint.dev/owner-kind";
/// What a Secret holds: `token`, `session-token` or `service-key`.
pub const ROLE_LABEL: &str = "tokenmint.dev/secret-role";
/// Name of the ServiceKey a key Secret belongs to.
pub const SERVICE_KEY_LABEL: &str = "tokenmint.dev/service-key";

/// Requeue of objects without a token that expires (keys, never-expiring guest tokens): a
/// safety-net resync; watches trigger everything else.
pub const IDLE_RESYNC: Duration = Duration::from_secs(3600);
/// The shortest requeue after a successful reconcile.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);
/// Re-check of a SecretConflict: the foreign Secret is not watched, so its removal is noticed
/// by polling (a GET, never a write).
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(300);
/// Backoff of transient errors: 5s doubling per consecutive failure of one object, capped.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// The signing keyring shared by the reconcilers and the keyring watcher, which replaces it on
/// rotation. Held only in synchronous sections (never across an `.await`).
pub type SharedKeyring = Arc<RwLock<Keyring>>;

/// Where "now" comes from: the system clock, or a fixed time tests move by hand so they can
/// assert exact renew times.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<Mutex<Timestamp>>>);

impl Clock {
    pub fn system() -> Self {
        Clock(None)
    }

    pub fn fixed(at: Timestamp) -> Self {
        Clock(Some(Arc::new(Mutex::new(at))))
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            None => Timestamp::now(),
            Some(t) => *t.lock().expect("clock lock"),
        }
    }

    /// Moves a fixed clock (no effect on the system clock).
    pub fn set(&self, at: Timestamp) {
        if let Some(t) = &self.0 {
            *t.lock().expect("clock lock") = at;
        }
    }

    pub fn advance(&self, by: SignedDuration) {
        self.set(self.now() + by);
    }
}

/// Transient failures: the error policy retries them with backoff. Permanent problems of an
/// object (bad spec, forbidden, conflicts) are not errors: they are reported in its status and
/// the reconciler waits for a change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("signing failed: {0}")]
    Signing(#[from] KeyringError),
    #[error("object lacks metadata.{0}")]
    MissingMetadata(&'static str),
    #[error("the watch cache of {0} has stopped")]
    StoreClosed(&'static str),
}

impl Error {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::Signing(_) => "SigningError",
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::StoreClosed(_) => "StoreClosed",
        }
    }
}

/// Why an object cannot have a token until it (or its ServiceKey) changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SecretConflict,
    ServiceKeyNotFound,
    Forbidden,
    InvalidFilter,
    InvalidSpec,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SecretConflict => "SecretConflict",
            Reason::ServiceKeyNotFound => "ServiceKeyNotFound",
            Reason::Forbidden => "Forbidden",
            Reason::InvalidFilter => "InvalidFilter",
            Reason::InvalidSpec => "InvalidSpec",
        }
    }
}

/// A permanent problem and its message for the Ready condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// Everything a reconciler needs; one per watched scope (all namespaces or one namespace).
pub struct Context {
    pub client: Client,
    pub keyring: SharedKeyring,
    /// The `iss` claim (`--issuer`).
    pub issuer: String,
    pub clock: Clock,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// ServiceKeys, for the grants and guest tokens referencing them.
    pub service_keys: Store<ServiceKey>,
    /// The Secrets labelled `app.kubernetes.io/managed-by=tokenmint`.
    pub secrets: Store<Secret>,
    /// Objects this replica wrote, newer than the watch caches may yet be (see [`recent`]).
    pub(crate) recent: recent::Recent,
    /// Consecutive failures per object, for the exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Consumer restarts after rotations (`rolloutRestart`); disabled unless wired.
    pub restarts: restart::Restarter,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        keyring: SharedKeyring,
        issuer: impl Into<String>,
        clock: Clock,
        events: Events,
        metrics: Arc<Metrics>,
        service_keys: Store<ServiceKey>,
        secrets: Store<Secret>,
    ) -> Self {
        Context {
            client,
            keyring,
            issuer: issuer.into(),
            clock,
            events,
            metrics,
            service_keys,
            secrets,
            recent: recent::Recent::default(),
            failures: Mutex::default(),
            restarts: restart::Restarter::disabled(),
        }
    }

    /// Routes consumer restarts to `restarts` (the running worker).
    pub fn with_restarter(mut self, restarts: restart::Restarter) -> Self {
        self.restarts = restarts;
        self
    }

    /// The ServiceKey `name` in `namespace`, once the cache has its first full list (before
    /// that, "not found" could wrongly delete a token Secret).
    pub async fn service_key(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ServiceKey>>, Error> {
        self.service_keys
            .wait_until_ready()
            .await
            .map_err(|_| Error::StoreClosed("ServiceKeys"))?;
        Ok(self
            .service_keys
            .get(&ObjectRef::new(name).within(namespace)))
    }

    /// The ServiceKey `key_name` in `namespace` for a token of `kind`, unless it is missing or
    /// `refusal` (given its spec) says why it may not issue this token.
    pub async fn usable_key(
        &self,
        namespace: &str,
        key_name: &str,
        refusal: impl FnOnce(&crate::crd::ServiceKeySpec) -> Option<String>,
    ) -> Result<Result<Arc<ServiceKey>, Failure>, Error> {
        let Some(key) = self.service_key(namespace, key_name).await? else {
            return Ok(Err(Failure::new(
                Reason::ServiceKeyNotFound,
                format!("ServiceKey {key_name} not found in namespace {namespace}"),
            )));
        };
        Ok(match refusal(&key.spec) {
            Some(why) => Err(Failure::new(
                Reason::Forbidden,
                format!("ServiceKey {key_name} {why}"),
            )),
            None => Ok(key),
        })
    }

    /// Waits for the first full list of managed Secrets: until then "not in the cache" means
    /// nothing (and every lookup would cost a GET).
    pub async fn secrets_synced(&self) -> Result<(), Error> {
        self.secrets
            .wait_until_ready()
            .await
            .map_err(|_| Error::StoreClosed("Secrets"))
    }

    fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
        format!(
            "{}/{}/{}",
            K::kind(&()),
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        )
    }

    /// Clears the backoff of an object after a successful reconcile.
    pub fn succeeded<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        self.failures
            .lock()
            .expect("failures lock")
            .remove(&Self::object_key(obj));
    }

    /// Records a failure and returns how long to wait before the retry: 5s, 10s, 20s, ... 5min.
    pub fn backoff<K: Resource<DynamicType = ()>>(&self, obj: &K) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let count = failures.entry(Self::object_key(obj)).or_insert(0);
        *count = count.saturating_add(1);
        let factor = 1u32.checked_shl(*count - 1).unwrap_or(u32::MAX);
        BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_CAP)
    }
}

/// The error policy of every controller: count, log, back off per object.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let kind = K::kind(&());
    ctx.metrics.reconcile_error(&kind, err.reason());
    let delay = ctx.backoff(&*obj);
    tracing::warn!(
        kind = %kind,
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        error = %err,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Whether `owner_uid` is the controlling owner of an object.
pub fn is_controlled_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owner_uid: &str,
) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

/// RFC 3339 UTC with seconds precision, e.g. `2026-11-22T12:00:00Z`.
pub fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// Recently written objects, so a reconcile triggered by our own write does not act on a watch
/// cache that has not caught up yet (which would mint twice or rewrite a status).
pub(crate) mod recent {
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Recent {
        entries: Mutex<HashMap<String, (u64, serde_json::Value)>>,
    }

    /// Resource versions are opaque, but etcd's are increasing integers; when one does not
    /// parse, the cache entry is ignored and the watch cache wins.
    fn rv(v: Option<&str>) -> Option<u64> {
        v?.parse().ok()
    }

    impl Recent {
        pub fn remember(
            &self,
            key: String,
            resource_version: Option<&str>,
            value: serde_json::Value,
        ) {
            if let Some(rv) = rv(resource_version) {
                self.entries
                    .lock()
                    .expect("recent lock")
                    .insert(key, (rv, value));
            }
        }

        pub fn forget(&self, key: &str) {
            self.entries.lock().expect("recent lock").remove(key);
        }

        /// Our own write when the cached object (of `cached_rv`) is older than it; `None` when
        /// the cache has caught up (the entry is dropped then).
        pub fn newer_than(&self, key: &str, cached_rv: Option<&str>) -> Option<serde_json::Value> {
            let mut entries = self.entries.lock().expect("recent lock");
            let (written, value) = entries.get(key)?;
            // An object missing from the cache is looked up with a GET instead: it may have
            // been deleted since our write.
            match rv(cached_rv) {
                Some(cached) if cached < *written => Some(value.clone()),
                _ => {
                    entries.remove(key);
                    None
                }
            }
        }
    }
}
