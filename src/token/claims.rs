//! Claim sets of every token kind, in the layouts of the vendors' documents.
//!
//! Field order follows the vendors' example tokens; `iss` is appended to each (it is configurable
//! and every tokenmint token carries it). Times are Unix seconds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The claims of a JWT, read without verifying it: only where something else vouches for the
/// token (our own fresh token; a ServiceAccount token TokenReview checked).
pub fn unverified(token: &str) -> Option<Value> {
    use base64::Engine;
    let part = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `type` claim of user access and data source tokens.
pub const ACCESS_TYPE: &str = "access";
/// `type` claim of embed guest tokens.
pub const GUEST_TYPE: &str = "guest";
/// `type` claim of session tokens.
pub const SESSION_TYPE: &str = "session";
/// Role granted by a data source token.
pub const DATA_SOURCE_VIEWER: &str = "dataSourceViewer";

/// A user or organisation id: a JSON number when it is all digits (as in the vendor tokens,
/// `"id": 1`), else a string.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Id {
    Number(u64),
    Text(String),
}

impl From<&str> for Id {
    fn from(id: &str) -> Self {
        // Leading zeros would not survive a round trip through a number.
        match id.parse::<u64>() {
            Ok(n) if n.to_string() == id => Id::Number(n),
            _ => Id::Text(id.to_owned()),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Text(s) => f.write_str(s),
        }
    }
}

/// The registered-claim header shared by access, data source, guest and session tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Registered {
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// Absent only on guest tokens requested without an expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

impl Registered {
    /// Claims for a token issued at `now` (Unix seconds) living `lifetime_secs`, with a fresh
    /// random `jti`.
    pub fn new(now: i64, lifetime_secs: Option<i64>) -> Self {
        Registered {
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            exp: lifetime_secs.map(|l| now.saturating_add(l)),
        }
    }
}

/// Nibi user access token (`get_access_token`): `identity {id}`, bound to its ServiceKey.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AccessClaims {
    #[serde(flatten)]
    pub registered: Registered,
    pub identity: AccessIdentity,
    pub fresh: bool,
    #[serde(rename = "type")]
    pub token_type: String,
    #[serde(flatten)]
    pub binding: Binding,
    pub iss: String,
}

/// Claims binding a token to the key it was minted with: honoured only while that ServiceKey
/// exists, as that very object, with that key (outside the vendors' own objects, so their
/// layouts stay as they are). Every kind of token carries them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// `namespace/name` of the ServiceKey.
    pub service_key: String,
    /// Its `metadata.uid`: a ServiceKey deleted and created again under the same name (even
    /// with the same key) is another object, and no longer matches.
    pub service_key_uid: String,
    /// [`key_fingerprint`] of its key: a replaced key no longer matches.
    pub key_fingerprint: String,
}

/// A short, one-way fingerprint of a key (96 bits of a domain-separated SHA-256, base64url).
/// Keys tokenmint generates are 256 random bits, so the fingerprint reveals nothing usable.
pub fn key_fingerprint(key: &[u8]) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"tokenmint key fingerprint v1\0")
        .chain_update(key)
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12])
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AccessIdentity {
    pub id: Id,
}

/// Nibi data source read token (`get_datasource_token`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DatasourceClaims {
    #[serde(flatten)]
    pub registered: Registered,
    pub identity: DatasourceIdentity,
    pub fresh: bool,
    #[serde(rename = "type")]
    pub token_type: String,
    /// The ServiceKey it was issued with (introspection's tenant) and its key.
    #[serde(flatten)]
    pub binding: Binding,
    pub iss: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DatasourceIdentity {
    pub id: Id,
    pub orgs: Vec<Id>,
    pub source_role: SourceRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SourceRole {
    pub ds: String,
    pub role: String,
}

/// DataBrain embed guest token (`guest-token/create`). The vendor does not publish its claims;
/// the request fields are kept under their request names so a consumer reads them alike.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuestClaims {
    #[serde(flatten)]
    pub registered: Registered,
    pub workspace_name: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasource_name: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// The principal id of the ServiceKey the token was issued with (a string, RFC 7519).
    pub sub: String,
    #[serde(rename = "type")]
    pub token_type: String,
    /// The ServiceKey it was issued with (introspection's tenant) and its key.
    #[serde(flatten)]
    pub binding: Binding,
    pub iss: String,
}

