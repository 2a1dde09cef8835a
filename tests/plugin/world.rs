//! The world the plugin's tests run in: the fake API server holding what an installed tokenmint
//! leaves in a cluster, made the way the operator makes it (its desired tokens, its Secrets and
//! its statuses, through the operator's own functions), with a fixed key and fixed token ids so
//! that the output is the same on every run. And two ways to answer `renew`/`revoke`: the real
//! operator (its controllers over the fake), or a stand-in that answers deterministically.

use crate::support::fake_api::{Fake, TEAM, custom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::{Client, Resource};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokenmint::cli::output::Exit;
use tokenmint::cli::plugin::{Io, Plugin, Session, execute};
use tokenmint::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey, TokenStatus};
use tokenmint::desired::{self, Desired, Failure, Reason};
use tokenmint::fence::Fence;
use tokenmint::keyring::{Keyring, SECRET_KEY};
use tokenmint::labels::ROLE_TOKEN;
use tokenmint::reconcile::controllers::{self, Readiness, Shared};
use tokenmint::reconcile::events::Events;
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::reconcile::owned_secret::Owner;
use tokenmint::reconcile::status::{self, Outcome, TOKEN_READY};
use tokenmint::reconcile::token_secret::{TokenTarget, token_secret};
use tokenmint::reconcile::{Clock, keyring::KEYRING_SECRET_TYPE};
use tokenmint::revocation::{self, Denylist, Revocation, Revoker};
use tokenmint::token::assess::{Renewal, TokenInfo};
use tokenmint::token::claims;
use tokenmint::token::mint::{Minted, Minter};
use tokio::sync::watch;

/// The instant the deterministic world is seen at.
pub const NOW: &str = "2026-12-01T10:00:00Z";
pub const OPERATOR_NS: &str = "tokenmint-system";
pub const ISSUER: &str = "tokenmint";
pub const KID: &str = "hs256-5f1c0e9a7b2d";
/// The demo keyring's HMAC key: a test fixture, never used outside these tests.
pub const DEMO_KEY: &[u8; 32] = b"tokenmint demo key, not a secret";
/// The demo ServiceKey's key, in its key Secret.
pub const SERVICE_KEY_VALUE: &str = "tmk_demo0key0in0the0service0key0secret0000";

pub fn now() -> Timestamp {
    NOW.parse().unwrap()
}

pub fn ago(seconds: i64) -> SignedDuration {
    SignedDuration::from_secs(-seconds)
}

