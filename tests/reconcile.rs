//! Reconcilers against a scripted API server (`tower_test::mock`, the controller-rs
//! `fixtures.rs` pattern): every request the operator makes is asserted — method, path,
//! server-side-apply parameters and body — and a reconcile that should be quiet must make none.

use axum::http::{Method, Request, Response, StatusCode};
use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::client::Body;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokenmint::crd::{
    DatasourceGrant, DatasourceGrantSpec, GuestTokenRequest, GuestTokenRequestSpec, Principal,
    ServiceKey, ServiceKeySpec, SessionTokenSpec, TokenStatus,
};
use tokenmint::keyring::{Algorithm, Expect, Keyring, SECRET_KEY};
use tokenmint::reconcile::cached_secret::{CachedSecret, SecretCache};
use tokenmint::reconcile::caches::{Cache, KeyFeed, ServiceKeys};
use tokenmint::reconcile::events::Events;
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::reconcile::{
    self, Clock, Context, IDLE_RESYNC, SharedKeyring, keyring as keyring_store, restart,
};
use tokenmint::revocation::{Denylist, Revoker};
use tokenmint::token::renew::Schedule;
use tower_test::mock::{Handle, SendResponse};

const NS: &str = "team-a";
const ISSUER: &str = "tokenmint-test";

type MockHandle = Handle<Request<Body>, Response<Body>>;

/// One scripted API server plus the operator context under test.
struct Harness {
    ctx: Arc<Context>,
    handle: MockHandle,
    keys: KeyFeed,
    /// The controllers' grant cache.
    grants: kube::runtime::reflector::store::Writer<DatasourceGrant>,
    clock: Clock,
    ring: SharedKeyring,
    events: Events,
    /// resourceVersion the fake server hands out next.
    next_rv: u64,
    /// Consumer restarts the reconcilers asked for.
    restarts: tokio::sync::mpsc::UnboundedReceiver<restart::Request>,
    /// Tokens the reconcilers revoked.
    denylist: Arc<Denylist>,
}

/// Now, whole seconds (tokens carry seconds; the keyring verifies against the system clock,
/// so test times stay near the real now).
fn t0() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap()
}

impl Harness {
    fn new() -> Self {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (key_store, mut keys) = ServiceKeys::new();
        let (grant_store, grants) = kube::runtime::reflector::store();
        let metrics = Arc::new(Metrics::default());
        let secret_store = Arc::new(SecretCache::new(metrics.clone()));
        // Both caches have had their first (empty) list.
        for writer_events in [watcher::Event::Init, watcher::Event::InitDone] {
            keys.apply(&writer_events);
        }
        for writer_events in [watcher::Event::Init, watcher::Event::InitDone] {
            secret_store.apply(&writer_events);
        }
        let clock = Clock::fixed(t0());
        let ring = Arc::new(RwLock::new(
            Keyring::generate(Algorithm::HS256, clock.now()).unwrap(),
        ));
        let events = Events::memory();
        let (restarter, restarts) = restart::Restarter::channel();
        let denylist = Arc::new(Denylist::default());
        let ctx = Arc::new(
            Context::new(
                client,
                ring.clone(),
                ISSUER,
                clock.clone(),
                events.clone(),
                metrics,
                key_store,
                secret_store,
            )
            .with_stores(grant_store, kube::runtime::reflector::store().0)
            .with_restarter(restarter)
            .with_revoker(Revoker::Memory(denylist.clone())),
        );
        Harness {
            ctx,
            handle,
            keys,
            grants,
            clock,
            ring,
            events,
            next_rv: 100,
            restarts,
            denylist,
        }
    }

    /// Puts a Secret's metadata into the Secret watch cache, as the watch would after a write.
    fn cache_secret(&mut self, secret: &Secret) {
        self.ctx
            .secrets
            .apply(&watcher::Event::Apply(CachedSecret::from_meta(
                &secret.metadata,
            )));
    }

    /// Removes a Secret from the cache, as the watch does after a delete (which also drops
    /// what the operator knew of its content).
    fn uncache_secret(&mut self, secret: &Secret) {
        let meta: PartialObjectMeta<Secret> = secret.metadata.clone().into_response_partial();
        self.ctx
            .verified
            .forget(&meta.namespace().unwrap_or_default(), &meta.name_any());
        self.ctx
            .secrets
            .apply(&watcher::Event::Delete(CachedSecret::from(&meta)));
    }

    fn cache_key(&mut self, key: &ServiceKey) {
        self.keys.apply(&watcher::Event::Apply(key.clone()));
    }

    /// Puts a grant into the controllers' cache, as the watch would after a write.
    fn cache_grant(&mut self, grant: &DatasourceGrant) {
        self.grants
            .apply_watcher_event(&watcher::Event::Apply(grant.clone()));
    }

    fn uncache_key(&mut self, key: &ServiceKey) {
        self.keys.apply(&watcher::Event::Delete(key.clone()));
    }

    /// The next request; asserts its method and path.
    async fn expect(
        &mut self,
        method: Method,
        path: &str,
    ) -> (Request<Body>, SendResponse<Response<Body>>) {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("no request arrived; expected {method} {path}"))
                .expect("the client is gone");
        assert_eq!(
            (request.method(), request.uri().path()),
            (&method, path),
            "unexpected request {} {}",
            request.method(),
            request.uri()
        );
        (request, send)
    }

    /// Expects a GET and answers 404.
    async fn expect_get_not_found(&mut self, path: &str) {
        let (_, send) = self.expect(Method::GET, path).await;
        send.send_response(not_found());
    }

    /// Expects a GET and answers with `object`.
    async fn expect_get(&mut self, path: &str, object: &Value) {
        let (_, send) = self.expect(Method::GET, path).await;
        send.send_response(ok(object));
    }

    /// Expects a create (POST to the collection of `path`) and answers 409 AlreadyExists.
    async fn expect_create_conflict(&mut self, path: &str) {
        let collection = path.rsplit_once('/').expect("object path").0;
        let (_, send) = self.expect(Method::POST, collection).await;
        send.send_response(
            Response::builder()
                .status(StatusCode::CONFLICT)
                .body(Body::from(
                    serde_json::to_vec(
                        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "AlreadyExists", "code": 409, "message": "already exists"}),
                    )
                    .unwrap(),
                ))
                .unwrap(),
        );
    }

    /// Expects a server-side apply (PATCH, fieldManager=tokenmint, force) and answers with the
    /// applied object as the server would store it. Returns that object.
    async fn expect_apply(&mut self, path: &str) -> Value {
        let (request, send) = self.expect(Method::PATCH, path).await;
        assert_ssa(&request);
        let mut body = body_json(request).await;
        self.next_rv += 1;
        body["metadata"]["resourceVersion"] = json!(self.next_rv.to_string());
        send.send_response(ok(&body));
        body
    }

    /// Expects a create (POST to the collection of `path`, fieldManager=tokenmint) and answers
    /// with the object as the server would store it. Returns that object.
    async fn expect_create(&mut self, path: &str) -> Value {
        let collection = path.rsplit_once('/').expect("object path").0;
        let (request, send) = self.expect(Method::POST, collection).await;
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert!(query.contains("fieldManager=tokenmint"), "query {query}");
        let mut body = body_json(request).await;
        assert_eq!(
            format!(
                "{collection}/{}",
                body["metadata"]["name"].as_str().unwrap()
            ),
            path
        );
        self.next_rv += 1;
        body["metadata"]["resourceVersion"] = json!(self.next_rv.to_string());
        send.send_response(ok(&body));
        body
    }

    /// Expects a status apply of `obj` and answers with `obj` carrying that status. Returns the
    /// status and the updated object.
    async fn expect_status<K>(&mut self, path: &str, obj: &K) -> (TokenStatus, K)
    where
        K: Resource + serde::Serialize + serde::de::DeserializeOwned,
    {
        let (request, send) = self.expect(Method::PATCH, path).await;
        assert_ssa(&request);
        let body = body_json(request).await;
        let status: TokenStatus = serde_json::from_value(body["status"].clone()).unwrap();
        let mut updated = serde_json::to_value(obj).unwrap();
        updated["status"] = body["status"].clone();
        self.next_rv += 1;
        updated["metadata"]["resourceVersion"] = json!(self.next_rv.to_string());
        send.send_response(ok(&updated));
        (status, serde_json::from_value(updated).unwrap())
    }

    /// Awaits a reconcile, failing on any request it makes that the test did not expect.
    async fn finish<T: std::fmt::Debug>(&mut self, task: tokio::task::JoinHandle<T>) -> T {
        tokio::select! {
            result = task => result.expect("reconcile panicked"),
            request = self.handle.next_request() => {
                let (request, _) = request.expect("the client is gone");
                panic!("unexpected request {} {}", request.method(), request.uri());
            }
        }
    }

    fn grant(
        &self,
        grant: &DatasourceGrant,
    ) -> tokio::task::JoinHandle<Result<Action, reconcile::Error>> {
        tokio::spawn(reconcile::reconcile_datasource_grant(
            Arc::new(grant.clone()),
            self.ctx.clone(),
        ))
    }

    fn guest(
        &self,
        request: &GuestTokenRequest,
    ) -> tokio::task::JoinHandle<Result<Action, reconcile::Error>> {
        tokio::spawn(reconcile::reconcile_guest_token(
            Arc::new(request.clone()),
            self.ctx.clone(),
        ))
    }

    fn service_key(
        &self,
        key: &ServiceKey,
    ) -> tokio::task::JoinHandle<Result<Action, reconcile::Error>> {
        tokio::spawn(reconcile::reconcile_service_key(
            Arc::new(key.clone()),
            self.ctx.clone(),
        ))
    }

    fn verify(&self, token: &str, require_exp: bool) -> Value {
        self.ring
            .read()
            .unwrap()
            .verify(
                token,
                Expect {
                    issuer: ISSUER,
                    require_exp,
                },
            )
            .unwrap()
    }
}

