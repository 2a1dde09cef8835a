//! `kubectl tokenmint inspect secret NAME` / `inspect token FILE|-`: what a token says, instead
//! of pasting it into a website. Its header and claims, its times as dates with the time left,
//! whether its signature verifies against the cluster's keyring (when the caller may read it)
//! and whether it was revoked.
//!
//! Never prints the token, its signature or a key: the report holds the decoded header and
//! claims only. A token is never taken from the command line, where the shell would keep it.
//! Exit code 1 for a token that is expired, revoked, not yet valid or whose signature fails;
//! "not checked" alone does not fail.

use super::output::{self, CliError, Exit, Fields, when};
use super::plugin::{Io, Session};
use super::rights::{Place, Right};
use crate::keyring::{Expect, Keyring, VerifyError};
use crate::reconcile::keyring::parse as parse_keyring;
use crate::reconcile::owned_secret::{TOKEN_KEY, data_str};
use crate::revocation;
use crate::token::assess::ts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use serde::Serialize;
use serde_json::Value;
use std::io::Read;

#[derive(clap::Subcommand, Debug)]
pub enum InspectArgs {
    /// The token in a token Secret of the namespace (-n).
    Secret {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// A token read from FILE, or from standard input with "-" (never from the command line,
    /// where the shell's history would keep it).
    Token {
        #[arg(value_name = "FILE|-")]
        source: String,
    },
}

/// What `inspect` reads.
pub const RIGHTS: &[Right] = &[
    Right::required("", "secrets", "get", Place::Namespace),
    Right::required("", "secrets", "get", Place::Keyring).optional("the signature check"),
    Right::required("", "configmaps", "list", Place::OperatorNamespace)
        .optional("the revocation check"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SignatureResult {
    Valid,
    Invalid,
    UnknownKid,
    NotChecked,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    pub result: SignatureResult,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RevokedResult {
    Revoked,
    NotRevoked,
    NotChecked,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub result: RevokedResult,
    pub detail: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Times {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    pub expired: bool,
    /// `nbf` is still ahead.
    pub not_yet_valid: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectReport {
    /// `Secret team-a/x` or the file read.
    pub source: String,
    /// The object whose token it is (the Secret's controlling owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub header: Value,
    pub claims: Value,
    pub times: Times,
    pub signature: Signature,
    pub revoked: Revoked,
    /// Signature valid (or not checked), not revoked, within its validity.
    pub fine: bool,
}

pub async fn run(args: InspectArgs, session: &Session, io: &mut Io<'_>) -> Result<Exit, CliError> {
    let (source, owner, token) = match args {
        InspectArgs::Secret { name } => {
            let (owner, token) = secret_token(session, &name).await?;
            (format!("Secret {}/{name}", session.namespace), owner, token)
        }
        InspectArgs::Token { source } => (source.clone(), None, read_token(&source, io.stdin)?),
    };
    let report = inspect(session, source, owner, &token).await?;
    match session.format {
        Some(format) => io
            .out
            .write_all(output::structured(&report, format)?.as_bytes())?,
        None => io.out.write_all(render(&report, session.now).as_bytes())?,
    }
    Ok(Exit::from_fine(report.fine))
}

/// The token of a token Secret, and the object owning it. Secrets that hold keys are refused
/// before anything of them is read into the report.
async fn secret_token(session: &Session, name: &str) -> Result<(Option<String>, String), CliError> {
    let what = format!("Secret {}/{name}", session.namespace);
    let api: Api<Secret> = Api::namespaced(session.client.clone(), &session.namespace);
    let secret = api.get(name).await.map_err(|e| CliError::api(&what, e))?;
    let type_ = secret.type_.clone().unwrap_or_default();
    let token = data_str(&secret, TOKEN_KEY)
        .filter(|_| type_ != crate::reconcile::service_key::KEY_SECRET_TYPE)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{what} holds no token (type {type_:?}, no `{TOKEN_KEY}` key): inspect reads token Secrets, and never prints keys"
            ))
        })?;
    let owner = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| format!("{} {}", r.kind, r.name));
    Ok((owner, token.trim().to_owned()))
}

fn read_token(source: &str, stdin: &mut dyn Read) -> Result<String, CliError> {
    let mut text = String::new();
    if source == "-" {
        stdin.read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(source)
            .map_err(|e| CliError::Usage(format!("cannot read {source}: {e}")))?;
    }
    Ok(text.trim().to_owned())
}

fn segment(part: Option<&str>) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part?).ok()?;
    serde_json::from_slice(&bytes).ok().filter(Value::is_object)
}

