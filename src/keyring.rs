//! Signing keys: generation, JWT signing and verification, and the public JWKS.
//!
//! A keyring holds several keys, each named by a `kid`; exactly one is active and signs new
//! tokens. Rotation adds a new active key and marks the old one retired; a retired key still
//! verifies until every token it can have signed has expired ([`RETIRED_KEY_RETENTION`]).
//! Verification pins the algorithm of the key named by the token's `kid`, so a token can never
//! pick its own algorithm (`none` does not exist in the JWT library; HMAC-with-a-public-key
//! confusion is refused because the header must match the key).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Data key of the keyring Secret holding the serialised keyring.
pub const SECRET_KEY: &str = "keyring.json";
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// How long a retired key keeps verifying: the longest lifetime any token may have (30 days:
/// the CRD bounds on access and session TTLs and guest expiryTime) plus the leeway.
/// Guest tokens requested without an expiry stop verifying when their key is dropped.
pub const RETIRED_KEY_RETENTION: SignedDuration =
    SignedDuration::from_secs(30 * 86_400 + LEEWAY_SECS as i64);
/// Bytes of OS randomness in a new HMAC key.
const HMAC_KEY_BYTES: usize = 32;
const RSA_BITS: usize = 2048;

/// Signing algorithm of a key. HS256 is the vendors' (and the default).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    #[default]
    HS256,
    EdDSA,
    ES256,
    RS256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [Self::HS256, Self::EdDSA, Self::ES256, Self::RS256];

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }

    pub fn is_symmetric(self) -> bool {
        self == Self::HS256
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::str::FromStr for Algorithm {
    type Err = KeyringError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.to_string() == s)
            .ok_or_else(|| KeyringError::UnknownAlgorithm(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("unknown algorithm {0:?}: expected one of HS256, EdDSA, ES256, RS256")]
    UnknownAlgorithm(String),
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("keyring is malformed: {0}")]
    Malformed(String),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Why a token was refused. Messages are safe to return to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is malformed")]
    Malformed,
    #[error("token has no key id")]
    MissingKid,
    #[error("token was signed by an unknown key")]
    UnknownKey,
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token lacks a required claim: {0}")]
    MissingClaim(String),
    #[error("token claims have the wrong shape")]
    WrongShape,
}

/// One key as stored in the keyring Secret.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    kid: String,
    alg: Algorithm,
    /// Base64 of the secret for HS256; a PKCS#8 PEM private key otherwise.
    key: String,
    created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize)]
struct StoredKeyring {
    active: String,
    keys: Vec<StoredKey>,
}

struct Key {
    stored: StoredKey,
    /// The token header (`typ`, `alg`, `kid`), base64url-encoded once: the same on every token
    /// this key signs.
    encoded_header: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public JWK; `None` for HMAC keys, which are never published.
    public: Option<Jwk>,
}