fn assert_ssa(request: &Request<Body>) {
    let query = request.uri().query().unwrap_or_default();
    let pairs: Vec<&str> = query.split('&').collect();
    assert!(pairs.contains(&"fieldManager=tokenmint"), "query {query}");
    assert!(pairs.contains(&"force=true"), "query {query}");
    assert_eq!(
        request.headers()["content-type"],
        "application/apply-patch+yaml"
    );
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn ok(body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn not_found() -> Response<Body> {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "not found", "reason": "NotFound", "code": 404});
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

fn meta(name: &str, uid: &str, generation: i64) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        uid: Some(uid.into()),
        generation: Some(generation),
        resource_version: Some("1".into()),
        ..ObjectMeta::default()
    }
}

fn principal() -> Principal {
    Principal {
        id: "1".into(),
        email: "jcw@example.com".into(),
        name: "jcw".into(),
        full_name: Some("Jeff Williams".into()),
        org_id: Some("1".into()),
        org_name: Some("Main Org.".into()),
    }
}

fn service_key(data_sources: &[&str]) -> ServiceKey {
    let mut key = ServiceKey::new(
        "analytics",
        ServiceKeySpec {
            principal: principal(),
            data_sources: data_sources.iter().map(|s| s.to_string()).collect(),
            workspaces: vec!["w1".into()],
            secret_name: Some("analytics-key".into()),
            access_token_ttl: None,
            session_token: None,
            service_accounts: vec![],
        },
    );
    key.metadata = meta("analytics", "uid-sk", 1);
    // Its key in place, as its own reconcile publishes it.
    key.status = Some(TokenStatus {
        key_fingerprint: Some(KEY_FINGERPRINT.into()),
        ..TokenStatus::default()
    });
    key
}

/// The fingerprint `service_key` publishes for its key.
const KEY_FINGERPRINT: &str = "fp-analytics";

fn grant() -> DatasourceGrant {
    let mut grant = DatasourceGrant::new(
        "dashboards",
        DatasourceGrantSpec {
            service_key_ref: tokenmint::crd::ServiceKeyRef {
                name: "analytics".into(),
            },
            data_source: "Data_3_E".into(),
            app_uuid: Some("123".into()),
            filter: Some("USER_id = 123".into()),
            expiration: 3600,
            secret_name: Some("dashboards-token".into()),
            renew_before: Some("20m".into()),
            restart_consumers: false,
            rollout_restart: vec![],
        },
    );
    grant.metadata = meta("dashboards", "uid-dsg", 1);
    grant
}

const SECRETS: &str = "/api/v1/namespaces/team-a/secrets";
const GRANT_SECRET: &str = "/api/v1/namespaces/team-a/secrets/dashboards-token";
const GRANT_STATUS: &str =
    "/apis/tokenmint.dev/v1alpha1/namespaces/team-a/datasourcegrants/dashboards/status";

fn secret_of(value: &Value) -> Secret {
    serde_json::from_value(value.clone()).unwrap()
}

fn data(value: &Value, key: &str) -> Option<String> {
    value["data"][key].as_str().map(|b64| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    })
}

fn ready(status: &TokenStatus) -> (&str, &str) {
    let c = &status.conditions[0];
    assert_eq!(c.type_, "Ready");
    (c.status.as_str(), c.reason.as_str())
}

/// Reconciles a new grant to completion: the Secret and status writes, asserted in full.
/// Returns the stored Secret, the grant with its status, and the requeue.
async fn first_mint(h: &mut Harness, grant: &DatasourceGrant) -> (Value, DatasourceGrant, Action) {
    let task = h.grant(grant);
    let secret = h.expect_create(GRANT_SECRET).await;
    let (_, updated) = h.expect_status(GRANT_STATUS, grant).await;
    let action = h.finish(task).await.unwrap();
    h.cache_secret(&secret_of(&secret));
    // Past the one-mint-a-second floor, so the test's next step may mint again.
    h.clock.advance(SignedDuration::from_secs(1));
    (secret, updated, action)
}

#[tokio::test]
async fn new_grant_writes_one_secret_and_one_status_then_nothing() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let grant = grant();
    let now = h.clock.now();

    let task = h.grant(&grant);
    // Not in the cache of managed Secrets: a create, which would fail on a foreign Secret of
    // the name (no read first).
    let secret = h.expect_create(GRANT_SECRET).await;
    let (status, updated) = h.expect_status(GRANT_STATUS, &grant).await;
    let action = h.finish(task).await.unwrap();

    // The Secret: CONTRACT §5 layout, data (never stringData), owner reference.
    assert_eq!(secret["type"], "tokenmint.dev/token");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tokenmint"
    );
    assert_eq!(
        secret["metadata"]["labels"]["tokenmint.dev/owner-kind"],
        "DatasourceGrant"
    );
    assert_eq!(
        secret["metadata"]["ownerReferences"],
        json!([{"apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant", "name": "dashboards",
                "uid": "uid-dsg", "controller": true, "blockOwnerDeletion": true}])
    );
    assert!(secret.get("stringData").is_none());
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["expires-at", "token"]);

    // The JWT: verifies with the keyring, claims follow the spec and the ServiceKey principal.
    let token = data(&secret, "token").unwrap();
    let claims = h.verify(&token, true);
    assert_eq!(
        claims["identity"],
        json!({"id": 1, "orgs": [1], "source_role": {"ds": "Data_3_E", "role": "dataSourceViewer"},
               "app_uuid": "123", "filter": "USER_id = 123"})
    );
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["type"], "access");
    assert_eq!(claims["fresh"], false);
    assert_eq!(claims["iat"], now.as_second());
    assert_eq!(claims["exp"], now.as_second() + 3600);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        Some(h.ring.read().unwrap().active_kid())
    );
    let exp = Timestamp::from_second(now.as_second() + 3600).unwrap();
    assert_eq!(data(&secret, "expires-at").unwrap(), exp.to_string());
    assert!(!data(&secret, "expires-at").unwrap().contains('.'));

    // Status: Ready, the token's id and times; never the token.
    let schedule = Schedule::new(now, Some(exp), Some(Duration::from_secs(1200)), "uid-dsg");
    // The renew time, in whole seconds (status and requeue agree on it).
    let renew_at = Timestamp::from_second(schedule.renew_at.unwrap().as_second()).unwrap();
    assert_eq!(ready(&status), ("True", "TokenReady"));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.secret_name.as_deref(), Some("dashboards-token"));
    assert_eq!(status.expires_at.as_deref(), Some(exp.to_string().as_str()));
    assert_eq!(
        status.renew_at.as_deref(),
        Some(renew_at.to_string().as_str())
    );
    assert_eq!(
        status.token_id.as_ref(),
        claims["jti"].as_str().map(String::from).as_ref()
    );
    assert!(!serde_json::to_string(&status).unwrap().contains(&token));
    assert!(renew_at <= exp - SignedDuration::from_mins(20));

    // Requeue at exactly the renew time.
    assert_eq!(
        action,
        Action::requeue(renew_at.duration_since(now).unsigned_abs())
    );

    let events = h.events.published();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "Minted");
    assert_eq!(events[0].action, "Missing");
    assert!(!events[0].note.contains(&token));
    // No token id in the note: the Events recorder folds same-action Events into a series
    // that keeps the first note, which must stay true for every member.
    assert!(!events[0].note.contains(claims["jti"].as_str().unwrap()));
    assert_eq!(
        secret["metadata"]["annotations"]["tokenmint.dev/expires-at"],
        exp.to_string()
    );

    // Everything in place (the watch caches caught up): a second reconcile makes no request.
    h.cache_secret(&secret_of(&secret));
    h.clock.advance(SignedDuration::from_secs(60));
    let task = h.grant(&updated);
    let again = h.finish(task).await.unwrap();
    assert_eq!(
        again,
        Action::requeue(renew_at.duration_since(h.clock.now()).unsigned_abs())
    );
    assert_eq!(h.events.published().len(), 1, "no event without a change");
}

