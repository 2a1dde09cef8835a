//! A fake Kubernetes API server for tests of whole code paths (controllers, caches, leader
//! election): objects in memory, lists with label and field selectors, watches that stream
//! events (replayed from the list's resourceVersion, so nothing is missed between a list and
//! its watch), creates, updates, merge and apply patches with optimistic concurrency, deletes.
//! Every request is recorded as the API server's authorizer would see it (API group, resource,
//! verb, namespace, name), for the RBAC audit.
//!
//! Faults, to reproduce what a real cluster does: lists that answer late, the next watch of a
//! resource failing with `410 Gone`, an API-server restart (every watch dropped, every resumed
//! watch too old), an outage (every request 503, or those of one resource).
//!
//! An authorizer: rules the test forbids answer 403, and SelfSubjectAccessReviews answer from
//! the same rules. Discovery of a custom group version is served from the stored CRDs.

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// A request the client sent.
    Request,
    /// The API server's create check of a server-side apply that creates the object.
    ApplyCreate,
    /// OwnerReferencesPermissionEnforcement's check of blockOwnerDeletion=true.
    Admission,
}

#[derive(Clone, Debug)]
pub struct Call {
    /// Which part of the test was running when the request came.
    pub phase: String,
    pub origin: Origin,
    pub group: String,
    pub resource: String,
    pub verb: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `METHOD path?query` of the request (or of the request the check was derived from).
    pub request: String,
    /// The Accept header (metadata-only requests ask for PartialObjectMetadata).
    pub accept: String,
}

/// (group, resource, namespace, name) of a stored object.
type Key = (String, String, String, String);

struct Watcher {
    group: String,
    resource: String,
    namespace: Option<String>,
    params: BTreeMap<String, String>,
    tx: mpsc::UnboundedSender<Result<Vec<u8>, std::io::Error>>,
}

/// One change, kept so a watch from an older resourceVersion replays what it missed.
struct Change {
    rv: u64,
    kind: &'static str,
    key: Key,
    object: Value,
}

#[derive(Default)]
struct State {
    phase: String,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    calls: Vec<Call>,
    /// Bodies of every write to a Secret.
    secret_writes: Vec<Value>,
    log: Vec<Change>,
    watchers: Vec<Watcher>,
    /// Watches from a resourceVersion older than this fail with 410 (after a "restart").
    oldest_watchable: u64,
    /// The next watch of these resources fails with 410, this many times.
    gone_next: BTreeMap<String, u32>,
    /// Every request answers 503.
    down: bool,
    /// Requests for these resources answer 503 (a partial outage).
    down_resources: BTreeSet<String>,
    /// Lists wait this long before answering (a late first list).
    list_delay: BTreeMap<String, Duration>,
    /// TokenReview: token -> (username, audiences the token carries).
    tokens: BTreeMap<String, (String, Vec<String>)>,
    /// Requests the caller may not make: (group, resource, verb, namespace; `None`: every
    /// namespace). Answered 403, and denied by SelfSubjectAccessReviews.
    forbidden: BTreeSet<(String, String, String, Option<String>)>,
}

#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<State>>);

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

/// RFC 7386 JSON merge patch (also used, simplified, for apply patches: what the fake stores
/// only has to be a plausible object; an apply of the status subresource replaces the status,
/// whose one manager is the operator).
pub fn merge(target: &mut Value, patch: &Value) {
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

pub fn status(code: StatusCode, reason: &str) -> Response<Body> {
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
    // `path=value[,path=value]`, a path being the object's JSON fields joined by dots
    // (`metadata.name`, an Event's `regarding.kind`).
    let fields_ok = params.get("fieldSelector").is_none_or(|selector| {
        selector.split(',').all(|term| {
            let (path, v) = term.split_once('=').expect("only equality field selectors");
            path.split('.')
                .fold(object, |at, field| &at[field])
                .as_str()
                == Some(v)
        })
    });
    labels_ok && fields_ok
}

fn event_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    line
}