/// Nexla session token (`/token`, `/token/refresh`): enough of the principal to answer a
/// refresh, and the key it came from so that a deleted or replaced key stops refreshes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionClaims {
    #[serde(flatten)]
    pub registered: Registered,
    /// The session family: the `jti` of the session that started it (minted by `/token` or by
    /// the operator), kept by every refresh. Revoking any member revokes the family.
    pub sid: String,
    /// The principal id (a string, RFC 7519).
    pub sub: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<SessionOrg>,
    #[serde(flatten)]
    pub binding: Binding,
    #[serde(rename = "type")]
    pub token_type: String,
    pub iss: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionOrg {
    pub id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Datasentinel user-token (`/ds-api/user-token`): `exp iat database email user`, then a
/// `jti` (for revocation) and the binding to its ServiceKey.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UserTokenClaims {
    pub exp: i64,
    pub iat: i64,
    /// The organisation name.
    pub database: String,
    pub email: String,
    pub user: String,
    pub jti: String,
    #[serde(flatten)]
    pub binding: Binding,
    pub iss: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    /// The payload (second segment) of a seed token, as JSON.
    fn payload(token: &str) -> Value {
        let segment = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    /// Keys of a JSON object in document order.
    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    // Example tokens from the vendor documents (seeds 000, 001, 004).
    const SEED_DATASOURCE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpYXQiOjE1NDA4MDIwMjMsIm5iZiI6MTU0MDgwMjAyMywianRpIjoiZmYwNzJlZTktMjVlZi00OGI0LWI4NzQtOWNlZGU0OGYyMWE3IiwiZXhwIjoxNTQwODAyMDQzLCJpZGVudGl0eSI6eyJpZCI6MSwib3JncyI6WzFdLCJzb3VyY2Vfcm9sZSI6eyJkcyI6IkRhdGFfM19FIiwicm9sZSI6ImRhdGFTb3VyY2VWaWV3ZXIifSwiYXBwX3V1aWQiOiIxMjMifSwiZnJlc2giOmZhbHNlLCJ0eXBlIjoiYWNjZXNzIn0.dYm994kqCZBhWvu-2YSycFfNusM7fNutM9pg_8rX_Ps";
    const SEED_ACCESS: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpYXQiOjE1Mzc5NzU4NTksIm5iZiI6MTUzNzk3NTg1OSwianRpIjoiMThjZDVjZjQtYzI5Ni00ODZkLTg1MDctMjJiMDUwODNiMzc2IiwiZXhwIjoxNTM4MDYyMjU5LCJpZGVudGl0eSI6eyJpZCI6MX0sImZyZXNoIjpmYWxzZSwidHlwZSI6ImFjY2VzcyJ9.VKebjV3NrFp";
    const SEED_USER_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJleHAiOjE1ODAyMTYyMjQsImlhdCI6MTU4MDEyOTgxOSwiZGF0YWJhc2UiOiJNYWluIE9yZy4iLCJlbWFpbCI6InRlc3RAZGF0YXNlbnRpbmVsLmlvIiwidXNlciI6InRlc3QifQ.JMDvq2JPcqz9M0_it_0UtP9y79dClVwx9pDEzCl9HTk";

    /// Our serialisation of the seed's own values, minus the claims tokenmint appends (`iss`,
    /// the binding, a user-token's `jti`), must equal the seed payload key for key and in the
    /// same order.
    fn without_iss(mut v: Value) -> Value {
        let map = v.as_object_mut().unwrap();
        for ours in ["iss", "service_key", "service_key_uid", "key_fingerprint"] {
            map.shift_remove(ours);
        }
        if !map.contains_key("nbf") {
            map.shift_remove("jti");
        }
        v
    }

    fn binding() -> Binding {
        Binding {
            service_key: "team-a/analytics".into(),
            service_key_uid: "0d7c2a8e-3f1b-4c55-9e0a-6b2f4d1c8a90".into(),
            key_fingerprint: key_fingerprint(b"k"),
        }
    }

    /// The binding claims, in order, as every kind of token carries them before `iss`.
    const BINDING: [&str; 3] = ["service_key", "service_key_uid", "key_fingerprint"];

    #[test]
    fn access_token_matches_seed_layout() {
        let seed = payload(SEED_ACCESS);
        let ours = AccessClaims {
            registered: Registered {
                iat: 1_537_975_859,
                nbf: 1_537_975_859,
                jti: "18cd5cf4-c296-486d-8507-22b05083b376".into(),
                exp: Some(1_538_062_259),
            },
            identity: AccessIdentity { id: Id::from("1") },
            fresh: false,
            token_type: ACCESS_TYPE.into(),
            binding: binding(),
            iss: "tokenmint".into(),
        };
        let ours = serde_json::to_value(&ours).unwrap();
        assert_eq!(keys(&ours)[6], "type");
        assert_eq!(keys(&ours)[7..10], BINDING);
        assert_eq!(keys(&ours)[10..], ["iss"]);
        let ours = without_iss(ours);
        assert_eq!(ours, seed);
        assert_eq!(keys(&ours), keys(&seed));
        // 24 hours, as the vendor documents.
        assert_eq!(
            seed["exp"].as_i64().unwrap() - seed["iat"].as_i64().unwrap(),
            86_400
        );
        // And the seed decodes into our type.
        let mut with_iss = seed.clone();
        with_iss["iss"] = json!("x");
        with_iss["service_key"] = json!("ns/name");
        with_iss["service_key_uid"] = json!("u");
        with_iss["key_fingerprint"] = json!("f");
        let back: AccessClaims = serde_json::from_value(with_iss).unwrap();
        assert_eq!(back.identity.id, Id::Number(1));
        assert_eq!(back.registered.exp, Some(1_538_062_259));
    }

    #[test]
    fn datasource_token_matches_seed_layout() {
        let seed = payload(SEED_DATASOURCE);
        let ours = DatasourceClaims {
            registered: Registered {
                iat: 1_540_802_023,
                nbf: 1_540_802_023,
                jti: "ff072ee9-25ef-48b4-b874-9cede48f21a7".into(),
                exp: Some(1_540_802_043),
            },
            identity: DatasourceIdentity {
                id: Id::from("1"),
                orgs: vec![Id::from("1")],
                source_role: SourceRole {
                    ds: "Data_3_E".into(),
                    role: DATA_SOURCE_VIEWER.into(),
                },
                app_uuid: Some("123".into()),
                filter: None,
            },
            fresh: false,
            token_type: ACCESS_TYPE.into(),
            binding: binding(),
            iss: "tokenmint".into(),
        };
        let ours = serde_json::to_value(&ours).unwrap();
        let all = keys(&ours);
        assert_eq!(all[all.len() - 4..all.len() - 1], BINDING);
        let ours = without_iss(ours);
        assert_eq!(ours, seed);
        assert_eq!(keys(&ours), keys(&seed));
        assert_eq!(keys(&ours["identity"]), keys(&seed["identity"]));
    }

    #[test]
    fn datasource_filter_follows_app_uuid() {
        let identity = DatasourceIdentity {
            id: Id::from("7"),
            orgs: vec![],
            source_role: SourceRole {
                ds: "d".into(),
                role: DATA_SOURCE_VIEWER.into(),
            },
            app_uuid: Some("u".into()),
            filter: Some("USER_id = 123".into()),
        };
        let v = serde_json::to_value(&identity).unwrap();
        assert_eq!(
            keys(&v),
            ["id", "orgs", "source_role", "app_uuid", "filter"]
        );
        assert_eq!(v["filter"], "USER_id = 123");
    }

    #[test]
    fn user_token_matches_seed_layout() {
        let seed = payload(SEED_USER_TOKEN);
        let ours = UserTokenClaims {
            exp: 1_580_216_224,
            iat: 1_580_129_819,
            database: "Main Org.".into(),
            email: "test@datasentinel.io".into(),
            user: "test".into(),
            jti: "j".into(),
            binding: binding(),
            iss: "tokenmint".into(),
        };
        let ours = without_iss(serde_json::to_value(&ours).unwrap());
        assert_eq!(ours, seed);
        assert_eq!(keys(&ours), keys(&seed));
    }

    #[test]
    fn guest_and_session_layouts() {
        let guest = GuestClaims {
            registered: Registered::new(100, None),
            workspace_name: "w1".into(),
            client_id: "acme".into(),
            datasource_name: None,
            params: Map::new(),
            sub: "1".into(),
            token_type: GUEST_TYPE.into(),
            binding: binding(),
            iss: "tokenmint".into(),
        };
        let v = serde_json::to_value(&guest).unwrap();
        assert_eq!(
            keys(&v),
            [
                "iat",
                "nbf",
                "jti",
                "workspaceName",
                "clientId",
                "sub",
                "type",
                "service_key",
                "service_key_uid",
                "key_fingerprint",
                "iss"
            ]
        );
        let registered = Registered::new(100, Some(3_600));
        let session = SessionClaims {
            sid: registered.jti.clone(),
            registered,
            sub: "12345".into(),
            email: "jcw@example.com".into(),
            full_name: Some("Jeff Williams".into()),
            org: None,
            binding: binding(),
            token_type: SESSION_TYPE.into(),
            iss: "tokenmint".into(),
        };
        let v = serde_json::to_value(&session).unwrap();
        assert_eq!(v["exp"], 3_700);
        assert_eq!(v["sub"], "12345", "sub is a string (RFC 7519)");
        assert_eq!(v["service_key"], "team-a/analytics");
        assert_eq!(v["sid"], v["jti"], "a session starts its own family");
        let back: SessionClaims = serde_json::from_value(v).unwrap();
        assert_eq!(back, session);
    }

    #[test]
    fn fingerprints_are_short_stable_and_distinct() {
        let a = key_fingerprint(b"tmk_one");
        assert_eq!(a, key_fingerprint(b"tmk_one"));
        assert_ne!(a, key_fingerprint(b"tmk_two"));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("tmk"));
    }

    #[test]
    fn ids_are_numbers_only_when_they_round_trip() {
        assert_eq!(Id::from("1"), Id::Number(1));
        assert_eq!(Id::from("007"), Id::Text("007".into()));
        assert_eq!(Id::from("u-1"), Id::Text("u-1".into()));
        assert_eq!(
            Id::from("99999999999999999999"),
            Id::Text("99999999999999999999".into())
        );
        assert_eq!(serde_json::to_string(&Id::from("42")).unwrap(), "42");
        assert_eq!(serde_json::to_string(&Id::from("a")).unwrap(), "\"a\"");
    }

    #[test]
    fn registered_claims_are_fresh_per_token() {
        let a = Registered::new(1_000, Some(60));
        let b = Registered::new(1_000, Some(60));
        assert_ne!(a.jti, b.jti);
        assert_eq!(a.exp, Some(1_060));
        assert_eq!((a.iat, a.nbf), (1_000, 1_000));
        assert!(uuid::Uuid::parse_str(&a.jti).is_ok());
    }
}
