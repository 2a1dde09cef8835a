//! Reconcilers of the three kinds (the operator).
//!
//! Layout:
//! - [`token_secret`]: the one mint-and-store path every kind uses (keep or mint + apply); the
//!   decision itself is [`crate::token::assess`], shared with the cluster-less agent.
//! - [`owned_secret`]: the Secrets tokenmint owns as objects: owner, annotations, create or
//!   apply, deletion.
//! - [`verified`]: what the operator knows of each Secret it wrote or read, so that the watch
//!   cache can hold Secrets as metadata only.
//! - [`status`]: status conditions without churn, applied only when they change.
//! - [`delivery`]: who reads each token ([`crate::consumers`]), who is restarted after a
//!   rotation ([`restart`]), and what the status says of it.
//! - [`service_key`], [`datasource_grant`], [`guest_token`]: one reconcile function per kind.
//! - [`keyring`]: the keyring Secret (create once, load, rotate on request).
//! - [`controllers`]: wiring of the kube-runtime Controllers, their caches and triggers.
//! - [`metrics`], [`events`]: what the operator reports.
//!
//! Every reconciler reads from the watch caches (filled before any reconcile starts) and writes
//! with server-side apply under one field manager, and only when what it would write differs
//! from what is there: a resync of an object whose token is in place makes no API request.

pub mod cached_secret;
pub mod caches;
pub mod compact;
pub mod controllers;
pub mod datasource_grant;
mod deletions;
pub mod delivery;
pub mod events;
pub mod guest_token;
pub mod keyring;
pub mod metrics;
pub mod owned_secret;
pub mod readiness;
pub mod recent;
pub mod restart;
pub mod service_key;
pub mod status;
pub mod token_secret;
mod triggers;
pub mod verified;

pub use crate::clock::Clock;
use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey};
pub use crate::desired::{Failure, Reason};
use crate::keyring::{Keyring, KeyringError};
use crate::revocation::Revoker;
pub use crate::token::assess::rfc3339;
use cached_secret::SecretCache;
use caches::ServiceKeys;
use events::Events;
use jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::{Client, Resource, ResourceExt};
use metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use datasource_grant::reconcile_datasource_grant;
pub use guest_token::reconcile_guest_token;
pub use service_key::reconcile_service_key;

/// Requeue of objects without a token that expires (keys, never-expiring guest tokens): a
/// safety-net resync; watches trigger everything else.
pub const IDLE_RESYNC: Duration = Duration::from_secs(3600);
/// The shortest requeue after a successful reconcile.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);
/// The shortest time between two mints of one resource's token, whatever triggers them (a
/// tug-of-war with another writer, a schedule that cannot work): at most one mint a second.
pub const MIN_MINT_INTERVAL: Duration = Duration::from_secs(1);
/// Re-check of a SecretConflict: the foreign Secret is not watched, so its removal is noticed
/// by polling (a GET, never a write).
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(300);
/// Re-check of a grant or guest token whose ServiceKey has not published its key yet (a safety
/// net: the ServiceKey's status change triggers it).
pub const KEY_PENDING_RECHECK: Duration = Duration::from_secs(30);
/// Backoff of transient errors: 5s doubling per consecutive failure of one object, capped.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// The signing keyring shared by the reconcilers and the keyring watcher, which replaces it on
/// rotation. Held only in synchronous sections (never across an `.await`).
pub type SharedKeyring = Arc<RwLock<Keyring>>;

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
    #[error("revocation failed: {0}")]
    Revocation(#[from] crate::revocation::RevocationError),
    #[error(
        "not writing: the leader Lease may have expired (no renewal within its deadline); this replica is stepping down"
    )]
    NotLeader,
}

