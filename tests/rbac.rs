//! Least-privilege RBAC audit, code side: the real code paths of both containers run against a
//! recording fake Kubernetes API server, which derives from every request what the API
//! server's authorizer would check: (API group, resource[/subresource], verb, namespace, name).
//! The rights used must equal the table `charts/tokenmint/rbac-requirements.txt` exactly: every
//! call is granted (nothing is missing from the chart) and every granted right is used (nothing
//! is granted for nothing). `.ci/check_chart.py` checks the chart's rendered Roles against the
//! same table, so code, table and chart cannot drift apart.
//!
//! Exercised:
//! - operator start-up as `src/operator.rs` runs it: `keyring::load_or_create` (create path, then
//!   a second replica's load of the existing keyring), the keyring watch, leader election with
//!   kube-lease-manager exactly as the operator builds it (shorter durations, so a renewal is
//!   seen within a second), the pending-rotation check with `rotate_if_requested`, then
//!   `reconcile::controllers::run` over all namespaces with the Kubernetes Events recorder: a
//!   ServiceKey with a session token, a DatasourceGrant with `rolloutRestart` whose token is
//!   rotated, a forbidden grant (its token Secret is deleted), a grant whose Secret belongs to
//!   someone else (SecretConflict), a GuestTokenRequest; shutdown releases the Lease;
//! - the restart worker (`Restarter::spawn`) restarting a Deployment, a StatefulSet and a
//!   DaemonSet, twice for one of them so the Events recorder patches an event series;
//! - the serve container's cluster store (`http::cluster::start`);
//! - both again with `--watch-namespace team-a` (the chart then grants the watched rights by a
//!   Role per namespace): no request may be cluster-wide or leave the watched and release
//!   namespaces.
//!
//! Not exercised: `operator::run`'s own glue (it needs a kubeconfig, a listener and signals),
//! which this test mirrors call for call. Its one extra request, `GET /version` in `connect`, is
//! a non-resource URL every authenticated user may read (system:public-info-viewer), so it
//! needs no rule.
//!
//! Besides the requests themselves, the fake derives the two checks the API server makes on a
//! request's behalf: `create` for a server-side apply that creates an object, and the
//! OwnerReferencesPermissionEnforcement admission plugin's `update` of `<owner>/finalizers` for
//! an ownerReference with blockOwnerDeletion=true.

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokenmint::cli::CommonArgs;
use tokenmint::crd::{WorkloadKind, WorkloadRef};
use tokenmint::keyring::Algorithm;
use tokenmint::reconcile::controllers::{self, Readiness, Shared};
use tokenmint::reconcile::events::Events;
use tokenmint::reconcile::keyring::{self, ROTATE_ANNOTATION};
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::reconcile::restart::{self, Restarter};
use tokenmint::reconcile::{Clock, MANAGED_BY_LABEL};
use tokio::sync::watch;

const TABLE: &str = include_str!("../charts/tokenmint/rbac-requirements.txt");
const RELEASE_NS: &str = "tokenmint-system";
const WATCHED_NS: &str = "team-a";
const KEYRING: &str = "tokenmint-keyring";
const LEASE: &str = "tokenmint-leader";
const ALGORITHM: Algorithm = Algorithm::HS256;
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The table

/// One row of the table (and the normalised form of an observed right).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Right {
    /// `watched` or `release`.
    scope: String,
    /// `core` for the core group.
    group: String,
    resource: String,
    verb: String,
    /// `-`, `keyring` or `lease`.
    name: String,
    /// `call`, `apply-create` or `admission` (`restart-call` rows compare as `call`).
    how: String,
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.scope, self.group, self.resource, self.verb, self.name, self.how
        )
    }
}

/// The rows of the table, with `restart-call` kept as written.
fn table() -> Vec<Right> {
    TABLE
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.len(), 6, "table row needs 6 columns: {line:?}");
            assert!(
                ["watched", "release"].contains(&cols[0]),
                "scope of {line:?}"
            );
            assert!(
                ["-", "keyring", "lease"].contains(&cols[4]),
                "name of {line:?}"
            );
            assert!(
                ["call", "restart-call", "apply-create", "admission"].contains(&cols[5]),
                "how of {line:?}"
            );
            Right {
                scope: cols[0].into(),
                group: cols[1].into(),
                resource: cols[2].into(),
                verb: cols[3].into(),
                name: cols[4].into(),
                how: cols[5].into(),
            }
        })
        .collect()
}

