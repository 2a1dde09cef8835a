//! `tokenmint serve`: the REST sidecar. Builds the key store (cluster watch caches, or the
//! manifests of `--manifests DIR`) and serves [`crate::http::router`] until SIGTERM/Ctrl-C.

use crate::cli::ServeArgs;
use crate::http::keys::{KeyIndex, SharedKeyStore};
use crate::http::{AppState, Config, ServeOptions, router, serve_with, shutdown_signal};
use crate::keyring::Keyring;
use crate::manifests::Manifests;
use crate::revocation::{Denylist, Revoker};
use crate::tokenreview::Reviewer;
use crate::watch::RestartCounter;
use std::path::Path;
use std::sync::Arc;

pub async fn run(args: ServeArgs) -> Result<(), crate::BoxError> {
    let denylist = Arc::new(Denylist::new(args.max_revocations));
    let restarts = RestartCounter::default();
    let config = match &args.manifests {
        Some(dir) => Config {
            store: Arc::new(from_manifests(dir, &args)?),
            issuer: args.common.issuer.clone(),
            revoker: Revoker::Memory(denylist.clone()),
            denylist,
            watch_restarts: restarts,
            // Keyless callers need the TokenReview API: refused with a clear 401.
            reviewer: None,
        },
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
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        max_connections = args.max_connections.get(),
        "serving the REST routes"
    );
    let state = AppState::from_config(config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
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
        ..ServeOptions::default()
    };
    serve_with(listener, router(state), stopped(), options).await?;
    if let Some(probes) = probes {
        let _ = probes.await;
    }
    Ok(())
}

/// The fixed store of `--manifests DIR`; any problem with the files is a startup error.
pub fn from_manifests(dir: &Path, args: &ServeArgs) -> Result<SharedKeyStore, crate::BoxError> {
    let manifests = Manifests::load_dir(dir)?;
    let common = &args.common;
    let keyring = match manifests.keyring(&common.namespace, &common.keyring_secret)? {
        Some(ring) => {
            tracing::info!(active_kid = %ring.active_kid(), "keyring loaded from the manifests");
            ring
        }
        None => {
            tracing::warn!(
                algorithm = %common.algorithm,
                "no keyring Secret {}/{} among the manifests: using an ephemeral keyring; \
                 tokens issued now will not verify after a restart",
                common.namespace,
                common.keyring_secret
            );
            Keyring::generate(common.algorithm, jiff::Timestamp::now())?
        }
    };
    let index = KeyIndex::build(&manifests.service_keys, &manifests.secrets);
    if index.len() < manifests.service_keys.len() {
        tracing::warn!(
            "{} of {} ServiceKeys have no usable key Secret (data or stringData key \"key\" in \
             the Secret named by secretName, default <name>-service-key, same namespace)",
            manifests.service_keys.len() - index.len(),
            manifests.service_keys.len()
        );
    }
    tracing::info!(
        dir = %dir.display(),
        files = manifests.files.len(),
        service_keys = index.len(),
        "manifests loaded"
    );
    Ok(SharedKeyStore::fixed(index, keyring))
}
