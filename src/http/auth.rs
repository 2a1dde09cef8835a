//! Credentials from the `Authorization` header. Nothing here logs or echoes what it reads:
//! error messages say what was wrong with the header's form, never its content.

use super::AppState;
use super::error::{ApiError, Challenge, Flavor};
use crate::key_store::{KeyEntry, KeyIndex};
use crate::keyring::Keyring;
use crate::tokenreview::{ReviewError, ServiceAccount};
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The credentials of a scheme, split off the header value.
fn credentials<'h>(
    headers: &'h HeaderMap,
    scheme: &str,
    flavor: Flavor,
    challenge: Challenge,
) -> Result<&'h str, ApiError> {
    let unauthorized = |m: String| ApiError::unauthorized(flavor, challenge, m);
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or_else(|| unauthorized("missing Authorization header".into()))?;
    // A proxy that checks the last of two headers would disagree with us about who calls.
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            flavor,
            "more than one Authorization header; send exactly one",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header".into()))?
        .trim();
    let (given, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !given.eq_ignore_ascii_case(scheme) {
        return Err(unauthorized(format!(
            "the Authorization header must use the {scheme} scheme"
        )));
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(unauthorized(format!(
            "the Authorization header carries no {scheme} credentials"
        )));
    }
    Ok(rest)
}

