//! End-to-end tests against a real Kubernetes cluster (the one KUBECONFIG points at).
//!
//! Run them with:
//!
//!     cargo test --test cluster -- --ignored --test-threads=1
//!
//! Each test creates its own namespace (`tokenmint-e2e-<random>`) and deletes it at the end,
//! applies the CRDs from `crds/` (server-side apply; cluster-scoped, left installed), and runs the
//! operator's controllers in-process, scoped to that namespace. The user needs rights to create
//! namespaces and CRDs, and everything the operator itself does.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokenmint::crd::{DatasourceGrant, ServiceKey};
use tokenmint::key_store::KeyStore;
use tokenmint::keyring::{Algorithm, Expect, Keyring};
use tokenmint::reconcile::controllers::{self, Readiness, Shared};
use tokenmint::reconcile::events::{Events, Recorder};
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::reconcile::{Clock, keyring as keyring_store};
use tokio::sync::watch;

const ISSUER: &str = "tokenmint-e2e";
const WAIT: Duration = Duration::from_secs(60);

/// A namespace of our own, the CRDs, and the controllers running in-process.
struct Cluster {
    client: Client,
    namespace: String,
    ring: Arc<RwLock<Keyring>>,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    controllers: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("tokenmint-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        tokio::time::timeout(
            WAIT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD not established")
        .unwrap();
    }
}

impl Cluster {
    async fn start() -> Self {
        let client = Client::try_default()
            .await
            .expect("these tests need a cluster: set KUBECONFIG");
        apply_crds(&client).await;
        let namespace = format!(
            "tokenmint-e2e-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
            )
            .await
            .unwrap();

        // The keyring Secret, created by the operator's own code path, in the test namespace.
        let metrics = Arc::new(Metrics::default());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let (ring, _) = keyring_store::load_or_create(
            &secrets,
            &namespace,
            "tokenmint-keyring",
            Algorithm::HS256,
            Timestamp::now(),
            &metrics,
        )
        .await
        .unwrap();
        let ring = Arc::new(RwLock::new(ring));
        let (_changed_tx, changed_rx) = watch::channel(0u64);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Shared {
            client: client.clone(),
            keyring: ring.clone(),
            keyring_changed: changed_rx,
            issuer: ISSUER.into(),
            events: Events::Kube(Recorder::new(
                client.clone(),
                Reporter {
                    controller: "tokenmint-e2e".into(),
                    instance: None,
                },
            )),
            metrics: metrics.clone(),
            clock: Clock::system(),
            revoker: tokenmint::revocation::Revoker::Kube {
                api: Api::namespaced(client.clone(), &namespace),
                denylist: Default::default(),
            },
            fence: tokenmint::fence::Fence::always(),
            consumers: true,
            // Short, so that a restart after a rotation is seen within the test.
            restart_window: Duration::from_secs(2),
            verified: Default::default(),
        };
        let scope = vec![namespace.clone()];
        let controllers = tokio::spawn(async move {
            // Keep the trigger sender alive as long as the controllers run.
            let _changed_tx = _changed_tx;
            controllers::run(shared, &scope, stop_rx, Arc::new(Readiness::default())).await;
        });
        Cluster {
            client,
            namespace,
            ring,
            metrics,
            stop,
            controllers: std::sync::Mutex::new(Some(controllers)),
        }
    }

