//! The workload watches: one per kind and scope, each a self-healing watch
//! ([`crate::watch::resilient`]) of [`SlimWorkload`]s, feeding one [`ConsumerIndex`]. Every
//! Secret whose readers change is handed to `changed`, which reconciles the tokens kept in it.
//! Their lists take turns, in small pages, so that what a (re)list holds at once stays small.

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
use tokio::sync::Semaphore;

/// Objects per page of a workload list.
const PAGE_SIZE: u32 = 25;

/// The events of the watch of `kind` in `namespace` (`None`: all namespaces). Its lists take
/// turns with the other kinds' (`lists`: one at a time).
fn events(
    client: &Client,
    namespace: Option<&str>,
    (kind, probe): (Kind, Probe),
    lists: Arc<Semaphore>,
) -> impl Stream<Item = (Kind, watcher::Event<SlimWorkload>)> + Send + use<> {
    let api: Api<SlimWorkload> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &kind),
        None => Api::all_with(client.clone(), &kind),
    };
    // A list's page is held whole while it is read, and a Deployment is a few kilobytes of
    // JSON of which the watch keeps a few dozen bytes: small pages, one list at a time, bound
    // what a (re)list holds at once, whatever the number of workloads. Pages of 25 rather than
    // 100 halve the RSS left after the lists at 10,000 workloads (the connections'
    // read buffers, what the allocator keeps; benches/consumers_scale.rs), for 400 requests
    // per 10,000 workloads listed.
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    resilient(
        move || -> BoxStream<'static, watcher::Result<watcher::Event<SlimWorkload>>> {
            let (api, config) = (api.clone(), config.clone());
            futures::stream::once(lists.clone().acquire_owned())
                .flat_map(move |permit| {
                    // Given back when the list is done, or the watcher fails (and is dropped).
                    let mut permit = permit.ok();
                    watcher::watcher(api.clone(), config.clone()).inspect(move |event| {
                        if matches!(event, Ok(watcher::Event::InitDone) | Err(_)) {
                            permit.take();
                        }
                    })
                })
                .boxed()
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
    let lists = Arc::new(Semaphore::new(1));
    let watches = Kind::ALL
        .into_iter()
        .zip(probes)
        .map(|watch| events(client, namespace, watch, lists.clone()).boxed());
    let mut events = futures::stream::select_all(watches);
    while let Some((kind, event)) = events.next().await {
        for secret in index.apply(kind, &event) {
            changed(secret).await;
        }
    }
}