#[tokio::test]
async fn our_own_write_is_not_repeated_before_the_caches_catch_up() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let grant = grant();
    let task = h.grant(&grant);
    let secret = h.expect_create(GRANT_SECRET).await;
    h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    // Before any watch event, the operator still knows what it wrote: no second write.
    let task = h.grant(&grant);
    h.finish(task).await.unwrap();
    // The Secret watch delivered the write, but the grant in the controller cache is still the
    // old object (no status): the status is not re-applied.
    h.cache_secret(&secret_of(&secret));
    let task = h.grant(&grant);
    h.finish(task).await.unwrap();
}

#[tokio::test]
async fn a_token_inside_its_renew_window_is_rotated() {
    let mut h = Harness::new();
    // The keyring checks nbf/exp against the system clock: start 40 minutes in the past so the
    // renew time (exp - 20m - jitter) lies just before the real now.
    h.clock.set(t0() - SignedDuration::from_mins(40));
    h.cache_key(&service_key(&["Data_3_E"]));
    let (secret, grant, _) = first_mint(&mut h, &grant()).await;
    let renew_at: Timestamp = grant
        .status
        .as_ref()
        .unwrap()
        .renew_at
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();

    // One second before the renew time: nothing.
    h.clock.set(renew_at - SignedDuration::from_secs(1));
    let task = h.grant(&grant);
    assert_eq!(
        h.finish(task).await.unwrap(),
        Action::requeue(Duration::from_secs(1))
    );

    // At the renew time: a new token, the status follows.
    h.clock.set(renew_at);
    let task = h.grant(&grant);
    let rotated = h.expect_apply(GRANT_SECRET).await;
    let (status, _) = h.expect_status(GRANT_STATUS, &grant).await;
    let action = h.finish(task).await.unwrap();
    let old = h.verify(&data(&secret, "token").unwrap(), true);
    let new = h.verify(&data(&rotated, "token").unwrap(), true);
    assert_ne!(old["jti"], new["jti"]);
    assert_eq!(new["iat"], renew_at.as_second());
    assert_eq!(status.token_id.as_deref(), new["jti"].as_str());
    assert_eq!(ready(&status), ("True", "TokenReady"));
    // The Ready condition did not transition: its time is the first one.
    assert_eq!(
        status.conditions[0].last_transition_time,
        grant.status.as_ref().unwrap().conditions[0].last_transition_time
    );
    let next: Timestamp = status.renew_at.unwrap().parse().unwrap();
    assert_eq!(
        action,
        Action::requeue(next.duration_since(renew_at).unsigned_abs())
    );
    assert_eq!(h.events.published().last().unwrap().reason, "Rotated");
    assert!(
        h.ctx
            .metrics
            .encode()
            .contains("tokenmint_tokens_rotated_total{kind=\"DatasourceGrant\"} 1")
    );
}

#[tokio::test]
async fn a_spec_change_re_mints() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let (_, mut grant, _) = first_mint(&mut h, &grant()).await;
    grant.spec.filter = Some("USER_id = 456".into());
    grant.metadata.generation = Some(2);
    let task = h.grant(&grant);
    let secret = h.expect_apply(GRANT_SECRET).await;
    let (status, _) = h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    let claims = h.verify(&data(&secret, "token").unwrap(), true);
    assert_eq!(claims["identity"]["filter"], "USER_id = 456");
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.conditions[0].observed_generation, Some(2));
}

#[tokio::test]
async fn a_principal_change_on_the_service_key_re_mints() {
    let mut h = Harness::new();
    let mut key = service_key(&["Data_3_E"]);
    h.cache_key(&key);
    let (_, grant, _) = first_mint(&mut h, &grant()).await;
    key.spec.principal.id = "42".into();
    h.cache_key(&key);
    let task = h.grant(&grant);
    let secret = h.expect_apply(GRANT_SECRET).await;
    h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    assert_eq!(
        h.verify(&data(&secret, "token").unwrap(), true)["identity"]["id"],
        42
    );
}

#[tokio::test]
async fn a_deleted_secret_is_restored() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let (secret, grant, _) = first_mint(&mut h, &grant()).await;
    h.uncache_secret(&secret_of(&secret));
    let task = h.grant(&grant);
    let restored = h.expect_create(GRANT_SECRET).await;
    let (status, _) = h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    let claims = h.verify(&data(&restored, "token").unwrap(), true);
    assert_eq!(status.token_id.as_deref(), claims["jti"].as_str());
}

#[tokio::test]
async fn an_edited_secret_is_restored() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let (secret, grant, _) = first_mint(&mut h, &grant()).await;
    let token = data(&secret, "token").unwrap();

    // Tampered payload (forged claims, original signature).
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let mut claims = h.verify(&token, true);
    claims["identity"]["source_role"]["ds"] = json!("Everything");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    let forged = parts.join(".");
    // A valid token of someone else's making (same key, other data source) with annotations
    // copied: also replaced, because its claims do not match the spec.
    let swapped = {
        let ring = h.ring.read().unwrap();
        let minter = tokenmint::token::mint::Minter {
            keyring: &ring,
            issuer: ISSUER,
        };
        let principal = principal();
        minter
            .datasource_token(
                principal.subject(),
                tokenmint::token::mint::Issuing {
                    service_key: "team-a/analytics",
                    service_key_uid: "uid-sk",
                    key_fingerprint: KEY_FINGERPRINT,
                },
                &tokenmint::token::mint::DatasourceRequest {
                    data_source: "Other",
                    expiration: 3600,
                    app_uuid: Some("123"),
                    filter: Some("USER_id = 123"),
                },
                h.clock.now(),
            )
            .unwrap()
            .token
    };
    for replacement in [forged, swapped, "garbage".to_owned()] {
        h.clock.advance(SignedDuration::from_secs(1));
        let mut edited = secret.clone();
        edited["data"]["token"] =
            json!(base64::engine::general_purpose::STANDARD.encode(&replacement));
        edited["metadata"]["resourceVersion"] = json!("9999");
        h.cache_secret(&secret_of(&edited));
        let task = h.grant(&grant);
        // A version the operator did not write: read and verified before any decision.
        h.expect_get(GRANT_SECRET, &edited).await;
        let restored = h.expect_apply(GRANT_SECRET).await;
        h.expect_status(GRANT_STATUS, &grant).await;
        h.finish(task).await.unwrap();
        let claims = h.verify(&data(&restored, "token").unwrap(), true);
        assert_eq!(claims["identity"]["source_role"]["ds"], "Data_3_E");
    }
}

#[tokio::test]
async fn a_foreign_secret_is_a_conflict_and_never_written() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let grant = grant();
    let task = h.grant(&grant);
    // Unlabelled, so not cached: the create finds it, and a read tells whose it is.
    h.expect_create_conflict(GRANT_SECRET).await;
    let (_, send) = h.expect(Method::GET, GRANT_SECRET).await;
    send.send_response(ok(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "dashboards-token", "namespace": NS, "uid": "someone-else", "resourceVersion": "5"},
        "data": {"token": base64::engine::general_purpose::STANDARD.encode("theirs")}
    })));
    let (status, updated) = h.expect_status(GRANT_STATUS, &grant).await;
    let action = h.finish(task).await.unwrap();
    assert_eq!(ready(&status), ("False", "SecretConflict"));
    assert!(status.conditions[0].message.contains("dashboards-token"));
    assert_eq!(status.token_id, None);
    assert_eq!(status.secret_name, None, "not a Secret of ours");
    // Re-checked slowly: the foreign Secret is not watched.
    assert_eq!(action, Action::requeue(reconcile::CONFLICT_RECHECK));
    let events = h.events.published();
    assert_eq!(events.len(), 1);
    assert!(events[0].warning);
    assert_eq!(events[0].reason, "SecretConflict");

    // Unchanged conflict on a resync: a GET (no create attempt), and no write at all.
    let task = h.grant(&updated);
    let (_, send) = h.expect(Method::GET, GRANT_SECRET).await;
    send.send_response(ok(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "dashboards-token", "namespace": NS, "uid": "someone-else", "resourceVersion": "5"}
    })));
    assert_eq!(
        h.finish(task).await.unwrap(),
        Action::requeue(reconcile::CONFLICT_RECHECK)
    );
    assert_eq!(h.events.published().len(), 1);
}

