//! The three custom resources of `tokenmint.dev/v1alpha1` and the types they share.
//!
//! Validation lives in the schema wherever the API server can enforce it (bounds, patterns and
//! CEL rules), so a bad object is refused at `kubectl apply` time rather than reported later.

pub mod datasource_grant;
pub mod guest_token_request;
pub mod service_key;

pub use datasource_grant::{DatasourceGrant, DatasourceGrantSpec};
pub use guest_token_request::{GuestTokenParams, GuestTokenRequest, GuestTokenRequestSpec};
pub use service_key::{Principal, ServiceKey, ServiceKeySpec, SessionTokenSpec};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "tokenmint.dev";
pub const VERSION: &str = "v1alpha1";

/// Go-style duration as accepted by CEL's `duration()`: e.g. `90s`, `20m`, `1h30m`, `1.5h`.
/// The Rust parser in [`crate::token::duration`] accepts exactly this language.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";
/// RFC 1123 DNS subdomain, the rule for Secret and other object names.
pub(crate) const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A reference to a ServiceKey in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct ServiceKeyRef {
    /// Name of the ServiceKey, in the namespace of this resource, whose principal the token is
    /// issued to and whose permissions (dataSources, workspaces) bound what may be granted.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// A workload in the same namespace to restart after the token rotates.
#[derive(
    Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, KubeSchema,
)]
pub struct WorkloadRef {
    /// Kind of the workload.
    pub kind: WorkloadKind,
    /// Name of the workload, in the namespace of this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// Kinds of workload that can be restarted (apps/v1).
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Kinds of workload whose pod template can read a token Secret (a consumer).
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
pub enum ConsumerKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    /// Only a ReplicaSet without a controlling owner (a Deployment's are its Deployment's).
    ReplicaSet,
    /// Only a Job without a controlling owner (a CronJob's are its CronJob's).
    Job,
    CronJob,
}

/// How a pod template reads a Secret.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ReadMode {
    /// An environment variable from `env[].valueFrom.secretKeyRef`: read once, at container
    /// start; never sees a rotation.
    Env,
    /// Environment variables from `envFrom[].secretRef`: never sees a rotation.
    EnvFrom,
    /// A Secret (or projected) volume mounted with `subPath`: the kubelet never updates it.
    SubPath,
    /// A Secret volume: the kubelet updates the files after a rotation.
    Volume,
    /// A projected volume with a Secret source: updated like a Secret volume.
    Projected,
}

/// A workload of the namespace whose pod template reads the token Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenConsumer {
    /// Kind of the workload.
    pub kind: ConsumerKind,
    /// Name of the workload, in the namespace of this resource.
    #[schemars(length(max = 253))]
    pub name: String,
    /// How it reads the token; with several ways (see modes), the first that misses
    /// rotations.
    pub mode: ReadMode,
    /// Every way it reads the token, when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub modes: Vec<ReadMode>,
    /// Whether its pods see a rotated token without a restart: only when every way it reads
    /// the token is a volume or projected volume.
    pub sees_rotation: bool,
    /// Whether tokenmint restarts it once after each rotation (restartConsumers or
    /// rolloutRestart).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarted: bool,
}

/// Observed state shared by the three kinds. Never holds a token or key.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    /// Standard conditions; `Ready` says whether a valid token is in place, and if not, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the Secret holding the token (for a ServiceKey: the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the current token expires (RFC 3339 UTC); absent for a token that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the operator will replace the current token (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<String>,
    /// The `jti` claim of the current token, to correlate with audit logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// ServiceKeys only: a one-way fingerprint of the key in place (96 bits of a
    /// domain-separated SHA-256, base64url; it reveals nothing usable of the key). Every token
    /// issued with the ServiceKey carries it and is honoured only while it is current: a
    /// replaced key changes it, voiding them all. Absent while no key is in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub key_fingerprint: Option<String>,
    /// Workloads of the namespace (Deployments, StatefulSets, DaemonSets, CronJobs, and
    /// ReplicaSets and Jobs without an owner) whose pod template reads the token Secret, and
    /// how: at most 20, those that keep a stale token after a rotation first. The condition
    /// `Delivered` says whether every consumer sees each new token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub consumers: Vec<TokenConsumer>,
    /// How many workloads read the token Secret (all of them, also those beyond the 20
    /// listed in consumers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_count: Option<i64>,
    /// How many of them keep a stale token after a rotation: they read it from an
    /// environment variable or a subPath mount and are not restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers_missing_rotation: Option<i64>,
}