/// A token id that looks as random as the operator's, derived from `seed`.
pub fn jti(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let bytes: [u8; 16] = digest[..16].try_into().unwrap();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The demo keyring (one HS256 key, [`KID`]) as the operator stores it.
pub fn demo_keyring_json() -> Value {
    json!({"active": KID, "keys": [{"kid": KID, "alg": "HS256", "key": STANDARD.encode(DEMO_KEY),
                                     "createdAt": "2026-11-01T00:00:00Z"}]})
}

pub fn demo_keyring() -> Keyring {
    Keyring::from_json(demo_keyring_json().to_string().as_bytes()).unwrap()
}

fn micro(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[derive(Clone)]
pub struct World {
    pub fake: Fake,
    pub now: Timestamp,
    pub ring: Arc<Keyring>,
    events: Arc<std::sync::atomic::AtomicUsize>,
}

impl World {
    pub fn empty(now: Timestamp) -> World {
        World {
            fake: Fake::default(),
            now,
            ring: Arc::new(demo_keyring()),
            events: Arc::default(),
        }
    }

    /// An installed tokenmint seen at `now`: the CRDs, the operator's Lease and keyring, the
    /// ServiceKey `analytics`, the DatasourceGrant `dashboards` and the GuestTokenRequest
    /// `acme-embed` with their tokens (minted 20 minutes ago), the DatasourceGrant `payroll`
    /// its ServiceKey does not allow, and the Events the operator published about them.
    pub fn installed(now: Timestamp) -> World {
        let w = World::empty(now);
        w.put_crds();
        w.put_lease(2);
        w.put_keyring();
        w.put_service_key(
            "analytics",
            json!({"principal": {"id": "1", "email": "jcw@example.com", "name": "jcw"},
                   "dataSources": ["Data_3_E"], "workspaces": ["w1"]}),
        );
        let dashboards = w.put(
            "DatasourceGrant",
            "dashboards",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E",
                   "filter": "USER_id = 123", "expiration": 3600, "renewBefore": "20m",
                   "rolloutRestart": [{"kind": "Deployment", "name": "report-api"}]}),
        );
        w.mint(&dashboards, 1_200, 1);
        w.event(&dashboards, "Normal", "Minted", "Missing", "Minted a token into Secret dashboards-token because there was no token; the token id is in status.tokenId", 1_200);
        let acme = w.put(
            "GuestTokenRequest",
            "acme-embed",
            json!({"serviceKeyRef": {"name": "analytics"}, "workspaceName": "w1", "clientId": "acme",
                   "params": {"appFilters": [{"metricId": "m1", "values": {"plan": "pro"}}]},
                   "expiryTime": 3_600_000}),
        );
        w.mint(&acme, 1_200, 1);
        w.event(&acme, "Normal", "Minted", "Missing", "Minted a token into Secret acme-embed-token because there was no token; the token id is in status.tokenId", 1_200);
        let payroll = w.put(
            "DatasourceGrant",
            "payroll",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "PayrollDB"}),
        );
        w.refuse(&payroll, 600);
        w
    }

    /// The token in the Secret `name` of the team's namespace.
    pub fn token(&self, name: &str) -> String {
        let secret = self.fake.get("", "secrets", TEAM, name).unwrap();
        String::from_utf8(
            STANDARD
                .decode(secret["data"]["token"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    pub fn put_crds(&self) {
        for crd in tokenmint::crd::all() {
            let mut crd = serde_json::to_value(crd).unwrap();
            crd["status"] = json!({"conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
                 "lastTransitionTime": "2026-11-01T00:00:00Z"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": "2026-11-01T00:00:00Z"}]});
            self.fake
                .put("apiextensions.k8s.io", "customresourcedefinitions", crd);
        }
    }

    /// The leader Lease, renewed `renewed_ago` seconds before now.
    pub fn put_lease(&self, renewed_ago: i64) {
        self.fake.put(
            "coordination.k8s.io",
            "leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "tokenmint-leader", "namespace": OPERATOR_NS},
                   "spec": {"holderIdentity": "tokenmint-6d4f9c7b8-xk2lp-1a2b3c4d",
                            "leaseDurationSeconds": 15,
                            "acquireTime": micro(self.now + ago(86_400)),
                            "renewTime": micro(self.now + ago(renewed_ago))}}),
        );
    }

    pub fn put_keyring(&self) {
        self.fake.put(
            "",
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "tokenmint-keyring", "namespace": OPERATOR_NS,
                                "labels": {"app.kubernetes.io/managed-by": "tokenmint"}},
                   "type": KEYRING_SECRET_TYPE,
                   "data": {SECRET_KEY: STANDARD.encode(demo_keyring_json().to_string())}}),
        );
    }

    /// A ServiceKey with its key Secret, Ready as the operator leaves it.
    pub fn put_service_key(&self, name: &str, spec: Value) -> Value {
        let mut key = custom("ServiceKey", name, spec);
        let secret = format!("{name}-service-key");
        let fingerprint = tokenmint::token::claims::key_fingerprint(SERVICE_KEY_VALUE.as_bytes());
        let ready = status::desired(
            None,
            Some(1),
            &secret,
            (
                &Outcome::Ready {
                    reason: status::KEY_READY,
                    message: format!("key in Secret {secret}"),
                    token: None,
                },
                Some(&fingerprint),
            ),
            self.now + ago(86_400),
        );
        key["status"] = serde_json::to_value(ready).unwrap();
        self.fake.put(
            "",
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/service-key",
                   "metadata": {"name": secret, "namespace": TEAM,
                                "labels": {"app.kubernetes.io/managed-by": "tokenmint",
                                           "tokenmint.dev/secret-role": "service-key"},
                                "ownerReferences": crate::support::fake_api::owner_ref("ServiceKey", name)},
                   "data": {"key": STANDARD.encode(SERVICE_KEY_VALUE), "username": STANDARD.encode("jcw")}}),
        );
        self.fake.put("tokenmint.dev", "servicekeys", key)
    }

    /// A DatasourceGrant or GuestTokenRequest `name` of `kind`, without status.
    pub fn put(&self, kind: &str, name: &str, spec: Value) -> Value {
        let resource = format!("{}s", kind.to_lowercase());
        self.fake
            .put("tokenmint.dev", &resource, custom(kind, name, spec))
    }

    fn resource(object: &Value) -> String {
        format!("{}s", object["kind"].as_str().unwrap().to_lowercase())
    }

    fn service_key_of(&self, object: &Value) -> ServiceKey {
        let name = object["spec"]["serviceKeyRef"]["name"].as_str().unwrap();
        serde_json::from_value(
            self.fake
                .get("tokenmint.dev", "servicekeys", TEAM, name)
                .unwrap(),
        )
        .unwrap()
    }

    /// Mints the token of `object` (issued `issued_ago` seconds before now, the `n`th of it) as
    /// the operator does, answering its renew and revoke annotations: stores its Secret and
    /// status. Returns the token id.
    pub fn mint(&self, object: &Value, issued_ago: i64, n: u32) -> String {
        let key = self.service_key_of(object);
        let name = object["metadata"]["name"].as_str().unwrap();
        let id = jti(&format!("{name}/{n}"));
        let issued = self.now + ago(issued_ago);
        let annotation = |k: &str| object["metadata"]["annotations"][k].as_str();
        let (revoke, renew) = (
            annotation("tokenmint.dev/revoke"),
            annotation("tokenmint.dev/renew"),
        );
        let (secret, status) = match object["kind"].as_str().unwrap() {
            "DatasourceGrant" => {
                let g: DatasourceGrant = serde_json::from_value(object.clone()).unwrap();
                let d = desired::datasource_grant(
                    TEAM,
                    &g.spec,
                    Some(desired::KeyRef::of(&key)),
                    ISSUER,
                )
                .unwrap();
                self.store(&g, &d, &g.token_secret_name(), issued, &id, (revoke, renew))
            }
            _ => {
                let g: GuestTokenRequest = serde_json::from_value(object.clone()).unwrap();
                let d =
                    desired::guest_token(TEAM, &g.spec, Some(desired::KeyRef::of(&key)), ISSUER)
                        .unwrap();
                self.store(&g, &d, &g.token_secret_name(), issued, &id, (revoke, renew))
            }
        };
        self.fake.put("", "secrets", secret);
        let mut updated = self
            .fake
            .get("tokenmint.dev", &Self::resource(object), TEAM, name)
            .unwrap();
        updated["status"] = serde_json::to_value(status).unwrap();
        self.fake
            .put("tokenmint.dev", &Self::resource(object), updated);
        id
    }

    fn store<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        desired: &Desired,
        secret_name: &str,
        issued: Timestamp,
        id: &str,
        (revoke, renew): (Option<&str>, Option<&str>),
    ) -> (Value, TokenStatus) {
        let owner = Owner::of(object).unwrap();
        let minted = desired
            .mint(
                &Minter {
                    keyring: &self.ring,
                    issuer: ISSUER,
                },
                issued,
            )
            .unwrap();
        // The operator's token, with a fixed id in place of its random one.
        let mut claims = claims::unverified(&minted.token).unwrap();
        claims["jti"] = json!(id);
        let minted = Minted {
            token: self.ring.sign(&claims).unwrap(),
            jti: id.to_owned(),
            ..minted
        };
        let target = TokenTarget {
            owner: &owner,
            secret_name,
            role: ROLE_TOKEN,
            desired,
            restarts: Default::default(),
            revoke,
            renew,
        };
        let info = TokenInfo::new(
            id.to_owned(),
            minted.issued_at,
            minted.expires_at,
            Renewal {
                renew_before: desired.renew_before,
                jitter_seed: &owner.uid,
            },
        );
        let mut secret = token_secret(&target, &minted, &info, false);
        // The consumers in rolloutRestart started with this token (the first one).
        secret
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("tokenmint.dev/restarted-for".into(), id.to_owned());
        let status = status::desired(
            None,
            object.meta().generation,
            secret_name,
            (
                &Outcome::Ready {
                    reason: TOKEN_READY,
                    message: format!("token in Secret {secret_name}"),
                    token: Some(info),
                },
                None,
            ),
            issued,
        );
        (serde_json::to_value::<Secret>(secret).unwrap(), status)
    }

    /// Reports `object` not Ready as the operator does when its ServiceKey does not allow it
    /// (`seconds_ago`), with the Warning Event.
    pub fn refuse(&self, object: &Value, seconds_ago: i64) {
        let g: DatasourceGrant = serde_json::from_value(object.clone()).unwrap();
        let key = self.service_key_of(object);
        let failure: Failure =
            desired::datasource_grant(TEAM, &g.spec, Some(desired::KeyRef::of(&key)), ISSUER)
                .unwrap_err();
        assert_eq!(failure.reason, Reason::Forbidden);
        let status = status::desired(
            None,
            Some(1),
            &g.token_secret_name(),
            (&Outcome::Failed(failure.clone()), None),
            self.now + ago(seconds_ago),
        );
        let mut updated = object.clone();
        updated["status"] = serde_json::to_value(status).unwrap();
        self.fake
            .put("tokenmint.dev", &Self::resource(object), updated);
        self.event(
            object,
            "Warning",
            "Forbidden",
            "Forbidden",
            &failure.message,
            seconds_ago,
        );
    }

    /// An events.k8s.io Event about `regarding`, as the operator's recorder publishes it.
    pub fn event(
        &self,
        regarding: &Value,
        type_: &str,
        reason: &str,
        action: &str,
        note: &str,
        seconds_ago: i64,
    ) {
        let n = self
            .events
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = regarding["metadata"]["name"].as_str().unwrap();
        self.fake.put(
            "events.k8s.io",
            "events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                   "metadata": {"name": format!("{name}.{n:016x}"), "namespace": TEAM},
                   "eventTime": micro(self.now + ago(seconds_ago)),
                   "regarding": {"apiVersion": "tokenmint.dev/v1alpha1", "kind": regarding["kind"],
                                 "name": name, "namespace": TEAM, "uid": regarding["metadata"]["uid"]},
                   "type": type_, "reason": reason, "action": action, "note": note,
                   "reportingController": "tokenmint", "reportingInstance": "tokenmint-6d4f9c7b8-xk2lp"}),
        );
    }

    /// Stands in for the operator where output must be the same on every run (the README, the
    /// rights audit): answers `tokenmint.dev/renew` and `tokenmint.dev/revoke` on the world's
    /// grants and guest token requests as the operator does — a fresh token whose Secret
    /// records the value handled; for a revocation, first the revocation ConfigMap of the old
    /// token — with fixed token ids. The real operator answers them in `annotate.rs`.
    pub fn stand_in_operator(&self) -> tokio::task::JoinHandle<()> {
        let world = self.clone();
        tokio::spawn(async move {
            let mut minted = 1;
            loop {
                for resource in ["datasourcegrants", "guesttokenrequests"] {
                    for object in world.fake.all("tokenmint.dev", resource) {
                        minted += world.answer(&object, minted);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    fn answer(&self, object: &Value, n: u32) -> u32 {
        let Some(secret_name) = object["status"]["secretName"].as_str() else {
            return 0;
        };
        let Some(secret) = self.fake.get("", "secrets", TEAM, secret_name) else {
            return 0;
        };
        let pending = |asked: &str, handled: &str| {
            let asked = &object["metadata"]["annotations"][asked];
            asked.is_string() && *asked != secret["metadata"]["annotations"][handled]
        };
        let revoke = pending("tokenmint.dev/revoke", "tokenmint.dev/revoke-handled");
        if !revoke && !pending("tokenmint.dev/renew", "tokenmint.dev/renew-handled") {
            return 0;
        }
        if revoke {
            let old = &secret["metadata"]["annotations"];
            let key = self.service_key_of(object);
            let expires_at = old["tokenmint.dev/expires-at"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|t| t.as_second());
            let revocation = Revocation::of_held(
                (
                    old["tokenmint.dev/token-id"].as_str().unwrap(),
                    None,
                    expires_at,
                ),
                false,
                key.metadata.uid.clone().unwrap(),
                format!(
                    "{} {TEAM}/{}: tokenmint.dev/revoke",
                    object["kind"].as_str().unwrap(),
                    object["metadata"]["name"].as_str().unwrap()
                ),
                self.now.as_second(),
            );
            let stored = revocation::store::config_map_of(OPERATOR_NS, &revocation);
            self.fake
                .put("", "configmaps", serde_json::to_value(stored).unwrap());
        }
        self.mint(object, 0, 1 + n);
        1
    }
}

/// The real operator's controllers over `fake`, publishing Events into it; stops when dropped.
pub struct Operator {
    stop: watch::Sender<bool>,
    pub denylist: Arc<Denylist>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub fn start_operator(fake: &Fake) -> Operator {
    let (stop, stop_rx) = watch::channel(false);
    let (changed, changed_rx) = watch::channel(0u64);
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let denylist = Arc::new(Denylist::default());
    let reporter = kube::runtime::events::Reporter {
        controller: "tokenmint".into(),
        instance: Some("tokenmint-test".into()),
    };
    let shared = Shared {
        client: fake.client(),
        keyring: Arc::new(RwLock::new(demo_keyring())),
        keyring_changed: changed_rx,
        issuer: ISSUER.into(),
        events: Events::Kube(tokenmint::reconcile::events::Recorder::new(
            fake.client(),
            reporter,
        )),
        metrics: Arc::new(Metrics::default()),
        clock: Clock::system(),
        revoker: Revoker::Memory(denylist.clone()),
        fence: Fence::always(),
        consumers: true,
        restart_window: tokenmint::reconcile::restart::COALESCE_WINDOW,
        verified: Default::default(),
    };
    tokio::spawn({
        let readiness = readiness.clone();
        async move {
            controllers::run(shared, &[], stop_rx, readiness).await;
            drop(changed);
        }
    });
    Operator { stop, denylist }
}

impl World {
    /// Runs `kubectl tokenmint ARGS` in this world, at its time.
    pub async fn kubectl(&self, args: &[&str]) -> Ran {
        kubectl(self.fake.client(), self.now, args).await
    }
}

/// Asserts that `ran` printed each of `expected`.
pub fn shows(ran: &Ran, expected: &[&str]) {
    for expected in expected {
        assert!(
            ran.out.contains(expected),
            "missing {expected:?} in\n{}{}",
            ran.out,
            ran.err
        );
    }
}

/// What a command printed and its exit code.
#[derive(Debug)]
pub struct Ran {
    pub exit: Exit,
    pub out: String,
    pub err: String,
}

/// Runs `kubectl tokenmint ARGS` over `client` at `now`, as the binary does after connecting
/// (the context's namespace is `default`).
pub async fn kubectl(client: Client, now: Timestamp, args: &[&str]) -> Ran {
    kubectl_with_stdin(client, now, args, "").await
}

pub async fn kubectl_with_stdin(client: Client, now: Timestamp, args: &[&str], stdin: &str) -> Ran {
    let argv = std::iter::once("kubectl-tokenmint").chain(args.iter().copied());
    let plugin = match <Plugin as clap::Parser>::try_parse_from(argv) {
        Ok(plugin) => plugin,
        Err(e) => {
            return Ran {
                exit: Exit::Error,
                out: String::new(),
                err: e.to_string(),
            };
        }
    };
    let session = Session::new(&plugin.global, client, "default".into(), now);
    let mut out = Vec::new();
    let mut input = stdin.as_bytes();
    let mut io = Io {
        stdin: &mut input,
        out: &mut out,
    };
    let (exit, err) = match execute(plugin.command, &session, &mut io).await {
        Ok(exit) => (exit, String::new()),
        Err(e) => (Exit::Error, format!("error: {e}")),
    };
    Ran {
        exit,
        out: String::from_utf8(out).unwrap(),
        err,
    }
}
