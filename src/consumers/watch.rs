//! The workload watches: one per kind and scope, each a self-healing watch
//! ([`crate::watch::resilient`]) of [`SlimWorkload`]s, feeding one [`ConsumerIndex`]. Every
//! Secret whose readers change is handed to `changed`, which reconciles the tokens kept in it.

use super::Kind;
use super::index::{Changed, ConsumerIndex};
use super::template::SlimWorkload;
use crate::watch::{Probe, resilient};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;
use std::future::Future;
use std::sync::Arc;

/// The events of the watch of `kind` in `namespace` (`None`: all namespaces).
fn events(
    client: &Client,
    namespace: Option<&str>,
    kind: Kind,
    probe: Probe,
) -> impl Stream<Item = (Kind, watcher::Event<SlimWorkload>)> + Send + use<> {
    let api: Api<SlimWorkload> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &kind),
        None => Api::all_with(client.clone(), &kind),
    };
    resilient(
        move || -> BoxStream<'static, watcher::Result<watcher::Event<SlimWorkload>>> {
            watcher::watcher(api.clone(), watcher::Config::default()).boxed()
        },
        probe,
    )
    .map(move |event| (kind, event))
}

/// Keeps `index` from the watches of every kind (`probes`: one per kind, in the order of
/// [`Kind::ALL`]) until dropped, handing each Secret whose readers changed to `changed`.
pub async fn feed<F, Fut>(
    client: &Client,
    namespace: Option<&str>,
    probes: [Probe; 6],
    index: Arc<ConsumerIndex>,
    mut changed: F,
) where
    F: FnMut(Changed) -> Fut,
    Fut: Future<Output = ()>,
{
    let watches = Kind::ALL
        .into_iter()
        .zip(probes)
        .map(|(kind, probe)| events(client, namespace, kind, probe).boxed());
    let mut events = futures::stream::select_all(watches);
    while let Some((kind, event)) = events.next().await {
        for secret in index.apply(kind, &event) {
            changed(secret).await;
        }
    }
}