#[tokio::test]
async fn a_forbidden_data_source_removes_the_token() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let (secret, grant, _) = first_mint(&mut h, &grant()).await;
    let jti = secret["metadata"]["annotations"]["tokenmint.dev/token-id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The permission is withdrawn.
    h.cache_key(&service_key(&["Other"]));
    let task = h.grant(&grant);
    let (request, send) = h.expect(Method::DELETE, GRANT_SECRET).await;
    let body = body_json(request).await;
    assert_eq!(body["preconditions"]["uid"], secret["metadata"]["uid"]);
    send.send_response(ok(
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    ));
    let (status, _) = h.expect_status(GRANT_STATUS, &grant).await;
    let action = h.finish(task).await.unwrap();
    assert_eq!(ready(&status), ("False", "Forbidden"));
    assert!(status.conditions[0].message.contains("Data_3_E"));
    assert_eq!(
        (status.expires_at, status.renew_at, status.token_id),
        (None, None, None)
    );
    assert_eq!(status.secret_name, None, "the Secret is gone");
    // The token it held is revoked, not only deleted: a copy somewhere stops working too.
    assert!(h.denylist.is_revoked(&jti));
    assert_eq!(action, Action::await_change());
    assert_eq!(h.events.published().last().unwrap().reason, "Forbidden");
}

#[tokio::test]
async fn a_deleted_service_key_removes_the_token() {
    let mut h = Harness::new();
    let key = service_key(&["*"]);
    h.cache_key(&key);
    let (_, grant, _) = first_mint(&mut h, &grant()).await;
    h.uncache_key(&key);
    let task = h.grant(&grant);
    let (_, send) = h.expect(Method::DELETE, GRANT_SECRET).await;
    send.send_response(ok(
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    ));
    let (status, _) = h.expect_status(GRANT_STATUS, &grant).await;
    assert_eq!(h.finish(task).await.unwrap(), Action::await_change());
    assert_eq!(ready(&status), ("False", "ServiceKeyNotFound"));
    assert_eq!(
        status.secret_name, None,
        "no longer names the deleted Secret"
    );
    assert_eq!(h.denylist.len(), 1, "its token is revoked");
}

#[tokio::test]
async fn nothing_is_minted_unbound_while_the_service_key_has_no_key_in_place() {
    let mut h = Harness::new();
    // Not reconciled yet (created with its grants): the grant waits quietly, no request.
    let mut key = service_key(&["*"]);
    key.status = None;
    h.cache_key(&key);
    let task = h.grant(&grant());
    assert_eq!(
        h.finish(task).await.unwrap(),
        Action::requeue(reconcile::KEY_PENDING_RECHECK)
    );
    // Its key Secret is someone else's (the ServiceKey says so): the grant says why, and
    // keeps what it has (nothing here) — no Secret written, no revocation.
    key.status = Some(TokenStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "SecretConflict".into(),
            message: "Secret analytics-key exists and is not owned by this ServiceKey".into(),
            observed_generation: Some(1),
            last_transition_time: Time(t0()),
        }],
        ..TokenStatus::default()
    });
    h.cache_key(&key);
    let task = h.grant(&grant());
    let (status, _) = h.expect_status(GRANT_STATUS, &grant()).await;
    assert_eq!(h.finish(task).await.unwrap(), Action::await_change());
    assert_eq!(ready(&status), ("False", "ServiceKeyNotReady"));
    assert!(h.denylist.is_empty());
}

#[tokio::test]
async fn an_invalid_filter_is_reported_and_waits_for_a_change() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let mut grant = grant();
    grant.spec.filter = Some("1=1 OR EXISTS (SELECT 1 FROM t)".into());
    let task = h.grant(&grant);
    let (status, _) = h.expect_status(GRANT_STATUS, &grant).await;
    assert_eq!(h.finish(task).await.unwrap(), Action::await_change());
    assert_eq!(ready(&status), ("False", "InvalidFilter"));
}

#[tokio::test]
async fn service_key_generated_once_and_never_rewritten() {
    let mut h = Harness::new();
    let mut key = service_key(&["*"]);
    key.spec.session_token = Some(SessionTokenSpec {
        secret_name: "analytics-session".into(),
        ttl: Some("1h".into()),
        restart_consumers: false,
    });
    let key_path = format!("{SECRETS}/analytics-key");
    let session_path = format!("{SECRETS}/analytics-session");
    let status_path = "/apis/tokenmint.dev/v1alpha1/namespaces/team-a/servicekeys/analytics/status";

    let task = h.service_key(&key);
    let key_secret = h.expect_create(&key_path).await;
    let session = h.expect_create(&session_path).await;
    let (status, updated) = h.expect_status(status_path, &key).await;
    let action = h.finish(task).await.unwrap();

    assert_eq!(key_secret["type"], "tokenmint.dev/service-key");
    assert_eq!(
        key_secret["metadata"]["labels"]["tokenmint.dev/service-key"],
        "analytics"
    );
    assert_eq!(
        key_secret["metadata"]["ownerReferences"][0]["uid"],
        "uid-sk"
    );
    let value = data(&key_secret, "key").unwrap();
    assert!(value.starts_with("tmk_"));
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&value[4..])
            .unwrap()
            .len(),
        32
    );
    assert_eq!(data(&key_secret, "username").unwrap(), "jcw");

    let claims = h.verify(&data(&session, "token").unwrap(), true);
    assert_eq!(claims["type"], "session");
    assert_eq!(claims["service_key"], "team-a/analytics");
    assert_eq!(claims["sub"], "1", "sub is a string");
    assert_eq!(
        claims["key_fingerprint"],
        tokenmint::token::claims::key_fingerprint(value.as_bytes())
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(session["type"], "tokenmint.dev/token");
    assert_eq!(ready(&status), ("True", "TokenReady"));
    assert_eq!(status.secret_name.as_deref(), Some("analytics-key"));
    assert_eq!(status.token_id.as_deref(), claims["jti"].as_str());
    let renew_at: Timestamp = status.renew_at.unwrap().parse().unwrap();
    assert_eq!(
        action,
        Action::requeue(renew_at.duration_since(h.clock.now()).unsigned_abs())
    );
    assert!(!format!("{:?}", h.events.published()).contains(&value));

    // Caches caught up: nothing to do.
    h.cache_secret(&secret_of(&key_secret));
    h.cache_secret(&secret_of(&session));
    let task = h.service_key(&updated);
    h.finish(task).await.unwrap();

    // A new username is applied, with the same key.
    let mut renamed = updated.clone();
    renamed.spec.principal.name = "jeff".into();
    h.clock.advance(SignedDuration::from_secs(1));
    let task = h.service_key(&renamed);
    h.expect_get(&key_path, &key_secret).await;
    let reapplied = h.expect_apply(&key_path).await;
    // The session token carries the principal: re-minted, and the status names the new one.
    h.expect_apply(&session_path).await;
    let (status, _) = h.expect_status(status_path, &renamed).await;
    h.finish(task).await.unwrap();
    assert_eq!(ready(&status), ("True", "TokenReady"));
    assert_eq!(data(&reapplied, "key").unwrap(), value);
    assert_eq!(data(&reapplied, "username").unwrap(), "jeff");
}

#[tokio::test]
async fn an_existing_owned_key_is_kept_and_a_foreign_one_is_a_conflict() {
    let mut h = Harness::new();
    let key = service_key(&["*"]);
    let key_path = format!("{SECRETS}/analytics-key");
    let status_path = "/apis/tokenmint.dev/v1alpha1/namespaces/team-a/servicekeys/analytics/status";
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // Ours (e.g. from before an operator restart): no write, not even the key.
    let existing = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/service-key",
        "metadata": {"name": "analytics-key", "namespace": NS, "uid": "s1", "resourceVersion": "7",
            "labels": {"app.kubernetes.io/managed-by": "tokenmint", "tokenmint.dev/owner-kind": "ServiceKey",
                       "tokenmint.dev/secret-role": "service-key", "tokenmint.dev/service-key": "analytics"},
            "ownerReferences": [{"apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey", "name": "analytics",
                                 "uid": "uid-sk", "controller": true, "blockOwnerDeletion": true}]},
        "data": {"key": b64("tmk_existing"), "username": b64("jcw")}
    });
    h.cache_secret(&secret_of(&existing));
    let task = h.service_key(&key);
    // Not yet known to this process: read once, then remembered.
    h.expect_get(&key_path, &existing).await;
    let (status, updated) = h.expect_status(status_path, &key).await;
    h.finish(task).await.unwrap();
    assert_eq!(ready(&status), ("True", "KeyReady"));
    let task = h.service_key(&updated);
    h.finish(task).await.unwrap();

    // Someone else's Secret of that name: SecretConflict, untouched.
    let mut h = Harness::new();
    let task = h.service_key(&key);
    h.expect_create_conflict(&key_path).await;
    let (_, send) = h.expect(Method::GET, &key_path).await;
    send.send_response(ok(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "analytics-key", "namespace": NS, "uid": "x", "resourceVersion": "3"},
        "data": {"key": b64("theirs")}})));
    let (status, _) = h.expect_status(status_path, &key).await;
    assert_eq!(
        h.finish(task).await.unwrap(),
        Action::requeue(reconcile::CONFLICT_RECHECK)
    );
    assert_eq!(ready(&status), ("False", "SecretConflict"));
}

