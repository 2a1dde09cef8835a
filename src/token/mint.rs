//! Building and signing every kind of token. The operator and the REST routes both mint here,
//! so a token from either path has the same claims and verifies alike.

use super::claims::{
    ACCESS_TYPE, AccessClaims, AccessIdentity, Binding, DATA_SOURCE_VIEWER, DatasourceClaims,
    DatasourceIdentity, GUEST_TYPE, GuestClaims, Id, Registered, SESSION_TYPE, SessionClaims,
    SessionOrg, SourceRole, UserTokenClaims,
};
use super::filter::{self, FilterError};
use crate::keyring::{Keyring, KeyringError};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// Shortest data source token lifetime a request may ask for, in seconds. The REST route
/// accepts what the vendor does (its own example asks for 20 s); the DatasourceGrant CRD's
/// higher floor ([`MIN_EXPIRATION`](crate::crd::datasource_grant::MIN_EXPIRATION)) is enforced
/// by its schema at admission.
pub const MIN_REQUEST_EXPIRATION: i64 = 1;

/// Longest data source token lifetime, in seconds (the vendor's 12 hours).
pub const MAX_EXPIRATION: i64 = 43_200;

/// Longest guest token lifetime in milliseconds (30 days): retired signing keys are kept this
/// long so every token they signed can still be verified.
pub const MAX_EXPIRY_TIME_MS: i64 = 2_592_000_000;

/// Lifetime of a Datasentinel user-token (the vendor's 24 hours).
pub const USER_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Who a token is issued to: the principal of a ServiceKey, as plain values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub id: &'a str,
    pub email: &'a str,
    /// The user name (Datasentinel's `user`).
    pub name: &'a str,
    pub full_name: Option<&'a str>,
    pub org_id: Option<&'a str>,
    pub org_name: Option<&'a str>,
}

/// The ServiceKey a token is issued with: `namespace/name`, its uid and the fingerprint of its
/// key, which every token carries (see [`Binding`]).
#[derive(Debug, Clone, Copy)]
pub struct Issuing<'a> {
    pub service_key: &'a str,
    pub service_key_uid: &'a str,
    pub key_fingerprint: &'a str,
}

impl Issuing<'_> {
    fn binding(&self) -> Binding {
        Binding {
            service_key: self.service_key.into(),
            service_key_uid: self.service_key_uid.into(),
            key_fingerprint: self.key_fingerprint.into(),
        }
    }
}

/// A signed token and what the operator records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    /// The key it was signed with (the keyring's active key).
    pub kid: String,
    pub jti: String,
    pub issued_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

/// Why a token request cannot be honoured. Messages name the problem for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "expiration must be between {MIN_REQUEST_EXPIRATION} and {MAX_EXPIRATION} seconds, got {0}"
    )]
    Expiration(i64),
    #[error("expiryTime must be between 1 and {MAX_EXPIRY_TIME_MS} milliseconds, got {0}")]
    ExpiryTime(i64),
    #[error("invalid filter: {0}")]
    Filter(#[from] FilterError),
    #[error("{field} must be a list of objects")]
    Params { field: GuestParam },
}

/// The documented guest token parameters, each with its vendor error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestParam {
    DashboardAppFilters,
    AppFilters,
    RlsSettings,
}

impl GuestParam {
    pub const ALL: [GuestParam; 3] = [
        Self::DashboardAppFilters,
        Self::AppFilters,
        Self::RlsSettings,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Self::DashboardAppFilters => "dashboardAppFilters",
            Self::AppFilters => "appFilters",
            Self::RlsSettings => "rlsSettings",
        }
    }

    /// The DataBrain error code for a bad value of this parameter.
    pub fn error_code(self) -> &'static str {
        match self {
            Self::DashboardAppFilters => "DASHBOARD_PARAM_ERROR",
            Self::AppFilters => "APP_FILTER_PARAM_ERROR",
            Self::RlsSettings => "RLS_SETTINGS_PARAM_ERROR",
        }
    }
}

