//! DatasourceGrant: a data source read token for the principal of a ServiceKey.

use super::token_secret::{self, Owner, ROLE_TOKEN, Stored, TokenTarget};
use super::{Context, Error, Failure, Reason};
use crate::crd::{DatasourceGrant, DatasourceGrantSpec};
use crate::token::mint::DatasourceRequest;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub async fn reconcile_datasource_grant(
    grant: Arc<DatasourceGrant>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let owner = Owner::of(&*grant)?;
    let secret_name = grant.token_secret_name();
    let result = token(&grant, &owner, &secret_name, &ctx).await?;
    token_secret::settle(
        &ctx,
        &*grant,
        &owner,
        &secret_name,
        &grant.spec.rollout_restart,
        result,
    )
    .await
}

async fn token(
    grant: &DatasourceGrant,
    owner: &Owner,
    secret_name: &str,
    ctx: &Context,
) -> Result<Result<Stored, Failure>, Error> {
    let spec = &grant.spec;
    let key_name = &spec.service_key_ref.name;
    let key = match ctx
        .usable_key(&owner.namespace, key_name, |key| {
            (!key.allows_data_source(&spec.data_source)).then(|| {
                format!(
                    "does not allow data source {:?} (dataSources: {:?})",
                    spec.data_source, key.data_sources
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
            "kind": "DatasourceGrant",
            "spec": token_shaping(spec),
            "principal": principal,
            "issuer": ctx.issuer,
        })),
        renew_before,
        restart_consumers: !spec.rollout_restart.is_empty(),
        require_exp: true,
    };
    let request = DatasourceRequest {
        data_source: &spec.data_source,
        expiration: spec.expiration,
        app_uuid: spec.app_uuid.as_deref(),
        filter: spec.filter.as_deref(),
    };
    token_secret::ensure_token(ctx, &target, |minter, now| {
        minter.datasource_token(principal, &request, now)
    })
    .await
}

/// The spec without the fields that do not shape the token (changing them must not re-mint).
fn token_shaping(spec: &DatasourceGrantSpec) -> DatasourceGrantSpec {
    DatasourceGrantSpec {
        rollout_restart: Vec::new(),
        ..spec.clone()
    }
}
