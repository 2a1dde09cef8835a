//! What token each resource should hold: the permission checks against its ServiceKey, the
//! request, the hash of every input that shapes the token, and how to mint it. The operator and
//! the cluster-less agent (`serve --manifests`) both start here, so they refuse, keep and
//! re-mint alike.

use crate::crd::{
    DatasourceGrantSpec, GuestTokenRequestSpec, ServiceKey, ServiceKeySpec, SessionTokenSpec,
};
use crate::token::mint::{
    DatasourceRequest, GuestRequest, Issuing, MintError, Minted, Minter, RequestError, Subject,
    validate_datasource, validate_guest,
};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a resource cannot have a token until it (or its ServiceKey) changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SecretConflict,
    ServiceKeyNotFound,
    /// The ServiceKey exists but has no key in place (yet): nothing can be bound to it.
    ServiceKeyNotReady,
    Forbidden,
    InvalidFilter,
    InvalidSpec,
    ServiceAccountConflict,
}

impl Reason {
    /// Every reason (the operator creates a metric series for each at start).
    pub const ALL: [Reason; 7] = [
        Reason::SecretConflict,
        Reason::ServiceKeyNotFound,
        Reason::ServiceKeyNotReady,
        Reason::Forbidden,
        Reason::InvalidFilter,
        Reason::InvalidSpec,
        Reason::ServiceAccountConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SecretConflict => "SecretConflict",
            Reason::ServiceKeyNotFound => "ServiceKeyNotFound",
            Reason::ServiceKeyNotReady => "ServiceKeyNotReady",
            Reason::Forbidden => "Forbidden",
            Reason::InvalidFilter => "InvalidFilter",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::ServiceAccountConflict => "ServiceAccountConflict",
        }
    }

    /// Whether a token the resource held must be revoked: its permission is gone.
    pub fn withdraws_permission(self) -> bool {
        matches!(self, Reason::ServiceKeyNotFound | Reason::Forbidden)
    }
}

/// A permanent problem and its message for the Ready condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }

    /// The Secret `secret` is someone else's: never overwritten. One wording for the operator
    /// (an existing Secret it does not own) and the agent (a file tree it may not take).
    pub fn secret_conflict(secret: &str, kind: &str) -> Self {
        Failure::new(
            Reason::SecretConflict,
            format!(
                "Secret {secret} exists and is not owned by this {kind}; tokenmint never overwrites it"
            ),
        )
    }
}

/// The ServiceKey a resource's token is issued with, as far as the token binds to it.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub spec: &'a ServiceKeySpec,
    /// Its `metadata.uid` (without a cluster: the one the agent assigned).
    pub uid: &'a str,
    /// The fingerprint of its key (the operator reads the ServiceKey's
    /// `status.keyFingerprint`); `None` while no key is in place.
    pub fingerprint: Option<&'a str>,
}

impl<'a> KeyRef<'a> {
    /// A ServiceKey of the API server: its uid, and the fingerprint its reconcile published in
    /// status.
    pub fn of(key: &'a ServiceKey) -> Self {
        KeyRef {
            spec: &key.spec,
            uid: key.metadata.uid.as_deref().unwrap_or_default(),
            fingerprint: key
                .status
                .as_ref()
                .and_then(|s| s.key_fingerprint.as_deref()),
        }
    }
}

/// What a token carries to name its ServiceKey ([`crate::token::claims::Binding`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    service_key: String,
    uid: String,
    fingerprint: String,
}

impl Bound {
    /// Its part of a spec hash: a replaced key or a re-created ServiceKey re-mints.
    fn hashed(&self) -> Value {
        json!({"serviceKey": self.service_key, "uid": self.uid, "keyFingerprint": self.fingerprint})
    }

    fn issuing(&self) -> Issuing<'_> {
        Issuing {
            service_key: &self.service_key,
            service_key_uid: &self.uid,
            key_fingerprint: &self.fingerprint,
        }
    }
}

/// The token a resource should hold.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    /// A stable hash of every input that shapes the token: a change re-mints.
    pub spec_hash: String,
    pub renew_before: Option<Duration>,
    /// Whether the token must expire (all but never-expiring guest tokens).
    pub require_exp: bool,
    bound: Bound,
    token: Token<'a>,
}

#[derive(Debug, Clone)]
enum Token<'a> {
    Datasource {
        subject: Subject<'a>,
        request: DatasourceRequest<'a>,
    },
    Guest {
        subject: Subject<'a>,
        request: GuestRequest<'a>,
    },
    Session {
        subject: Subject<'a>,
        ttl: Duration,
    },
}

