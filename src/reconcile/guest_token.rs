//! GuestTokenRequest: an embed guest token issued with a ServiceKey.

use super::token_secret::{self, Owner, ROLE_TOKEN, Stored, TokenTarget};
use super::{Context, Error, Failure, Reason};
use crate::crd::{GuestTokenRequest, GuestTokenRequestSpec};
use crate::token::mint::GuestRequest;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub async fn reconcile_guest_token(
    request: Arc<GuestTokenRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let owner = Owner::of(&*request)?;
    let secret_name = request.token_secret_name();
    let result = token(&request, &owner, &secret_name, &ctx).await?;
    token_secret::settle(
        &ctx,
        &*request,
        &owner,
        &secret_name,
        &request.spec.rollout_restart,
        result,
    )
    .await
}

async fn token(
    request: &GuestTokenRequest,
    owner: &Owner,
    secret_name: &str,
    ctx: &Context,
) -> Result<Result<Stored, Failure>, Error> {
    let spec = &request.spec;
    let key_name = &spec.service_key_ref.name;
    let key = match ctx
        .usable_key(&owner.namespace, key_name, |key| {
            (!key.allows_workspace(&spec.workspace_name)).then(|| {
                format!(
                    "does not allow workspace {:?} (workspaces: {:?})",
                    spec.workspace_name, key.workspaces
                )
            })
        })
        .await?
    {
        Ok(key) => key,
        Err(failure) => return Ok(Err(failure)),
    };
    let renew_before = match spec.renew_before() {
        Ok(d) => d,
        Err(e) => {
            return Ok(Err(Failure::new(
                Reason::InvalidSpec,
                format!("renewBefore: {e}"),
            )));
        }
    };
    let principal = &key.spec.principal;
    let target = TokenTarget {
        owner,
        secret_name,
        role: ROLE_TOKEN,
        spec_hash: token_secret::spec_hash(&serde_json::json!({
            "kind": "GuestTokenRequest",
            "spec": token_shaping(spec),
            "principal": principal,
            "issuer": ctx.issuer,
        })),
        renew_before,
        restart_consumers: !spec.rollout_restart.is_empty(),
        require_exp: spec.expiry_time.is_some(),
    };
    let guest = GuestRequest {
        workspace_name: &spec.workspace_name,
        client_id: &spec.client_id,
        datasource_name: spec.datasource_name.as_deref(),
        params: spec.params.as_ref().map(|p| &p.0),
        expiry_time_ms: spec.expiry_time,
    };
    token_secret::ensure_token(ctx, &target, |minter, now| {
        minter.guest_token(principal, &guest, now)
    })
    .await
}

/// The spec without the fields that do not shape the token (changing them must not re-mint).
fn token_shaping(spec: &GuestTokenRequestSpec) -> GuestTokenRequestSpec {
    GuestTokenRequestSpec {
        rollout_restart: Vec::new(),
        ..spec.clone()
    }
}
