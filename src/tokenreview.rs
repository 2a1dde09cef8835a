//! Keyless callers: a pod presents its projected ServiceAccount token instead of a service key.
//! The token is checked with the TokenReview API (audience `--token-audience`, default
//! `tokenmint`), and `system:serviceaccount:NS:NAME` acts as the ServiceKey of NS that lists
//! NAME in `spec.serviceAccounts`.
//!
//! Only plausible tokens are reviewed: a JWT whose `iss` is the cluster's service-account
//! issuer (`--service-account-issuer`, else read once from the API server's
//! `/.well-known/openid-configuration`), whose `aud` holds one of our audiences and whose `exp`
//! is ahead. Anything else is refused without an API call and without touching a cache, so no
//! one can make `serve` call the API server, or push good answers out, with made-up tokens. At
//! most [`MAX_IN_FLIGHT`] reviews run at once; past that a request is answered 503 with
//! `Retry-After`.
//!
//! Answers are cached by a SHA-256 of the token (never the token itself), accepted and refused
//! apart so that refusals never evict an accepted answer: acceptances for at most
//! [`POSITIVE_TTL`] and never past the token's own `exp` ([`CACHE_CAPACITY`] of them),
//! refusals for [`NEGATIVE_TTL`] ([`REFUSED_CAPACITY`]). A warm token costs a hash and a map
//! lookup, no API call. A deleted ServiceAccount's tokens stop working within the positive TTL.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

mod issuers;
pub use issuers::{DISCOVERY_PATH, Issuers};

/// Longest a positive answer is reused.
pub const POSITIVE_TTL: Duration = Duration::from_secs(60);
/// How long a refusal is reused (a burst of requests with a bad token costs one review).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Most accepted answers kept.
pub const CACHE_CAPACITY: usize = 10_000;
/// Most refusals kept, apart from the accepted answers.
pub const REFUSED_CAPACITY: usize = 10_000;
/// Most TokenReviews under way at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// `Retry-After` when a review cannot be made now (too many under way, issuer unknown yet).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How far in the future a token's `nbf` may be (clock skew).
const NBF_LEEWAY_SECS: i64 = 60;

/// A ServiceAccount, as TokenReview authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

/// Why a ServiceAccount token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Refused by the API server (expired, wrong audience, deleted ServiceAccount, forged) or
    /// not a ServiceAccount's token. Safe to return to the client.
    #[error("{0}")]
    Unauthenticated(String),
    /// The review cannot be made now (API server unreachable, too many reviews under way,
    /// issuer not known yet): try again.
    #[error("cannot verify the ServiceAccount token now: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
enum Answer {
    Accepted(ServiceAccount),
    Refused(String),
}

struct Cache {
    capacity: usize,
    /// Answer, valid until, and the insertion number its `order` entry carries.
    answers: HashMap<[u8; 32], (Answer, Instant, u64)>,
    /// Insertion order, for eviction when full. An entry whose number no longer matches
    /// the answer's was superseded by a later insertion of the same token and is skipped.
    order: VecDeque<([u8; 32], u64)>,
    inserted: u64,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Cache {
            capacity,
            answers: HashMap::new(),
            order: VecDeque::new(),
            inserted: 0,
        }
    }

    fn get(&mut self, key: &[u8; 32], now: Instant) -> Option<Answer> {
        match self.answers.get(key) {
            Some((answer, until, _)) if now < *until => Some(answer.clone()),
            Some(_) => {
                self.answers.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&mut self, key: [u8; 32], answer: Answer, until: Instant) {
        while self.answers.len() >= self.capacity {
            let Some((oldest, number)) = self.order.pop_front() else {
                break;
            };
            if self
                .answers
                .get(&oldest)
                .is_some_and(|(_, _, n)| *n == number)
            {
                self.answers.remove(&oldest);
            }
        }
        // Drop the order entries of answers already gone (expired, replaced).
        if self.order.len() > 2 * self.capacity {
            let answers = &self.answers;
            self.order
                .retain(|(k, number)| answers.get(k).is_some_and(|(_, _, n)| n == number));
        }
        self.inserted += 1;
        self.answers.insert(key, (answer, until, self.inserted));
        self.order.push_back((key, self.inserted));
    }
}

/// Label of the review counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `accepted`, `refused`, `error`, `cached` (answered from the cache), `implausible`
    /// (refused without a review: not a current ServiceAccount token for us) or `busy` (too
    /// many reviews under way).
    pub outcome: &'static str,
}