fn gone_line() -> Vec<u8> {
    event_line(
        "ERROR",
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version", "reason": "Expired", "code": 410}),
    )
}

impl State {
    fn is_forbidden(
        &self,
        group: &str,
        resource: &str,
        verb: &str,
        namespace: Option<&str>,
    ) -> bool {
        self.forbidden.iter().any(|(g, r, v, ns)| {
            g == group
                && r == resource
                && v == verb
                && ns.as_deref().is_none_or(|ns| Some(ns) == namespace)
        })
    }

    /// `GET /apis/<group>/<version>`: the resources the stored CRDs define in that version.
    fn discovery(&self, group: &str, version: &str) -> Option<Value> {
        let resources: Vec<Value> = self
            .objects
            .iter()
            .filter(|((g, r, _, _), crd)| {
                g == "apiextensions.k8s.io"
                    && r == "customresourcedefinitions"
                    && crd["spec"]["group"] == group
                    && crd["spec"]["versions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|v| v["name"] == version && v["served"] == true)
            })
            .map(|(_, crd)| {
                let names = &crd["spec"]["names"];
                json!({"name": names["plural"], "singularName": names["singular"],
                       "namespaced": crd["spec"]["scope"] == "Namespaced",
                       "kind": names["kind"], "shortNames": names["shortNames"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]})
            })
            .collect();
        (!resources.is_empty()).then(|| {
            json!({"kind": "APIResourceList", "apiVersion": "v1",
                   "groupVersion": format!("{group}/{version}"), "resources": resources})
        })
    }

    fn matches(w: &Watcher, key: &Key, object: &Value) -> bool {
        w.group == key.0
            && w.resource == key.1
            && w.namespace.as_ref().is_none_or(|ns| *ns == key.2)
            && selected(object, &w.params)
    }

    /// Records a change and streams it to the matching watches.
    fn emit(&mut self, kind: &'static str, key: Key, object: Value) {
        let rv = self.rv;
        self.watchers.retain(|w| !w.tx.is_closed());
        for w in &self.watchers {
            if Self::matches(w, &key, &object) {
                let _ = w.tx.send(Ok(event_line(kind, &object)));
            }
        }
        self.log.push(Change {
            rv,
            kind,
            key,
            object,
        });
    }

    fn store(&mut self, key: Key, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key.clone(), object.clone());
        self.emit(kind, key, object.clone());
        object
    }

    fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit("DELETED", key.clone(), object.clone());
        Some(object)
    }
}

fn key_of(group: &str, resource: &str, object: &Value) -> Key {
    (
        group.to_owned(),
        resource.to_owned(),
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        object["metadata"]["name"].as_str().unwrap().to_owned(),
    )
}

