//! GuestTokenRequest: an embed guest token issued with a ServiceKey.

use super::delivery::Plan;
use super::owned_secret::Owner;
use super::token_secret;
use super::{Context, Error};
use crate::crd::GuestTokenRequest;
use crate::desired;
use kube::Resource;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub async fn reconcile_guest_token(
    request: Arc<GuestTokenRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if request.meta().deletion_timestamp.is_some() {
        // Going away: the garbage collector removes its Secret; the watch revokes its token.
        return Ok(Action::await_change());
    }
    let owner = Owner::of(&*request)?;
    let key = ctx.service_key(&owner.namespace, &request.spec.service_key_ref.name);
    if key.as_deref().is_some_and(super::key_pending) {
        return Ok(Action::requeue(super::KEY_PENDING_RECHECK));
    }
    let desired = desired::guest_token(
        &owner.namespace,
        &request.spec,
        key.as_deref().map(desired::KeyRef::of),
        &ctx.issuer,
    );
    let secret_name = request.token_secret_name();
    let plan = Plan::new(
        &ctx,
        &owner.namespace,
        &secret_name,
        (request.spec.restart_consumers, "spec.restartConsumers"),
        &request.spec.rollout_restart,
    );
    token_secret::keep_token(&ctx, &*request, &owner, &secret_name, &plan, desired).await
}