    /// Runs `body`, then stops the controllers and deletes the namespace, also on failure.
    async fn run<F, Fut>(body: F)
    where
        F: FnOnce(Arc<Cluster>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cluster = Arc::new(Cluster::start().await);
        let result = tokio::spawn(body(cluster.clone())).await;
        let _ = cluster.stop.send(true);
        let controllers = cluster.controllers.lock().unwrap().take();
        if let Some(controllers) = controllers {
            let _ = tokio::time::timeout(WAIT, controllers).await;
        }
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        let _ = namespaces
            .delete(&cluster.namespace, &DeleteParams::default())
            .await;
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create(&self, manifest: Value) {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "tokenmint.dev",
                "v1alpha1",
                manifest["kind"].as_str().unwrap(),
            )),
        );
        api.create(
            &PostParams::default(),
            &serde_json::from_value(manifest).unwrap(),
        )
        .await
        .unwrap();
    }

    /// Polls until `check` returns a value.
    async fn eventually<T, Fut: Future<Output = Option<T>>>(
        &self,
        what: &str,
        mut check: impl FnMut() -> Fut,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The token in Secret `name`, once there.
    async fn token(&self, name: &str) -> (String, Secret) {
        let api: Api<Secret> = self.api();
        self.eventually(&format!("Secret {name}"), || {
            let api = api.clone();
            let name = name.to_owned();
            async move {
                let secret = api.get_opt(&name).await.unwrap()?;
                let token = secret.data.as_ref()?.get("token")?;
                Some((String::from_utf8(token.0.clone()).unwrap(), secret))
            }
        })
        .await
    }

    fn claims(&self, token: &str) -> Value {
        self.ring
            .read()
            .unwrap()
            .verify(
                token,
                Expect {
                    issuer: ISSUER,
                    require_exp: true,
                },
            )
            .unwrap()
    }

    async fn ready_reason(&self, grant: &str) -> Option<(String, String)> {
        let api: Api<DatasourceGrant> = self.api();
        let grant = api.get(grant).await.unwrap();
        let c = grant
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        Some((c.status, c.reason))
    }
}

fn service_key(data_sources: &[&str]) -> Value {
    json!({
        "apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
        "metadata": {"name": "analytics"},
        "spec": {
            "principal": {"id": "1", "email": "jcw@example.com", "name": "jcw", "orgId": "1"},
            "dataSources": data_sources, "workspaces": ["w1"], "secretName": "analytics-key"
        }
    })
}

fn grant() -> Value {
    json!({
        "apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant",
        "metadata": {"name": "dashboards"},
        "spec": {
            "serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E", "appUuid": "123",
            "filter": "USER_id = 123", "expiration": 3600, "secretName": "dashboards-token"
        }
    })
}