pub async fn inspect(
    session: &Session,
    source: String,
    owner: Option<String>,
    token: &str,
) -> Result<InspectReport, CliError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) = (
        segment(parts.next()),
        segment(parts.next()),
        parts.next(),
        parts.next(),
    ) else {
        return Err(CliError::Usage(format!(
            "{source} does not hold a JWT (three base64url parts: a JSON header, JSON claims and a signature)"
        )));
    };
    let time = |claim: &str| claims[claim].as_i64().map(ts);
    let now = session.now;
    let times = Times {
        issued_at: time("iat"),
        not_before: time("nbf"),
        expires_at: time("exp"),
        expired: time("exp").is_some_and(|exp| exp <= now),
        not_yet_valid: time("nbf").is_some_and(|nbf| nbf > now),
    };
    let signature = verify(session, token, &claims).await;
    let revoked = revoked(session, &claims).await;
    let fine = !matches!(
        signature.result,
        SignatureResult::Invalid | SignatureResult::UnknownKid
    ) && revoked.result != RevokedResult::Revoked
        && !times.expired
        && !times.not_yet_valid;
    Ok(InspectReport {
        source,
        owner,
        header,
        claims,
        times,
        signature,
        revoked,
        fine,
    })
}

/// Verifies the signature with the keyring Secret of the operator, when the caller may read it.
async fn verify(session: &Session, token: &str, claims: &Value) -> Signature {
    let op = &session.operator;
    let keyring = format!("{}/{}", op.namespace, op.keyring_secret);
    let not_checked = |detail: String| Signature {
        result: SignatureResult::NotChecked,
        detail,
    };
    let api: Api<Secret> = Api::namespaced(session.client.clone(), &op.namespace);
    let ring = match api.get_opt(&op.keyring_secret).await {
        Ok(Some(secret)) => match parse_keyring(&secret) {
            Ok(ring) => ring,
            Err(e) => return not_checked(format!("the keyring is unusable: {e}")),
        },
        Ok(None) => {
            return not_checked(format!(
                "keyring Secret {keyring} not found (is the operator's namespace {}? --operator-namespace)",
                op.namespace
            ));
        }
        Err(e) => {
            return not_checked(format!(
                "cannot read keyring Secret {keyring}: {}",
                output::describe(&e)
            ));
        }
    };
    classify(&ring, &keyring, token, claims)
}

/// The keyring's verdict on the signature alone: claims (expiry, issuer) are checked after the
/// signature, so a token refused for them was signed by the key.
fn classify(ring: &Keyring, keyring: &str, token: &str, claims: &Value) -> Signature {
    let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
    let expect = Expect {
        issuer: claims["iss"].as_str().unwrap_or_default(),
        require_exp: false,
    };
    let kid_text = kid.as_deref().unwrap_or("none");
    let (result, detail) = match ring.verify::<Value>(token, expect) {
        Ok(_)
        | Err(
            VerifyError::Expired
            | VerifyError::NotYetValid
            | VerifyError::WrongIssuer
            | VerifyError::MissingClaim(_)
            | VerifyError::WrongShape,
        ) => {
            let state = if ring.is_active(kid_text) {
                "active"
            } else {
                "retired: the operator re-mints the tokens it signed"
            };
            (
                SignatureResult::Valid,
                format!("key {kid_text} of keyring {keyring} ({state})"),
            )
        }
        Err(VerifyError::UnknownKey) => (
            SignatureResult::UnknownKid,
            format!(
                "{kid_text} is not in keyring {keyring} (keys: {}): signed by a key dropped after rotation, or by another installation",
                ring.kids().collect::<Vec<_>>().join(", ")
            ),
        ),
        Err(e) => (SignatureResult::Invalid, e.to_string()),
    };
    Signature { result, detail }
}

async fn revoked(session: &Session, claims: &Value) -> Revoked {
    let op = &session.operator;
    let api: Api<ConfigMap> = Api::namespaced(session.client.clone(), &op.namespace);
    match revocation::load(&api, session.now).await {
        Ok(denylist) => match denylist.denies(claims) {
            Some(why) => Revoked {
                result: RevokedResult::Revoked,
                detail: why.to_string(),
            },
            None => Revoked {
                result: RevokedResult::NotRevoked,
                detail: String::new(),
            },
        },
        Err(e) => Revoked {
            result: RevokedResult::NotChecked,
            detail: format!(
                "cannot list the revocation ConfigMaps of {}: {}",
                op.namespace,
                output::describe(&e)
            ),
        },
    }
}