#[tokio::test]
async fn a_never_expiring_guest_token_has_no_expiry_and_no_renewal() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["*"]));
    let mut request = GuestTokenRequest::new(
        "acme-embed",
        GuestTokenRequestSpec {
            service_key_ref: tokenmint::crd::ServiceKeyRef {
                name: "analytics".into(),
            },
            workspace_name: "w1".into(),
            client_id: "acme".into(),
            datasource_name: Some("sales".into()),
            params: Some(tokenmint::crd::GuestTokenParams(
                json!({"appFilters": [{"metricId": "m1", "values": {"plan": "pro"}}]})
                    .as_object()
                    .unwrap()
                    .clone(),
            )),
            expiry_time: None,
            secret_name: None,
            renew_before: None,
            restart_consumers: false,
            rollout_restart: vec![],
        },
    );
    request.metadata = meta("acme-embed", "uid-gtr", 1);
    let path = format!("{SECRETS}/acme-embed-token");
    let status_path =
        "/apis/tokenmint.dev/v1alpha1/namespaces/team-a/guesttokenrequests/acme-embed/status";
    let task = h.guest(&request);
    let secret = h.expect_create(&path).await;
    let (status, updated) = h.expect_status(status_path, &request).await;
    let action = h.finish(task).await.unwrap();
    assert_eq!(data(&secret, "expires-at"), None);
    assert!(
        secret["metadata"]["annotations"]
            .get("tokenmint.dev/renew-at")
            .is_none()
    );
    let claims = h.verify(&data(&secret, "token").unwrap(), false);
    assert!(claims.get("exp").is_none());
    assert_eq!(claims["workspaceName"], "w1");
    assert_eq!(claims["params"]["appFilters"][0]["metricId"], "m1");
    assert_eq!((status.expires_at, status.renew_at), (None, None));
    assert_eq!(action, Action::requeue(IDLE_RESYNC));

    // Far in the future it is still kept.
    h.cache_secret(&secret_of(&secret));
    h.clock.advance(SignedDuration::from_hours(24 * 365));
    let task = h.guest(&updated);
    assert_eq!(h.finish(task).await.unwrap(), Action::requeue(IDLE_RESYNC));

    // A workspace the key does not allow: Forbidden, Secret removed.
    let mut forbidden = updated.clone();
    forbidden.spec.workspace_name = "w2".into();
    let task = h.guest(&forbidden);
    let (_, send) = h.expect(Method::DELETE, &path).await;
    send.send_response(ok(
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    ));
    let (status, _) = h.expect_status(status_path, &forbidden).await;
    h.finish(task).await.unwrap();
    assert_eq!(ready(&status), ("False", "Forbidden"));
    // A never-expiring token is revoked too: by its ServiceKey's marker, not by an entry that
    // would stay for ever.
    assert!(h.denylist.denies(&claims).is_some());
    assert!(h.denylist.is_empty(), "no entry pinned");
}

#[tokio::test]
async fn a_never_expiring_guest_token_revoked_by_its_keys_marker_is_minted_again_after_it() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["*"]));
    let request = guest_request("forever", None);
    let path = format!("{SECRETS}/forever-token");
    let status_path =
        "/apis/tokenmint.dev/v1alpha1/namespaces/team-a/guesttokenrequests/forever/status";
    let task = h.guest(&request);
    let secret = h.expect_create(&path).await;
    let (_, updated) = h.expect_status(status_path, &request).await;
    h.finish(task).await.unwrap();
    h.cache_secret(&secret_of(&secret));
    let held = h.verify(&data(&secret, "token").unwrap(), false);
    // A second later, another never-expiring guest token of the ServiceKey, issued in this
    // very second, is revoked through POST /oauth/revoke: the marker covers this one too.
    h.clock.advance(SignedDuration::from_secs(1));
    let iat = held["iat"].as_i64().unwrap();
    let marker = h.clock.now().as_second();
    assert_eq!(marker, iat + 1);
    h.denylist.record(&tokenmint::revocation::Revocation {
        target: tokenmint::revocation::Target::NeverExpiring { issued_at: marker },
        service_key_uid: "uid-sk".into(),
        origin: tokenmint::revocation::Origin::Caller,
        reason: "test".into(),
    });
    assert!(h.denylist.denies(&held).is_some());
    // Judged again (the marker's rise triggers it): minted anew, issued after the marker even
    // within the same second, and the old one not revoked again (no write besides the Secret).
    let task = h.guest(&updated);
    let rotated = h.expect_apply(&path).await;
    h.expect_status(status_path, &updated).await;
    h.finish(task).await.unwrap();
    let fresh = h.verify(&data(&rotated, "token").unwrap(), false);
    assert_eq!(fresh["iat"].as_i64().unwrap(), marker + 1, "{fresh}");
    assert!(h.denylist.denies(&fresh).is_none());
    let last = h.events.published().last().cloned().unwrap();
    assert_eq!(
        (last.reason.as_str(), last.action.as_str()),
        ("Rotated", "Denylisted")
    );
}

const KEYRING_PATH: &str = "/api/v1/namespaces/tokenmint-system/secrets/tokenmint-keyring";

#[tokio::test]
async fn keyring_is_created_when_absent_and_loaded_unchanged_otherwise() {
    let mut h = Harness::new();
    let api: kube::Api<Secret> = kube::Api::namespaced(h.ctx.client.clone(), "tokenmint-system");
    let metrics = Metrics::default();
    let task = tokio::spawn({
        let api = api.clone();
        async move {
            keyring_store::load_or_create(
                &api,
                "tokenmint-system",
                "tokenmint-keyring",
                Algorithm::EdDSA,
                t0(),
                &Metrics::default(),
            )
            .await
            .map(|(ring, _)| ring.to_json())
            .map_err(|e| e.to_string())
        }
    });
    h.expect_get_not_found(KEYRING_PATH).await;
    let (request, send) = h
        .expect(Method::POST, "/api/v1/namespaces/tokenmint-system/secrets")
        .await;
    assert!(
        request
            .uri()
            .query()
            .unwrap_or_default()
            .contains("fieldManager=tokenmint")
    );
    let created = body_json(request).await;
    send.send_response(ok(&created));
    let ring_json = h.finish(task).await.unwrap();
    assert_eq!(created["type"], "tokenmint.dev/keyring");
    assert_eq!(
        created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tokenmint"
    );
    let stored = data(&created, SECRET_KEY).unwrap();
    assert_eq!(stored.as_bytes(), ring_json.as_slice());
    let ring = Keyring::from_json(stored.as_bytes()).unwrap();
    assert_eq!(ring.active_algorithm(), Algorithm::EdDSA);

    // Present: loaded as is, whatever --algorithm says; no write.
    let task = tokio::spawn(async move {
        keyring_store::load_or_create(
            &api,
            "tokenmint-system",
            "tokenmint-keyring",
            Algorithm::HS256,
            t0(),
            &metrics,
        )
        .await
        .map(|(ring, _)| ring.to_json())
        .map_err(|e| e.to_string())
    });
    let (_, send) = h.expect(Method::GET, KEYRING_PATH).await;
    send.send_response(ok(&created));
    assert_eq!(h.finish(task).await.unwrap(), ring_json);

    // Malformed: a startup error naming the Secret, never a new keyring.
    let api: kube::Api<Secret> = kube::Api::namespaced(h.ctx.client.clone(), "tokenmint-system");
    let task = tokio::spawn(async move {
        keyring_store::load_or_create(
            &api,
            "tokenmint-system",
            "tokenmint-keyring",
            Algorithm::HS256,
            t0(),
            &Metrics::default(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    });
    let mut broken = created.clone();
    broken["data"][SECRET_KEY] = json!(base64::engine::general_purpose::STANDARD.encode("{"));
    let (_, send) = h.expect(Method::GET, KEYRING_PATH).await;
    send.send_response(ok(&broken));
    let err = h.finish(task).await.unwrap_err();
    assert!(err.contains("tokenmint-system/tokenmint-keyring"), "{err}");
}

#[tokio::test]
async fn rotation_request_rotates_and_retired_tokens_are_re_minted() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let (secret, grant, _) = first_mint(&mut h, &grant()).await;
    let old_kid = h.ring.read().unwrap().active_kid().to_owned();

    // The keyring Secret holding the current ring, with a rotation request.
    let keyring_secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/keyring",
        "metadata": {"name": "tokenmint-keyring", "namespace": "tokenmint-system", "resourceVersion": "40",
                     "annotations": {"tokenmint.dev/rotate": "2026-11-22"}},
        "data": {SECRET_KEY: base64::engine::general_purpose::STANDARD.encode(h.ring.read().unwrap().to_json())}
    });
    let api: kube::Api<Secret> = kube::Api::namespaced(h.ctx.client.clone(), "tokenmint-system");
    let task = tokio::spawn({
        let api = api.clone();
        let secret = secret_of(&keyring_secret);
        async move {
            keyring_store::rotate_if_requested(
                &api,
                &secret,
                Algorithm::HS256,
                t0(),
                &Metrics::default(),
            )
            .await
            .unwrap()
            .map(|ring| ring.to_json())
        }
    });
    let (request, send) = h.expect(Method::PUT, KEYRING_PATH).await;
    let written = body_json(request).await;
    send.send_response(ok(&written));
    let rotated = h.finish(task).await.expect("rotated");
    assert_eq!(
        written["metadata"]["resourceVersion"], "40",
        "optimistic concurrency"
    );
    assert_eq!(
        written["metadata"]["annotations"]["tokenmint.dev/rotated"],
        "2026-11-22"
    );
    let ring = Keyring::from_json(data(&written, SECRET_KEY).unwrap().as_bytes()).unwrap();
    assert_eq!(ring.to_json(), rotated);
    assert_ne!(ring.active_kid(), old_kid);
    assert!(
        ring.kids().any(|k| k == old_kid),
        "the retired key still verifies"
    );
    // Handled: no second rotation for the same request.
    assert!(keyring_store::pending_rotation(&secret_of(&written)).is_none());

    // The watch installs the new ring; the token signed by the retired key is re-minted.
    assert!(keyring_store::install(&h.ring, ring));
    let task = h.grant(&grant);
    let reminted = h.expect_apply(GRANT_SECRET).await;
    h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    let token = data(&reminted, "token").unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    assert_eq!(kid, h.ring.read().unwrap().active_kid());
    assert_eq!(
        reminted["metadata"]["annotations"]["tokenmint.dev/kid"],
        kid
    );
    // The old token still verifies until it expires.
    h.verify(&data(&secret, "token").unwrap(), true);
}