/// The table as the observed set should look (the test always exercises restarts).
fn expected() -> BTreeSet<Right> {
    table()
        .into_iter()
        .map(|mut r| {
            if r.how == "restart-call" {
                r.how = "call".into();
            }
            r
        })
        .collect()
}

#[test]
fn table_is_well_formed() {
    let rows = table();
    let unique: BTreeSet<_> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "duplicate rows in the table");
    // resourceNames only where RBAC can use them: never on create (the name is not in the URL).
    for r in &rows {
        if r.name != "-" {
            assert_eq!(r.scope, "release", "{r}");
            assert_ne!(r.verb, "create", "{r}");
        }
    }
    // The optional restart rights are exactly the three workload kinds' patch.
    let restarts: BTreeSet<_> = rows
        .iter()
        .filter(|r| r.how == "restart-call")
        .map(|r| (r.group.as_str(), r.resource.as_str(), r.verb.as_str()))
        .collect();
    assert_eq!(
        restarts,
        BTreeSet::from([
            ("apps", "daemonsets", "patch"),
            ("apps", "deployments", "patch"),
            ("apps", "statefulsets", "patch"),
        ])
    );
}

/// The operator never sends a request to a `/finalizers` subresource (it sets no finalizers),
/// so no recording can show this right being used by a call. It is required by the API server
/// all the same: with the OwnerReferencesPermissionEnforcement admission plugin enabled, a
/// write that sets an ownerReference with `blockOwnerDeletion: true` is rejected unless the
/// writer may `update` the owner's `finalizers` subresource. tokenmint sets
/// `blockOwnerDeletion: true` on every token and key Secret (`token_secret::Owner::of`), so the
/// table must grant it for all three owner kinds, marked `admission`. The main test checks the
/// other half: the recorded Secret writes do carry `blockOwnerDeletion: true`, for each kind.
#[test]
fn table_grants_finalizers_update_for_block_owner_deletion() {
    let rows = table();
    for kind in ["servicekeys", "datasourcegrants", "guesttokenrequests"] {
        let row = Right {
            scope: "watched".into(),
            group: "tokenmint.dev".into(),
            resource: format!("{kind}/finalizers"),
            verb: "update".into(),
            name: "-".into(),
            how: "admission".into(),
        };
        assert!(rows.contains(&row), "missing: {row}");
    }
    assert!(
        rows.iter()
            .filter(|r| r.how == "admission")
            .all(|r| r.resource.ends_with("/finalizers") && r.verb == "update"),
        "only /finalizers update is an admission-only right"
    );
}

// ---------------------------------------------------------------------------------------------
// The recording fake API server

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    /// A request the client sent.
    Request,
    /// The API server's create check of a server-side apply that creates the object.
    ApplyCreate,
    /// OwnerReferencesPermissionEnforcement's check of blockOwnerDeletion=true.
    Admission,
}

#[derive(Clone, Debug)]
struct Call {
    /// Which part of the test was running when the request came (for messages; background
    /// tasks such as the Lease renewals show up in whichever phase is current).
    phase: String,
    origin: Origin,
    group: String,
    resource: String,
    verb: String,
    namespace: Option<String>,
    name: Option<String>,
    /// `METHOD path?query` of the request (or of the request the check was derived from).
    request: String,
}

impl Call {
    fn right(&self) -> Right {
        let scope = if self.namespace.as_deref() == Some(RELEASE_NS) {
            "release"
        } else {
            // another namespace, or all namespaces (a ClusterRole)
            "watched"
        };
        let name = match (scope, self.name.as_deref()) {
            ("release", Some(KEYRING)) => "keyring".to_owned(),
            ("release", Some(LEASE)) => "lease".to_owned(),
            ("release", Some(other)) => format!("unexpected-name:{other}"),
            _ => "-".to_owned(),
        };
        Right {
            scope: scope.into(),
            group: if self.group.is_empty() {
                "core".into()
            } else {
                self.group.clone()
            },
            resource: self.resource.clone(),
            verb: self.verb.clone(),
            name,
            how: match self.origin {
                Origin::Request => "call",
                Origin::ApplyCreate => "apply-create",
                Origin::Admission => "admission",
            }
            .into(),
        }
    }
}

