//! The keyring Secret: created on first start, loaded by every replica, rotated on request.
//!
//! Rotation is requested by setting the annotation `tokenmint.dev/rotate` on the keyring
//! Secret to any new value (`kubectl annotate secret tokenmint-keyring
//! tokenmint.dev/rotate="$(date +%s)" --overwrite`). When it differs from
//! `tokenmint.dev/rotated`, the leader adds a new active key (`--algorithm`), retires the old
//! one, prunes retired keys past their retention and records the handled value in
//! `tokenmint.dev/rotated`. Every replica reloads the keyring from the watch; the controllers
//! reconcile everything, and each token signed by a retired key is re-minted (retired keys keep
//! verifying until the tokens they signed have expired).
//!
//! The keyring is read-modify-written with a resourceVersion precondition (a PUT, not an
//! apply): a stale writer gets a conflict instead of overwriting keys.

use super::SharedKeyring;
use super::metrics::Metrics;
use crate::fence::Fence;
use crate::keyring::{Algorithm, Keyring, KeyringError, SECRET_KEY};
use crate::labels::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use std::collections::BTreeMap;

/// Type of the keyring Secret.
pub const KEYRING_SECRET_TYPE: &str = "tokenmint.dev/keyring";
/// Set to a new value to request a rotation.
pub const ROTATE_ANNOTATION: &str = "tokenmint.dev/rotate";
/// The last rotation request handled.
pub const ROTATED_ANNOTATION: &str = "tokenmint.dev/rotated";

#[derive(Debug, thiserror::Error)]
pub enum KeyringStoreError {
    #[error("Kubernetes API request on the keyring Secret failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "the keyring Secret {namespace}/{name} is unusable ({source}); tokenmint never regenerates an existing keyring: repair it, or delete it to start over (every token will be re-minted)"
    )]
    Malformed {
        namespace: String,
        name: String,
        source: KeyringError,
    },
    #[error("cannot generate a signing key: {0}")]
    Generate(KeyringError),
}

/// Parses the keyring held by `secret`.
pub fn parse(secret: &Secret) -> Result<Keyring, KeyringStoreError> {
    let malformed = |source| KeyringStoreError::Malformed {
        namespace: secret.namespace().unwrap_or_default(),
        name: secret.name_any(),
        source,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_KEY))
        .ok_or_else(|| malformed(KeyringError::Malformed(format!("no data key {SECRET_KEY}"))))?;
    Keyring::from_json(&bytes.0).map_err(malformed)
}

fn keyring_secret(namespace: &str, name: &str, ring: &Keyring) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY_VALUE.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(KEYRING_SECRET_TYPE.into()),
        data: Some(BTreeMap::from([(
            SECRET_KEY.to_owned(),
            ByteString(ring.to_json()),
        )])),
        ..Secret::default()
    }
}

/// Loads the keyring Secret `name`, creating it with a fresh key of `algorithm` when absent.
/// Creation is a POST: when two replicas start at once, the loser gets AlreadyExists and loads
/// the winner's keyring.
pub async fn load_or_create(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    algorithm: Algorithm,
    now: Timestamp,
    metrics: &Metrics,
) -> Result<(Keyring, Secret), KeyringStoreError> {
    if let Some(secret) = api.get_opt(name).await? {
        return Ok((parse(&secret)?, secret));
    }
    let ring = Keyring::generate(algorithm, now).map_err(KeyringStoreError::Generate)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api
        .create(&params, &keyring_secret(namespace, name, &ring))
        .await
    {
        Ok(created) => {
            metrics.write("create", "secrets");
            tracing::info!(namespace, name, %algorithm, kid = ring.active_kid(), "created the keyring Secret");
            Ok((ring, created))
        }
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let secret = api.get(name).await?;
            Ok((parse(&secret)?, secret))
        }
        Err(e) => Err(e.into()),
    }
}

/// The rotation request of `secret` not yet handled, if any.
pub fn pending_rotation(secret: &Secret) -> Option<String> {
    let annotations = secret.annotations();
    let requested = annotations.get(ROTATE_ANNOTATION)?;
    (annotations.get(ROTATED_ANNOTATION) != Some(requested)).then(|| requested.clone())
}