impl Desired<'_> {
    /// Signs a fresh token.
    pub fn mint(&self, minter: &Minter, now: Timestamp) -> Result<Minted, MintError> {
        let issuing = self.bound.issuing();
        match &self.token {
            Token::Datasource { subject, request } => {
                minter.datasource_token(*subject, issuing, request, now)
            }
            Token::Guest { subject, request } => {
                minter.guest_token(*subject, issuing, request, now)
            }
            Token::Session { subject, ttl } => {
                Ok(minter.session_token(*subject, issuing, *ttl, now)?.0)
            }
        }
    }

    /// The uid of the ServiceKey the token is bound to.
    pub fn service_key_uid(&self) -> &str {
        &self.bound.uid
    }

    /// Whether the token never expires (a guest token without `expiryTime`).
    pub fn never_expires(&self) -> bool {
        !self.require_exp
    }
}

/// A stable hash of token inputs: FNV-1a 64 of the canonical JSON (keys sorted). Change
/// detection only, not a security boundary (the token itself is verified).
pub fn spec_hash(inputs: &Value) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, canonical(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let bytes = serde_json::to_vec(&canonical(inputs)).expect("JSON values serialise");
    format!("{:016x}", crate::token::renew::fnv1a(&bytes))
}

/// The ServiceKey `key_name` (found in `namespace`, or not), unless `refusal` says why it may not
/// issue this token; with what its tokens are bound to, once its key is in place.
fn usable<'a>(
    namespace: &str,
    key_name: &str,
    key: Option<KeyRef<'a>>,
    refusal: impl FnOnce(&ServiceKeySpec) -> Option<String>,
) -> Result<(&'a ServiceKeySpec, Bound), Failure> {
    let key = key.ok_or_else(|| {
        Failure::new(
            Reason::ServiceKeyNotFound,
            format!("ServiceKey {key_name} not found in namespace {namespace}"),
        )
    })?;
    if let Some(why) = refusal(key.spec) {
        return Err(Failure::new(
            Reason::Forbidden,
            format!("ServiceKey {key_name} {why}"),
        ));
    }
    let fingerprint = key.fingerprint.ok_or_else(|| {
        Failure::new(
            Reason::ServiceKeyNotReady,
            format!(
                "ServiceKey {key_name} has no key in place yet (see its status); every token is bound to its key, so none is minted until it has one"
            ),
        )
    })?;
    let bound = Bound {
        service_key: format!("{namespace}/{key_name}"),
        uid: key.uid.to_owned(),
        fingerprint: fingerprint.to_owned(),
    };
    Ok((key.spec, bound))
}

fn renew_before(
    parsed: Result<Option<Duration>, crate::token::duration::DurationError>,
) -> Result<Option<Duration>, Failure> {
    parsed.map_err(|e| Failure::new(Reason::InvalidSpec, format!("renewBefore: {e}")))
}

fn request_failure(e: RequestError) -> Failure {
    match e {
        RequestError::Filter(_) => Failure::new(Reason::InvalidFilter, e.to_string()),
        _ => Failure::new(Reason::InvalidSpec, e.to_string()),
    }
}

/// The token of a DatasourceGrant in `namespace`, given its ServiceKey (if it exists).
pub fn datasource_grant<'a>(
    namespace: &str,
    spec: &'a DatasourceGrantSpec,
    key: Option<KeyRef<'a>>,
    issuer: &str,
) -> Result<Desired<'a>, Failure> {
    let key_name = &spec.service_key_ref.name;
    let (key, bound) = usable(namespace, key_name, key, |key| {
        (!key.allows_data_source(&spec.data_source)).then(|| {
            format!(
                "does not allow data source {:?} (dataSources: {:?})",
                spec.data_source, key.data_sources
            )
        })
    })?;
    let renew_before = renew_before(spec.renew_before())?;
    let request = DatasourceRequest {
        data_source: &spec.data_source,
        expiration: spec.expiration,
        app_uuid: spec.app_uuid.as_deref(),
        filter: spec.filter.as_deref(),
    };
    validate_datasource(&request).map_err(request_failure)?;
    let shaping = DatasourceGrantSpec {
        rollout_restart: Vec::new(),
        restart_consumers: false,
        ..spec.clone()
    };
    Ok(Desired {
        spec_hash: spec_hash(&json!({
            "kind": "DatasourceGrant",
            "spec": shaping,
            "principal": key.principal,
            "binding": bound.hashed(),
            "issuer": issuer,
        })),
        renew_before,
        require_exp: true,
        bound,
        token: Token::Datasource {
            subject: key.principal.subject(),
            request,
        },
    })
}

