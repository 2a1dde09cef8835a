use super::{DNS_SUBDOMAIN_PATTERN, DURATION_PATTERN, ServiceKeyRef, TokenStatus, WorkloadRef};
use crate::token::duration::{self, DurationError};
use kube::{CustomResource, KubeSchema, ResourceExt};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Lower and upper bound of a data source token's lifetime, in seconds (the vendor's 12 hours).
pub const MIN_EXPIRATION: i64 = 60;
pub use crate::token::mint::MAX_EXPIRATION;
pub const DEFAULT_EXPIRATION: i64 = 3_600;

/// A read token for one data source, issued to the principal of a ServiceKey and kept fresh in
/// a Secret owned by this resource.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tokenmint.dev",
    version = "v1alpha1",
    kind = "DatasourceGrant",
    doc = "A data source read token, minted into a Secret and rotated before expiry. Annotate it with tokenmint.dev/renew=<new value> to mint a fresh token now (the one in place stays valid until it expires), or with tokenmint.dev/revoke=<new value> to revoke the token in place and mint a fresh one.",
    namespaced,
    status = "TokenStatus",
    shortname = "dsg",
    category = "tokenmint",
    printcolumn = r#"{"name":"Data Source","type":"string","jsonPath":".spec.dataSource"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.secretName","priority":1}"#,
    printcolumn = r#"{"name":"Expires","type":"string","format":"date-time","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Consumers","type":"integer","jsonPath":".status.consumerCount","priority":1}"#,
    printcolumn = r#"{"name":"Missing Rotation","type":"integer","jsonPath":".status.consumersMissingRotation","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.renewBefore) || duration(self.renewBefore).getSeconds() + 30 <= (has(self.expiration) ? self.expiration : 3600)").message("renewBefore must be at least 30s shorter than expiration (a token lives at least 30s before it is renewed)"))]
pub struct DatasourceGrantSpec {
    /// The ServiceKey (same namespace) whose principal the token is registered against.
    pub service_key_ref: ServiceKeyRef,
    /// Name of the data source to grant read access to; must be listed in the ServiceKey's
    /// dataSources (or the ServiceKey allows "*"), else Ready=False with reason Forbidden.
    #[schemars(length(min = 1, max = 253))]
    pub data_source: String,
    /// The end user's id in the client's application (the `app_uuid` claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub app_uuid: Option<String>,
    /// SQL condition ANDed into the queries generated for this token, e.g. `USER_id = 123`:
    /// comparisons, IN, BETWEEN, LIKE and IS [NOT] NULL, combined with AND, OR, NOT and
    /// parentheses. Refused: statements, ';', comments (including `//` and `#`), sub-queries,
    /// placeholders, backslashes, control characters, and anything any mainstream SQL dialect
    /// would read differently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("!self.contains('\\\\')").message("filter must not contain a backslash ('\\')"))]
    #[x_kube(validation = Rule::new("!self.matches('[\\\\x00-\\\\x08\\\\x0B\\\\x0C\\\\x0E-\\\\x1F\\\\x7F-\\\\x9F]')").message("filter must not contain control characters such as NUL"))]
    #[x_kube(validation = Rule::new("!self.contains(';')").message("filter must be a single SQL boolean expression: ';' is not allowed"))]
    #[x_kube(validation = Rule::new("!self.contains('--') && !self.contains('/*')").message("filter must not contain SQL comments ('--' or '/*')"))]
    #[x_kube(validation = Rule::new("!self.matches('(?i)\\\\bselect\\\\b')").message("filter must not contain sub-queries (SELECT)"))]
    pub filter: Option<String>,
    /// Lifetime of each token in seconds, 60 to 43200 (12 hours). Default 3600.
    #[serde(default = "default_expiration")]
    #[schemars(range(min = MIN_EXPIRATION, max = MAX_EXPIRATION))]
    pub expiration: i64,
    /// Secret that receives the token (keys `token` and `expires-at`). Default `<name>-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub secret_name: Option<String>,
    /// How long before expiry the token is replaced, as a duration (e.g. `20m`). Default one
    /// third of the lifetime. Must be at least 1s, and at least 30s shorter than the lifetime.
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

fn default_expiration() -> i64 {
    DEFAULT_EXPIRATION
}

impl DatasourceGrant {
    /// The Secret holding the token: `spec.secretName`, default `<name>-token`.
    pub fn token_secret_name(&self) -> String {
        super::secret_name_or(&self.spec.secret_name, &self.name_any(), "-token")
    }
}

impl DatasourceGrantSpec {
    pub fn renew_before(&self) -> Result<Option<Duration>, DurationError> {
        self.renew_before
            .as_deref()
            .map(duration::parse)
            .transpose()
    }
}