/// The claims with `iat`, `nbf` and `exp` shown as dates with the time to or since them (the
/// token's own values are integers, as RFC 7519 has them; `-o json` prints them as they are).
fn dated_claims(claims: &Value, now: Timestamp) -> Value {
    let mut shown = claims.clone();
    if let Some(map) = shown.as_object_mut() {
        for claim in ["iat", "nbf", "exp"] {
            if let Some(at) = map.get(claim).and_then(Value::as_i64) {
                map.insert(claim.into(), Value::String(when(now, ts(at))));
            }
        }
    }
    shown
}

fn indented_json(value: &Value) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_default()
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect()
}

pub fn render(r: &InspectReport, now: Timestamp) -> String {
    let mut out = match &r.owner {
        Some(owner) => format!("Token in {} ({owner})\n", r.source),
        None => format!("Token from {}\n", r.source),
    };
    out.push_str("Header\n");
    out.push_str(&indented_json(&r.header));
    out.push_str("Claims\n");
    out.push_str(&indented_json(&dated_claims(&r.claims, now)));
    let mut f = Fields::default();
    let expiry = match r.times.expires_at {
        Some(exp) if r.times.expired => format!("EXPIRED {}", when(now, exp)),
        Some(exp) => when(now, exp),
        None => "never (no exp claim)".into(),
    };
    f.add("Expires", expiry);
    if r.times.not_yet_valid
        && let Some(nbf) = r.times.not_before
    {
        f.add("Not before", format!("NOT YET VALID {}", when(now, nbf)));
    }
    for claim in ["iat", "nbf", "exp"] {
        if r.claims.get(claim).is_some_and(|v| !v.is_i64()) {
            f.add(
                "Warning",
                format!("{claim} is not an integer (RFC 7519 NumericDate)"),
            );
        }
    }
    let signature = match r.signature.result {
        SignatureResult::Valid => "signature valid",
        SignatureResult::Invalid => "invalid",
        SignatureResult::UnknownKid => "unknown kid",
        SignatureResult::NotChecked => "not checked",
    };
    f.add("Signature", format!("{signature}: {}", r.signature.detail));
    let revoked = match r.revoked.result {
        RevokedResult::Revoked => format!("REVOKED: {}", r.revoked.detail),
        RevokedResult::NotRevoked => "no".into(),
        RevokedResult::NotChecked => format!("not checked: {}", r.revoked.detail),
    };
    f.add("Revoked", revoked);
    out.push_str(&f.render(0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Algorithm;
    use serde_json::json;

    fn token(ring: &Keyring, exp_in: i64) -> (String, Value) {
        let now = Timestamp::now().as_second();
        let claims = json!({"iat": now, "nbf": now, "exp": now + exp_in, "jti": "j", "iss": "x"});
        (ring.sign(&claims).unwrap(), claims)
    }

    #[test]
    fn the_signature_is_judged_alone() {
        let ring = Keyring::generate(Algorithm::HS256, Timestamp::now()).unwrap();
        let (live, claims) = token(&ring, 600);
        assert_eq!(
            classify(&ring, "k", &live, &claims).result,
            SignatureResult::Valid
        );
        // Expired: the signature was checked first, and held.
        let (expired, claims) = token(&ring, -3_600);
        let verdict = classify(&ring, "k", &expired, &claims);
        assert_eq!(verdict.result, SignatureResult::Valid, "{}", verdict.detail);
        // A forged signature on an expired token is invalid, not "expired".
        let forged = format!("{}AAAA", &expired[..expired.len() - 4]);
        assert_eq!(
            classify(&ring, "k", &forged, &claims).result,
            SignatureResult::Invalid
        );
        let other = Keyring::generate(Algorithm::HS256, Timestamp::now()).unwrap();
        let verdict = classify(&other, "k", &live, &claims);
        assert_eq!(verdict.result, SignatureResult::UnknownKid);
        assert!(
            verdict.detail.contains(other.active_kid()),
            "{}",
            verdict.detail
        );
    }

    #[test]
    fn time_claims_are_dated_only_where_they_are_integers() {
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let claims = json!({"iat": now.as_second() - 60, "exp": "soon", "sub": "1"});
        let shown = dated_claims(&claims, now);
        assert_eq!(shown["iat"], "2026-12-01T09:59:00Z (1m ago)");
        assert_eq!(shown["exp"], "soon");
        assert_eq!(shown["sub"], "1");
    }
}