#[test]
fn backoff_doubles_per_object_up_to_the_cap_and_resets_on_success() {
    let h = Harness::new_blocking();
    let grant = grant();
    let delays: Vec<u64> = (0..9).map(|_| h.ctx.backoff(&grant).as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    // Another object has its own count.
    let mut other = grant.clone();
    other.metadata.name = Some("other".into());
    assert_eq!(h.ctx.backoff(&other).as_secs(), 5);
    h.ctx.succeeded(&grant);
    assert_eq!(h.ctx.backoff(&grant).as_secs(), 5);
}

#[test]
fn metrics_expose_the_documented_names() {
    let metrics = Metrics::default();
    metrics.minted("DatasourceGrant", true);
    metrics.reconcile_error("DatasourceGrant", "Forbidden");
    metrics.write("apply", "secrets");
    let at = |s| Timestamp::from_second(s).unwrap();
    metrics.token_expiries(None, Some(at(2000)));
    metrics.token_expiries(None, Some(at(1000)));
    metrics.set_leader(true);
    let text = metrics.encode();
    for line in [
        "tokenmint_tokens_minted_total{kind=\"DatasourceGrant\"} 1",
        "tokenmint_tokens_rotated_total{kind=\"DatasourceGrant\"} 1",
        "tokenmint_reconcile_errors_total{kind=\"DatasourceGrant\",reason=\"Forbidden\"} 1",
        "tokenmint_kube_writes_total{verb=\"apply\",resource=\"secrets\"} 1",
        "tokenmint_token_earliest_expiry_timestamp_seconds 1000",
        "tokenmint_leader 1",
        // Created at zero on start.
        "tokenmint_tokens_minted_total{kind=\"GuestTokenRequest\"} 0",
        "tokenmint_reconcile_errors_total{kind=\"ServiceKey\",reason=\"NotLeader\"} 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    metrics.token_expiries(Some(at(1000)), None);
    assert!(
        metrics
            .encode()
            .contains("tokenmint_token_earliest_expiry_timestamp_seconds 2000")
    );
}

impl Harness {
    /// A harness for tests that make no requests (no runtime needed to build one).
    fn new_blocking() -> Self {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { Harness::new() })
    }
}

#[tokio::test]
async fn an_operator_restart_with_tokens_in_place_writes_nothing() {
    let mut h = Harness::new();
    let key = service_key(&["Data_3_E"]);
    h.cache_key(&key);
    let (secret, grant, _) = first_mint(&mut h, &grant()).await;

    // A new process: fresh caches listed from the API server, the keyring loaded from its
    // Secret, no memory of its own writes.
    let mut restarted = Harness::new();
    *restarted.ring.write().unwrap() =
        Keyring::from_json(&h.ring.read().unwrap().to_json()).unwrap();
    restarted
        .clock
        .set(h.clock.now() + SignedDuration::from_secs(90));
    restarted.cache_key(&key);
    restarted.cache_secret(&secret_of(&secret));
    let task = restarted.grant(&grant);
    // The cache holds metadata only: the content is read once and verified; no write.
    restarted.expect_get(GRANT_SECRET, &secret).await;
    let action = restarted.finish(task).await.unwrap();
    let renew_at: Timestamp = grant.status.unwrap().renew_at.unwrap().parse().unwrap();
    assert_eq!(
        action,
        Action::requeue(
            renew_at
                .duration_since(restarted.clock.now())
                .unsigned_abs()
        )
    );
    assert!(restarted.events.published().is_empty());
}

#[tokio::test]
async fn a_renamed_secret_replaces_the_old_one() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let (_, mut grant, _) = first_mint(&mut h, &grant()).await;
    grant.spec.secret_name = Some("renamed-token".into());
    grant.metadata.generation = Some(2);
    let task = h.grant(&grant);
    let renamed = h.expect_create(&format!("{SECRETS}/renamed-token")).await;
    let (_, send) = h.expect(Method::DELETE, GRANT_SECRET).await;
    send.send_response(ok(
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    ));
    let (status, _) = h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    assert_eq!(renamed["metadata"]["name"], "renamed-token");
    assert_eq!(status.secret_name.as_deref(), Some("renamed-token"));
}

#[test]
fn cluster_examples_parse_and_fit_together() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let key: ServiceKey = serde_saphyr::from_str(&read("servicekey.yaml")).unwrap();
    let grant: DatasourceGrant = serde_saphyr::from_str(&read("datasourcegrant.yaml")).unwrap();
    let guest: GuestTokenRequest = serde_saphyr::from_str(&read("guesttokenrequest.yaml")).unwrap();
    for (ns, key_ref) in [
        (grant.namespace(), &grant.spec.service_key_ref.name),
        (guest.namespace(), &guest.spec.service_key_ref.name),
    ] {
        assert_eq!(ns, key.namespace());
        assert_eq!(key_ref, &key.name_any());
    }
    assert!(key.spec.allows_data_source(&grant.spec.data_source));
    assert!(key.spec.allows_workspace(&guest.spec.workspace_name));
    assert!(grant.spec.renew_before().unwrap().is_some());
    // The workload mounts the grant's Secret as a volume at /var/run/tokenmint, no subPath.
    let workload: Value = serde_saphyr::from_str(&read("workload.yaml")).unwrap();
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        grant.token_secret_name()
    );
    let mount = &pod["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/var/run/tokenmint");
    assert!(mount.get("subPath").is_none());
    assert!(read("workload.yaml").contains("/var/run/tokenmint/token"));

    // The keyless example: the ServiceKey lists the Deployment's ServiceAccount, whose pods
    // get a projected token for the audience tokenmint's chart accepts by default.
    let docs: Vec<Value> = serde_saphyr::from_multiple(&read("keyless-workload.yaml")).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ServiceAccount", "ServiceKey", "Deployment"]);
    let key: ServiceKey = serde_json::from_value(docs[1].clone()).unwrap();
    let account = docs[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(key.spec.service_accounts, [account]);
    let pod = &docs[2]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account);
    let projected = &pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(
        projected["audience"],
        tokenmint::cli::DEFAULT_TOKEN_AUDIENCE
    );
    assert_eq!(projected["expirationSeconds"], 600);
}

