//! `tokenmint serve`: the REST sidecar. Builds the key store (cluster watch caches, or the
//! manifests of `--manifests DIR`) and serves [`crate::http::router`] until SIGTERM/Ctrl-C.

use crate::agent::{self, Agent};
use crate::cli::ServeArgs;
use crate::http::{AppState, Config, ServeOptions, router, serve_with, shutdown_signal};
use crate::key_store::{KeyIndex, KeyStore, SharedKeyStore};
use crate::manifests::LiveManifests;
use crate::revocation::{Denylist, DenylistFile, Revoker};
use crate::tokenreview::Reviewer;
use crate::watch::RestartCounter;
use std::path::Path;
use std::sync::Arc;

pub async fn run(args: ServeArgs) -> Result<(), crate::BoxError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let state = match &args.manifests {
        Some(dir) => {
            let started = from_manifests(dir, &args).await?;
            let state = started.state.clone();
            started.spawn(stop_rx.clone());
            state
        }
        None => {
            let denylist = Arc::new(Denylist::new(args.max_revocations));
            let restarts = RestartCounter::default();
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
            AppState::from_config(Config {
                store,
                issuer: args.common.issuer.clone(),
                denylist,
                revoker,
                watch_restarts: restarts,
                reviewer: Some(Arc::new(reviewer)),
            })
        }
    };
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

/// `serve --manifests DIR` after its first pass (token files written): the REST state, and
/// the agent that [`FromManifests::spawn`] keeps running.
pub struct FromManifests {
    pub state: AppState,
    pub store: Arc<SharedKeyStore>,
    pub paths: agent::Paths,
    agent: Agent,
    live: LiveManifests,
    first: agent::Pass,
    denylist_file: Arc<DenylistFile>,
}

impl FromManifests {
    /// Runs the agent and the denylist sweep until `stop`.
    pub fn spawn(self, stop: tokio::sync::watch::Receiver<bool>) {
        tokio::spawn(sweep_denylist(
            self.state.denylist.clone(),
            self.store.clone(),
            self.denylist_file,
        ));
        tokio::spawn(agent::run(
            self.agent,
            self.live,
            self.store,
            self.state.metrics.clone(),
            self.first,
            stop,
        ));
    }
}

/// Checks the directories, reads the manifests, loads or creates the keyring and the
/// revocations, and makes the first pass: the token files are in place before the routes
/// answer. A refused document is logged and skipped as while running; with no last good
/// version yet, its object is held (its files stay as they are, see [`agent`]). Errors are
/// what prevents serving: directories, the keyring.
pub async fn from_manifests(
    dir: &Path,
    args: &ServeArgs,
) -> Result<FromManifests, crate::BoxError> {
    let paths = agent::state::prepare(dir, &args.tokens_dir, &args.state_dir)?;
    let mut live = LiveManifests::new()?;
    let refused = live.reload(dir)?;
    let manifests = live.merged();
    agent::report(&refused, &manifests);
    let common = &args.common;
    let (ring, from) = agent::keyring(
        &manifests,
        &paths,
        &common.namespace,
        &common.keyring_secret,
        common.algorithm,
    )?;
    tracing::info!(active_kid = %ring.active_kid(), source = %from, "keyring loaded");
    let denylist = Arc::new(Denylist::new(args.max_revocations));
    let denylist_file = Arc::new(DenylistFile::in_dir(&paths.state));
    let revoked = denylist_file.load_into(&denylist)?;
    tracing::info!(file = %denylist_file.path().display(), revoked, "revocations loaded");
    let revoker = Revoker::File {
        denylist: denylist.clone(),
        file: denylist_file.clone(),
    };
    let store = Arc::new(SharedKeyStore::fixed(KeyIndex::default(), ring));
    let keyring = store.keyring().ok_or("the keyring did not load")?;
    let state = AppState::from_config(Config {
        store: store.clone(),
        issuer: common.issuer.clone(),
        revoker: revoker.clone(),
        denylist,
        watch_restarts: RestartCounter::default(),
        // Keyless callers need the TokenReview API: refused with a clear 401.
        reviewer: None,
    });
    let mut agent = Agent::new(
        paths.clone(),
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
        tokens_dir = %paths.tokens.display(),
        state_dir = %paths.state.display(),
        "manifests loaded; token files are kept under {}",
        paths.tokens.display()
    );
    state.metrics.token_file_errors_init();
    agent::publish(&store, &state.metrics, index, &first);
    Ok(FromManifests {
        state,
        store,
        paths,
        agent,
        live,
        first,
        denylist_file,
    })
}

/// Drops revocations of tokens that can no longer verify (and rewrites their file), every
/// [`crate::revocation::SWEEP_EVERY`], so `--max-revocations` bounds live entries only.
async fn sweep_denylist(
    denylist: Arc<Denylist>,
    store: Arc<SharedKeyStore>,
    file: Arc<DenylistFile>,
) {
    loop {
        tokio::time::sleep(crate::revocation::SWEEP_EVERY).await;
        let keyring = store.keyring();
        let gone = denylist.sweep(jiff::Timestamp::now(), keyring.as_deref());
        if !gone.is_empty() {
            tracing::info!(
                count = gone.len(),
                "dropped revocations of tokens that can no longer verify"
            );
            if let Err(e) = file.save(&denylist).await {
                tracing::error!(error = %e, "cannot rewrite the revocation list");
            }
        }
    }
}