/// Reviews ServiceAccount tokens for `serve`.
pub struct Reviewer {
    api: Api<TokenReview>,
    audiences: Vec<String>,
    issuers: Issuers,
    accepted: Mutex<Cache>,
    refused: Mutex<Cache>,
    in_progress: tokio::sync::Semaphore,
    reviews: Family<OutcomeLabel, Counter>,
    /// The `cached` series, resolved once: it is counted on every keyless request.
    cached: Counter,
    /// Reviews under way, by token digest: concurrent first requests with one token (a pod
    /// starting) wait for one review instead of each sending their own.
    in_flight: Mutex<HashMap<[u8; 32], Flight>>,
}

type Flight = Arc<tokio::sync::OnceCell<Result<ServiceAccount, ReviewError>>>;

/// A caller's seat on a flight; the flight leaves the table when a seat is dropped (answered,
/// or the caller gone), so abandoned flights cannot pile up.
struct Seat<'a> {
    table: &'a Mutex<HashMap<[u8; 32], Flight>>,
    key: [u8; 32],
    flight: Flight,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            table.remove(&self.key);
        }
    }
}

/// The `exp` of a JWT, read without verifying it (only to bound the cache: the review itself
/// vouches for the token).
fn unverified_exp(token: &str) -> Option<i64> {
    crate::token::claims::unverified(token)?
        .get("exp")?
        .as_i64()
}