/// The token of a GuestTokenRequest in `namespace`, given its ServiceKey (if it exists).
pub fn guest_token<'a>(
    namespace: &str,
    spec: &'a GuestTokenRequestSpec,
    key: Option<KeyRef<'a>>,
    issuer: &str,
) -> Result<Desired<'a>, Failure> {
    let key_name = &spec.service_key_ref.name;
    let (key, bound) = usable(namespace, key_name, key, |key| {
        if !key.allows_workspace(&spec.workspace_name) {
            return Some(format!(
                "does not allow workspace {:?} (workspaces: {:?})",
                spec.workspace_name, key.workspaces
            ));
        }
        spec.datasource_name
            .as_ref()
            .filter(|ds| !key.allows_data_source(ds))
            .map(|ds| {
                format!(
                    "does not allow data source {ds:?} (dataSources: {:?})",
                    key.data_sources
                )
            })
    })?;
    let renew_before = renew_before(spec.renew_before())?;
    let request = GuestRequest {
        workspace_name: &spec.workspace_name,
        client_id: &spec.client_id,
        datasource_name: spec.datasource_name.as_deref(),
        params: spec.params.as_ref().map(|p| &p.0),
        expiry_time_ms: spec.expiry_time,
    };
    validate_guest(&request).map_err(request_failure)?;
    let shaping = GuestTokenRequestSpec {
        rollout_restart: Vec::new(),
        restart_consumers: false,
        ..spec.clone()
    };
    Ok(Desired {
        spec_hash: spec_hash(&json!({
            "kind": "GuestTokenRequest",
            "spec": shaping,
            "principal": key.principal,
            "binding": bound.hashed(),
            "issuer": issuer,
        })),
        renew_before,
        require_exp: spec.expiry_time.is_some(),
        bound,
        token: Token::Guest {
            subject: key.principal.subject(),
            request,
        },
    })
}