/// (group, resource, namespace, name) of a stored object.
type Key = (String, String, String, String);

#[derive(Default)]
struct State {
    phase: String,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    calls: Vec<Call>,
    /// Bodies of every write to a Secret.
    secret_writes: Vec<Value>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

struct Parsed {
    group: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Parsed> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    Some(Parsed {
        group: group.into(),
        namespace,
        resource: resource.into(),
        name,
        subresource,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// RFC 7386 JSON merge patch (also used, simplified, for strategic merge and apply patches:
/// what the fake returns only has to be a plausible object).
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().unwrap();
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": reason, "message": reason, "code": code.as_u16()}),
    )
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// Matches `key=value[,key=value]` label selectors and `metadata.name=` field selectors.
fn selected(object: &Value, params: &BTreeMap<String, String>) -> bool {
    let labels_ok = params.get("labelSelector").is_none_or(|selector| {
        selector.split(',').all(|term| {
            let (k, v) = term.split_once('=').expect("only equality label selectors");
            object["metadata"]["labels"][k].as_str() == Some(v)
        })
    });
    let fields_ok = params.get("fieldSelector").is_none_or(|selector| {
        let name = selector
            .strip_prefix("metadata.name=")
            .expect("only metadata.name field selectors");
        object["metadata"]["name"].as_str() == Some(name)
    });
    labels_ok && fields_ok
}

impl Fake {
    fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap();
                Ok::<_, std::convert::Infallible>(fake.handle(&parts, &body))
            }
        });
        kube::Client::new(service, "default")
    }

    fn phase(&self, phase: &str) {
        self.0.lock().unwrap().phase = phase.into();
    }

    fn put(&self, group: &str, resource: &str, object: Value) {
        let mut state = self.0.lock().unwrap();
        state.rv += 1;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let key = (
            group.to_owned(),
            resource.to_owned(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            object["metadata"]["name"].as_str().unwrap().to_owned(),
        );
        state.objects.insert(key, object);
    }

    fn get(&self, group: &str, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (group.into(), resource.into(), namespace.into(), name.into());
        self.0.lock().unwrap().objects.get(&key).cloned()
    }

    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    fn secret_writes(&self) -> Vec<Value> {
        self.0.lock().unwrap().secret_writes.clone()
    }

    /// Whether a call of `phase` matches.
    fn saw(&self, phase: &str, verb: &str, resource: &str, name: Option<&str>) -> bool {
        self.calls().iter().any(|c| {
            c.phase == phase
                && c.origin == Origin::Request
                && c.verb == verb
                && c.resource == resource
                && (name.is_none() || c.name.as_deref() == name)
        })
    }

    fn count(&self, verb: &str, resource: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.origin == Origin::Request && c.verb == verb && c.resource == resource)
            .count()
    }

    fn handle(&self, parts: &axum::http::request::Parts, body: &[u8]) -> Response<Body> {
        let method = parts.method.clone();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let request = format!("{method} {path}?{query}");
        let params = query_params(&query);
        let Some(p) = parse_path(&path) else {
            // Non-resource URLs (/version, discovery) need no RBAC rule of ours: the default
            // system:public-info-viewer / system:discovery roles grant them to everyone.
            let mut state = self.0.lock().unwrap();
            let phase = state.phase.clone();
            state.calls.push(Call {
                phase,
                origin: Origin::Request,
                group: "<non-resource>".into(),
                resource: path.clone(),
                verb: method.to_string().to_lowercase(),
                namespace: None,
                name: None,
                request,
            });
            return status(StatusCode::NOT_FOUND, "NotFound");
        };
        // The verb, as the API server's RequestInfo derives it.
        let verb = match (&method, p.name.is_some()) {
            (&Method::GET, true) => "get",
            (&Method::GET, false)
                if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) =>
            {
                "watch"
            }
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            (m, _) => panic!("unexpected method {m} {path}"),
        };
        let resource = match &p.subresource {
            Some(sub) => format!("{}/{sub}", p.resource),
            None => p.resource.clone(),
        };
        // list/watch with a metadata.name field selector is authorised against that name.
        let name = p.name.clone().or_else(|| {
            params
                .get("fieldSelector")
                .and_then(|s| s.strip_prefix("metadata.name="))
                .map(str::to_owned)
        });
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).unwrap_or(Value::Null)
        };

        let mut state = self.0.lock().unwrap();
        let phase = state.phase.clone();
        let call = Call {
            phase: phase.clone(),
            origin: Origin::Request,
            group: p.group.clone(),
            resource: resource.clone(),
            verb: verb.into(),
            namespace: p.namespace.clone(),
            name: name.clone(),
            request: request.clone(),
        };
        state.calls.push(call.clone());
        if verb == "watch" {
            // Stays open and silent: every cache works from its initial list.
            drop(state);
            return Response::new(Body::from_stream(futures::stream::pending::<
                Result<Vec<u8>, std::io::Error>,
            >()));
        }

        let ns = p.namespace.clone().unwrap_or_default();
        let key =
            |name: &str| -> Key { (p.group.clone(), p.resource.clone(), ns.clone(), name.into()) };
        // Derived checks of writes: blockOwnerDeletion (admission) and Secret bodies.
        let derive = |state: &mut State, object: &Value, existing: Option<&Value>| {
            if p.resource == "secrets" && p.subresource.is_none() {
                state.secret_writes.push(object.clone());
            }
            let old_refs = existing
                .map(|e| e["metadata"]["ownerReferences"].clone())
                .unwrap_or(Value::Null);
            for owner in object["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let already =
                    old_refs.as_array().into_iter().flatten().any(|o| {
                        o["uid"] == owner["uid"] && o["blockOwnerDeletion"] == json!(true)
                    });
                if owner["blockOwnerDeletion"] == json!(true) && !already {
                    let api_version = owner["apiVersion"].as_str().unwrap_or_default();
                    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                    let plural = format!(
                        "{}s",
                        owner["kind"].as_str().unwrap_or_default().to_lowercase()
                    );
                    state.calls.push(Call {
                        origin: Origin::Admission,
                        group: group.into(),
                        resource: format!("{plural}/finalizers"),
                        verb: "update".into(),
                        name: owner["name"].as_str().map(str::to_owned),
                        ..call.clone()
                    });
                }
            }
        };
        match verb {
            "get" => match state.objects.get(&key(p.name.as_deref().unwrap())) {
                Some(object) => respond(StatusCode::OK, object),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            "list" => {
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|((g, r, n, _), o)| {
                        *g == p.group
                            && *r == p.resource
                            && (p.namespace.is_none() || *n == ns)
                            && selected(o, &params)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                respond(
                    StatusCode::OK,
                    &json!({"apiVersion": "v1", "kind": "List",
                            "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
                )
            }
            "create" => {
                let mut object = body;
                let name = object["metadata"]["name"].as_str().unwrap().to_owned();
                if state.objects.contains_key(&key(&name)) {
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                derive(&mut state, &object, None);
                state.rv += 1;
                object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
                object["metadata"]["uid"] = json!(format!("uid-{name}"));
                object["metadata"]["namespace"] = json!(ns);
                state.objects.insert(key(&name), object.clone());
                respond(StatusCode::CREATED, &object)
            }
            "update" => {
                let name = p.name.clone().unwrap();
                let Some(existing) = state.objects.get(&key(&name)).cloned() else {
                    return status(StatusCode::NOT_FOUND, "NotFound");
                };
                if body["metadata"]["resourceVersion"] != existing["metadata"]["resourceVersion"] {
                    return status(StatusCode::CONFLICT, "Conflict");
                }
                derive(&mut state, &body, Some(&existing));
                let mut object = body;
                state.rv += 1;
                object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
                state.objects.insert(key(&name), object.clone());
                respond(StatusCode::OK, &object)
            }
            "patch" => {
                let name = p.name.clone().unwrap();
                let apply = parts
                    .headers
                    .get("content-type")
                    .is_some_and(|c| c.as_bytes().starts_with(b"application/apply-patch"));
                let existing = state.objects.get(&key(&name)).cloned();
                let mut object = match (&existing, apply) {
                    (Some(o), _) => o.clone(),
                    (None, true) => {
                        // Server-side apply creating the object: the API server also checks
                        // create.
                        state.calls.push(Call {
                            origin: Origin::ApplyCreate,
                            verb: "create".into(),
                            ..call.clone()
                        });
                        json!({"metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")}})
                    }
                    (None, false) => return status(StatusCode::NOT_FOUND, "NotFound"),
                };
                if p.subresource.is_none() {
                    derive(&mut state, &body, existing.as_ref());
                }
                merge(&mut object, &body);
                state.rv += 1;
                object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
                state.objects.insert(key(&name), object.clone());
                respond(StatusCode::OK, &object)
            }
            "delete" => match state.objects.remove(&key(p.name.as_deref().unwrap())) {
                Some(object) => respond(StatusCode::OK, &object),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            other => panic!("the fake does not serve {other} ({request})"),
        }
    }
}

/// Waits until `done` holds, or fails after [`DEADLINE`] with the calls seen so far.
async fn wait_for(fake: &Fake, what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            let calls: Vec<String> = fake
                .calls()
                .iter()
                .map(|c| format!("[{}] {:?} {}", c.phase, c.origin, c.request))
                .collect();
            panic!("timed out waiting for {what}; calls: {calls:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn owner_ref(kind: &str, name: &str) -> Value {
    json!([{"apiVersion": "tokenmint.dev/v1alpha1", "kind": kind, "name": name,
            "uid": format!("uid-{name}"), "controller": true, "blockOwnerDeletion": true}])
}

fn custom(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": kind,
           "metadata": {"name": name, "namespace": WATCHED_NS, "uid": format!("uid-{name}"), "generation": 1},
           "spec": spec})
}

fn seed(fake: &Fake) {
    let g = "tokenmint.dev";
    fake.put(
        g,
        "servicekeys",
        custom(
            "ServiceKey",
            "analytics",
            json!({"principal": {"id": "1", "email": "jcw@example.com", "name": "jcw"},
                   "dataSources": ["Data_3_E"], "workspaces": ["*"],
                   "sessionToken": {"secretName": "analytics-session"}}),
        ),
    );
    // rolloutRestart, with a token Secret of an older spec: re-minted (a rotation), so its
    // consumers are due a restart.
    fake.put(
        g,
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            "dashboards",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E",
                   "rolloutRestart": [{"kind": "Deployment", "name": "web"}]}),
        ),
    );
    fake.put(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/token",
               "metadata": {"name": "dashboards-token", "namespace": WATCHED_NS, "uid": "uid-secret-dashboards",
                            "labels": {MANAGED_BY_LABEL: "tokenmint", "tokenmint.dev/owner-kind": "DatasourceGrant",
                                       "tokenmint.dev/secret-role": "token"},
                            "annotations": {"tokenmint.dev/spec-hash": "stale"},
                            "ownerReferences": owner_ref("DatasourceGrant", "dashboards")},
               "data": {"token": "c3RhbGU="}}),
    );
    // A new grant: its token Secret is created by server-side apply.
    fake.put(
        g,
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            "reports",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}),
        ),
    );
    // Not allowed by the ServiceKey: its existing token Secret must go.
    fake.put(
        g,
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            "forbidden",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Other"}),
        ),
    );
    fake.put(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/token",
               "metadata": {"name": "forbidden-token", "namespace": WATCHED_NS, "uid": "uid-secret-forbidden",
                            "labels": {MANAGED_BY_LABEL: "tokenmint", "tokenmint.dev/owner-kind": "DatasourceGrant",
                                       "tokenmint.dev/secret-role": "token"},
                            "ownerReferences": owner_ref("DatasourceGrant", "forbidden")},
               "data": {"token": "eA=="}}),
    );
    // Its Secret name is taken by someone else's Secret (not in the label-selected cache).
    fake.put(
        g,
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            "conflicting",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}),
        ),
    );
    fake.put(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "conflicting-token", "namespace": WATCHED_NS, "uid": "uid-foreign"},
               "data": {"password": "eA=="}}),
    );
    fake.put(
        g,
        "guesttokenrequests",
        custom(
            "GuestTokenRequest",
            "embed",
            json!({"serviceKeyRef": {"name": "analytics"}, "workspaceName": "ws", "clientId": "portal",
                   "expiryTime": 3_600_000}),
        ),
    );
    for (resource, kind, name) in [
        ("deployments", "Deployment", "web"),
        ("statefulsets", "StatefulSet", "db"),
        ("daemonsets", "DaemonSet", "agent"),
    ] {
        fake.put(
            "apps",
            resource,
            json!({"apiVersion": "apps/v1", "kind": kind,
                   "metadata": {"name": name, "namespace": WATCHED_NS, "uid": format!("uid-{name}")},
                   "spec": {"selector": {}, "template": {}}}),
        );
    }
}

