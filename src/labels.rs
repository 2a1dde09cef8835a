//! Names tokenmint writes on the objects it manages, shared by every writer and reader (the
//! reconcilers, the revocation records, the REST caches' selectors).

/// The one server-side-apply field manager of every write.
pub const FIELD_MANAGER: &str = "tokenmint";
/// Label on every Secret tokenmint manages; the operator watches only Secrets carrying it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "tokenmint";
/// `app.kubernetes.io/managed-by=tokenmint`: the Secret watch's label selector.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=tokenmint";
/// Kind of the resource owning a Secret.
pub const OWNER_KIND_LABEL: &str = "tokenmint.dev/owner-kind";
/// What a Secret holds: `token`, `session-token` or `service-key`.
pub const ROLE_LABEL: &str = "tokenmint.dev/secret-role";
/// Name of the ServiceKey a key Secret belongs to.
pub const SERVICE_KEY_LABEL: &str = "tokenmint.dev/service-key";
/// Roles of Secrets ([`ROLE_LABEL`]).
pub const ROLE_TOKEN: &str = "token";
pub const ROLE_SESSION: &str = "session-token";
pub const ROLE_KEY: &str = "service-key";