/// Handles a pending rotation request of `secret` (leader only): rotates, prunes and writes.
/// Returns the new keyring, or `None` when nothing was requested.
pub async fn rotate_if_requested(
    api: &Api<Secret>,
    secret: &Secret,
    algorithm: Algorithm,
    now: Timestamp,
    metrics: &Metrics,
) -> Result<Option<Keyring>, KeyringStoreError> {
    let Some(request) = pending_rotation(secret) else {
        return Ok(None);
    };
    let mut ring = parse(secret)?;
    let retired = ring.active_kid().to_owned();
    let kid = ring
        .rotate(algorithm, now)
        .map_err(KeyringStoreError::Generate)?
        .to_owned();
    let dropped = ring.prune(now);
    let mut updated = secret.clone();
    updated
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert(SECRET_KEY.into(), ByteString(ring.to_json()));
    updated
        .annotations_mut()
        .insert(ROTATED_ANNOTATION.into(), request);
    // `updated` carries the resourceVersion we read: a concurrent change fails with 409.
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    api.replace(&secret.name_any(), &params, &updated).await?;
    metrics.write("update", "secrets");
    tracing::info!(%retired, active = %kid, ?dropped, %algorithm, "rotated the signing key");
    Ok(Some(ring))
}

/// Re-creates a deleted keyring Secret from the keyring in memory (leader only): otherwise the
/// next start would generate a new keyring, and every token signed so far — those handed out
/// by the REST routes included — would stop verifying.
async fn restore(api: &Api<Secret>, name: &str, shared: &SharedKeyring, metrics: &Metrics) {
    let secret = {
        let ring = shared.read().expect("keyring lock");
        keyring_secret(api.namespace().unwrap_or_default(), name, &ring)
    };
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, &secret).await {
        Ok(_) => {
            metrics.write("create", "secrets");
            tracing::warn!(
                name,
                "the keyring Secret was deleted; restored it from memory"
            );
        }
        // Another replica (or a person) re-created it: the watch delivers that one.
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => tracing::error!(name, error = %e, "cannot restore the deleted keyring Secret"),
    }
}

/// Replaces the shared keyring when `fresh` differs from it. Returns whether it changed.
pub fn install(shared: &SharedKeyring, fresh: Keyring) -> bool {
    let mut ring = shared.write().expect("keyring lock");
    if ring.to_json() == fresh.to_json() {
        return false;
    }
    *ring = fresh;
    true
}

/// Watches the keyring Secret: performs requested rotations while this replica leads (its
/// `fence` is open), reloads the keyring into `shared` and bumps `changed` so the controllers
/// reconcile everything. Runs until the process ends.
pub async fn watch(
    api: Api<Secret>,
    name: String,
    algorithm: Algorithm,
    shared: SharedKeyring,
    changed: tokio::sync::watch::Sender<u64>,
    fence: Fence,
    metrics: std::sync::Arc<Metrics>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let probe = crate::watch::Health::default().probe("keyring", &metrics.watch_restarts());
    let events = crate::watch::resilient(
        {
            let api = api.clone();
            move || watcher(api.clone(), config.clone()).boxed()
        },
        probe,
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let secret = match event {
            watcher::Event::Apply(secret) | watcher::Event::InitApply(secret) => secret,
            watcher::Event::Delete(_) => {
                if fence.is_valid() {
                    restore(&api, &name, &shared, &metrics).await;
                }
                continue;
            }
            watcher::Event::Init | watcher::Event::InitDone => continue,
        };
        if fence.is_valid() {
            match rotate_if_requested(&api, &secret, algorithm, Timestamp::now(), &metrics).await {
                // The write comes back through this watch and is installed then.
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "keyring rotation failed"),
            }
        }
        match parse(&secret) {
            Ok(fresh) => {
                let kid = fresh.active_kid().to_owned();
                if install(&shared, fresh) {
                    tracing::info!(active = %kid, "loaded the changed keyring; re-checking every token");
                    changed.send_modify(|generation| *generation += 1);
                }
            }
            Err(e) => tracing::error!(error = %e, "ignoring an unusable keyring update"),
        }
    }
}
