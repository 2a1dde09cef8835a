//! The plugin's connection: the kubeconfig as kubectl reads it (`--kubeconfig`, else
//! `$KUBECONFIG`, else `~/.kube/config`; `--context`, else the current context), or the pod's
//! ServiceAccount when there is no kubeconfig.

use super::output::CliError;
use super::plugin::Global;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for the chosen context and that context's namespace.
pub async fn connect(global: &Global) -> Result<(Client, String), CliError> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &global.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                CliError::Connect(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| CliError::Connect(format!("kubeconfig {}: {e}", path.display())))?
        }
        // A named context must come from a kubeconfig (inference could fall back to the pod).
        None if global.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| CliError::Connect(format!("kubeconfig: {e}")))?,
        None => Config::infer().await.map_err(|e| {
            CliError::Connect(format!(
                "no cluster to talk to ({e}): set KUBECONFIG or pass --kubeconfig, as for kubectl"
            ))
        })?,
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config)
        .map_err(|e| CliError::Connect(format!("cannot build a client: {e}")))?;
    Ok((client, namespace))
}
