//! The judgement of `status`, pure: what the gathered objects say about the token, whether it
//! is fine, and one next step for each thing that is not.

use super::Read;
use super::facts;
use crate::cli::plugin::Operator;
use crate::cli::target::{Kind, Object, Typed};
use crate::reconcile::owned_secret::TOKEN_ID_ANNOTATION;
use crate::reconcile::restart::RESTARTED_FOR_ANNOTATION;
use crate::reconcile::status::READY;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use serde::Serialize;
use serde_json::Value;

/// Everything `status` read.
pub struct Gathered {
    pub object: Object,
    /// The token Secret (a ServiceKey's session token Secret), by name.
    pub secret: Option<(String, Read<Secret>)>,
    /// A ServiceKey's key Secret, metadata only.
    pub key_secret: Option<(String, Read<PartialObjectMeta<Secret>>)>,
    /// The ServiceKey a grant or guest token request names.
    pub service_key: Option<(String, Read<Object>)>,
    pub events: Read<Vec<Event>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// Ready, reconciled at the current generation, its Secret in place and its token unexpired.
    pub fine: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<Condition>,
    /// Conditions other than Ready (a newer operator's `Delivered`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<SecretView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_key: Option<ServiceKeyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_restart: Option<RestartView>,
    /// `status.consumers` and `status.consumerCount` as the operator reports them, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumers: Option<Consumers>,
    /// Requests of the object's annotations the token in place does not answer yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    pub events: EventsView,
    pub next_steps: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SecretState {
    Present,
    Missing,
    /// Not owned by this object (a conflict).
    Foreign,
    /// The caller may not read it.
    Unreadable,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    pub name: String,
    pub state: SecretState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    /// The `jti` of the token in the Secret (else the status's `tokenId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// A guest token requested without `expiryTime`.
    pub never_expires: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<Timestamp>,
    /// The `kid` of its header: the signing key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceKeyView {
    pub name: String,
    /// `None`: not readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Whether it allows what this object asks for, judged as the operator judges it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allows: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub data_sources: Vec<String>,
    pub workspaces: Vec<String>,
    pub service_accounts: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartView {
    /// `Kind/name` of each workload listed in `rolloutRestart`.
    pub workloads: Vec<String>,
    /// Whether they were restarted for (or started with) the token now in the Secret; `None`
    /// when the Secret is not readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarted_for_current_token: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Consumers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// As reported: `{kind, name, mode, seesRotation}` each.
    pub items: Vec<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsView {
    pub items: Vec<EventView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub action: String,
    pub note: String,
    pub count: i32,
}

pub fn report(g: &Gathered, operator: &Operator, now: Timestamp) -> StatusReport {
    let object = &g.object;
    let meta = object.meta();
    let status = object.status();
    let uid = meta.uid.as_deref();
    let secret = g
        .secret
        .as_ref()
        .map(|(name, read)| facts::secret_view(name, read, uid));
    let read_secret = g
        .secret
        .as_ref()
        .and_then(|(_, read)| read.as_ref().ok().cloned().flatten())
        .filter(|s| uid.is_none_or(|uid| crate::reconcile::is_controlled_by(&s.metadata, uid)));
    let key_secret = g.key_secret.as_ref().map(|(name, read)| {
        let read = read
            .as_ref()
            .map(|m| {
                m.as_ref().map(|m| Secret {
                    metadata: m.metadata.clone(),
                    ..Secret::default()
                })
            })
            .map_err(Clone::clone);
        let mut view = facts::secret_view(name, &read, uid);
        if view.state == SecretState::Present {
            view.detail = None;
        }
        view
    });
    let token = facts::token_view(object, read_secret.as_ref());
    let rollout_restart = (!object.rollout_restart().is_empty()).then(|| RestartView {
        workloads: object
            .rollout_restart()
            .iter()
            .map(|w| format!("{:?}/{}", w.kind, w.name))
            .collect(),
        restarted_for_current_token: read_secret.as_ref().map(|s| {
            let current = s.annotations().get(TOKEN_ID_ANNOTATION);
            current.is_some() && s.annotations().get(RESTARTED_FOR_ANNOTATION) == current
        }),
    });
    let principal = match &object.typed {
        Typed::Key(k) => Some(PrincipalView {
            id: k.spec.principal.id.clone(),
            name: k.spec.principal.name.clone(),
            email: k.spec.principal.email.clone(),
            data_sources: k.spec.data_sources.clone(),
            workspaces: k.spec.workspaces.clone(),
            service_accounts: k.spec.service_accounts.clone(),
        }),
        _ => None,
    };
    let mut report = StatusReport {
        kind: object.kind,
        namespace: object.namespace(),
        name: object.name(),
        fine: false,
        generation: meta.generation,
        observed_generation: status.and_then(|s| s.observed_generation),
        ready: object.condition(READY).cloned(),
        conditions: status
            .map(|s| {
                s.conditions
                    .iter()
                    .filter(|c| c.type_ != READY)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        secret,
        key_secret,
        token,
        service_key: g
            .service_key
            .as_ref()
            .map(|(name, read)| facts::service_key_view(object, name, read)),
        principal,
        rollout_restart,
        consumers: facts::consumers(object),
        pending: read_secret
            .as_ref()
            .map(|s| facts::pending(object, s))
            .unwrap_or_default(),
        events: facts::events_view(&g.events),
        next_steps: Vec::new(),
    };
    report.next_steps = super::render::next_steps(&report, object, operator, now);
    report.fine = is_fine(&report, now);
    report
}

/// Ready at the current generation, every Secret of it in place, and the token unexpired.
fn is_fine(report: &StatusReport, now: Timestamp) -> bool {
    let ready = report.ready.as_ref().is_some_and(|c| c.status == "True");
    let current = match (report.generation, report.observed_generation) {
        (Some(g), Some(o)) => o >= g,
        _ => true,
    };
    let secrets_in_place = [&report.secret, &report.key_secret]
        .into_iter()
        .flatten()
        .all(|s| matches!(s.state, SecretState::Present | SecretState::Unreadable));
    let unexpired = report
        .token
        .as_ref()
        .and_then(|t| t.expires_at)
        .is_none_or(|exp| exp > now);
    ready && current && secrets_in_place && unexpired
}

/// One line of `status KIND`, from the status alone.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub fine: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

impl Row {
    pub fn of(object: &Object) -> Row {
        let ready = object.condition(READY);
        let current = match (
            object.meta().generation,
            object.status().and_then(|s| s.observed_generation),
        ) {
            (Some(g), Some(o)) => o >= g,
            _ => true,
        };
        Row {
            namespace: object.namespace(),
            name: object.name(),
            fine: object.is_ready() && current,
            ready: ready.map(|c| c.status.clone()),
            reason: ready.map(|c| c.reason.clone()),
            expires_at: object
                .status()
                .and_then(|s| s.expires_at.as_deref())
                .and_then(|t| t.parse().ok()),
            token_id: object.status().and_then(|s| s.token_id.clone()),
        }
    }
}
