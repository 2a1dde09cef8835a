//! DatasourceGrant: a data source read token for the principal of a ServiceKey.

use super::delivery::Plan;
use super::owned_secret::Owner;
use super::token_secret;
use super::{Context, Error};
use crate::crd::DatasourceGrant;
use crate::desired;
use kube::Resource;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub async fn reconcile_datasource_grant(
    grant: Arc<DatasourceGrant>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if grant.meta().deletion_timestamp.is_some() {
        // Going away: the garbage collector removes its Secret; the watch revokes its token.
        return Ok(Action::await_change());
    }
    let owner = Owner::of(&*grant)?;
    let key = ctx.service_key(&owner.namespace, &grant.spec.service_key_ref.name);
    if key.as_deref().is_some_and(super::key_pending) {
        return Ok(Action::requeue(super::KEY_PENDING_RECHECK));
    }
    let desired = desired::datasource_grant(
        &owner.namespace,
        &grant.spec,
        key.as_deref().map(desired::KeyRef::of),
        &ctx.issuer,
    );
    let secret_name = grant.token_secret_name();
    let plan = Plan::new(
        &ctx,
        &owner.namespace,
        &secret_name,
        (grant.spec.restart_consumers, "spec.restartConsumers"),
        &grant.spec.rollout_restart,
    );
    token_secret::keep_token(&ctx, &*grant, &owner, &secret_name, &plan, desired).await
}