#[tokio::test]
async fn a_rotation_asks_once_for_consumer_restarts_until_they_are_recorded() {
    use tokenmint::crd::{WorkloadKind, WorkloadRef};
    let mut h = Harness::new();
    h.clock.set(t0() - SignedDuration::from_mins(40));
    h.cache_key(&service_key(&["Data_3_E"]));
    let mut with_consumers = grant();
    let app = WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: "app".into(),
    };
    with_consumers.spec.rollout_restart = vec![app.clone()];
    let (secret, grant, _) = first_mint(&mut h, &with_consumers).await;
    // A first token: its consumers start with it, so it is recorded as theirs and nothing
    // restarts.
    let first_id = secret["metadata"]["annotations"]["tokenmint.dev/token-id"].clone();
    assert_eq!(
        secret["metadata"]["annotations"][restart::RESTARTED_FOR_ANNOTATION],
        first_id
    );
    assert!(h.restarts.try_recv().is_err());

    // The rotation: the new Secret does not claim its consumers have it; a restart is asked.
    let renew_at: Timestamp = grant
        .status
        .as_ref()
        .unwrap()
        .renew_at
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    h.clock.set(renew_at);
    let task = h.grant(&grant);
    let rotated = h.expect_apply(GRANT_SECRET).await;
    h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    let new_id = rotated["metadata"]["annotations"]["tokenmint.dev/token-id"].clone();
    assert!(
        rotated["metadata"]["annotations"]
            .get(restart::RESTARTED_FOR_ANNOTATION)
            .is_none()
    );
    let request = h.restarts.try_recv().expect("a restart request");
    assert_eq!(
        (
            request.namespace.as_str(),
            request.secret.as_str(),
            json!(request.token_id)
        ),
        (NS, "dashboards-token", new_id.clone())
    );
    assert_eq!(request.workloads, vec![app.into()]);
    assert!(h.restarts.try_recv().is_err(), "one request per rotation");

    // Until the restart is recorded on the Secret, every reconcile asks again — without a
    // single API request.
    h.cache_secret(&secret_of(&rotated));
    let task = h.grant(&grant);
    h.finish(task).await.unwrap();
    assert!(h.restarts.try_recv().is_ok());

    // Recorded (the restart worker's patch: a new version): read once, then quiet.
    let mut marked = rotated.clone();
    marked["metadata"]["annotations"][restart::RESTARTED_FOR_ANNOTATION] = new_id.clone();
    marked["metadata"]["resourceVersion"] = json!("5000");
    h.cache_secret(&secret_of(&marked));
    let task = h.grant(&grant);
    h.expect_get(GRANT_SECRET, &marked).await;
    h.finish(task).await.unwrap();
    assert!(h.restarts.try_recv().is_err());
    let task = h.grant(&grant);
    h.finish(task).await.unwrap();
    assert!(h.restarts.try_recv().is_err());
}

#[tokio::test]
async fn without_rollout_restart_nothing_is_asked_or_marked() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let (secret, _, _) = first_mint(&mut h, &grant()).await;
    assert!(
        secret["metadata"]["annotations"]
            .get(restart::RESTARTED_FOR_ANNOTATION)
            .is_none()
    );
    assert!(h.restarts.try_recv().is_err());
}

#[tokio::test]
async fn a_secret_created_by_someone_else_during_the_mint_is_never_written() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let grant = grant();
    let task = h.grant(&grant);
    // Someone creates a Secret of that name first: the create fails, nothing is applied over
    // theirs, and the read that follows reports the conflict.
    h.expect_create_conflict(GRANT_SECRET).await;
    h.expect_get(
        GRANT_SECRET,
        &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "dashboards-token", "namespace": NS, "uid": "theirs", "resourceVersion": "8",
                         "labels": {"app.kubernetes.io/managed-by": "tokenmint"}}}),
    )
    .await;
    let (status, _) = h.expect_status(GRANT_STATUS, &grant).await;
    assert_eq!(
        h.finish(task).await.unwrap(),
        Action::requeue(reconcile::CONFLICT_RECHECK)
    );
    assert_eq!(ready(&status), ("False", "SecretConflict"));
}

/// A GuestTokenRequest `name` of the `analytics` key for workspace w1, expiring after
/// `expiry_time` milliseconds (never without).
fn guest_request(name: &str, expiry_time: Option<i64>) -> GuestTokenRequest {
    let mut request = GuestTokenRequest::new(
        name,
        GuestTokenRequestSpec {
            service_key_ref: tokenmint::crd::ServiceKeyRef {
                name: "analytics".into(),
            },
            workspace_name: "w1".into(),
            client_id: "acme".into(),
            datasource_name: None,
            params: None,
            expiry_time,
            secret_name: None,
            renew_before: None,
            restart_consumers: false,
            rollout_restart: vec![],
        },
    );
    request.metadata = meta(name, &format!("uid-{name}"), 1);
    request
}

#[tokio::test]
async fn dropping_the_expiry_removes_the_expires_at_key_left_by_the_create() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let mut request = guest_request("acme-embed", Some(3_600_000));
    request.metadata = meta("acme-embed", "uid-gtr", 1);
    let path = format!("{SECRETS}/acme-embed-token");
    let status_path =
        "/apis/tokenmint.dev/v1alpha1/namespaces/team-a/guesttokenrequests/acme-embed/status";
    let task = h.guest(&request);
    let created = h.expect_create(&path).await;
    let (_, request) = h.expect_status(status_path, &request).await;
    h.finish(task).await.unwrap();
    assert!(data(&created, "expires-at").is_some());
    h.cache_secret(&secret_of(&created));

    // The token now never expires: the apply omits expires-at, carries the observed
    // resourceVersion, and the key the create wrote (not owned by the apply) is removed.
    let mut forever = request.clone();
    forever.spec.expiry_time = None;
    forever.metadata.generation = Some(2);
    h.clock.advance(SignedDuration::from_secs(1));
    let task = h.guest(&forever);
    let (apply, send) = h.expect(Method::PATCH, &path).await;
    assert_ssa(&apply);
    let applied = body_json(apply).await;
    assert_eq!(
        applied["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    assert!(applied["data"].get("expires-at").is_none());
    let mut stored = applied.clone();
    stored["data"]["expires-at"] = created["data"]["expires-at"].clone();
    stored["metadata"]["resourceVersion"] = json!("900");
    send.send_response(ok(&stored));
    let (merge, send) = h.expect(Method::PATCH, &path).await;
    assert_eq!(
        merge.headers()["content-type"],
        "application/merge-patch+json"
    );
    assert_eq!(
        body_json(merge).await,
        json!({"data": {"expires-at": null}})
    );
    stored["data"].as_object_mut().unwrap().remove("expires-at");
    send.send_response(ok(&stored));
    h.expect_status(status_path, &forever).await;
    h.finish(task).await.unwrap();
}

#[tokio::test]
async fn a_token_is_minted_at_most_once_a_second() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let grant = grant();
    let task = h.grant(&grant);
    let secret = h.expect_create(GRANT_SECRET).await;
    let (_, grant) = h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    // Another writer fights over the Secret within the same second: the edit is seen, but no
    // second mint before a second has passed — a requeue instead, and no write.
    let mut edited = secret.clone();
    edited["data"]["token"] = json!(base64::engine::general_purpose::STANDARD.encode("theirs"));
    edited["metadata"]["resourceVersion"] = json!("777");
    h.cache_secret(&secret_of(&edited));
    let task = h.grant(&grant);
    h.expect_get(GRANT_SECRET, &edited).await;
    let action = h.finish(task).await.unwrap();
    assert_eq!(action, Action::requeue(reconcile::MIN_MINT_INTERVAL));
    // A second later the token is restored.
    h.clock.advance(SignedDuration::from_secs(1));
    let task = h.grant(&grant);
    h.expect_get(GRANT_SECRET, &edited).await;
    let restored = h.expect_apply(GRANT_SECRET).await;
    h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    assert_ne!(restored["data"]["token"], edited["data"]["token"]);
}

#[tokio::test]
async fn the_revoke_annotation_revokes_the_token_and_mints_a_fresh_one() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let (secret, mut grant, _) = first_mint(&mut h, &grant()).await;
    let old_id = secret["metadata"]["annotations"]["tokenmint.dev/token-id"]
        .as_str()
        .unwrap()
        .to_owned();
    grant
        .annotations_mut()
        .insert("tokenmint.dev/revoke".into(), "2026-12-03T10:00".into());
    let task = h.grant(&grant);
    let fresh = h.expect_apply(GRANT_SECRET).await;
    let (status, grant) = h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    assert!(h.denylist.is_revoked(&old_id), "the old token is revoked");
    let new_id = fresh["metadata"]["annotations"]["tokenmint.dev/token-id"].clone();
    assert_ne!(new_id, json!(old_id));
    assert_eq!(status.token_id.as_deref(), new_id.as_str());
    assert_eq!(
        fresh["metadata"]["annotations"]["tokenmint.dev/revoke-handled"],
        "2026-12-03T10:00"
    );
    let event = h.events.published().last().unwrap().clone();
    assert_eq!(
        (event.reason.as_str(), event.action.as_str()),
        ("Rotated", "Revoked")
    );
    assert!(event.note.contains("revocation"), "{}", event.note);
    // Handled: the same value asks for nothing more, even after a restart of the operator.
    h.cache_secret(&secret_of(&fresh));
    h.clock.advance(SignedDuration::from_secs(5));
    let task = h.grant(&grant);
    h.finish(task).await.unwrap();
    assert_eq!(h.denylist.len(), 1);
}