// Key material stays out of debug output and so out of logs.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.stored.kid)
            .field("alg", &self.stored.alg)
            .field("retired_at", &self.stored.retired_at)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn generate(alg: Algorithm, now: Timestamp) -> Result<Self, KeyringError> {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let generate_err = |e: &dyn std::fmt::Display| KeyringError::Generate(e.to_string());
        let key = match alg {
            Algorithm::HS256 => {
                let mut secret = [0u8; HMAC_KEY_BYTES];
                OsRng.fill_bytes(&mut secret);
                STANDARD.encode(secret)
            }
            // PKCS#8 v1 (no embedded public key): the form the JWT library reads back.
            Algorithm::EdDSA => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: ed25519_dalek::SigningKey::generate(&mut OsRng).to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(Default::default())
            .map_err(|e| generate_err(&e))?
            .to_string(),
            Algorithm::ES256 => p256::SecretKey::random(&mut OsRng)
                .to_pkcs8_pem(Default::default())
                .map_err(|e| generate_err(&e))?
                .to_string(),
            Algorithm::RS256 => rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                .map_err(|e| generate_err(&e))?
                .to_pkcs8_pem(Default::default())
                .map_err(|e| generate_err(&e))?
                .to_string(),
        };
        let mut id = [0u8; 6];
        OsRng.fill_bytes(&mut id);
        let kid = format!(
            "{}-{}",
            alg.to_string().to_ascii_lowercase(),
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        Self::load(StoredKey {
            kid,
            alg,
            key,
            created_at: now,
            retired_at: None,
        })
    }

    fn load(stored: StoredKey) -> Result<Self, KeyringError> {
        let malformed = |e: jsonwebtoken::errors::Error| {
            KeyringError::Malformed(format!("key {}: {e}", stored.kid))
        };
        let (encoding, decoding, public) = match stored.alg {
            Algorithm::HS256 => {
                let secret = STANDARD
                    .decode(&stored.key)
                    .map_err(|e| KeyringError::Malformed(format!("key {}: {e}", stored.kid)))?;
                if secret.len() < HMAC_KEY_BYTES {
                    return Err(KeyringError::Malformed(format!(
                        "key {}: HMAC secret shorter than {HMAC_KEY_BYTES} bytes",
                        stored.kid
                    )));
                }
                (
                    EncodingKey::from_secret(&secret),
                    DecodingKey::from_secret(&secret),
                    None,
                )
            }
            alg => {
                let pem = stored.key.as_bytes();
                let encoding = match alg {
                    Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
                    Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
                    _ => EncodingKey::from_rsa_pem(pem),
                }
                .map_err(malformed)?;
                let mut jwk = Jwk::from_encoding_key(&encoding, alg.jwt()).map_err(malformed)?;
                let decoding = DecodingKey::from_jwk(&jwk).map_err(malformed)?;
                jwk.common.key_id = Some(stored.kid.clone());
                jwk.common.public_key_use = Some(PublicKeyUse::Signature);
                jwk.common.key_algorithm = Some(match alg {
                    Algorithm::EdDSA => KeyAlgorithm::EdDSA,
                    Algorithm::ES256 => KeyAlgorithm::ES256,
                    _ => KeyAlgorithm::RS256,
                });
                (encoding, decoding, Some(jwk))
            }
        };
        let mut header = Header::new(stored.alg.jwt());
        header.kid = Some(stored.kid.clone());
        let header = serde_json::to_vec(&header)
            .map_err(|e| KeyringError::Malformed(format!("key {}: header: {e}", stored.kid)))?;
        Ok(Key {
            encoded_header: URL_SAFE_NO_PAD.encode(header),
            stored,
            encoding,
            decoding,
            public,
        })
    }
}

/// Options of [`Keyring::verify`].
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The `iss` the token must carry.
    pub issuer: &'a str,
    /// Whether a token without `exp` is refused (true for every kind but guest tokens).
    pub require_exp: bool,
}

#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Key>,
    active: usize,
}

impl Keyring {
    /// A new keyring with one freshly generated active key.
    pub fn generate(alg: Algorithm, now: Timestamp) -> Result<Self, KeyringError> {
        Ok(Keyring {
            keys: vec![Key::generate(alg, now)?],
            active: 0,
        })
    }

