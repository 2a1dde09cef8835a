//! `tokenmint serve`: the REST sidecar. Builds the key store (cluster watch caches, or the
//! manifests of `--manifests DIR`) and serves [`crate::http::router`] until SIGTERM/Ctrl-C.

use crate::agent::{self, Agent};
use crate::cli::ServeArgs;
use crate::http::{AppState, Config, ServeOptions, router, serve_with, shutdown_signal};
use crate::key_store::{KeyIndex, SharedKeyStore};
use crate::manifests::LiveManifests;
use crate::revocation::{Denylist, Revoker};
use crate::tokenreview::Reviewer;
use crate::watch::RestartCounter;
use std::path::Path;
use std::sync::Arc;

pub async fn run(args: ServeArgs) -> Result<(), crate::BoxError> {
    let denylist = Arc::new(Denylist::new(args.max_revocations));
    let restarts = RestartCounter::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut agent = None;
    let config = match &args.manifests {
        Some(dir) => {
            let revoker = Revoker::Memory(denylist.clone());
            let started = start_agent(dir, &args, revoker.clone()).await?;
            let config = Config {
                store: started.store.clone(),
                issuer: args.common.issuer.clone(),
                revoker,
                denylist,
                watch_restarts: restarts,
                // Keyless callers need the TokenReview API: refused with a clear 401.
                reviewer: None,
            };
            agent = Some(started);
            config
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("cannot reach the cluster (or use --manifests DIR): {e}"))?;
            let revoker = Revoker::Kube {
                api: kube::Api::namespaced(client.clone(), &args.common.namespace),
                local: Some(denylist.clone()),
            };
            let reviewer =
                Reviewer::new(kube::Api::all(client.clone()), args.token_audiences.clone());
            let store =
                crate::http::cluster::start(client, &args.common, &restarts, denylist.clone());
            Config {
                store,
                issuer: args.common.issuer.clone(),
                denylist,
                revoker,
                watch_restarts: restarts,
                reviewer: Some(Arc::new(reviewer)),
            }
        }
    };
    let state = AppState::from_config(config);
    if let Some(started) = agent {
        state
            .metrics
            .token_files(started.first.minted_kinds(), started.first.earliest_expiry);
        tokio::spawn(sweep_denylist(
            state.denylist.clone(),
            started.store.clone(),
        ));
        tokio::spawn(agent::run(
            started.agent,
            started.live,
            started.store,
            state.metrics.clone(),
            started.first.next_renewal,
            stop_rx.clone(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        max_connections = args.max_connections.get(),
        "serving the REST routes"
    );
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let probes = match args.probe_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on --probe-listen {addr}: {e}"))?;
            tracing::info!(listen = %addr, "serving /healthz and /readyz");
            let options = ServeOptions {
                max_connections: crate::http::server::PROBE_CONNECTIONS,
                ..ServeOptions::default()
            };
            Some(tokio::spawn(serve_with(
                listener,
                crate::http::probe_router(state.clone()),
                stopped(),
                options,
            )))
        }
        None => None,
    };
    let options = ServeOptions {
        max_connections: args.max_connections.get(),
        workers: args
            .http_workers
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, |n| n.get()),
        ..ServeOptions::default()
    };
    serve_with(listener, router(state), stopped(), options).await?;
    if let Some(probes) = probes {
        let _ = probes.await;
    }
    Ok(())
}

/// The key store of `--manifests DIR` after the agent's first pass (token files written), with
/// revocations in memory; the agent itself is not kept running.
pub async fn from_manifests(
    dir: &Path,
    args: &ServeArgs,
) -> Result<Arc<SharedKeyStore>, crate::BoxError> {
    let revoker = Revoker::Memory(Arc::new(Denylist::new(args.max_revocations)));
    Ok(start_agent(dir, args, revoker).await?.store)
}

/// The agent of `--manifests DIR`, after its first pass.
struct StartedAgent {
    store: Arc<SharedKeyStore>,
    agent: Agent,
    live: LiveManifests,
    first: agent::Pass,
}

/// Reads the manifests (any problem with them is a startup error), loads or creates the
/// keyring, and makes the first pass: the token files are in place before the routes answer.
async fn start_agent(
    dir: &Path,
    args: &ServeArgs,
    revoker: Revoker,
) -> Result<StartedAgent, crate::BoxError> {
    let mut live = LiveManifests::new()?;
    // At start every document must be admitted: there is no last good version to keep yet.
    let refused = live.reload(dir)?;
    if !refused.is_empty() {
        return Err(crate::manifests::ManifestError::Refused(refused).into());
    }
    let manifests = live.merged();
    let tokens = std::path::absolute(&args.tokens_dir)
        .map_err(|e| format!("--tokens-dir {}: {e}", args.tokens_dir.display()))?;
    let state = args
        .state_dir
        .clone()
        .unwrap_or_else(|| tokens.join(".tokenmint"));
    let paths = agent::Paths {
        manifests: dir.to_owned(),
        tokens: tokens.clone(),
        state,
    };
    let common = &args.common;
    let (ring, from) = agent::keyring(
        &manifests,
        &paths,
        &common.namespace,
        &common.keyring_secret,
        common.algorithm,
    )?;
    tracing::info!(active_kid = %ring.active_kid(), source = %from, "keyring loaded");
    let store = Arc::new(SharedKeyStore::fixed(KeyIndex::default(), ring));
    let keyring =
        crate::key_store::KeyStore::keyring(store.as_ref()).ok_or("the keyring did not load")?;
    let mut agent = Agent::new(
        paths,
        common.issuer.clone(),
        keyring,
        crate::clock::Clock::system(),
        revoker,
    );
    let (index, first) = agent.pass(&manifests).await;
    tracing::info!(
        dir = %dir.display(),
        files = manifests.files.len(),
        service_keys = index.len(),
        tokens = first.kept + first.minted.len(),
        tokens_dir = %tokens.display(),
        "manifests loaded; token files are kept under {}",
        tokens.display()
    );
    store.set_keys(index);
    Ok(StartedAgent {
        store,
        agent,
        live,
        first,
    })
}

/// Drops in-memory revocations of tokens that can no longer verify, every
/// [`crate::revocation::SWEEP_EVERY`], so `--max-revocations` bounds live entries only.
async fn sweep_denylist(denylist: Arc<Denylist>, store: Arc<SharedKeyStore>) {
    use crate::key_store::KeyStore;
    loop {
        tokio::time::sleep(crate::revocation::SWEEP_EVERY).await;
        let keyring = store.keyring();
        let gone = denylist.sweep(jiff::Timestamp::now(), keyring.as_deref());
        if !gone.is_empty() {
            tracing::info!(
                count = gone.len(),
                "dropped revocations of tokens that can no longer verify"
            );
        }
    }
}