impl Error {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::Signing(_) => "SigningError",
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::Revocation(_) => "RevocationError",
            Error::NotLeader => "NotLeader",
        }
    }

    /// Whether the error is the API server being away (unreachable, unavailable, or this
    /// replica fenced after failing to renew its Lease) rather than a problem of the object.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::NotLeader => true,
            Error::Kube(kube::Error::Api(s)) => matches!(s.code, 503 | 504),
            Error::Kube(kube::Error::HyperError(_) | kube::Error::Service(_)) => true,
            _ => false,
        }
    }

    /// Whether the API server refused because the namespace is being deleted: nothing to
    /// retry, the object goes away with its namespace.
    pub fn is_namespace_terminating(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(s)) => {
                s.is_forbidden()
                    && (s.message.contains("being terminated")
                        || s.details.as_ref().is_some_and(|d| {
                            d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
                        }))
            }
            _ => false,
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
    pub service_keys: ServiceKeys,
    /// The stores of the grants and guest tokens (the ServiceKeys' is `service_keys.store`),
    /// for the latest version of an object a reconcile holds an older copy of
    /// ([`status::apply`]).
    pub grants: Store<DatasourceGrant>,
    pub guests: Store<GuestTokenRequest>,
    /// The Secrets labelled `app.kubernetes.io/managed-by=tokenmint`, what reconciles read of
    /// their metadata.
    pub secrets: Arc<SecretCache>,
    /// What this replica verified of each Secret's content, by resourceVersion.
    pub verified: Arc<verified::Verified>,
    /// Status writes newer than the watch caches may yet show ([`recent`]).
    pub recent: Arc<recent::Recent>,
    /// Consecutive failures per object, for the exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// When each token (by owner uid and role) was last minted ([`MIN_MINT_INTERVAL`]).
    last_mint: Mutex<LastMints>,
    /// Consumer restarts after rotations; disabled unless wired.
    pub restarts: restart::Restarter,
    /// Who reads each Secret, from the workload watch; `None` when workloads are not watched
    /// (`--consumers=false`, or tests that do not wire it).
    pub consumers: Option<Arc<crate::consumers::index::ConsumerIndex>>,
    /// Where revoked tokens are recorded; disabled unless wired.
    pub revoker: Revoker,
    /// Whether this replica may still write (the leader Lease is fresh); always in tests.
    pub fence: crate::fence::Fence,
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
        service_keys: ServiceKeys,
        secrets: Arc<SecretCache>,
    ) -> Self {
        Context {
            client,
            keyring,
            issuer: issuer.into(),
            clock,
            events,
            metrics,
            service_keys,
            grants: reflector::store().0,
            guests: reflector::store().0,
            secrets,
            verified: Arc::default(),
            recent: Arc::default(),
            failures: Mutex::default(),
            last_mint: Mutex::default(),
            restarts: restart::Restarter::disabled(),
            consumers: None,
            revoker: Revoker::disabled(),
            fence: crate::fence::Fence::always(),
        }
    }

    /// Routes consumer restarts to `restarts` (the running worker).
    pub fn with_restarter(mut self, restarts: restart::Restarter) -> Self {
        self.restarts = restarts;
        self
    }

    /// Reads the consumers of each token from `index` (the workload watch's).
    pub fn with_consumers(mut self, index: Arc<crate::consumers::index::ConsumerIndex>) -> Self {
        self.consumers = Some(index);
        self
    }

    pub fn with_revoker(mut self, revoker: Revoker) -> Self {
        self.revoker = revoker;
        self
    }

    pub fn with_fence(mut self, fence: crate::fence::Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Shares the verified-content record with the Secret watch, which forgets deleted Secrets.
    pub fn with_verified(mut self, verified: Arc<verified::Verified>) -> Self {
        self.verified = verified;
        self
    }

    /// The stores of grants and guest token requests (the controllers' caches).
    pub fn with_stores(
        mut self,
        grants: Store<DatasourceGrant>,
        guests: Store<GuestTokenRequest>,
    ) -> Self {
        self.grants = grants;
        self.guests = guests;
        self
    }

    /// Shares the record of status writes with the watches, which forget what they show.
    pub fn with_recent(mut self, recent: Arc<recent::Recent>) -> Self {
        self.recent = recent;
        self
    }

    /// The ServiceKey `name` in `namespace`. The caches are filled before any reconcile runs
    /// (see [`controllers`]), so "absent" means absent.
    pub fn service_key(&self, namespace: &str, name: &str) -> Option<Arc<ServiceKey>> {
        self.service_keys.get(namespace, name)
    }

    /// Fails when this replica must not write any more (its leadership may have lapsed).
    pub fn may_write(&self) -> Result<(), Error> {
        if self.fence.is_valid() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Whether the token `key` may be minted now; otherwise how long until it may
    /// ([`MIN_MINT_INTERVAL`]).
    pub fn mint_wait(&self, key: &str) -> Option<Duration> {
        let last = self.last_mint.lock().expect("mint lock");
        let since = self.clock.now().duration_since(*last.at.get(key)?);
        let interval = SignedDuration::try_from(MIN_MINT_INTERVAL).ok()?;
        // A clock stepped back (since < 0) waits at most the interval, not the size of the step.
        (since < interval).then(|| (interval - since.max(SignedDuration::ZERO)).unsigned_abs())
    }

    /// Records a mint of the token `key`.
    pub fn minted_now(&self, key: String) {
        let now = self.clock.now();
        let mut last = self.last_mint.lock().expect("mint lock");
        // Entries older than the interval say nothing any more; keep the map small, pruning
        // whenever it has doubled (not at every mint once it holds a second's worth).
        if last.at.len() >= last.prune_at {
            last.at
                .retain(|_, at| now.duration_since(*at).unsigned_abs() < MIN_MINT_INTERVAL);
            last.prune_at = (last.at.len() * 2).max(1024);
        }
        last.at.insert(key, now);
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
        let mut failures = self.failures.lock().expect("failures lock");
        if !failures.is_empty() {
            failures.remove(&Self::object_key(obj));
        }
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

/// When each token was last minted, pruned now and then.
struct LastMints {
    at: HashMap<String, Timestamp>,
    /// The size at which the map is pruned next.
    prune_at: usize,
}

impl Default for LastMints {
    fn default() -> Self {
        LastMints {
            at: HashMap::new(),
            prune_at: 1024,
        }
    }
}

/// The error policy of every controller: count, log, back off per object.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let kind = K::kind(&());
    if err.is_namespace_terminating() {
        // The namespace is going away, and the object with it: nothing to retry or report.
        tracing::debug!(kind = %kind, namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(), "namespace is terminating; not retrying");
        return Action::await_change();
    }
    ctx.metrics.reconcile_error(&kind, err.reason());
    let delay = ctx.backoff(&*obj);
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    if err.is_outage() {
        // Said once for the whole outage by the Lease and the watches, not once per object.
        tracing::debug!(kind = %kind, namespace, name, error = %err, retry_in = ?delay, "reconcile failed");
    } else {
        tracing::warn!(kind = %kind, namespace, name, error = %err, retry_in = ?delay, "reconcile failed");
    }
    Action::requeue(delay)
}

/// Whether a ServiceKey has not published its key yet without saying why: not reconciled yet
/// (created with its grants), or last reconciled by a version that did not publish keys. Its
/// grants and guest tokens wait quietly for the status that follows in a moment, rather than
/// reporting (and writing) a state that lasts that moment. A ServiceKey that reported a
/// failure (Ready=False: its key Secret is someone else's) has them report ServiceKeyNotReady.
pub(crate) fn key_pending(key: &ServiceKey) -> bool {
    let status = key.status.as_ref();
    status.and_then(|s| s.key_fingerprint.as_ref()).is_none()
        && !status
            .into_iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == status::READY && c.status == "False")
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