    /// Reads a keyring serialised by [`Keyring::to_json`], validating every key.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeyringError> {
        let stored: StoredKeyring = serde_json::from_slice(bytes).map_err(|e| {
            KeyringError::Malformed(match e.classify() {
                // The text of a data error may quote the value, which may be a key.
                serde_json::error::Category::Data => format!(
                    "a field is missing or has a value of the wrong type at line {} column {}",
                    e.line(),
                    e.column()
                ),
                _ => e.to_string(),
            })
        })?;
        let keys = stored
            .keys
            .into_iter()
            .map(Key::load)
            .collect::<Result<Vec<_>, _>>()?;
        let active = keys
            .iter()
            .position(|k| k.stored.kid == stored.active)
            .ok_or_else(|| {
                KeyringError::Malformed(format!(
                    "active key {:?} is not in the keyring",
                    stored.active
                ))
            })?;
        if keys[active].stored.retired_at.is_some() {
            return Err(KeyringError::Malformed("the active key is retired".into()));
        }
        Ok(Keyring { keys, active })
    }

    /// Serialises the keyring, private keys included, for the keyring Secret.
    pub fn to_json(&self) -> Vec<u8> {
        let stored = StoredKeyring {
            active: self.active_kid().to_owned(),
            keys: self.keys.iter().map(|k| k.stored.clone()).collect(),
        };
        serde_json::to_vec(&stored).expect("keyring serialisation cannot fail")
    }

    pub fn active_kid(&self) -> &str {
        &self.keys[self.active].stored.kid
    }

    pub fn active_algorithm(&self) -> Algorithm {
        self.keys[self.active].stored.alg
    }

    /// Key ids, active and retired.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.stored.kid.as_str())
    }

    /// Whether `kid` names a key that may still sign new tokens. Tokens signed by any other key
    /// (retired or dropped) are due for re-minting.
    pub fn is_active(&self, kid: &str) -> bool {
        self.active_kid() == kid
    }

    /// Signs `claims` with the active key; the header carries `typ: JWT` and the `kid`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, KeyringError> {
        let key = &self.keys[self.active];
        let claims = serde_json::to_vec(claims).map_err(jsonwebtoken::errors::Error::from)?;
        // header.claims.signature, built in one buffer (the header as encoded at load).
        let mut token = String::with_capacity(key.encoded_header.len() + claims.len() * 4 / 3 + 90);
        token.push_str(&key.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature =
            jsonwebtoken::crypto::sign(token.as_bytes(), &key.encoding, key.stored.alg.jwt())?;
        token.push('.');
        token.push_str(&signature);
        Ok(token)
    }

    /// Verifies signature, algorithm, issuer, `exp` and `nbf` and returns the claims.
    pub fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        expect: Expect,
    ) -> Result<C, VerifyError> {
        self.verify_with_exp_leeway(token, expect, LEEWAY_SECS)
    }

    /// [`Keyring::verify`], but a token is refused as soon as its `exp` has passed, without the
    /// clock-skew leeway on `exp` (`nbf` keeps it): for routes where "expired" must mean
    /// expired, such as a session refresh.
    pub fn verify_unexpired<C: DeserializeOwned>(
        &self,
        token: &str,
        expect: Expect,
    ) -> Result<C, VerifyError> {
        self.verify_with_exp_leeway(token, expect, 0)
    }

    /// `exp_leeway` (at most [`LEEWAY_SECS`]) is the skew tolerated on `exp`.
    fn verify_with_exp_leeway<C: DeserializeOwned>(
        &self,
        token: &str,
        expect: Expect,
        exp_leeway: u64,
    ) -> Result<C, VerifyError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.stored.kid == kid)
            .ok_or(VerifyError::UnknownKey)?;
        if header.alg != key.stored.alg.jwt() {
            return Err(VerifyError::AlgorithmMismatch);
        }
        let mut validation = Validation::new(key.stored.alg.jwt());
        validation.leeway = LEEWAY_SECS;
        // jsonwebtoken applies one leeway to `exp` and `nbf`; this takes part of it back on `exp`
        // only (a token is expired when `exp - reject < now - leeway`).
        validation.reject_tokens_expiring_in_less_than = LEEWAY_SECS - exp_leeway.min(LEEWAY_SECS);
        validation.validate_nbf = true;
        validation.set_issuer(&[expect.issuer]);
        validation.required_spec_claims = if expect.require_exp {
            ["exp", "iss"].into_iter().map(String::from).collect()
        } else {
            ["iss"].into_iter().map(String::from).collect()
        };
        jsonwebtoken::decode::<C>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
                ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::MissingRequiredClaim(c) => VerifyError::MissingClaim(c.clone()),
                ErrorKind::Json(_) => VerifyError::WrongShape,
                _ => VerifyError::Malformed,
            })
    }

    /// The public keys as a JWKS (empty when every key is symmetric).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.iter().filter_map(|k| k.public.clone()).collect(),
        }
    }

    /// Makes a new key of `alg` active and retires the previous one. Returns the new kid.
    pub fn rotate(&mut self, alg: Algorithm, now: Timestamp) -> Result<&str, KeyringError> {
        let key = Key::generate(alg, now)?;
        self.keys[self.active].stored.retired_at = Some(now);
        self.keys.push(key);
        self.active = self.keys.len() - 1;
        Ok(self.active_kid())
    }

    /// Drops retired keys whose retention has passed; returns their kids.
    pub fn prune(&mut self, now: Timestamp) -> Vec<String> {
        let active_kid = self.active_kid().to_owned();
        let (kept, dropped): (Vec<Key>, Vec<Key>) =
            std::mem::take(&mut self.keys).into_iter().partition(|k| {
                k.stored
                    .retired_at
                    .is_none_or(|at| now < at + RETIRED_KEY_RETENTION)
            });
        self.keys = kept;
        self.active = self
            .keys
            .iter()
            .position(|k| k.stored.kid == active_kid)
            .expect("the active key is never retired");
        dropped.into_iter().map(|k| k.stored.kid).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const ISS: Expect = Expect {
        issuer: "tokenmint",
        require_exp: true,
    };

    fn now() -> Timestamp {
        Timestamp::now()
    }

    fn claims(exp_offset: i64) -> Value {
        let t = now().as_second();
        json!({"iat": t, "nbf": t, "exp": t + exp_offset, "iss": "tokenmint", "sub": "1"})
    }

    #[test]
    fn every_algorithm_signs_and_verifies_with_kid() {
        for alg in Algorithm::ALL {
            let ring = Keyring::generate(alg, now()).unwrap();
            let signed = claims(60);
            let token = ring.sign(&signed).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(ring.active_kid()), "{alg}");
            assert_eq!(header.alg, alg.jwt());
            assert_eq!(header.typ.as_deref(), Some("JWT"));
            if matches!(alg, Algorithm::HS256 | Algorithm::EdDSA) {
                // Deterministic signatures: the token is the library's own encoding.
                let key = &ring.keys[ring.active];
                let expected = jsonwebtoken::encode(&header, &signed, &key.encoding).unwrap();
                assert_eq!(token, expected, "{alg}");
            }
            let back: Value = ring.verify(&token, ISS).unwrap();
            assert_eq!(back["sub"], "1");
            // A serialised keyring verifies what the original signed.
            let reloaded = Keyring::from_json(&ring.to_json()).unwrap();
            let _: Value = reloaded.verify(&token, ISS).unwrap();
        }
    }

    #[test]
    fn refuses_expired_future_foreign_and_tampered_tokens() {
        let ring = Keyring::generate(Algorithm::HS256, now()).unwrap();
        let expired = ring.sign(&claims(-(LEEWAY_SECS as i64) - 5)).unwrap();
        assert_eq!(
            ring.verify::<Value>(&expired, ISS),
            Err(VerifyError::Expired)
        );
        // Within the leeway still verifies, but not without the leeway on `exp`.
        let just_expired = ring.sign(&claims(-5)).unwrap();
        assert!(ring.verify::<Value>(&just_expired, ISS).is_ok());
        assert_eq!(
            ring.verify_unexpired::<Value>(&just_expired, ISS),
            Err(VerifyError::Expired)
        );
        let live = ring.sign(&claims(60)).unwrap();
        assert!(ring.verify_unexpired::<Value>(&live, ISS).is_ok());
        // `nbf` keeps its leeway there: a token from a clock slightly ahead still verifies.
        let mut ahead = claims(600);
        ahead["nbf"] = json!(now().as_second() + 5);
        let ahead = ring.sign(&ahead).unwrap();
        assert!(ring.verify_unexpired::<Value>(&ahead, ISS).is_ok());

        let mut future = claims(600);
        future["nbf"] = json!(now().as_second() + 300);
        let future = ring.sign(&future).unwrap();
        assert_eq!(
            ring.verify::<Value>(&future, ISS),
            Err(VerifyError::NotYetValid)
        );

        let token = ring.sign(&claims(60)).unwrap();
        let other_iss = Expect {
            issuer: "someone-else",
            ..ISS
        };
        assert_eq!(
            ring.verify::<Value>(&token, other_iss),
            Err(VerifyError::WrongIssuer)
        );

        let other = Keyring::generate(Algorithm::HS256, now()).unwrap();
        assert_eq!(
            other.verify::<Value>(&token, ISS),
            Err(VerifyError::UnknownKey)
        );

        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims(99_999)).unwrap());
        parts[1] = &forged_payload;
        assert_eq!(
            ring.verify::<Value>(&parts.join("."), ISS),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            ring.verify::<Value>("not-a-jwt", ISS),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn refuses_alg_none_and_algorithm_confusion() {
        let ring = Keyring::generate(Algorithm::RS256, now()).unwrap();
        let b64 = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
        };
        let payload = b64(claims(60));
        let none = format!(
            "{}.{payload}.",
            b64(json!({"alg": "none", "typ": "JWT", "kid": ring.active_kid()}))
        );
        assert!(ring.verify::<Value>(&none, ISS).is_err());
        // HS256 header naming the RSA key's kid: refused before any MAC is computed.
        let confused = format!(
            "{}.{payload}.AAAA",
            b64(json!({"alg": "HS256", "typ": "JWT", "kid": ring.active_kid()}))
        );
        assert_eq!(
            ring.verify::<Value>(&confused, ISS),
            Err(VerifyError::AlgorithmMismatch)
        );
        let no_kid = format!("{}.{payload}.AAAA", b64(json!({"alg": "RS256"})));
        assert_eq!(
            ring.verify::<Value>(&no_kid, ISS),
            Err(VerifyError::MissingKid)
        );
    }

    #[test]
    fn exp_is_optional_only_when_asked() {
        let ring = Keyring::generate(Algorithm::HS256, now()).unwrap();
        let t = now().as_second();
        let token = ring
            .sign(&json!({"iat": t, "nbf": t, "iss": "tokenmint"}))
            .unwrap();
        assert_eq!(
            ring.verify::<Value>(&token, ISS),
            Err(VerifyError::MissingClaim("exp".into()))
        );
        let optional = Expect {
            require_exp: false,
            ..ISS
        };
        assert!(ring.verify::<Value>(&token, optional).is_ok());
    }

    #[test]
    fn jwks_publishes_public_keys_only() {
        let hs = Keyring::generate(Algorithm::HS256, now()).unwrap();
        assert!(hs.jwks().keys.is_empty());
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let ring = Keyring::generate(alg, now()).unwrap();
            let jwks = serde_json::to_value(ring.jwks()).unwrap();
            let key = &jwks["keys"][0];
            assert_eq!(key["kid"], ring.active_kid());
            assert_eq!(key["alg"], alg.to_string());
            assert_eq!(key["use"], "sig");
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(key.get(private).is_none(), "{alg} JWK leaks {private}");
            }
            // A verifier holding only the JWKS accepts our tokens.
            let token = ring.sign(&claims(60)).unwrap();
            let jwk: Jwk = serde_json::from_value(key.clone()).unwrap();
            let mut v = Validation::new(alg.jwt());
            v.set_issuer(&["tokenmint"]);
            jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &v)
                .unwrap();
        }
    }

    #[test]
    fn rotation_keeps_retired_keys_until_retention_passes() {
        let t0 = now();
        let mut ring = Keyring::generate(Algorithm::HS256, t0).unwrap();
        let old_kid = ring.active_kid().to_owned();
        let old_token = ring.sign(&claims(3_600)).unwrap();
        let new_kid = ring.rotate(Algorithm::ES256, t0).unwrap().to_owned();
        assert_ne!(old_kid, new_kid);
        assert!(ring.is_active(&new_kid) && !ring.is_active(&old_kid));
        assert_eq!(ring.active_algorithm(), Algorithm::ES256);
        // The retired key still verifies; new tokens use the new key.
        assert!(ring.verify::<Value>(&old_token, ISS).is_ok());
        let new_token = ring.sign(&claims(60)).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new_token)
                .unwrap()
                .kid
                .as_deref(),
            Some(new_kid.as_str())
        );
        // Survives a round trip with its retirement.
        let mut ring = Keyring::from_json(&ring.to_json()).unwrap();
        assert!(
            ring.prune(t0 + RETIRED_KEY_RETENTION - SignedDuration::from_secs(1))
                .is_empty()
        );
        assert_eq!(ring.prune(t0 + RETIRED_KEY_RETENTION), vec![old_kid]);
        assert_eq!(ring.kids().collect::<Vec<_>>(), vec![new_kid.as_str()]);
        assert_eq!(
            ring.verify::<Value>(&old_token, ISS),
            Err(VerifyError::UnknownKey)
        );
    }

    #[test]
    fn malformed_keyrings_are_refused() {
        for bad in [
            &b"{"[..],
            br#"{"active":"x","keys":[]}"#,
            br#"{"active":"k","keys":[{"kid":"k","alg":"HS256","key":"c2hvcnQ=","createdAt":"2026-01-01T00:00:00Z"}]}"#,
            br#"{"active":"k","keys":[{"kid":"k","alg":"ES256","key":"not pem","createdAt":"2026-01-01T00:00:00Z"}]}"#,
        ] {
            assert!(matches!(Keyring::from_json(bad), Err(KeyringError::Malformed(_))));
        }
    }

    #[test]
    fn algorithm_names_parse() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.to_string().parse::<Algorithm>().unwrap(), alg);
        }
        assert!("HS512".parse::<Algorithm>().is_err());
        assert!("none".parse::<Algorithm>().is_err());
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let ring = Keyring::generate(Algorithm::HS256, now()).unwrap();
        let stored: Value = serde_json::from_slice(&ring.to_json()).unwrap();
        let secret = stored["keys"][0]["key"].as_str().unwrap().to_owned();
        assert!(!format!("{ring:?}").contains(&secret));
    }
}