/// Sets `tokenmint.dev/renew=value` on `grant` and reconciles it: the token is re-minted.
/// Returns the Secret written, the status and the grant as updated.
async fn renew(
    h: &mut Harness,
    mut grant: DatasourceGrant,
    value: &str,
) -> (Value, TokenStatus, DatasourceGrant) {
    grant
        .annotations_mut()
        .insert("tokenmint.dev/renew".into(), value.into());
    let task = h.grant(&grant);
    let fresh = h.expect_apply(GRANT_SECRET).await;
    let (status, grant) = h.expect_status(GRANT_STATUS, &grant).await;
    h.finish(task).await.unwrap();
    h.cache_secret(&secret_of(&fresh));
    h.clock.advance(SignedDuration::from_secs(5));
    (fresh, status, grant)
}

#[tokio::test]
async fn the_renew_annotation_mints_a_fresh_token_once_without_revoking_the_old_one() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let (secret, grant, _) = first_mint(&mut h, &grant()).await;
    let token_id = |s: &Value| s["metadata"]["annotations"]["tokenmint.dev/token-id"].clone();
    let (fresh, status, grant) = renew(&mut h, grant, "1764583200").await;
    assert_ne!(token_id(&fresh), token_id(&secret));
    assert_eq!(status.token_id.as_deref(), token_id(&fresh).as_str());
    assert!(h.denylist.is_empty(), "the old token is not revoked");
    assert_eq!(
        fresh["metadata"]["annotations"]["tokenmint.dev/renew-handled"],
        "1764583200"
    );
    let event = h.events.published().last().unwrap().clone();
    assert_eq!(
        (
            event.reason,
            event.action,
            event.note.contains("renewal was requested")
        ),
        ("Rotated".into(), "Renewed".into(), true)
    );
    // Handled: a resync writes nothing.
    let task = h.grant(&grant);
    h.finish(task).await.unwrap();
    // Nor does an operator restart, which reads the Secret once and finds the value handled.
    let mut restarted = Harness::new();
    *restarted.ring.write().unwrap() =
        Keyring::from_json(&h.ring.read().unwrap().to_json()).unwrap();
    restarted.cache_key(&service_key(&["Data_3_E"]));
    restarted.cache_secret(&secret_of(&fresh));
    let task = restarted.grant(&grant);
    restarted.expect_get(GRANT_SECRET, &fresh).await;
    restarted.finish(task).await.unwrap();
    // A new value asks again.
    let (again, _, _) = renew(&mut h, grant, "1764583300").await;
    assert_ne!(token_id(&again), token_id(&fresh));
    assert!(h.denylist.is_empty());
}

#[tokio::test]
async fn the_renew_annotation_re_mints_a_service_keys_session_token() {
    let mut h = Harness::new();
    let mut key = service_key(&["*"]);
    key.spec.session_token = Some(SessionTokenSpec {
        secret_name: "analytics-session".into(),
        ttl: None,
        restart_consumers: false,
    });
    let key_path = format!("{SECRETS}/analytics-key");
    let session_path = format!("{SECRETS}/analytics-session");
    let status_path = "/apis/tokenmint.dev/v1alpha1/namespaces/team-a/servicekeys/analytics/status";
    let task = h.service_key(&key);
    let key_secret = h.expect_create(&key_path).await;
    let session = h.expect_create(&session_path).await;
    let (_, mut key) = h.expect_status(status_path, &key).await;
    h.finish(task).await.unwrap();
    h.cache_secret(&secret_of(&key_secret));
    h.cache_secret(&secret_of(&session));
    h.clock.advance(SignedDuration::from_secs(1));
    key.annotations_mut()
        .insert("tokenmint.dev/renew".into(), "now".into());
    let task = h.service_key(&key);
    // The session token only: the key is never re-generated.
    let fresh = h.expect_apply(&session_path).await;
    let (status, key) = h.expect_status(status_path, &key).await;
    h.finish(task).await.unwrap();
    let new_id = fresh["metadata"]["annotations"]["tokenmint.dev/token-id"].clone();
    assert_ne!(
        new_id,
        session["metadata"]["annotations"]["tokenmint.dev/token-id"]
    );
    assert_eq!(status.token_id.as_deref(), new_id.as_str());
    assert!(h.denylist.is_empty());
    h.cache_secret(&secret_of(&fresh));
    h.clock.advance(SignedDuration::from_secs(5));
    let task = h.service_key(&key);
    h.finish(task).await.unwrap();
}

#[tokio::test]
async fn a_terminating_namespace_is_not_retried_or_warned_about() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let grant = grant();
    let task = h.grant(&grant);
    let (_, send) = h.expect(Method::POST, SECRETS).await;
    send.send_response(
        Response::builder()
            .status(StatusCode::FORBIDDEN)
            .body(Body::from(
                serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Forbidden", "code": 403,
                    "message": "secrets \"dashboards-token\" is forbidden: unable to create new content in namespace team-a because it is being terminated",
                    "details": {"name": "dashboards-token", "kind": "secrets",
                                "causes": [{"reason": "NamespaceTerminating", "message": "namespace team-a is being terminated", "field": "metadata.namespace"}]}}))
                .unwrap(),
            ))
            .unwrap(),
    );
    let error = h.finish(task).await.unwrap_err();
    assert!(error.is_namespace_terminating(), "{error}");
    let action = reconcile::error_policy(Arc::new(grant.clone()), &error, h.ctx.clone());
    assert_eq!(action, Action::await_change());
    let counted: Vec<String> = h
        .ctx
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("tokenmint_reconcile_errors_total{") && !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect();
    assert!(counted.is_empty(), "not counted as an error: {counted:?}");
}

#[tokio::test]
async fn a_service_account_listed_by_an_older_service_key_is_a_conflict() {
    let mut h = Harness::new();
    let created = |t: &str| {
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            t.parse().unwrap(),
        ))
    };
    let mut older = service_key(&["*"]);
    older.metadata.name = Some("first".into());
    older.metadata.uid = Some("uid-first".into());
    older.metadata.creation_timestamp = created("2026-01-01T00:00:00Z");
    older.spec.service_accounts = vec!["report-api".into()];
    h.cache_key(&older);
    let mut later = service_key(&["*"]);
    later.metadata.creation_timestamp = created("2026-06-01T00:00:00Z");
    later.spec.service_accounts = vec!["own".into(), "report-api".into()];
    h.cache_key(&later);
    let key_path = format!("{SECRETS}/analytics-key");
    let status_path = "/apis/tokenmint.dev/v1alpha1/namespaces/team-a/servicekeys/analytics/status";
    let task = h.service_key(&later);
    h.expect_create(&key_path).await;
    let (status, _) = h.expect_status(status_path, &later).await;
    let action = h.finish(task).await.unwrap();
    // The key itself works; the condition says which ServiceAccount is not its own, and whose.
    assert_eq!(ready(&status), ("False", "ServiceAccountConflict"));
    let message = &status.conditions[0].message;
    assert!(
        message.contains("report-api") && message.contains("first"),
        "{message}"
    );
    assert_eq!(action, Action::requeue(reconcile::CONFLICT_RECHECK));
    let event = h.events.published().last().unwrap().clone();
    assert!(event.warning);
    assert_eq!(event.reason, "ServiceAccountConflict");
    // The older one is not in conflict.
    let mut h2 = Harness::new();
    h2.cache_key(&older);
    h2.cache_key(&later);
    let task = h2.service_key(&older);
    h2.expect_create(&format!("{SECRETS}/analytics-key")).await;
    let (status, _) = h2
        .expect_status(
            "/apis/tokenmint.dev/v1alpha1/namespaces/team-a/servicekeys/first/status",
            &older,
        )
        .await;
    h2.finish(task).await.unwrap();
    assert_eq!(ready(&status), ("True", "KeyReady"));
}

#[tokio::test]
async fn a_reconcile_holding_a_copy_older_than_the_cache_does_not_write_the_status_again() {
    let mut h = Harness::new();
    h.cache_key(&service_key(&["Data_3_E"]));
    let grant = grant();
    let (_, updated, _) = first_mint(&mut h, &grant).await;
    // The watch brings the status write: the store shows it, then the record of the write is
    // forgotten (as the controllers' feed does).
    h.cache_grant(&updated);
    h.ctx.recent.caught_up(
        &reconcile::recent::key("DatasourceGrant", NS, "dashboards"),
        updated.metadata.resource_version.as_deref(),
    );
    assert!(h.ctx.recent.is_empty());
    // A reconcile triggered before that (by the Secret's event) runs on its older copy: it
    // finds the write in the store, and makes no request.
    let task = h.grant(&grant);
    h.finish(task).await.unwrap();
}