/// The session token of the ServiceKey `namespace/name`, bound to it and its key.
pub fn session_token<'a>(
    namespace: &str,
    name: &str,
    key: KeyRef<'a>,
    session: &SessionTokenSpec,
    issuer: &str,
) -> Result<Desired<'a>, Failure> {
    let ttl = session
        .ttl()
        .map_err(|e| Failure::new(Reason::InvalidSpec, format!("sessionToken.ttl: {e}")))?;
    let (spec, bound) = usable(namespace, name, Some(key), |_| None)?;
    Ok(Desired {
        spec_hash: spec_hash(&json!({
            "kind": "ServiceKey/session",
            // Who is restarted after a rotation does not shape the token.
            "session": SessionTokenSpec {
                restart_consumers: false,
                ..session.clone()
            },
            "principal": spec.principal,
            "binding": bound.hashed(),
            "issuer": issuer,
        })),
        renew_before: None,
        require_exp: true,
        bound,
        token: Token::Session {
            subject: spec.principal.subject(),
            ttl,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{GuestTokenParams, Principal, ServiceKeyRef};

    fn key(data_sources: &[&str], workspaces: &[&str]) -> ServiceKeySpec {
        ServiceKeySpec {
            principal: Principal {
                id: "1".into(),
                email: "a@b.c".into(),
                name: "a".into(),
                full_name: None,
                org_id: None,
                org_name: None,
            },
            data_sources: data_sources.iter().map(|s| s.to_string()).collect(),
            workspaces: workspaces.iter().map(|s| s.to_string()).collect(),
            secret_name: None,
            access_token_ttl: None,
            session_token: None,
            service_accounts: Vec::new(),
        }
    }

    fn grant(data_source: &str, filter: Option<&str>) -> DatasourceGrantSpec {
        DatasourceGrantSpec {
            service_key_ref: ServiceKeyRef { name: "k".into() },
            data_source: data_source.into(),
            app_uuid: None,
            filter: filter.map(str::to_owned),
            expiration: 3600,
            secret_name: None,
            renew_before: None,
            restart_consumers: false,
            rollout_restart: Vec::new(),
        }
    }

    fn guest(workspace: &str, datasource: Option<&str>) -> GuestTokenRequestSpec {
        GuestTokenRequestSpec {
            service_key_ref: ServiceKeyRef { name: "k".into() },
            workspace_name: workspace.into(),
            client_id: "c".into(),
            datasource_name: datasource.map(str::to_owned),
            params: Some(GuestTokenParams::default()),
            expiry_time: Some(60_000),
            secret_name: None,
            renew_before: None,
            restart_consumers: false,
            rollout_restart: Vec::new(),
        }
    }

    /// `key` as the ServiceKey `uid-k` with its key in place.
    fn bound(key: &ServiceKeySpec) -> KeyRef<'_> {
        KeyRef {
            spec: key,
            uid: "uid-k",
            fingerprint: Some("fp"),
        }
    }

    fn reason<T: std::fmt::Debug>(r: Result<T, Failure>) -> Reason {
        r.unwrap_err().reason
    }

    #[test]
    fn grants_are_checked_against_their_service_key() {
        let k = key(&["ds"], &["w"]);
        assert!(datasource_grant("ns", &grant("ds", None), Some(bound(&k)), "i").is_ok());
        assert_eq!(
            reason(datasource_grant("ns", &grant("ds", None), None, "i")),
            Reason::ServiceKeyNotFound
        );
        assert_eq!(
            reason(datasource_grant(
                "ns",
                &grant("other", None),
                Some(bound(&k)),
                "i"
            )),
            Reason::Forbidden
        );
        // Its key is not in place yet: nothing unbound is minted; a forbidden grant is still
        // Forbidden (its token must go).
        let keyless = KeyRef {
            fingerprint: None,
            ..bound(&k)
        };
        assert_eq!(
            reason(datasource_grant(
                "ns",
                &grant("ds", None),
                Some(keyless),
                "i"
            )),
            Reason::ServiceKeyNotReady
        );
        assert_eq!(
            reason(datasource_grant(
                "ns",
                &grant("other", None),
                Some(keyless),
                "i"
            )),
            Reason::Forbidden
        );
        assert_eq!(
            reason(datasource_grant(
                "ns",
                &grant("ds", Some("1=1; drop")),
                Some(bound(&k)),
                "i"
            )),
            Reason::InvalidFilter
        );
    }

    #[test]
    fn guest_tokens_respect_data_source_scope() {
        let k = key(&["Data_3_E"], &["w1"]);
        assert!(guest_token("ns", &guest("w1", None), Some(bound(&k)), "i").is_ok());
        assert!(guest_token("ns", &guest("w1", Some("Data_3_E")), Some(bound(&k)), "i").is_ok());
        let refused =
            guest_token("ns", &guest("w1", Some("PayrollDB")), Some(bound(&k)), "i").unwrap_err();
        assert_eq!(refused.reason, Reason::Forbidden);
        assert!(refused.message.contains("PayrollDB"), "{}", refused.message);
        assert_eq!(
            reason(guest_token("ns", &guest("w2", None), Some(bound(&k)), "i")),
            Reason::Forbidden
        );
    }

    #[test]
    fn the_hash_changes_with_every_shaping_input_and_only_those() {
        let k = key(&["*"], &["*"]);
        let base = datasource_grant("ns", &grant("ds", None), Some(bound(&k)), "i")
            .unwrap()
            .spec_hash;
        let mut restart = grant("ds", None);
        restart.rollout_restart.push(crate::crd::WorkloadRef {
            kind: crate::crd::WorkloadKind::Deployment,
            name: "app".into(),
        });
        assert_eq!(
            datasource_grant("ns", &restart, Some(bound(&k)), "i")
                .unwrap()
                .spec_hash,
            base
        );
        restart.restart_consumers = true;
        assert_eq!(
            datasource_grant("ns", &restart, Some(bound(&k)), "i")
                .unwrap()
                .spec_hash,
            base,
            "who is restarted does not shape the token"
        );
        for other in [
            datasource_grant("ns", &grant("ds2", None), Some(bound(&k)), "i"),
            datasource_grant("other", &grant("ds", None), Some(bound(&k)), "i"),
            datasource_grant("ns", &grant("ds", None), Some(bound(&k)), "j"),
        ] {
            assert_ne!(other.unwrap().spec_hash, base);
        }
        // Bound to another key, or to a ServiceKey created again under the same name.
        for other in [
            KeyRef {
                fingerprint: Some("replaced"),
                ..bound(&k)
            },
            KeyRef {
                uid: "uid-recreated",
                ..bound(&k)
            },
        ] {
            assert_ne!(
                datasource_grant("ns", &grant("ds", None), Some(other), "i")
                    .unwrap()
                    .spec_hash,
                base
            );
        }
        let mut renamed = k.clone();
        renamed.principal.email = "x@y.z".into();
        assert_ne!(
            datasource_grant("ns", &grant("ds", None), Some(bound(&renamed)), "i")
                .unwrap()
                .spec_hash,
            base
        );
    }
}