#[tokio::test]
#[ignore = "needs a cluster from KUBECONFIG"]
async fn grant_is_minted_kept_restored_and_withdrawn() {
    Cluster::run(|c| async move {
        c.create(service_key(&["Data_3_E"])).await;
        c.create(grant()).await;

        // Minted: the layout of CONTRACT §5 and the spec's claims.
        let (token, secret) = c.token("dashboards-token").await;
        assert_eq!(secret.type_.as_deref(), Some("tokenmint.dev/token"));
        assert_eq!(secret.labels()["app.kubernetes.io/managed-by"], "tokenmint");
        let owner = &secret.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("DatasourceGrant", Some(true))
        );
        let claims = c.claims(&token);
        assert_eq!(claims["identity"]["source_role"]["ds"], "Data_3_E");
        assert_eq!(claims["identity"]["filter"], "USER_id = 123");
        assert!(secret.data.as_ref().unwrap().contains_key("expires-at"));
        c.eventually("Ready=True", || async {
            (c.ready_reason("dashboards").await? == ("True".into(), "TokenReady".into()))
                .then_some(())
        })
        .await;
        let keys: Api<Secret> = c.api();
        let key = keys.get("analytics-key").await.unwrap();
        assert!(
            String::from_utf8(key.data.unwrap()["key"].0.clone())
                .unwrap()
                .starts_with("tmk_")
        );

        // Steady state: a trigger (a label on the grant) causes no write.
        let writes_before = c.metrics.encode();
        let rv = secret.resource_version();
        let grants: Api<DatasourceGrant> = c.api();
        grants
            .patch(
                "dashboards",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"poke": "1"}}})),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            keys.get("dashboards-token")
                .await
                .unwrap()
                .resource_version(),
            rv
        );
        assert_eq!(c.metrics.encode(), writes_before, "no write on a resync");

        // Deleted by hand: restored with a new token.
        keys.delete("dashboards-token", &DeleteParams::default())
            .await
            .unwrap();
        let jti = claims["jti"].clone();
        let restored = c
            .eventually("the restored Secret", || async {
                let (token, _) = c.token("dashboards-token").await;
                let claims = c.claims(&token);
                (claims["jti"] != jti).then_some(claims)
            })
            .await;
        assert_eq!(restored["identity"]["source_role"]["ds"], "Data_3_E");

        // Edited by hand: restored.
        keys.patch(
            "dashboards-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": "edited"}})),
        )
        .await
        .unwrap();
        c.eventually("the edited Secret to be restored", || async {
            let (token, _) = c.token("dashboards-token").await;
            (token != "edited").then_some(())
        })
        .await;

        // Permission withdrawn: Secret removed, Ready=False Forbidden.
        let service_keys: Api<ServiceKey> = c.api();
        service_keys
            .patch(
                "analytics",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"dataSources": ["Other"]}})),
            )
            .await
            .unwrap();
        c.eventually("Ready=False Forbidden", || async {
            (c.ready_reason("dashboards").await? == ("False".into(), "Forbidden".into()))
                .then_some(())
        })
        .await;
        c.eventually("the token Secret to be deleted", || async {
            keys.get_opt("dashboards-token")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster from KUBECONFIG"]
async fn a_foreign_secret_is_never_overwritten() {
    Cluster::run(|c| async move {
        let secrets: Api<Secret> = c.api();
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "dashboards-token"},
                    "stringData": {"token": "theirs"}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        c.create(service_key(&["*"])).await;
        c.create(grant()).await;
        c.eventually("Ready=False SecretConflict", || async {
            (c.ready_reason("dashboards").await? == ("False".into(), "SecretConflict".into()))
                .then_some(())
        })
        .await;
        let secret = secrets.get("dashboards-token").await.unwrap();
        assert_eq!(secret.data.unwrap()["token"].0, b"theirs");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Issue 19 on a real API server: `serve` replicas in-process, over the cluster's watches.

/// A `serve` replica of the test namespace: its store, router, denylist and metrics text.
struct Replica {
    store: Arc<tokenmint::key_store::SharedKeyStore>,
    router: axum::Router,
    denylist: Arc<tokenmint::revocation::Denylist>,
    state: tokenmint::http::AppState,
}

impl Cluster {
    /// A `serve` replica as `serve` builds one in a cluster, scoped to the test namespace, its
    /// keyless callers checked with TokenReview.
    fn replica(&self) -> Replica {
        let args = tokenmint::cli::CommonArgs {
            algorithm: Algorithm::HS256,
            issuer: ISSUER.into(),
            namespace: self.namespace.clone(),
            watch_namespaces: vec![self.namespace.clone()],
            keyring_secret: "tokenmint-keyring".into(),
        };
        let denylist = Arc::new(tokenmint::revocation::Denylist::default());
        let store = tokenmint::http::cluster::start(
            self.client.clone(),
            &args,
            &Default::default(),
            denylist.clone(),
        );
        let reviewer = tokenmint::tokenreview::Reviewer::new(
            Api::all(self.client.clone()),
            vec!["tokenmint".into()],
            tokenmint::tokenreview::Issuers::discover(self.client.clone()),
        );
        let state = tokenmint::http::AppState::from_config(tokenmint::http::Config {
            store: store.clone(),
            issuer: ISSUER.into(),
            denylist: denylist.clone(),
            revoker: tokenmint::revocation::Revoker::Kube {
                api: self.api(),
                denylist: denylist.clone(),
            },
            watch_restarts: Default::default(),
            reviewer: Some(Arc::new(reviewer)),
        });
        Replica {
            store,
            router: tokenmint::http::router(state.clone()),
            denylist,
            state,
        }
    }
}

/// One request to a replica: status and JSON body.
async fn ask(router: &axum::Router, uri: &str, auth: &str, form: Option<&str>) -> (u16, Value) {
    use tower::ServiceExt;
    let mut request = axum::http::Request::post(uri).header("authorization", auth);
    let body = match form {
        Some(form) => {
            request = request.header("content-type", "application/x-www-form-urlencoded");
            axum::body::Body::from(form.to_owned())
        }
        None => axum::body::Body::from(
            "{\"data_source\": \"Data_3_E\", \"workspaceName\": \"w1\", \"clientId\": \"c\"}",
        ),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn active(replica: &Replica, key: &str, token: &str) -> bool {
    let (status, answer) = ask(
        &replica.router,
        "/oauth/introspect",
        &format!("Bearer {key}"),
        Some(&format!("token={token}")),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["active"] == true
}

/// The service key in the ServiceKey `analytics`'s Secret, once there.
async fn service_key_value(c: &Cluster) -> String {
    c.value_of("analytics-key", "key").await
}

impl Cluster {
    /// The value of `key` in Secret `name`, once there.
    async fn value_of(&self, name: &str, key: &str) -> String {
        let api: Api<Secret> = self.api();
        self.eventually(&format!("Secret {name}"), || {
            let api = api.clone();
            let (name, key) = (name.to_owned(), key.to_owned());
            async move {
                let secret = api.get_opt(&name).await.unwrap()?;
                let value = secret.data.as_ref()?.get(&key)?.0.clone();
                Some(String::from_utf8(value).unwrap())
            }
        })
        .await
    }
}

#[tokio::test]
#[ignore = "needs a cluster from KUBECONFIG"]
async fn every_kind_of_token_dies_with_its_key_on_every_replica_within_a_second() {
    Cluster::run(|c| async move {
        c.create(service_key(&["*"])).await;
        c.create(grant()).await;
        let key = service_key_value(&c).await;
        let (granted, _) = c.token("dashboards-token").await;
        let (a, b) = (c.replica(), c.replica());
        c.eventually("both replicas ready", || async {
            (a.store.readiness().is_ok() && b.store.readiness().is_ok()).then_some(())
        })
        .await;
        let bearer = format!("Bearer {key}");
        let mut tokens = vec![granted];
        for (uri, field) in [
            ("/api/admin/v1/api_token/get_access_token", "access_token"),
            ("/api/admin/v1/get_datasource_token", "access_token"),
            ("/api/v1/guest-token/create", "token"),
            ("/token", "access_token"),
        ] {
            let auth = if uri == "/token" {
                format!("Basic {key}")
            } else {
                bearer.clone()
            };
            let (status, body) = ask(&a.router, uri, &auth, None).await;
            assert!(status < 300, "{uri}: {status} {body}");
            tokens.push(body[field].as_str().unwrap().to_owned());
        }
        for token in &tokens {
            assert!(active(&b, &key, token).await);
        }

        // The key is replaced in its Secret.
        let secrets: Api<Secret> = c.api();
        let replaced = "tmk_replaced_in_the_e2e_test_0123456789";
        secrets
            .patch(
                "analytics-key",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"key": replaced}})),
            )
            .await
            .unwrap();
        // Within a second every replica has the new key (one watch event) and refuses every
        // earlier token.
        let started = tokio::time::Instant::now();
        for replica in [&a, &b] {
            while replica.store.keys().by_key(replaced.as_bytes()).is_none() {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "the new key took over a second"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for token in &tokens {
                assert!(!active(replica, replaced, token).await);
            }
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        // The operator mints the grant's token again, bound to the new key.
        c.eventually("the grant's token re-minted", || async {
            let (token, _) = c.token("dashboards-token").await;
            active(&a, replaced, &token).await.then_some(())
        })
        .await;

        // Deleted and created again under its name: the tokens of the one before are void.
        let fresh = ask(
            &a.router,
            "/api/admin/v1/api_token/get_access_token",
            &format!("Bearer {replaced}"),
            None,
        )
        .await
        .1["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let keys: Api<ServiceKey> = c.api();
        keys.delete("analytics", &DeleteParams::foreground())
            .await
            .unwrap();
        c.eventually("the ServiceKey gone", || async {
            keys.get_opt("analytics")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        c.create(service_key(&["*"])).await;
        let again = c.value_of("analytics-key", "key").await;
        c.eventually("both replicas index the new ServiceKey", || async {
            (a.store.keys().by_key(again.as_bytes()).is_some()
                && b.store.keys().by_key(again.as_bytes()).is_some())
            .then_some(())
        })
        .await;
        for replica in [&a, &b] {
            assert!(!active(replica, &again, &fresh).await);
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster from KUBECONFIG"]
async fn ten_thousand_revocations_are_honoured_by_a_new_replica_within_5_seconds() {
    Cluster::run(|c| async move {
        use tokenmint::revocation::{Origin, Revocation, Revoker, Target};
        let writer = Revoker::Kube {
            api: c.api(),
            denylist: Arc::new(tokenmint::revocation::Denylist::new(usize::MAX, usize::MAX)),
        };
        let now = Timestamp::now().as_second();
        let n = 10_000;
        for i in 0..n {
            writer
                .revoke(&Revocation {
                    target: Target::Token {
                        jti: uuid::Uuid::new_v4().to_string(),
                        expires_at: now + 60 + (i * 86_400) / n,
                    },
                    service_key_uid: "uid-e2e".into(),
                    origin: Origin::System,
                    reason: "e2e".into(),
                })
                .await
                .unwrap();
        }
        let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = c.api();
        let objects = configmaps
            .list(&kube::api::ListParams::default().labels(&tokenmint::revocation::selector()))
            .await
            .unwrap();
        assert!(objects.items.len() <= 20, "{} objects", objects.items.len());
        let started = tokio::time::Instant::now();
        let third = c.replica();
        while third.denylist.len() < n as usize {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{} held after 5 s",
                third.denylist.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "{} ConfigMaps; a new replica honoured all {n} after {:?}",
            objects.items.len(),
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster from KUBECONFIG"]
async fn ten_thousand_junk_bearer_tokens_cause_no_tokenreview() {
    Cluster::run(|c| async move {
        let replica = c.replica();
        c.eventually("ready", || async {
            replica.store.readiness().is_ok().then_some(())
        })
        .await;
        for i in 0..10_000 {
            let junk = format!("Bearer junk{i}.junk{i}.junk{i}");
            let (status, _) = ask(
                &replica.router,
                "/api/admin/v1/api_token/get_access_token",
                &junk,
                None,
            )
            .await;
            assert_eq!(status, 401);
        }
        let metrics = replica.state.metrics.encode().unwrap();
        for outcome in ["accepted", "refused", "error"] {
            assert!(
                !metrics.lines().any(|l| l.starts_with(&format!(
                    "tokenmint_tokenreviews_total{{outcome=\"{outcome}\"}}"
                )) && !l.ends_with(" 0")),
                "{metrics}"
            );
        }
    })
    .await;
}

/// A workload of `kind` in the test namespace whose pod template is `pod` (a CronJob's in its
/// job template), created through the API server.
async fn workload(c: &Cluster, kind: &str, name: &str, pod: Value) {
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": pod});
    let (group, spec) = match kind {
        "CronJob" => (
            "batch",
            json!({"schedule": "0 0 1 1 *", "suspend": true,
                   "jobTemplate": {"spec": {"template": template}}}),
        ),
        "StatefulSet" => (
            "apps",
            json!({"serviceName": name, "replicas": 0,
                   "selector": {"matchLabels": {"app": name}}, "template": template}),
        ),
        _ => (
            "apps",
            json!({"replicas": 0, "selector": {"matchLabels": {"app": name}}, "template": template}),
        ),
    };
    let resource =
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, "v1", kind));
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(c.client.clone(), &c.namespace, &resource);
    let object = json!({"apiVersion": format!("{group}/v1"), "kind": kind,
                        "metadata": {"name": name}, "spec": spec});
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap();
}

/// A container reading the token as `how` says, and the volumes it needs.
fn reading(how: &str) -> Value {
    let container = |extra: Value| {
        let mut c = json!({"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let secret_volume = json!([{"name": "t", "secret": {"secretName": "dashboards-token"}}]);
    match how {
        "volume" => json!({"volumes": secret_volume, "containers": [container(
            json!({"volumeMounts": [{"name": "t", "mountPath": "/var/run/tokenmint"}]}))]}),
        "projected" => json!({"volumes": [{"name": "t", "projected": {"sources": [
                {"secret": {"name": "dashboards-token"}}]}}],
            "containers": [container(json!({"volumeMounts": [{"name": "t", "mountPath": "/t"}]}))]}),
        "subPath" => json!({"volumes": secret_volume, "containers": [container(
            json!({"volumeMounts": [{"name": "t", "mountPath": "/etc/token", "subPath": "token"}]}))]}),
        "env" => json!({"containers": [container(json!({"env": [{"name": "TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "dashboards-token", "key": "token"}}}]}))]}),
        "envFrom" => json!({"containers": [container(json!({"envFrom": [
            {"secretRef": {"name": "dashboards-token"}}]}))]}),
        other => panic!("{other}"),
    }
}

#[tokio::test]
#[ignore = "needs a cluster from KUBECONFIG"]
async fn consumers_are_found_and_only_those_that_miss_a_rotation_are_restarted() {
    Cluster::run(|c| async move {
        c.create(service_key(&["Data_3_E"])).await;
        let readers = [
            ("Deployment", "by-volume", "volume", false),
            ("Deployment", "by-projected", "projected", false),
            ("Deployment", "by-env", "env", true),
            ("Deployment", "by-env-from", "envFrom", true),
            ("Deployment", "by-sub-path", "subPath", true),
            ("StatefulSet", "db", "envFrom", true),
            ("CronJob", "export", "env", false),
        ];
        for (kind, name, how, _) in readers {
            workload(&c, kind, name, reading(how)).await;
        }
        let mut grant = grant();
        grant["spec"]["restartConsumers"] = json!(true);
        c.create(grant).await;
        let grants: Api<DatasourceGrant> = c.api();
        let status = c
            .eventually("the seven consumers in the status", || async {
                let status = grants.get("dashboards").await.unwrap().status?;
                (status.consumer_count == Some(7)).then_some(status)
            })
            .await;
        for (kind, name, how, _) in readers {
            let listed = status.consumers.iter().find(|x| x.name == name).unwrap();
            assert_eq!(
                (
                    format!("{:?}", listed.kind),
                    serde_json::to_value(listed.mode).unwrap()
                ),
                (kind.to_owned(), json!(how)),
                "{name}"
            );
        }
        // Only the CronJob keeps a stale token (it cannot be restarted).
        assert_eq!(status.consumers_missing_rotation, Some(1));
        // `kubectl get dsg -o wide`: the server's table has the two columns.
        let table = c
            .client
            .request_text(
                axum::http::Request::get(format!(
                    "/apis/tokenmint.dev/v1alpha1/namespaces/{}/datasourcegrants/dashboards",
                    c.namespace
                ))
                .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
                .body(Vec::new())
                .unwrap(),
            )
            .await
            .unwrap();
        let table: Value = serde_json::from_str(&table).unwrap();
        let columns: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let cells = &table["rows"][0]["cells"];
        let cell = |name: &str| cells[columns.iter().position(|c| *c == name).unwrap()].clone();
        assert_eq!(
            (cell("Consumers"), cell("Missing Rotation")),
            (json!(7), json!(1))
        );

        // A rotation: the pod template of exactly the readers that miss it changes, once.
        let (token, _) = c.token("dashboards-token").await;
        let first = c.claims(&token)["jti"].clone();
        grants
            .patch(
                "dashboards",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"tokenmint.dev/renew": "1"}}})),
            )
            .await
            .unwrap();
        let secrets: Api<Secret> = c.api();
        c.eventually("the restarts recorded on the Secret", || async {
            let secret = secrets.get("dashboards-token").await.unwrap();
            let a = secret.annotations();
            (a.get("tokenmint.dev/token-id") != first.as_str().map(str::to_owned).as_ref()
                && a.get("tokenmint.dev/restarted-for") == a.get("tokenmint.dev/token-id"))
            .then_some(())
        })
        .await;
        let restarted_at = |kind: &'static str, name: &'static str| {
            let c = c.clone();
            async move {
                let group = if kind == "CronJob" { "batch" } else { "apps" };
                let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                    group, "v1", kind,
                ));
                let api: Api<kube::api::DynamicObject> =
                    Api::namespaced_with(c.client.clone(), &c.namespace, &resource);
                let object = api.get(name).await.unwrap();
                let template = match kind {
                    "CronJob" => &object.data["spec"]["jobTemplate"]["spec"]["template"],
                    _ => &object.data["spec"]["template"],
                };
                template["metadata"]["annotations"]["tokenmint.dev/restartedAt"].clone()
            }
        };
        let mut first_restart = Vec::new();
        for (kind, name, _, restarts) in readers {
            let at = restarted_at(kind, name).await;
            assert_eq!(at.is_string(), restarts, "{kind} {name}");
            first_restart.push(at);
        }
        // Once: nothing changes after a further wait.
        tokio::time::sleep(Duration::from_secs(6)).await;
        for ((kind, name, _, _), before) in readers.iter().zip(first_restart) {
            assert_eq!(
                restarted_at(kind, name).await,
                before,
                "{kind} {name} restarted again"
            );
        }
    })
    .await;
}