/// The ServiceAccount a TokenReview username names.
pub fn service_account_of(username: &str) -> Option<ServiceAccount> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then(|| ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

impl Reviewer {
    pub fn new(api: Api<TokenReview>, audiences: Vec<String>, issuers: Issuers) -> Self {
        let reviews = Family::<OutcomeLabel, Counter>::default();
        let cached = reviews
            .get_or_create(&OutcomeLabel { outcome: "cached" })
            .clone();
        Reviewer {
            api,
            audiences,
            issuers,
            accepted: Mutex::new(Cache::new(CACHE_CAPACITY)),
            refused: Mutex::new(Cache::new(REFUSED_CAPACITY)),
            in_progress: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            reviews,
            cached,
            in_flight: Mutex::default(),
        }
    }

    /// Whether `token` may be a current ServiceAccount token for us: a JWT of one of the
    /// cluster's issuers, for one of our audiences, not expired, already valid. Checked before
    /// any review or cache, without verifying the signature (the review does that).
    fn plausible(&self, token: &str) -> Result<(), ReviewError> {
        let refused = |why: &str| {
            self.count("implausible");
            Err(ReviewError::Unauthenticated(format!(
                "not a ServiceAccount token tokenmint accepts: {why}"
            )))
        };
        let Some(claims) = crate::token::claims::unverified(token) else {
            return refused("not a JWT");
        };
        let Some(issuers) = self.issuers.get() else {
            self.count("busy");
            return Err(ReviewError::Unavailable(
                "the cluster's service-account issuer is not known yet".into(),
            ));
        };
        if !claims
            .get("iss")
            .and_then(Value::as_str)
            .is_some_and(|iss| issuers.iter().any(|i| i == iss))
        {
            return refused("another issuer than the cluster's");
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences
            .iter()
            .any(|a| self.audiences.iter().any(|ours| ours == a))
        {
            return refused(&format!(
                "its audience is not {}",
                self.audiences.join(" or ")
            ));
        }
        let now = jiff::Timestamp::now().as_second();
        let int = |claim: &str| claims.get(claim).and_then(Value::as_i64);
        if int("exp").is_none_or(|exp| exp <= now) {
            return refused("expired, or no exp");
        }
        if int("nbf").is_some_and(|nbf| nbf > now + NBF_LEEWAY_SECS) {
            return refused("not valid yet");
        }
        Ok(())
    }

    /// Registers `tokenmint_tokenreviews_total{outcome}`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "tokenmint_tokenreviews",
            "ServiceAccount tokens checked, by outcome (cached: answered without an API call)",
            self.reviews.clone(),
        );
    }

    fn count(&self, outcome: &'static str) {
        self.reviews.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The cached answer for the token whose SHA-256 is `digest` (computed once by the caller,
    /// which also looks keys up by it), if there is a fresh one: no API call, no parsing.
    pub fn cached(&self, digest: &[u8; 32]) -> Option<Result<ServiceAccount, ReviewError>> {
        let now = Instant::now();
        let from = |cache: &Mutex<Cache>| {
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(digest, now)
        };
        let answer = from(&self.accepted).or_else(|| from(&self.refused))?;
        self.cached.inc();
        Some(match answer {
            Answer::Accepted(account) => Ok(account),
            Answer::Refused(why) => Err(ReviewError::Unauthenticated(why)),
        })
    }

    /// The ServiceAccount whose token `token` is, if the API server vouches for it with one of
    /// our audiences.
    pub async fn review(&self, token: &str) -> Result<ServiceAccount, ReviewError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(answer) = self.cached(&key) {
            return answer;
        }
        self.plausible(token)?;
        let flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let seat = Seat {
            table: &self.in_flight,
            key,
            flight,
        };
        seat.flight
            .get_or_init(|| self.ask(token, key))
            .await
            .clone()
    }

    /// One TokenReview (if one of the [`MAX_IN_FLIGHT`] places is free), its answer cached.
    async fn ask(&self, token: &str, key: [u8; 32]) -> Result<ServiceAccount, ReviewError> {
        let Ok(_place) = self.in_progress.try_acquire() else {
            self.count("busy");
            return Err(ReviewError::Unavailable(format!(
                "{MAX_IN_FLIGHT} ServiceAccount token reviews are under way"
            )));
        };
        let now = Instant::now();
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let answer = match self.api.create(&PostParams::default(), &review).await {
            Ok(reviewed) => self.judge(reviewed),
            Err(e) => {
                self.count("error");
                tracing::warn!(error = %e, "TokenReview failed");
                return Err(ReviewError::Unavailable(e.to_string()));
            }
        };
        let (cache, until) = match &answer {
            Answer::Accepted(_) => {
                let mut until = now + POSITIVE_TTL;
                if let Some(exp) = unverified_exp(token) {
                    let left = exp - jiff::Timestamp::now().as_second();
                    until = until.min(now + Duration::from_secs(u64::try_from(left).unwrap_or(0)));
                }
                (&self.accepted, until)
            }
            Answer::Refused(_) => (&self.refused, now + NEGATIVE_TTL),
        };
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, answer.clone(), until);
        match answer {
            Answer::Accepted(account) => {
                self.count("accepted");
                Ok(account)
            }
            Answer::Refused(why) => {
                self.count("refused");
                Err(ReviewError::Unauthenticated(why))
            }
        }
    }

    fn judge(&self, reviewed: TokenReview) -> Answer {
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Answer::Refused(
                "the ServiceAccount token was not accepted by the API server (expired, another audience, or its ServiceAccount is gone)"
                    .into(),
            );
        }
        // The API server checked the audiences we asked for; make sure it said so.
        let audiences = status.audiences.unwrap_or_default();
        if !audiences.iter().any(|a| self.audiences.contains(a)) {
            return Answer::Refused(format!(
                "the token does not carry the audience {}",
                self.audiences.join(" or ")
            ));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        match service_account_of(&username) {
            Some(account) => Answer::Accepted(account),
            None => Answer::Refused("the token is not a ServiceAccount's".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWT-shaped token of the cluster's issuer, for `tokenmint`, expiring in an hour.
    fn plausible_token() -> String {
        use base64::Engine;
        let b64 = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
        };
        let exp = jiff::Timestamp::now().as_second() + 3_600;
        format!(
            "{}.{}.sig",
            b64(serde_json::json!({"alg": "RS256"})),
            b64(
                serde_json::json!({"iss": "https://kubernetes.default.svc", "aud": ["tokenmint"], "exp": exp})
            )
        )
    }

    #[test]
    fn service_account_usernames() {
        assert_eq!(
            service_account_of("system:serviceaccount:team-a:report-api"),
            Some(ServiceAccount {
                namespace: "team-a".into(),
                name: "report-api".into()
            })
        );
        for other in [
            "jcw",
            "system:serviceaccount:team-a",
            "system:serviceaccount::x",
            "system:serviceaccount:a:b:c",
            "system:node:n1",
        ] {
            assert_eq!(service_account_of(other), None, "{other}");
        }
    }

    #[test]
    fn the_cache_is_bounded_and_answers_expire() {
        let now = Instant::now();
        let mut cache = Cache::new(CACHE_CAPACITY);
        let answer = Answer::Refused("x".into());
        for i in 0..(CACHE_CAPACITY + 10) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.put(key, answer.clone(), now + Duration::from_secs(5));
        }
        assert_eq!(cache.answers.len(), CACHE_CAPACITY);
        // The oldest went first.
        assert!(cache.get(&[0u8; 32], now).is_none());
        let mut newest = [0u8; 32];
        newest[..8].copy_from_slice(&((CACHE_CAPACITY + 9) as u64).to_le_bytes());
        assert!(cache.get(&newest, now).is_some());
        assert!(cache.get(&newest, now + Duration::from_secs(5)).is_none());
    }

    #[test]
    fn a_refreshed_answer_is_not_evicted_by_its_older_insertion() {
        let now = Instant::now();
        let mut cache = Cache::new(CACHE_CAPACITY);
        let key_of = |i: usize| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            key
        };
        let answer = Answer::Refused("x".into());
        let later = now + Duration::from_secs(5);
        cache.put(key_of(0), answer.clone(), later);
        cache.put(key_of(1), answer.clone(), later);
        // Expired, then answered again: key 0 is now newer than key 1.
        cache.get(&key_of(0), later);
        cache.put(key_of(0), answer.clone(), later + Duration::from_secs(5));
        for i in 2..CACHE_CAPACITY {
            cache.put(key_of(i), answer.clone(), later);
        }
        // Full: the next insertion evicts key 1 (the oldest live answer), not key 0.
        cache.put(key_of(CACHE_CAPACITY), answer.clone(), later);
        assert_eq!(cache.answers.len(), CACHE_CAPACITY);
        assert!(cache.get(&key_of(0), now).is_some());
        assert!(cache.get(&key_of(1), now).is_none());
    }

    #[tokio::test]
    async fn an_abandoned_review_leaves_no_flight_behind() {
        use axum::http::{Request, Response};
        use kube::client::Body;
        // An API server that never answers.
        let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let reviewer = Reviewer::new(
            Api::all(client),
            vec!["tokenmint".into()],
            Issuers::fixed(vec!["https://kubernetes.default.svc".into()]),
        );
        let token = plausible_token();
        let mut review = Box::pin(reviewer.review(&token));
        // Under way: the flight is in the table.
        assert!(futures::poll!(review.as_mut()).is_pending());
        assert_eq!(reviewer.in_flight.lock().unwrap().len(), 1);
        // The client gives up: its flight goes with it.
        drop(review);
        assert!(reviewer.in_flight.lock().unwrap().is_empty());
    }
}
