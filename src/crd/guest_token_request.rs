use super::{DNS_SUBDOMAIN_PATTERN, DURATION_PATTERN, ServiceKeyRef, TokenStatus, WorkloadRef};
use crate::token::duration::{self, DurationError};
use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use crate::token::mint::MAX_EXPIRY_TIME_MS;
/// Lower bound of a guest token's lifetime in a Secret (1 minute, as DatasourceGrant's
/// `expiration`): a token living seconds would be rotated continuously. The REST route, which
/// mints on demand, accepts any positive value.
pub const MIN_EXPIRY_TIME_MS: i64 = 60_000;

/// An embed guest token for one client and workspace, issued with a ServiceKey and kept in a
/// Secret owned by this resource.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tokenmint.dev",
    version = "v1alpha1",
    kind = "GuestTokenRequest",
    doc = "An embed guest token, minted into a Secret and rotated before expiry. Annotate it with tokenmint.dev/renew=<new value> to mint a fresh token now (the one in place stays valid until it expires), or with tokenmint.dev/revoke=<new value> to revoke the token in place and mint a fresh one.",
    namespaced,
    status = "TokenStatus",
    shortname = "gtr",
    category = "tokenmint",
    printcolumn = r#"{"name":"Workspace","type":"string","jsonPath":".spec.workspaceName"}"#,
    printcolumn = r#"{"name":"Client","type":"string","jsonPath":".spec.clientId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Expires","type":"string","format":"date-time","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Consumers","type":"integer","jsonPath":".status.consumerCount","priority":1}"#,
    printcolumn = r#"{"name":"Missing Rotation","type":"integer","jsonPath":".status.consumersMissingRotation","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.renewBefore) || (has(self.expiryTime) && duration(self.renewBefore).getMilliseconds() + 30000 <= self.expiryTime)").message("renewBefore requires expiryTime and must be at least 30s shorter than it (a token lives at least 30s before it is renewed)"))]
pub struct GuestTokenRequestSpec {
    /// The ServiceKey (same namespace) the guest token is issued with.
    pub service_key_ref: ServiceKeyRef,
    /// Workspace the token is for; must be listed in the ServiceKey's workspaces (or "*").
    #[schemars(length(min = 1, max = 253))]
    pub workspace_name: String,
    /// Client (tenant) the token is generated for; "None" when the data source has no tenancy.
    #[schemars(length(min = 1, max = 253))]
    pub client_id: String,
    /// Data source name from the data studio, for workspaces with several data sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub datasource_name: Option<String>,
    /// Additional parameters kept verbatim in the token: dashboardAppFilters, appFilters,
    /// rlsSettings and any other keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<GuestTokenParams>,
    /// Lifetime of each token in milliseconds, from 60000 (1 minute) to 2592000000 (30 days).
    /// Absent: the token never expires (and is only replaced when the spec or the signing key
    /// changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_EXPIRY_TIME_MS, max = MAX_EXPIRY_TIME_MS))]
    pub expiry_time: Option<i64>,
    /// Secret that receives the token (keys `token` and `expires-at`). Default `<name>-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub secret_name: Option<String>,
    /// How long before expiry the token is replaced, as a duration (e.g. `20m`). Default one
    /// third of the lifetime. Only meaningful with expiryTime; at least 30s shorter than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self).getSeconds() >= 1").message("renewBefore must be at least 1s"))]
    pub renew_before: Option<String>,
    /// Restart, once after each rotation, exactly the workloads of the namespace that read the
    /// token Secret in a way that never sees a new token (an environment variable, envFrom or a
    /// subPath mount; see status.consumers), found by the operator itself: no list to keep up
    /// to date. Deployments, StatefulSets and DaemonSets are restarted (a pod-template
    /// annotation, as `kubectl rollout restart`); CronJobs, Jobs and ReplicaSets without an
    /// owner cannot be, and get a Warning Event instead. Rotations close together cause one
    /// restart. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_consumers: bool,
    /// Workloads (same namespace) whose pods are restarted once after the token rotates,
    /// whatever way they read it; for an explicit list (restartConsumers finds the workloads
    /// that need it by itself). Not needed when the Secret is mounted as a volume (the file is
    /// updated in place). Rotations close together cause one restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart: Vec<WorkloadRef>,
}

/// Free-form guest token parameters, kept verbatim. The keys the vendor documents are listed
/// (each a list of objects); any other key is preserved as given.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct GuestTokenParams(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for GuestTokenParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GuestTokenParams".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let list = |description: &str| {
            json_schema!({
                "type": "array",
                "description": description,
                "maxItems": 256,
                "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
            })
        };
        json_schema!({
            "type": "object",
            "description": "Additional parameters kept verbatim in the token.",
            "x-kubernetes-preserve-unknown-fields": true,
            "properties": {
                "dashboardAppFilters": list("Dashboard filters: objects with dashboardId, values and isShowOnUrl."),
                "appFilters": list("App-level metric filters: objects with metricId and values."),
                "rlsSettings": list("Row-level security settings."),
            }
        })
    }
}

impl GuestTokenRequest {
    /// The Secret holding the token: `spec.secretName`, default `<name>-token`.
    pub fn token_secret_name(&self) -> String {
        super::secret_name_or(&self.spec.secret_name, &self.name_any(), "-token")
    }
}

impl GuestTokenRequestSpec {
    pub fn renew_before(&self) -> Result<Option<Duration>, DurationError> {
        self.renew_before
            .as_deref()
            .map(duration::parse)
            .transpose()
    }
}
