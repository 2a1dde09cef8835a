//! What makes a token's owner reconciled beyond its own watch events: the keyring's changes,
//! a ServiceKey's revocation marker rising, and a change of who reads its token Secret.

use super::caches::{Fanout, Index, ServiceKeys, refs};
use crate::consumers::index::Changed;
use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey};
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::sync::Arc;
use tokio::sync::watch;

/// A stream yielding once at once, then once per change of `rx`.
pub(super) fn now_and_on_change(
    rx: watch::Receiver<u64>,
) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::once(async {}).chain(futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    }))
}

/// The ServiceKeys whose revocation marker rose (their never-expiring guest tokens issued up
/// to it are revoked), found by uid, so that the guest tokens held for them are judged again;
/// all of them after a subscriber fell behind.
pub(super) fn markers_raised(
    denylist: Option<&Arc<crate::revocation::Denylist>>,
    keys: ServiceKeys,
) -> futures::stream::BoxStream<'static, Result<ServiceKey, watcher::Error>> {
    use tokio::sync::broadcast::error::RecvError;
    let Some(rx) = denylist.map(|d| d.subscribe()) else {
        return futures::stream::empty().boxed();
    };
    futures::stream::unfold((rx, keys), |(mut rx, keys)| async move {
        let raised = match rx.recv().await {
            Ok(uid) => keys.by_uid(&uid).into_iter().collect(),
            Err(RecvError::Lagged(_)) => keys.store.state(),
            Err(RecvError::Closed) => return None,
        };
        let raised = raised.iter().map(|k| Ok((**k).clone())).collect::<Vec<_>>();
        Some((futures::stream::iter(raised), (rx, keys)))
    })
    .flatten()
    .boxed()
}

/// The objects a trigger names (a consumer change), as a controller takes them.
pub(super) fn named<K: Resource<DynamicType = ()> + Clone + Send + 'static>(
    triggers: &Fanout<ObjectRef<K>>,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static {
    triggers
        .subscribe()
        .filter_map(|r| futures::future::ready(r.ok()))
}

/// The owners of each token Secret, found by its name (an index beside each store), and the
/// triggers of their reconciles: when the readers of a Secret change, its owners are judged at
/// once.
#[derive(Clone)]
pub(super) struct Owners {
    /// By session token Secret.
    pub keys: Trigger<ServiceKey>,
    pub grants: Trigger<DatasourceGrant>,
    pub guests: Trigger<GuestTokenRequest>,
}

/// An index by token Secret, and the trigger of the controller of its kind.
pub(super) type Trigger<K> = (Arc<Index>, Arc<Fanout<ObjectRef<K>>>);

impl Owners {
    pub async fn reconcile(&self, (namespace, secret): Changed) {
        async fn trigger<K: Resource<DynamicType = ()> + Clone + Send + 'static>(
            (by_secret, controller): &Trigger<K>,
            namespace: &str,
            secret: &str,
        ) {
            for owner in refs::<K>(by_secret, namespace, secret) {
                controller.send(&owner).await;
            }
        }
        trigger(&self.keys, &namespace, &secret).await;
        trigger(&self.grants, &namespace, &secret).await;
        trigger(&self.guests, &namespace, &secret).await;
    }
}
