//! The parts of a `status` report, each from what was read: the Secrets, the token, the
//! ServiceKey's judgement, consumers, Events, unanswered requests.

use super::Read;
use super::report::{
    Consumers, EventView, EventsView, SecretState, SecretView, ServiceKeyView, TokenView,
};
use crate::cli::target::{Kind, Object, Typed};
use crate::desired::{self, Reason};
use crate::reconcile::owned_secret::{
    RENEW_ANNOTATION, RENEW_HANDLED_ANNOTATION, REVOKE_ANNOTATION, REVOKE_HANDLED_ANNOTATION,
    TOKEN_KEY,
};
use crate::reconcile::status::READY;
use crate::token::assess::ts;
use crate::token::claims;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;

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

pub fn secret_view(name: &str, read: &Read<Secret>, owner_uid: Option<&str>) -> SecretView {
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
pub fn token_view(object: &Object, secret: Option<&Secret>) -> Option<TokenView> {
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

pub fn service_key_view(object: &Object, name: &str, read: &Read<Object>) -> ServiceKeyView {
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
        Typed::Key(k) => Some(desired::KeyRef::of(k)),
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
pub fn consumers(object: &Object) -> Option<Consumers> {
    let status = &object.json["status"];
    let items = status["consumers"].as_array().cloned();
    let count = status["consumerCount"].as_i64();
    (items.is_some() || count.is_some()).then(|| Consumers {
        count,
        items: items.unwrap_or_default(),
    })
}

pub fn events_view(read: &Read<Vec<Event>>) -> EventsView {
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
pub fn pending(object: &Object, secret: &Secret) -> Vec<String> {
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