impl std::fmt::Display for GuestParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "params.{}", self.key())
    }
}

/// A data source token request (`get_datasource_token` body, DatasourceGrant spec).
#[derive(Debug, Clone, Default)]
pub struct DatasourceRequest<'a> {
    pub data_source: &'a str,
    pub expiration: i64,
    pub app_uuid: Option<&'a str>,
    pub filter: Option<&'a str>,
}

/// A guest token request (`guest-token/create` body, GuestTokenRequest spec).
#[derive(Debug, Clone, Default)]
pub struct GuestRequest<'a> {
    pub workspace_name: &'a str,
    pub client_id: &'a str,
    pub datasource_name: Option<&'a str>,
    pub params: Option<&'a Map<String, Value>>,
    pub expiry_time_ms: Option<i64>,
}

/// Checks a data source request's bounds and filter; returns the filter as it goes into the
/// token (trimmed).
pub fn validate_datasource(request: &DatasourceRequest) -> Result<Option<String>, RequestError> {
    if !(MIN_REQUEST_EXPIRATION..=MAX_EXPIRATION).contains(&request.expiration) {
        return Err(RequestError::Expiration(request.expiration));
    }
    Ok(request.filter.map(filter::validate_filter).transpose()?)
}

/// Checks a guest request's bounds and documented parameters.
pub fn validate_guest(request: &GuestRequest) -> Result<(), RequestError> {
    if let Some(ms) = request.expiry_time_ms
        && !(1..=MAX_EXPIRY_TIME_MS).contains(&ms)
    {
        return Err(RequestError::ExpiryTime(ms));
    }
    for field in GuestParam::ALL {
        let value = request.params.and_then(|p| p.get(field.key()));
        let ok = value.is_none_or(|v| {
            v.as_array()
                .is_some_and(|items| items.iter().all(Value::is_object))
        });
        if !ok {
            return Err(RequestError::Params { field });
        }
    }
    Ok(())
}

/// Signs tokens with a keyring under one issuer.
#[derive(Debug, Clone, Copy)]
pub struct Minter<'a> {
    pub keyring: &'a Keyring,
    pub issuer: &'a str,
}