/// `Authorization: Bearer <token or key>`.
pub fn bearer(headers: &HeaderMap, flavor: Flavor) -> Result<&str, ApiError> {
    credentials(headers, "Bearer", flavor, Challenge::Bearer)
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

/// Whether a credential is shaped like a JWT (three dot-separated parts): a token, not a key.
pub fn is_jwt(credential: &str) -> bool {
    credential.split('.').count() == 3
}

/// Whether a JWT-shaped credential names a key of our keyring (read from its header, not
/// verified): one of our own tokens, not a ServiceAccount's.
pub fn minted_here(keyring: &Keyring, credential: &str) -> bool {
    jsonwebtoken::decode_header(credential)
        .ok()
        .and_then(|h| h.kid)
        .is_some_and(|kid| keyring.kids().any(|k| k == kid))
}

/// The ServiceKey a caller acts as: the one whose key `credential` is, or — keyless — the one
/// listing the ServiceAccount whose projected token `credential` is (checked with TokenReview).
/// 401 otherwise; 503 when a ServiceAccount token cannot be checked right now.
pub async fn calling_key(
    state: &AppState,
    index: &KeyIndex,
    keyring: &Keyring,
    credential: &str,
    flavor: Flavor,
    challenge: Challenge,
) -> Result<Arc<KeyEntry>, ApiError> {
    let unauthorized = |m: String| ApiError::unauthorized(flavor, challenge, m);
    // One hash serves both lookups: keys and the review cache are indexed by SHA-256.
    let presented = crate::key_store::digest(credential.as_bytes());
    if let Some(entry) = index.by_digest(&presented) {
        return Ok(entry);
    }
    if !is_jwt(credential) {
        return Err(unauthorized("unknown service key".into()));
    }
    // A warm ServiceAccount token: answered from the review cache, before any parsing.
    let warm = state.reviewer.as_ref().and_then(|r| r.cached(&presented));
    if let Some(answer) = warm {
        return service_key_of(index, answer, flavor, challenge);
    }
    // One of our own tokens is not a key: no API call to find that out.
    if minted_here(keyring, credential) {
        return Err(unauthorized(
            "a token minted by tokenmint is not a service key; present the key (or a ServiceAccount token)".into(),
        ));
    }
    let Some(reviewer) = &state.reviewer else {
        return Err(unauthorized(
            "ServiceAccount tokens are accepted only when tokenmint serve runs in the cluster (keyless authentication needs the TokenReview API); with --manifests, present a service key".into(),
        ));
    };
    let answer = reviewer.review(credential).await;
    service_key_of(index, answer, flavor, challenge)
}

/// The ServiceKey listing the ServiceAccount a review found.
fn service_key_of(
    index: &KeyIndex,
    review: Result<ServiceAccount, ReviewError>,
    flavor: Flavor,
    challenge: Challenge,
) -> Result<Arc<KeyEntry>, ApiError> {
    let unauthorized = |m: String| ApiError::unauthorized(flavor, challenge, m);
    match review {
        Ok(account) => index
            .by_service_account(&account.namespace, &account.name)
            .ok_or_else(|| {
                unauthorized(format!(
                    "ServiceAccount {}/{} is not listed by a ServiceKey of its namespace",
                    account.namespace, account.name
                ))
            }),
        Err(ReviewError::Unauthenticated(why)) => Err(unauthorized(why)),
        Err(e @ ReviewError::Unavailable(_)) => Err(ApiError::not_ready(flavor, e)
            .with_retry_after(crate::tokenreview::RETRY_AFTER.as_secs())),
    }
}

/// The ServiceKey of a `Bearer` credential (key or ServiceAccount token).
pub async fn bearer_key(
    state: &AppState,
    index: &KeyIndex,
    keyring: &Keyring,
    headers: &HeaderMap,
    flavor: Flavor,
) -> Result<Arc<KeyEntry>, ApiError> {
    let credential = bearer(headers, flavor)?;
    calling_key(state, index, keyring, credential, flavor, Challenge::Bearer).await
}

/// On a route whose vendor scheme is HTTP Basic: the ServiceKey of a keyless caller's
/// `Bearer <ServiceAccount token>`, or `None` when the header is not Bearer (use the route's
/// Basic form). A service key in a Bearer header is refused: these routes take keys as Basic.
pub async fn keyless_on_basic_route(
    state: &AppState,
    index: &KeyIndex,
    keyring: &Keyring,
    headers: &HeaderMap,
) -> Option<Result<Arc<KeyEntry>, ApiError>> {
    let is_bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"));
    if !is_bearer {
        return None;
    }
    let credential = match bearer(headers, Flavor::Generic) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    if !is_jwt(credential) {
        return Some(Err(ApiError::unauthorized(
            Flavor::Generic,
            Challenge::Basic,
            "this route takes the service key as HTTP Basic credentials (Bearer only for a ServiceAccount token)",
        )));
    }
    Some(
        calling_key(
            state,
            index,
            keyring,
            credential,
            Flavor::Generic,
            Challenge::Basic,
        )
        .await,
    )
}

/// Nexla's `Authorization: Basic <service key>`. The seed passes the key itself after
/// "Basic "; generic HTTP clients send base64 of it, or of `user:key` (curl -u). All three
/// forms are tried, each a digest lookup.
pub fn nexla_basic(index: &KeyIndex, headers: &HeaderMap) -> Result<Arc<KeyEntry>, ApiError> {
    let presented = credentials(headers, "Basic", Flavor::Generic, Challenge::Basic)?;
    if let Some(entry) = index.by_key(presented.as_bytes()) {
        return Ok(entry);
    }
    if let Some(decoded) = decode_base64(presented) {
        if let Some(entry) = index.by_key(&decoded) {
            return Ok(entry);
        }
        // As HTTP Basic `user:key`: a user name, when one is given, must be the key's principal.
        if let Some(colon) = decoded.iter().position(|&b| b == b':')
            && let Some(entry) = index.by_key(&decoded[colon + 1..])
        {
            let user = &decoded[..colon];
            if user.is_empty() || bool::from(entry.principal().name.as_bytes().ct_eq(user)) {
                return Ok(entry);
            }
        }
    }
    Err(ApiError::unauthorized(
        Flavor::Generic,
        Challenge::Basic,
        "unknown service key",
    ))
}

/// HTTP Basic `name:key` (Datasentinel): the key must belong to a ServiceKey whose principal
/// is `name`.
pub fn name_and_key(index: &KeyIndex, headers: &HeaderMap) -> Result<Arc<KeyEntry>, ApiError> {
    let unauthorized = |m: &str| ApiError::unauthorized(Flavor::Generic, Challenge::Basic, m);
    let presented = credentials(headers, "Basic", Flavor::Generic, Challenge::Basic)?;
    let decoded = decode_base64(presented)
        .ok_or_else(|| unauthorized("Basic credentials are not valid base64"))?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| unauthorized("Basic credentials must be user:password"))?;
    let (name, key) = (&decoded[..colon], &decoded[colon + 1..]);
    let entry = index
        .by_key(key)
        .ok_or_else(|| unauthorized("invalid user name or key"))?;
    // The same message as an unknown key: the answer does not tell which half was wrong.
    if bool::from(entry.principal().name.as_bytes().ct_eq(name)) {
        Ok(entry)
    } else {
        Err(unauthorized("invalid user name or key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        h
    }

    #[test]
    fn bearer_forms() {
        assert_eq!(
            bearer(&headers(b"Bearer abc"), Flavor::Generic).unwrap(),
            "abc"
        );
        assert_eq!(
            bearer(&headers(b"bearer   abc "), Flavor::Generic).unwrap(),
            "abc"
        );
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"abc",
            b"Bearer \xff",
        ] {
            let e = bearer(&headers(bad), Flavor::Generic).unwrap_err();
            assert_eq!(e.status, 401);
        }
        let e = bearer(&HeaderMap::new(), Flavor::DataBrain).unwrap_err();
        assert_eq!(e.code, "AUTHENTICATION_ERROR");
        let mut two = headers(b"Bearer abc");
        two.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer other"),
        );
        let e = bearer(&two, Flavor::Generic).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("more than one Authorization header"));
    }
}