type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// All three CRDs, ordered by plural name — the order of their files in `crds/`, so that
/// `cat crds/*.yaml` equals `tokenmint crd`.
pub fn all() -> Vec<Crd> {
    vec![
        DatasourceGrant::crd(),
        GuestTokenRequest::crd(),
        ServiceKey::crd(),
    ]
}

/// One CRD as a YAML document: the content of `crds/<plural>.yaml`.
pub fn render_one(crd: &Crd) -> Result<String, serde_saphyr::SerializeError> {
    Ok(format!("---\n{}", serde_saphyr::to_string(crd)?))
}

/// The file name of a CRD in `crds/`.
pub fn file_name(crd: &Crd) -> String {
    format!("{}.yaml", crd.spec.names.plural)
}

/// The three CRDs as one multi-document YAML stream: the output of `tokenmint crd`.
pub fn render_yaml() -> Result<String, serde_saphyr::SerializeError> {
    all().iter().map(render_one).collect()
}

/// Whether an allow-list (`dataSources`, `workspaces`) admits `name`; "*" admits all.
pub(crate) fn allows(list: &[String], name: &str) -> bool {
    list.iter().any(|entry| entry == "*" || entry == name)
}

/// `<name><suffix>` unless the spec names the Secret.
pub(crate) fn secret_name_or(explicit: &Option<String>, name: &str, suffix: &str) -> String {
    explicit
        .clone()
        .unwrap_or_else(|| format!("{name}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let list = vec!["Data_3_E".to_owned()];
        assert!(allows(&list, "Data_3_E"));
        assert!(!allows(&list, "data_3_e"));
        assert!(!allows(&[], "x"));
        assert!(allows(&["*".to_owned()], "anything"));
    }

    #[test]
    fn rendered_crds_carry_the_contract() {
        let yaml = render_yaml().unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs.len(), 3);
        for (doc, (plural, short)) in docs.iter().zip([
            ("datasourcegrants", "dsg"),
            ("guesttokenrequests", "gtr"),
            ("servicekeys", "sk"),
        ]) {
            let spec = &doc["spec"];
            assert_eq!(spec["group"], GROUP);
            assert_eq!(spec["scope"], "Namespaced");
            assert_eq!(spec["names"]["plural"], plural);
            assert_eq!(spec["names"]["shortNames"][0], short);
            let version = &spec["versions"][0];
            assert_eq!(version["name"], VERSION);
            assert!(version["subresources"]["status"].is_object());
            let columns: Vec<&str> = version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            for required in ["Ready", "Expires", "Age"] {
                assert!(
                    columns.contains(&required),
                    "{plural} lacks column {required}"
                );
            }
            assert_every_field_is_described(
                &version["schema"]["openAPIV3Schema"]["properties"]["spec"],
                plural,
            );
        }
    }

    /// Walks a schema and fails on any property without a description (`kubectl explain`).
    fn assert_every_field_is_described(schema: &serde_json::Value, path: &str) {
        assert!(
            schema.get("description").is_some(),
            "{path} has no description"
        );
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                assert_every_field_is_described(prop, &format!("{path}.{name}"));
            }
        }
        if let Some(items) = schema.get("items")
            && items.get("properties").is_some()
        {
            assert_every_field_is_described(items, &format!("{path}[]"));
        }
    }

    #[test]
    fn every_cel_touched_string_and_list_is_bounded() {
        // The API server rejects CEL rules whose estimated cost is unbounded.
        let yaml = render_yaml().unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        for doc in &docs {
            let spec =
                &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
            check_bounded(spec, "spec");
        }
    }

    fn check_bounded(schema: &serde_json::Value, path: &str) {
        match schema.get("type").and_then(|t| t.as_str()) {
            Some("string") => assert!(
                schema.get("maxLength").is_some() || schema.get("enum").is_some(),
                "{path} has no maxLength"
            ),
            Some("array") => assert!(schema.get("maxItems").is_some(), "{path} has no maxItems"),
            _ => {}
        }
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                check_bounded(prop, &format!("{path}.{name}"));
            }
        }
        if let Some(items) = schema.get("items") {
            check_bounded(items, &format!("{path}[]"));
        }
    }
}