impl Minter<'_> {
    fn sign<C: Serialize>(&self, claims: &C) -> Result<String, KeyringError> {
        self.keyring.sign(claims)
    }

    fn minted(&self, token: String, registered: &Registered) -> Minted {
        Minted {
            token,
            kid: self.keyring.active_kid().to_owned(),
            jti: registered.jti.clone(),
            issued_at: ts(registered.iat),
            expires_at: registered.exp.map(ts),
        }
    }

    /// Nibi user access token: `identity {id}`, living `ttl`, bound to its ServiceKey.
    pub fn access_token(
        &self,
        subject: Subject,
        issuing: Issuing,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Minted, KeyringError> {
        let claims = AccessClaims {
            registered: Registered::new(now.as_second(), Some(secs(ttl))),
            identity: AccessIdentity {
                id: Id::from(subject.id),
            },
            fresh: false,
            token_type: ACCESS_TYPE.into(),
            binding: issuing.binding(),
            iss: self.issuer.into(),
        };
        Ok(self.minted(self.sign(&claims)?, &claims.registered))
    }

    /// Nibi data source read token. Validates the expiration bounds and the filter.
    pub fn datasource_token(
        &self,
        subject: Subject,
        issuing: Issuing,
        request: &DatasourceRequest,
        now: Timestamp,
    ) -> Result<Minted, MintError> {
        let filter = validate_datasource(request)?;
        let claims = DatasourceClaims {
            registered: Registered::new(now.as_second(), Some(request.expiration)),
            identity: DatasourceIdentity {
                id: Id::from(subject.id),
                orgs: subject.org_id.map(Id::from).into_iter().collect(),
                source_role: SourceRole {
                    ds: request.data_source.into(),
                    role: DATA_SOURCE_VIEWER.into(),
                },
                app_uuid: request.app_uuid.map(str::to_owned),
                filter,
            },
            fresh: false,
            token_type: ACCESS_TYPE.into(),
            binding: issuing.binding(),
            iss: self.issuer.into(),
        };
        Ok(self.minted(self.sign(&claims)?, &claims.registered))
    }

    /// DataBrain embed guest token; without `expiry_time_ms` it never expires.
    pub fn guest_token(
        &self,
        subject: Subject,
        issuing: Issuing,
        request: &GuestRequest,
        now: Timestamp,
    ) -> Result<Minted, MintError> {
        validate_guest(request)?;
        // Milliseconds round up to whole seconds: a token never outlives less than asked.
        let lifetime = request.expiry_time_ms.map(|ms| (ms + 999) / 1000);
        let claims = GuestClaims {
            registered: Registered::new(now.as_second(), lifetime),
            workspace_name: request.workspace_name.into(),
            client_id: request.client_id.into(),
            datasource_name: request.datasource_name.map(str::to_owned),
            params: request.params.cloned().unwrap_or_default(),
            sub: subject.id.into(),
            token_type: GUEST_TYPE.into(),
            binding: issuing.binding(),
            iss: self.issuer.into(),
        };
        Ok(self.minted(self.sign(&claims)?, &claims.registered))
    }

    /// Nexla session token for `subject`, bound to the ServiceKey it is issued with; it starts
    /// a session family of its own (`sid` = its `jti`).
    pub fn session_token(
        &self,
        subject: Subject,
        issuing: Issuing,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<(Minted, SessionClaims), KeyringError> {
        let registered = Registered::new(now.as_second(), Some(secs(ttl)));
        let claims = SessionClaims {
            sid: registered.jti.clone(),
            registered,
            sub: subject.id.into(),
            email: subject.email.into(),
            full_name: subject.full_name.map(str::to_owned),
            org: subject.org_id.map(|id| SessionOrg {
                id: Id::from(id),
                name: subject.org_name.map(str::to_owned),
            }),
            binding: issuing.binding(),
            token_type: SESSION_TYPE.into(),
            iss: self.issuer.into(),
        };
        Ok((self.minted(self.sign(&claims)?, &claims.registered), claims))
    }

    /// A session token with the same subject and family as `previous` and the expiry restarted.
    pub fn refresh_session(
        &self,
        previous: &SessionClaims,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<(Minted, SessionClaims), KeyringError> {
        let claims = SessionClaims {
            registered: Registered::new(now.as_second(), Some(secs(ttl))),
            ..previous.clone()
        };
        Ok((self.minted(self.sign(&claims)?, &claims.registered), claims))
    }

    /// Datasentinel user-token: `exp iat database email user`, 24 hours, bound to its
    /// ServiceKey.
    pub fn user_token(
        &self,
        subject: Subject,
        issuing: Issuing,
        now: Timestamp,
    ) -> Result<Minted, KeyringError> {
        let iat = now.as_second();
        let claims = UserTokenClaims {
            exp: iat + secs(USER_TOKEN_TTL),
            iat,
            database: subject.org_name.unwrap_or_default().into(),
            email: subject.email.into(),
            user: subject.name.into(),
            jti: uuid::Uuid::new_v4().to_string(),
            binding: issuing.binding(),
            iss: self.issuer.into(),
        };
        Ok(Minted {
            token: self.sign(&claims)?,
            kid: self.keyring.active_kid().to_owned(),
            jti: claims.jti,
            issued_at: ts(claims.iat),
            expires_at: Some(ts(claims.exp)),
        })
    }
}

/// A request that could not be minted: the request was wrong, or signing failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

use super::assess::ts;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::{Algorithm, Expect};
    use serde_json::json;

    fn principal() -> Subject<'static> {
        Subject {
            id: "1",
            email: "jcw@example.com",
            name: "jcw",
            full_name: Some("Jeff Williams"),
            org_id: Some("7"),
            org_name: Some("Main Org."),
        }
    }

    const KEY: &str = "team-a/analytics";

    fn issuing() -> Issuing<'static> {
        Issuing {
            service_key: KEY,
            service_key_uid: "uid-1",
            key_fingerprint: "fp",
        }
    }

    fn now() -> Timestamp {
        Timestamp::now()
    }

    fn decode(ring: &Keyring, token: &str, require_exp: bool) -> Value {
        ring.verify(
            token,
            Expect {
                issuer: "tm",
                require_exp,
            },
        )
        .unwrap()
    }

    #[test]
    fn access_token_claims() {
        let ring = Keyring::generate(Algorithm::HS256, now()).unwrap();
        let minter = Minter {
            keyring: &ring,
            issuer: "tm",
        };
        let t = now();
        let minted = minter
            .access_token(principal(), issuing(), Duration::from_secs(86_400), t)
            .unwrap();
        let c = decode(&ring, &minted.token, true);
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "iat",
                "nbf",
                "jti",
                "exp",
                "identity",
                "fresh",
                "type",
                "service_key",
                "service_key_uid",
                "key_fingerprint",
                "iss"
            ]
        );
        assert_eq!(c["identity"], json!({"id": 1}));
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            86_400
        );
        assert_eq!(
            (c["fresh"].clone(), c["type"].clone(), c["iss"].clone()),
            (json!(false), json!("access"), json!("tm"))
        );
        assert_eq!(minted.jti, c["jti"]);
        assert_eq!(
            minted.expires_at,
            Some(Timestamp::from_second(t.as_second() + 86_400).unwrap())
        );
    }

    #[test]
    fn datasource_token_claims_and_bounds() {
        let ring = Keyring::generate(Algorithm::HS256, now()).unwrap();
        let minter = Minter {
            keyring: &ring,
            issuer: "tm",
        };
        let request = DatasourceRequest {
            data_source: "Data_3_E",
            expiration: 3_600,
            app_uuid: Some("123"),
            filter: Some("  USER_id = 123 "),
        };
        let minted = minter
            .datasource_token(principal(), issuing(), &request, now())
            .unwrap();
        let c = decode(&ring, &minted.token, true);
        assert_eq!(
            c["identity"],
            json!({"id": 1, "orgs": [7], "source_role": {"ds": "Data_3_E", "role": "dataSourceViewer"},
                   "app_uuid": "123", "filter": "USER_id = 123"})
        );
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            3_600
        );

        for (expiration, ok) in [
            (-1, false),
            (0, false),
            (1, true),
            (59, true),
            (43_200, true),
            (43_201, false),
        ] {
            let r = DatasourceRequest {
                expiration,
                filter: None,
                ..request.clone()
            };
            let result = minter.datasource_token(principal(), issuing(), &r, now());
            assert_eq!(result.is_ok(), ok, "expiration {expiration}");
            if !ok {
                assert!(
                    matches!(result, Err(MintError::Request(RequestError::Expiration(e))) if e == expiration)
                );
            }
        }
        let injected = DatasourceRequest {
            filter: Some("1=1; DROP TABLE users"),
            ..request
        };
        assert!(matches!(
            minter.datasource_token(principal(), issuing(), &injected, now()),
            Err(MintError::Request(RequestError::Filter(_)))
        ));
    }

    #[test]
    fn guest_token_claims_and_params() {
        let ring = Keyring::generate(Algorithm::EdDSA, now()).unwrap();
        let minter = Minter {
            keyring: &ring,
            issuer: "tm",
        };
        let params = json!({"dashboardAppFilters": [{"dashboardId": "d1", "values": {"region": "EU"}, "isShowOnUrl": false}], "custom": 1});
        let params = params.as_object().unwrap();
        let request = GuestRequest {
            workspace_name: "w1",
            client_id: "acme",
            datasource_name: Some("sales"),
            params: Some(params),
            expiry_time_ms: Some(1_500),
        };
        let minted = minter
            .guest_token(principal(), issuing(), &request, now())
            .unwrap();
        let c = decode(&ring, &minted.token, true);
        assert_eq!(c["workspaceName"], "w1");
        assert_eq!(c["clientId"], "acme");
        assert_eq!(c["datasourceName"], "sales");
        assert_eq!(&c["params"], &Value::Object(params.clone()));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 2);

        let forever = GuestRequest {
            expiry_time_ms: None,
            params: None,
            ..request.clone()
        };
        let minted = minter
            .guest_token(principal(), issuing(), &forever, now())
            .unwrap();
        assert_eq!(minted.expires_at, None);
        assert!(decode(&ring, &minted.token, false).get("exp").is_none());

        for (key, code) in [
            ("dashboardAppFilters", "DASHBOARD_PARAM_ERROR"),
            ("appFilters", "APP_FILTER_PARAM_ERROR"),
            ("rlsSettings", "RLS_SETTINGS_PARAM_ERROR"),
        ] {
            for bad in [json!("x"), json!([1]), json!({"a": 1})] {
                let p = json!({ key: bad });
                let r = GuestRequest {
                    params: p.as_object(),
                    ..request.clone()
                };
                match validate_guest(&r) {
                    Err(RequestError::Params { field }) => {
                        assert_eq!(field.error_code(), code);
                        assert!(RequestError::Params { field }.to_string().contains(key));
                    }
                    other => panic!("{key}={bad}: {other:?}"),
                }
            }
        }
        for ms in [0, -1, MAX_EXPIRY_TIME_MS + 1] {
            let r = GuestRequest {
                expiry_time_ms: Some(ms),
                ..request.clone()
            };
            assert_eq!(validate_guest(&r), Err(RequestError::ExpiryTime(ms)));
        }
    }

    #[test]
    fn session_refresh_restarts_expiry_with_a_new_jti() {
        let ring = Keyring::generate(Algorithm::HS256, now()).unwrap();
        let minter = Minter {
            keyring: &ring,
            issuer: "tm",
        };
        let t0 = Timestamp::from_second(now().as_second() - 600).unwrap();
        let ttl = Duration::from_secs(3_600);
        let (first, claims) = minter
            .session_token(principal(), issuing(), ttl, t0)
            .unwrap();
        let t1 = now();
        let (second, refreshed) = minter.refresh_session(&claims, ttl, t1).unwrap();
        assert_ne!(first.jti, second.jti);
        // One family: the first session's jti, kept by its refreshes.
        assert_eq!(
            (claims.sid.as_str(), refreshed.sid.as_str()),
            (first.jti.as_str(), first.jti.as_str())
        );
        assert_eq!(refreshed.registered.exp, Some(t1.as_second() + 3_600));
        assert_eq!(
            (
                refreshed.sub.as_str(),
                refreshed.binding.service_key.as_str()
            ),
            ("1", "team-a/analytics")
        );
        let c = decode(&ring, &second.token, true);
        assert_eq!(c["type"], "session");
        assert_eq!(c["org"], json!({"id": 7, "name": "Main Org."}));
    }

    #[test]
    fn user_token_claims() {
        let ring = Keyring::generate(Algorithm::HS256, now()).unwrap();
        let minter = Minter {
            keyring: &ring,
            issuer: "tm",
        };
        let minted = minter.user_token(principal(), issuing(), now()).unwrap();
        let c = decode(&ring, &minted.token, true);
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "exp",
                "iat",
                "database",
                "email",
                "user",
                "jti",
                "service_key",
                "service_key_uid",
                "key_fingerprint",
                "iss"
            ]
        );
        assert_eq!(c["jti"], minted.jti.as_str());
        assert_eq!(
            (c["database"].as_str(), c["user"].as_str()),
            (Some("Main Org."), Some("jcw"))
        );
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            86_400
        );
    }
}