fn recorder(client: &kube::Client) -> Events {
    Events::Kube(Recorder::new(
        client.clone(),
        Reporter {
            controller: "tokenmint".into(),
            instance: Some("tokenmint-0".into()),
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// The audit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_uses_exactly_the_rbac_table() {
    let fake = Fake::default();
    seed(&fake);
    let client = fake.client();
    let metrics = Arc::new(Metrics::default());

    // --- operator start-up, as src/operator.rs runs it ---
    fake.phase("operator: keyring");
    let keyring_api: Api<Secret> = Api::namespaced(client.clone(), RELEASE_NS);
    let now = jiff::Timestamp::now();
    let (ring, _) =
        keyring::load_or_create(&keyring_api, RELEASE_NS, KEYRING, ALGORITHM, now, &metrics)
            .await
            .expect("keyring created");
    assert!(fake.saw("operator: keyring", "create", "secrets", None));
    // A second replica loads the existing keyring.
    keyring::load_or_create(&keyring_api, RELEASE_NS, KEYRING, ALGORITHM, now, &metrics)
        .await
        .expect("keyring loaded");
    // An administrator requests a rotation (kubectl annotate; not the operator's call).
    let mut stored = fake.get("", "secrets", RELEASE_NS, KEYRING).unwrap();
    stored["metadata"]["annotations"] = json!({ROTATE_ANNOTATION: "1"});
    fake.put("", "secrets", stored);

    let shared_ring = Arc::new(RwLock::new(ring));
    let (changed_tx, changed_rx) = watch::channel(0u64);
    let (leader_tx, leader_rx) = watch::channel(false);
    tokio::spawn(keyring::watch(
        keyring_api.clone(),
        KEYRING.into(),
        ALGORITHM,
        shared_ring.clone(),
        changed_tx,
        leader_rx,
        metrics.clone(),
    ));
    wait_for(&fake, "the keyring watch", || {
        fake.saw("operator: keyring", "watch", "secrets", Some(KEYRING))
    })
    .await;

    // Leader election: the operator's builder calls, with a 2s Lease renewed 1s before expiry
    // instead of 15s/5s so a renewal happens within the test.
    fake.phase("operator: leader election");
    let manager = LeaseManagerBuilder::new(client.clone(), LEASE)
        .with_namespace(RELEASE_NS)
        .with_identity("tokenmint-0")
        .with_duration(2)
        .with_grace(1)
        .build()
        .await
        .expect("lease manager");
    let (mut lease, lease_task) = manager.watch().await;
    tokio::time::timeout(DEADLINE, lease.wait_for(|leading| *leading))
        .await
        .expect("no leadership")
        .expect("lease task ended");
    let _ = leader_tx.send(true);
    // A rotation requested while no replica led is handled now (the keyring watch may race it:
    // the loser gets a conflict, as in the operator).
    let secret = keyring_api.get_opt(KEYRING).await.unwrap().unwrap();
    let _ = keyring::rotate_if_requested(
        &keyring_api,
        &secret,
        ALGORITHM,
        jiff::Timestamp::now(),
        &metrics,
    )
    .await;
    wait_for(&fake, "the keyring rotation", || {
        fake.count("update", "secrets") >= 1
    })
    .await;

    // --- the controllers, all namespaces, with the Kubernetes Events recorder ---
    fake.phase("operator: controllers");
    let (stop_tx, stop_rx) = watch::channel(false);
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let shared = Shared {
        client: client.clone(),
        keyring: shared_ring.clone(),
        keyring_changed: changed_rx,
        issuer: "tokenmint".into(),
        events: recorder(&client),
        metrics: metrics.clone(),
        clock: Clock::system(),
    };
    let running = tokio::spawn({
        let readiness = readiness.clone();
        async move { controllers::run(shared, &[], stop_rx, readiness).await }
    });
    let phase = "operator: controllers";
    wait_for(&fake, "the controllers' writes", || {
        readiness.is_ready()
            && fake.saw(phase, "patch", "servicekeys/status", Some("analytics"))
            && fake.saw(
                phase,
                "patch",
                "datasourcegrants/status",
                Some("dashboards"),
            )
            && fake.saw(phase, "patch", "datasourcegrants/status", Some("forbidden"))
            && fake.saw(
                phase,
                "patch",
                "datasourcegrants/status",
                Some("conflicting"),
            )
            && fake.saw(phase, "patch", "guesttokenrequests/status", Some("embed"))
            && fake.saw(phase, "delete", "secrets", Some("forbidden-token"))
            && fake.saw(phase, "get", "secrets", Some("conflicting-token"))
            // New Secrets are created (POST: the name is in the body, not the path): the key,
            // the session token, the guest token and the new grant's token.
            && fake
                .calls()
                .iter()
                .filter(|c| {
                    c.phase == phase
                        && c.origin == Origin::Request
                        && c.verb == "create"
                        && c.resource == "secrets"
                })
                .count()
                >= 4
            && fake.saw(phase, "patch", "secrets", Some("dashboards-token"))
    })
    .await;
    // The foreign Secret is never written.
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| c.verb != "get" && c.name.as_deref() == Some("conflicting-token")),
        "the conflicting foreign Secret was written"
    );
    // A Lease renewal (the first lock is an apply + a patch of leaseTransitions).
    wait_for(&fake, "a Lease renewal", || {
        fake.count("patch", "leases") >= 3
    })
    .await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(DEADLINE, running)
        .await
        .expect("controllers did not stop")
        .unwrap();
    // Shutdown: dropping the receiver makes the lease task release the Lease.
    fake.phase("operator: shutdown");
    drop(lease);
    tokio::time::timeout(DEADLINE, lease_task)
        .await
        .expect("the lease task did not end")
        .unwrap()
        .expect("lease released");
    assert!(fake.saw("operator: shutdown", "patch", "leases", Some(LEASE)));

    // --- the restart worker: one workload of each kind, the Deployment twice ---
    fake.phase("operator: restarts");
    let (stop2_tx, stop2_rx) = watch::channel(false);
    let (restarter, worker) = Restarter::spawn(
        client.clone(),
        recorder(&client),
        metrics.clone(),
        Duration::from_millis(50),
        stop2_rx,
    );
    let regarding = ObjectReference {
        api_version: Some("tokenmint.dev/v1alpha1".into()),
        kind: Some("DatasourceGrant".into()),
        namespace: Some(WATCHED_NS.into()),
        name: Some("dashboards".into()),
        uid: Some("uid-dashboards".into()),
        ..ObjectReference::default()
    };
    let request = |token_id: &str, workloads: Vec<WorkloadRef>| restart::Request {
        namespace: WATCHED_NS.into(),
        secret: "dashboards-token".into(),
        token_id: token_id.into(),
        workloads,
        regarding: regarding.clone(),
    };
    let workload = |kind, name: &str| WorkloadRef {
        kind,
        name: name.into(),
    };
    restarter.request(request(
        "t1",
        vec![
            workload(WorkloadKind::Deployment, "web"),
            workload(WorkloadKind::StatefulSet, "db"),
            workload(WorkloadKind::DaemonSet, "agent"),
        ],
    ));
    let phase = "operator: restarts";
    wait_for(&fake, "the restarts", || {
        fake.saw(phase, "patch", "deployments", Some("web"))
            && fake.saw(phase, "patch", "statefulsets", Some("db"))
            && fake.saw(phase, "patch", "daemonsets", Some("agent"))
            && fake.saw(phase, "patch", "secrets", Some("dashboards-token"))
            && fake.saw(phase, "create", "events", None)
    })
    .await;
    // The same event again: the recorder folds it into a series (a patch).
    restarter.request(request(
        "t2",
        vec![workload(WorkloadKind::Deployment, "web")],
    ));
    wait_for(&fake, "an event series", || {
        fake.saw(phase, "patch", "events", None)
    })
    .await;
    stop2_tx.send(true).unwrap();
    let _ = tokio::time::timeout(DEADLINE, worker).await;

    // --- the serve container's cluster store ---
    fake.phase("serve");
    let args = CommonArgs {
        algorithm: ALGORITHM,
        issuer: "tokenmint".into(),
        namespace: RELEASE_NS.into(),
        watch_namespaces: Vec::new(),
        keyring_secret: KEYRING.into(),
    };
    let _store = tokenmint::http::cluster::start(client.clone(), &args);
    wait_for(&fake, "serve's watches", || {
        fake.saw("serve", "watch", "servicekeys", None)
            && fake.saw("serve", "watch", "secrets", Some(KEYRING))
            && fake.calls().iter().any(|c| {
                c.phase == "serve"
                    && c.verb == "watch"
                    && c.resource == "secrets"
                    && c.name.is_none()
            })
    })
    .await;

    // --- watchNamespaces set: the chart then grants the watched rights by a Role in each
    // watched namespace, so no request may be cluster-wide or go to another namespace ---
    fake.phase("namespaced: controllers");
    let (_changed_tx, changed_rx) = watch::channel(0u64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let shared = Shared {
        client: client.clone(),
        keyring: shared_ring.clone(),
        keyring_changed: changed_rx,
        issuer: "tokenmint".into(),
        events: recorder(&client),
        metrics: metrics.clone(),
        clock: Clock::system(),
    };
    let running = tokio::spawn({
        let readiness = readiness.clone();
        async move { controllers::run(shared, &[WATCHED_NS.into()], stop_rx, readiness).await }
    });
    wait_for(&fake, "the namespaced controllers' caches", || {
        readiness.is_ready()
    })
    .await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(DEADLINE, running)
        .await
        .expect("controllers did not stop")
        .unwrap();
    fake.phase("namespaced: serve");
    let args = CommonArgs {
        watch_namespaces: vec![WATCHED_NS.into()],
        ..args
    };
    let _store = tokenmint::http::cluster::start(client.clone(), &args);
    wait_for(&fake, "serve's namespaced watches", || {
        let calls = fake.calls();
        let watched = |resource: &str, name: Option<&str>| {
            calls.iter().any(|c| {
                c.phase == "namespaced: serve"
                    && c.verb == "watch"
                    && c.resource == resource
                    && c.name.as_deref() == name
            })
        };
        watched("servicekeys", None)
            && watched("secrets", None)
            && watched("secrets", Some(KEYRING))
    })
    .await;
    let stray: Vec<String> = fake
        .calls()
        .iter()
        .filter(|c| {
            c.phase.starts_with("namespaced:")
                && !matches!(c.namespace.as_deref(), Some(WATCHED_NS | RELEASE_NS))
        })
        .map(|c| format!("[{}] {}", c.phase, c.request))
        .collect();
    assert!(
        stray.is_empty(),
        "with watchNamespaces, requests outside the watched and release namespaces: {stray:#?}"
    );

    // --- blockOwnerDeletion on every owner reference written, for every owner kind ---
    let mut owner_kinds = BTreeSet::new();
    for secret in fake.secret_writes() {
        for owner in secret["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(
                owner["blockOwnerDeletion"],
                json!(true),
                "owner reference without blockOwnerDeletion=true: {secret}"
            );
            assert_eq!(owner["controller"], json!(true), "{secret}");
            owner_kinds.insert(owner["kind"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        owner_kinds,
        BTreeSet::from([
            "DatasourceGrant".to_owned(),
            "GuestTokenRequest".to_owned(),
            "ServiceKey".to_owned(),
        ]),
        "Secret writes with owner references, by owner kind"
    );

    // --- observed == table ---
    let calls = fake.calls();
    let observed: BTreeSet<Right> = calls.iter().map(Call::right).collect();
    let want = expected();
    let ungranted: Vec<String> = observed
        .difference(&want)
        .map(|r| {
            let examples: Vec<&str> = calls
                .iter()
                .filter(|c| c.right() == *r)
                .map(|c| c.request.as_str())
                .take(3)
                .collect();
            format!("{r}  (e.g. {examples:?})")
        })
        .collect();
    let unused: Vec<String> = want.difference(&observed).map(|r| r.to_string()).collect();
    let mut by_component: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &calls {
        by_component
            .entry(c.phase.clone())
            .or_default()
            .insert(c.right().to_string());
    }
    println!("rights used, by phase: {by_component:#?}");
    assert!(
        ungranted.is_empty() && unused.is_empty(),
        "the code and charts/tokenmint/rbac-requirements.txt disagree\n\
         used but not in the table (missing grant): {ungranted:#?}\n\
         in the table but never used (excess grant): {unused:#?}"
    );
}
