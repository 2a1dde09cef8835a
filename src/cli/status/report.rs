//! The judgement of `status`, pure: what the gathered objects say about the token, whether it
//! is fine, and one next step for each thing that is not.

use super::Read;
use crate::cli::plugin::Operator;
use crate::cli::target::{Kind, Object, Typed};
use crate::desired::{self, Reason};
use crate::reconcile::owned_secret::{
    RENEW_ANNOTATION, RENEW_HANDLED_ANNOTATION, REVOKE_ANNOTATION, REVOKE_HANDLED_ANNOTATION,
    TOKEN_ID_ANNOTATION, TOKEN_KEY,
};
use crate::reconcile::restart::RESTARTED_FOR_ANNOTATION;
use crate::reconcile::status::READY;
use crate::token::assess::ts;
use crate::token::claims;
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

/// When an Event last happened: its series' last observation, else its time.
pub fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn secret_view(name: &str, read: &Read<Secret>, owner_uid: Option<&str>) -> SecretView {
    let (state, detail) = match read {
        Err(why) => (SecretState::Unreadable, Some(why.clone())),
        Ok(None) => (SecretState::Missing, None),
        Ok(Some(secret)) => match owner_uid {
            Some(uid) if !crate::reconcile::is_controlled_by(&secret.metadata, uid) => (
                SecretState::Foreign,
                Some("not owned by this object".to_owned()),
            ),
            _ => (SecretState::Present, secret.type_.clone()),
        },
    };
    SecretView {
        name: name.to_owned(),
        state,
        detail,
    }
}

/// The token facts: from the token in the Secret when it is readable, else from the status.
fn token_view(object: &Object, secret: Option<&Secret>) -> Option<TokenView> {
    let status = object.status();
    let parse = |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let mut view = TokenView {
        id: status.and_then(|s| s.token_id.clone()),
        expires_at: status.and_then(|s| parse(&s.expires_at)),
        renew_at: status.and_then(|s| parse(&s.renew_at)),
        ..TokenView::default()
    };
    let token = secret.and_then(|s| crate::reconcile::owned_secret::data_str(s, TOKEN_KEY));
    if let Some(token) = token {
        let claims = claims::unverified(token).unwrap_or_default();
        view.id = claims["jti"].as_str().map(str::to_owned).or(view.id);
        view.issued_at = claims["iat"].as_i64().map(ts);
        view.expires_at = claims["exp"].as_i64().map(ts);
        view.never_expires = claims.get("exp").is_none();
        view.kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
    } else if view.id.is_none() {
        return None;
    }
    Some(view)
}

fn service_key_view(object: &Object, name: &str, read: &Read<Object>) -> ServiceKeyView {
    let namespace = object.namespace();
    let key = match read {
        Err(why) => {
            return ServiceKeyView {
                name: name.to_owned(),
                found: None,
                ready: None,
                allows: None,
                detail: format!("not readable: {why}"),
            };
        }
        Ok(key) => key.as_ref(),
    };
    let spec = key.and_then(|k| match &k.typed {
        Typed::Key(k) => Some(&k.spec),
        _ => None,
    });
    // The operator's own judgement: the same checks, the same messages.
    let (judged, allowed) = match &object.typed {
        Typed::Grant(g) => (
            desired::datasource_grant(&namespace, &g.spec, spec, "").map(drop),
            format!("allows data source {:?}", g.spec.data_source),
        ),
        Typed::Guest(g) => (
            desired::guest_token(&namespace, &g.spec, spec, "").map(drop),
            match &g.spec.datasource_name {
                Some(ds) => format!(
                    "allows workspace {:?} and data source {ds:?}",
                    g.spec.workspace_name
                ),
                None => format!("allows workspace {:?}", g.spec.workspace_name),
            },
        ),
        Typed::Key(_) => (Ok(()), String::new()),
    };
    let (allows, detail) = match judged {
        Err(f) if f.reason == Reason::Forbidden || f.reason == Reason::ServiceKeyNotFound => {
            (Some(false), f.message)
        }
        // The key is judged first: a refusal of the request itself (a filter, renewBefore)
        // means the key allows it.
        _ => (Some(true), allowed),
    };
    ServiceKeyView {
        name: name.to_owned(),
        found: Some(key.is_some()),
        ready: key
            .and_then(|k| k.condition(READY))
            .map(|c| match c.status.as_str() {
                "True" => "Ready".to_owned(),
                _ => format!("not Ready: {}", c.reason),
            }),
        allows,
        detail,
    }
}

/// Consumers as a newer operator reports them; read leniently (absent before that operator).
fn consumers(object: &Object) -> Option<Consumers> {
    let status = &object.json["status"];
    let items = status["consumers"].as_array().cloned();
    let count = status["consumerCount"].as_i64();
    (items.is_some() || count.is_some()).then(|| Consumers {
        count,
        items: items.unwrap_or_default(),
    })
}

fn events_view(read: &Read<Vec<Event>>) -> EventsView {
    match read {
        Err(why) => EventsView {
            items: Vec::new(),
            unreadable: Some(why.clone()),
        },
        Ok(events) => EventsView {
            items: events
                .iter()
                .flatten()
                .map(|e| EventView {
                    time: event_time(e),
                    type_: e.type_.clone().unwrap_or_default(),
                    reason: e.reason.clone().unwrap_or_default(),
                    action: e.action.clone().unwrap_or_default(),
                    note: e.note.clone().unwrap_or_default(),
                    count: e
                        .series
                        .as_ref()
                        .map(|s| s.count)
                        .or(e.deprecated_count)
                        .unwrap_or(1),
                })
                .collect(),
            unreadable: None,
        },
    }
}

/// Annotations the object carries whose request the Secret does not record as handled.
fn pending(object: &Object, secret: &Secret) -> Vec<String> {
    [
        (REVOKE_ANNOTATION, REVOKE_HANDLED_ANNOTATION),
        (RENEW_ANNOTATION, RENEW_HANDLED_ANNOTATION),
    ]
    .into_iter()
    .filter(|(_, handled)| object.kind != Kind::ServiceKey || *handled == RENEW_HANDLED_ANNOTATION)
    .filter_map(|(asked, handled)| {
        let value = object.annotation(asked)?;
        (secret.annotations().get(handled).map(String::as_str) != Some(value)).then(|| {
            format!("{asked}={value} is not handled yet (the token in the Secret predates it)")
        })
    })
    .collect()
}

pub fn report(g: &Gathered, operator: &Operator, now: Timestamp) -> StatusReport {
    let object = &g.object;
    let meta = object.meta();
    let status = object.status();
    let uid = meta.uid.as_deref();
    let secret = g
        .secret
        .as_ref()
        .map(|(name, read)| secret_view(name, read, uid));
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
        let mut view = secret_view(name, &read, uid);
        if view.state == SecretState::Present {
            view.detail = None;
        }
        view
    });
    let token = token_view(object, read_secret.as_ref());
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
            .map(|(name, read)| service_key_view(object, name, read)),
        principal,
        rollout_restart,
        consumers: consumers(object),
        pending: read_secret
            .as_ref()
            .map(|s| pending(object, s))
            .unwrap_or_default(),
        events: events_view(&g.events),
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