impl Fake {
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap();
                // A late list: the delay is outside the lock, so everything else goes on.
                let delay = fake.list_delay_of(&parts);
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, std::convert::Infallible>(fake.handle(&parts, &body))
            }
        });
        kube::Client::new(service, "default")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    pub fn phase(&self, phase: &str) {
        self.state().phase = phase.into();
    }

    /// Stores `object` as a client outside the test would (no call recorded); watches see it.
    pub fn put(&self, group: &str, resource: &str, object: Value) -> Value {
        let key = key_of(group, resource, &object);
        self.state().store(key, object)
    }

    /// Deletes an object as a client outside the test would.
    pub fn delete(&self, group: &str, resource: &str, namespace: &str, name: &str) {
        let key = (group.into(), resource.into(), namespace.into(), name.into());
        self.state().remove(&key);
    }

    pub fn get(&self, group: &str, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (group.into(), resource.into(), namespace.into(), name.into());
        self.state().objects.get(&key).cloned()
    }

    /// Every stored object of `resource`.
    pub fn all(&self, group: &str, resource: &str) -> Vec<Value> {
        self.state()
            .objects
            .iter()
            .filter(|((g, r, _, _), _)| g == group && r == resource)
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn secret_writes(&self) -> Vec<Value> {
        self.state().secret_writes.clone()
    }

    /// Whether a call of `phase` matches.
    pub fn saw(&self, phase: &str, verb: &str, resource: &str, name: Option<&str>) -> bool {
        self.calls().iter().any(|c| {
            c.phase == phase
                && c.origin == Origin::Request
                && c.verb == verb
                && c.resource == resource
                && (name.is_none() || c.name.as_deref() == name)
        })
    }

    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.origin == Origin::Request && c.verb == verb && c.resource == resource)
            .count()
    }

    /// The next watch of `resource` fails with 410 Gone.
    pub fn gone_on_next_watch(&self, resource: &str) {
        *self.state().gone_next.entry(resource.into()).or_default() += 1;
    }

    /// An API-server restart with its data kept: every open watch ends, and a watch resumed
    /// from a resourceVersion seen before the restart is too old (410); a fresh list works.
    pub fn restart(&self) {
        let mut state = self.state();
        state.watchers.clear();
        state.rv += 1;
        state.oldest_watchable = state.rv;
        state.log.clear();
    }

    /// Ends every open watch (a dropped connection); resuming them works.
    pub fn drop_watches(&self) {
        self.state().watchers.clear();
    }

    /// While `down`, every request answers 503 and every open watch ends.
    pub fn set_down(&self, down: bool) {
        let mut state = self.state();
        state.down = down;
        if down {
            state.watchers.clear();
        }
    }

    /// While `down`, requests for `resource` (e.g. `leases`) answer 503 and its open watches
    /// end; everything else works (a partial outage).
    pub fn set_down_for(&self, resource: &str, down: bool) {
        let mut state = self.state();
        if down {
            state.down_resources.insert(resource.into());
            state.watchers.retain(|w| w.resource != resource);
        } else {
            state.down_resources.remove(resource);
        }
    }

    /// A ServiceAccount token TokenReview will vouch for, for `username`, with `audiences`.
    pub fn service_account_token(&self, token: &str, username: &str, audiences: &[&str]) {
        self.state().tokens.insert(
            token.into(),
            (
                username.into(),
                audiences.iter().map(|a| a.to_string()).collect(),
            ),
        );
    }

    /// Forgets a token (its ServiceAccount was deleted).
    pub fn revoke_service_account_token(&self, token: &str) {
        self.state().tokens.remove(token);
    }

    /// From now on `verb` on `group`/`resource` answers 403 (in `namespace`, or everywhere),
    /// and SelfSubjectAccessReviews deny it.
    pub fn forbid(&self, group: &str, resource: &str, verb: &str, namespace: Option<&str>) {
        self.state().forbidden.insert((
            group.into(),
            resource.into(),
            verb.into(),
            namespace.map(str::to_owned),
        ));
    }

    /// Lists of `resource` answer after `delay`.
    pub fn delay_lists(&self, resource: &str, delay: Duration) {
        self.state().list_delay.insert(resource.into(), delay);
    }

    fn list_delay_of(&self, parts: &axum::http::request::Parts) -> Option<Duration> {
        let query = query_params(parts.uri.query().unwrap_or_default());
        let p = parse_path(parts.uri.path())?;
        let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        (parts.method == Method::GET && p.name.is_none() && !watching)
            .then(|| self.state().list_delay.get(&p.resource).copied())
            .flatten()
    }

    pub fn handle(&self, parts: &axum::http::request::Parts, body: &[u8]) -> Response<Body> {
        let method = parts.method.clone();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let request = format!("{method} {path}?{query}");
        let params = query_params(&query);
        let Some(p) = parse_path(&path) else {
            // Non-resource URLs (/version, discovery) need no RBAC rule of ours: the default
            // system:public-info-viewer / system:discovery roles grant them to everyone.
            let mut state = self.state();
            let answer = match path.trim_matches('/').split('/').collect::<Vec<_>>()[..] {
                ["version"] => Some(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                           "platform": "linux/amd64"})),
                // Service account issuer discovery (granted to every ServiceAccount by the
                // default system:service-account-issuer-discovery binding).
                [".well-known", "openid-configuration"] => Some(json!({
                    "issuer": SERVICE_ACCOUNT_ISSUER,
                    "jwks_uri": format!("{SERVICE_ACCOUNT_ISSUER}/openid/v1/jwks"),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"]})),
                ["apis", group, version] => state.discovery(group, version),
                _ => None,
            };
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
                accept: String::new(),
            });
            return match answer {
                Some(body) if !state.down => respond(StatusCode::OK, &body),
                _ if state.down => status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
                _ => status(StatusCode::NOT_FOUND, "NotFound"),
            };
        };
        // The verb, as the API server's RequestInfo derives it.
        let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
        let verb = match (&method, p.name.is_some()) {
            (&Method::GET, true) => "get",
            (&Method::GET, false) if watching => "watch",
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

        let mut state = self.state();
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
            accept: parts
                .headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        };
        state.calls.push(call.clone());
        if state.down || state.down_resources.contains(&p.resource) {
            return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
        }
        if state.is_forbidden(&p.group, &resource, verb, p.namespace.as_deref()) {
            return status(StatusCode::FORBIDDEN, "Forbidden");
        }
        if p.resource == "selfsubjectaccessreviews" && verb == "create" {
            let asked = &body["spec"]["resourceAttributes"];
            let field = |k: &str| asked[k].as_str().unwrap_or_default().to_owned();
            let resource = match field("subresource").as_str() {
                "" => field("resource"),
                sub => format!("{}/{sub}", field("resource")),
            };
            let namespace = Some(field("namespace")).filter(|ns| !ns.is_empty());
            let allowed = !state.is_forbidden(
                &field("group"),
                &resource,
                &field("verb"),
                namespace.as_deref(),
            );
            let mut review = body.clone();
            review["status"] = json!({"allowed": allowed});
            return respond(StatusCode::CREATED, &review);
        }
        if verb == "watch" {
            let (tx, rx) = mpsc::unbounded_channel();
            let from: u64 = params
                .get("resourceVersion")
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(state.rv);
            let gone = state
                .gone_next
                .get_mut(&p.resource)
                .filter(|n| **n > 0)
                .map(|n| *n -= 1)
                .is_some();
            if gone || from < state.oldest_watchable {
                let _ = tx.send(Ok(gone_line()));
            } else {
                let watcher = Watcher {
                    group: p.group.clone(),
                    resource: p.resource.clone(),
                    namespace: p.namespace.clone(),
                    params: params.clone(),
                    tx,
                };
                // What changed since the version watched from.
                for change in state.log.iter().filter(|c| c.rv > from) {
                    if State::matches(&watcher, &change.key, &change.object) {
                        let _ = watcher.tx.send(Ok(event_line(change.kind, &change.object)));
                    }
                }
                state.watchers.push(watcher);
            }
            drop(state);
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            return Response::new(Body::from_stream(stream));
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
        if p.resource == "tokenreviews" && verb == "create" {
            // The API server's answer: authenticated when the token is known and carries one
            // of the audiences asked for.
            let token = body["spec"]["token"].as_str().unwrap_or_default();
            let asked: Vec<String> = body["spec"]["audiences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            let status = match state.tokens.get(token) {
                Some((username, audiences)) => {
                    let matching: Vec<&String> =
                        audiences.iter().filter(|a| asked.contains(a)).collect();
                    if matching.is_empty() {
                        json!({"authenticated": false, "error": "token audiences do not match"})
                    } else {
                        json!({"authenticated": true, "audiences": matching,
                               "user": {"username": username, "uid": "u", "groups": ["system:serviceaccounts"]}})
                    }
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            let mut review = body.clone();
            review["status"] = status;
            return respond(StatusCode::CREATED, &review);
        }
        match verb {
            "get" => match state.objects.get(&key(p.name.as_deref().unwrap())) {
                Some(object) => respond(StatusCode::OK, object),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            "list" => {
                // Pages of `limit`, as the API server serves them; `continue` names the last
                // object served (`namespace/name`), and a page reads the map from there on.
                use std::ops::Bound;
                let limit: usize = params
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .filter(|l| *l > 0)
                    .unwrap_or(usize::MAX);
                let after: Option<Key> = params
                    .get("continue")
                    .and_then(|c| c.split_once('/'))
                    .map(|(n, name)| {
                        let (g, r) = (p.group.clone(), p.resource.clone());
                        (g, r, n.to_owned(), name.to_owned())
                    });
                let first: Key = (
                    p.group.clone(),
                    p.resource.clone(),
                    String::new(),
                    String::new(),
                );
                let from = match &after {
                    Some(after) => Bound::Excluded(after),
                    None => Bound::Included(&first),
                };
                let matching = state
                    .objects
                    .range((from, Bound::Unbounded))
                    .take_while(|((g, r, _, _), _)| *g == p.group && *r == p.resource)
                    .filter(|((_, _, n, _), o)| {
                        (p.namespace.is_none() || *n == ns) && selected(o, &params)
                    });
                let mut items: Vec<Value> = matching
                    .take(limit.saturating_add(1))
                    .map(|(_, o)| o.clone())
                    .collect();
                let more = items.len() > limit;
                items.truncate(limit);
                let mut metadata = json!({"resourceVersion": state.rv.to_string()});
                if more && let Some(last) = items.last() {
                    let last = &last["metadata"];
                    let token = format!(
                        "{}/{}",
                        last["namespace"].as_str().unwrap_or_default(),
                        last["name"].as_str().unwrap_or_default()
                    );
                    metadata["continue"] = json!(token);
                }
                respond(
                    StatusCode::OK,
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": items}),
                )
            }
            "create" => {
                let mut object = body;
                let name = match object["metadata"]["name"].as_str() {
                    Some(name) => name.to_owned(),
                    None => {
                        let prefix = object["metadata"]["generateName"]
                            .as_str()
                            .unwrap_or("generated-")
                            .to_owned();
                        let name = format!("{prefix}{}", state.rv + 1);
                        object["metadata"]["name"] = json!(name);
                        name
                    }
                };
                if state.objects.contains_key(&key(&name)) {
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                derive(&mut state, &object, None);
                object["metadata"]["uid"] = json!(format!("uid-{name}"));
                object["metadata"]["namespace"] = json!(ns);
                let stored = state.store(key(&name), object);
                respond(StatusCode::CREATED, &stored)
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
                let stored = state.store(key(&name), body);
                respond(StatusCode::OK, &stored)
            }
            "patch" => {
                let name = p.name.clone().unwrap();
                let apply = parts
                    .headers
                    .get("content-type")
                    .is_some_and(|c| c.as_bytes().starts_with(b"application/apply-patch"));
                let existing = state.objects.get(&key(&name)).cloned();
                // A patch carrying a resourceVersion is a precondition.
                if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
                    && existing
                        .as_ref()
                        .is_none_or(|e| e["metadata"]["resourceVersion"].as_str() != Some(rv))
                {
                    return status(StatusCode::CONFLICT, "Conflict");
                }
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
                if apply && p.subresource.as_deref() == Some("status") {
                    // The status has one manager (the operator), which applies all of it: a
                    // field it no longer sends is removed, as server-side apply does.
                    object["status"] = body["status"].clone();
                } else {
                    merge(&mut object, &body);
                }
                let stored = state.store(key(&name), object);
                respond(StatusCode::OK, &stored)
            }
            "delete" => match state.remove(&key(p.name.as_deref().unwrap())) {
                Some(object) => respond(StatusCode::OK, &object),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            other => panic!("the fake does not serve {other} ({request})"),
        }
    }
}

/// Waits until `done` holds, or fails after `deadline` with the calls seen so far.
pub async fn wait_for(fake: &Fake, deadline: Duration, what: &str, done: impl Fn() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    while !done() {
        if tokio::time::Instant::now() > until {
            // Lease renewals drown everything else.
            let calls: Vec<String> = fake
                .calls()
                .iter()
                .filter(|c| c.resource != "leases")
                .map(|c| format!("[{}] {:?} {}", c.phase, c.origin, c.request))
                .collect();
            let calls = &calls[calls.len().saturating_sub(60)..];
            panic!("timed out after {deadline:?} waiting for {what}; last calls: {calls:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

pub const TEAM: &str = "team-a";

pub fn owner_ref(kind: &str, name: &str) -> Value {
    json!([{"apiVersion": "tokenmint.dev/v1alpha1", "kind": kind, "name": name,
            "uid": format!("uid-{name}"), "controller": true, "blockOwnerDeletion": true}])
}

pub fn custom(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": kind,
           "metadata": {"name": name, "namespace": TEAM, "uid": format!("uid-{name}"), "generation": 1,
                        "creationTimestamp": "2026-12-01T00:00:00Z"},
           "spec": spec})
}

/// A ServiceKey `analytics` allowing every data source and workspace.
pub fn service_key(fake: &Fake) {
    fake.put(
        "tokenmint.dev",
        "servicekeys",
        custom(
            "ServiceKey",
            "analytics",
            json!({"principal": {"id": "1", "email": "jcw@example.com", "name": "jcw"},
                   "dataSources": ["*"], "workspaces": ["*"]}),
        ),
    );
}

/// A DatasourceGrant `name` of the `analytics` key.
pub fn grant(fake: &Fake, name: &str) {
    fake.put(
        "tokenmint.dev",
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            name,
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}),
        ),
    );
}

/// A GuestTokenRequest `name` of the `analytics` key.
pub fn guest(fake: &Fake, name: &str) {
    fake.put(
        "tokenmint.dev",
        "guesttokenrequests",
        custom(
            "GuestTokenRequest",
            name,
            json!({"serviceKeyRef": {"name": "analytics"}, "workspaceName": "w1", "clientId": "c",
                   "expiryTime": 3_600_000}),
        ),
    );
}

/// The names of the objects of `resource` whose Ready condition is True.
pub fn ready_names(fake: &Fake, resource: &str) -> BTreeSet<String> {
    fake.all("tokenmint.dev", resource)
        .iter()
        .filter(|o| {
            o["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The `iss` of the fake cluster's ServiceAccount tokens, as its discovery document says.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc";

/// A JWT-shaped projected token of the ServiceAccount `team-a/name` for the audience
/// `tokenmint`, expiring in `exp_in` seconds, as the kubelet writes them (the fake vouches for
/// tokens by their text).
pub fn projected_token(name: &str, exp_in: i64) -> String {
    projected_token_for(name, exp_in, &["tokenmint"])
}

/// [`projected_token`] for other audiences.
pub fn projected_token_for(name: &str, exp_in: i64, audiences: &[&str]) -> String {
    use base64::Engine;
    let b64 = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let now = jiff::Timestamp::now().as_second();
    format!(
        "{}.{}.sig",
        b64(json!({"alg": "RS256", "kid": "kubernetes-key"})),
        b64(json!({
            "aud": audiences,
            "exp": now + exp_in,
            "iat": now,
            "iss": SERVICE_ACCOUNT_ISSUER,
            "nbf": now,
            "sub": format!("system:serviceaccount:team-a:{name}"),
        }))
    )
}
