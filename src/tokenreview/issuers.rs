//! The issuers of the cluster's ServiceAccount tokens: only tokens of theirs are sent to
//! TokenReview.

use serde_json::Value;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Where the API server publishes its service-account issuer (granted to every ServiceAccount
/// by Kubernetes' default `system:service-account-issuer-discovery` binding).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// The issuers a ServiceAccount token may carry: given (`--service-account-issuer`), or read
/// from the API server's discovery document, retried in the background until it answers.
#[derive(Clone, Debug, Default)]
pub struct Issuers(Arc<RwLock<Option<Vec<String>>>>);

impl Issuers {
    pub fn fixed(issuers: Vec<String>) -> Self {
        Issuers(Arc::new(RwLock::new(Some(issuers))))
    }

    /// Issuers read from `client`'s API server: unknown until its discovery document answers
    /// (tried at once, then after 1 s doubling to 30 s).
    pub fn discover(client: kube::Client) -> Self {
        let issuers = Issuers::default();
        let found = issuers.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                match discover_issuer(&client).await {
                    Ok(issuer) => {
                        tracing::info!(%issuer, "the cluster's service-account issuer");
                        *found.0.write().unwrap_or_else(|e| e.into_inner()) = Some(vec![issuer]);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?wait, "cannot read the cluster's service-account issuer ({DISCOVERY_PATH}); keyless callers are answered 503 until it is known (or set --service-account-issuer)");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        issuers
    }

    pub(super) fn get(&self) -> Option<Vec<String>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn discover_issuer(client: &kube::Client) -> Result<String, String> {
    let request = axum::http::Request::get(DISCOVERY_PATH)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let document: Value = client.request(request).await.map_err(|e| e.to_string())?;
    document
        .get("issuer")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "the discovery document has no issuer".to_owned())
}
