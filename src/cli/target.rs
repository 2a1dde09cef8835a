//! What a command names: `KIND/NAME` or `KIND NAME` as kubectl takes them (`dsg/x`,
//! `datasourcegrant x`, `datasourcegrants.tokenmint.dev/x`), and the object read back.
//!
//! Objects are read as JSON and typed leniently: fields this version does not know (a newer
//! operator's `status.consumers`) are kept in the JSON for whoever reads them.

use super::output::CliError;
use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey, TokenStatus, WorkloadRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    DatasourceGrant,
    GuestTokenRequest,
    ServiceKey,
}

impl Kind {
    pub const ALL: [Kind; 3] = [
        Kind::DatasourceGrant,
        Kind::GuestTokenRequest,
        Kind::ServiceKey,
    ];

    /// A kind as kubectl accepts it: short name, singular, plural, with or without the group,
    /// any case.
    pub fn parse(text: &str) -> Result<Kind, CliError> {
        let lower = text.to_ascii_lowercase();
        let bare = lower
            .strip_suffix(&format!(".{}", crate::crd::GROUP))
            .unwrap_or(&lower);
        Kind::ALL
            .into_iter()
            .find(|k| [k.short(), &k.name().to_ascii_lowercase(), k.plural()].contains(&bare))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "unknown kind {text:?}: expected dsg (DatasourceGrant), gtr (GuestTokenRequest) or sk (ServiceKey)"
                ))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::DatasourceGrant => "DatasourceGrant",
            Kind::GuestTokenRequest => "GuestTokenRequest",
            Kind::ServiceKey => "ServiceKey",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::DatasourceGrant => "datasourcegrants",
            Kind::GuestTokenRequest => "guesttokenrequests",
            Kind::ServiceKey => "servicekeys",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Kind::DatasourceGrant => "dsg",
            Kind::GuestTokenRequest => "gtr",
            Kind::ServiceKey => "sk",
        }
    }

    fn api_resource(self) -> ApiResource {
        match self {
            Kind::DatasourceGrant => ApiResource::erase::<DatasourceGrant>(&()),
            Kind::GuestTokenRequest => ApiResource::erase::<GuestTokenRequest>(&()),
            Kind::ServiceKey => ApiResource::erase::<ServiceKey>(&()),
        }
    }

    /// The objects of this kind in `namespace` (`None`: all namespaces).
    pub fn api(self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = self.api_resource();
        match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        }
    }
}

/// The object arguments of a command: `KIND/NAME`, `KIND NAME`, or `KIND` alone.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// KIND/NAME (dsg/x, gtr/x, sk/x) or KIND NAME.
    #[arg(value_name = "KIND[/NAME]")]
    pub target: String,
    /// The name, when KIND is given alone.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

impl TargetArgs {
    pub fn parse(&self) -> Result<Target, CliError> {
        Target::parse(&self.target, self.name.as_deref())
    }
}

/// `KIND/NAME`, `KIND NAME`, or a bare `KIND` (for commands that take a selection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub name: Option<String>,
}

impl Target {
    pub fn parse(first: &str, second: Option<&str>) -> Result<Target, CliError> {
        let (kind, name) = match (first.split_once('/'), second) {
            (Some(_), Some(extra)) => {
                return Err(CliError::Usage(format!(
                    "unexpected argument {extra:?}: give KIND/NAME or KIND NAME"
                )));
            }
            (Some((kind, name)), None) => (kind, Some(name)),
            (None, name) => (first, name),
        };
        if name.is_some_and(str::is_empty) {
            return Err(CliError::Usage(format!("{first:?} names no object")));
        }
        Ok(Target {
            kind: Kind::parse(kind)?,
            name: name.map(str::to_owned),
        })
    }

    /// The name, or a usage error naming the command that needs one.
    pub fn require_name(&self, command: &str) -> Result<&str, CliError> {
        self.name.as_deref().ok_or_else(|| {
            CliError::Usage(format!(
                "{command} needs one object: {short}/NAME",
                short = self.kind.short()
            ))
        })
    }
}

/// One of the three kinds, typed, with its JSON as read (for fields newer than this version).
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: Kind,
    pub typed: Typed,
    pub json: Value,
}

#[derive(Debug, Clone)]
pub enum Typed {
    Grant(DatasourceGrant),
    Guest(GuestTokenRequest),
    Key(ServiceKey),
}

impl Object {
    pub fn from_json(kind: Kind, json: Value) -> Result<Object, CliError> {
        let what = || {
            format!(
                "{} {}",
                kind.name(),
                json["metadata"]["name"].as_str().unwrap_or("?")
            )
        };
        let bad = |e: serde_json::Error| CliError::Format(format!("cannot read {}: {e}", what()));
        let typed = match kind {
            Kind::DatasourceGrant => {
                Typed::Grant(serde_json::from_value(json.clone()).map_err(bad)?)
            }
            Kind::GuestTokenRequest => {
                Typed::Guest(serde_json::from_value(json.clone()).map_err(bad)?)
            }
            Kind::ServiceKey => Typed::Key(serde_json::from_value(json.clone()).map_err(bad)?),
        };
        Ok(Object { kind, typed, json })
    }

    pub fn meta(&self) -> &ObjectMeta {
        match &self.typed {
            Typed::Grant(o) => &o.metadata,
            Typed::Guest(o) => &o.metadata,
            Typed::Key(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }

    pub fn namespace(&self) -> String {
        self.meta().namespace.clone().unwrap_or_default()
    }

    pub fn status(&self) -> Option<&TokenStatus> {
        match &self.typed {
            Typed::Grant(o) => o.status.as_ref(),
            Typed::Guest(o) => o.status.as_ref(),
            Typed::Key(o) => o.status.as_ref(),
        }
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status()?.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.condition(crate::reconcile::status::READY)
            .is_some_and(|c| c.status == "True")
    }

    /// The Secret of the token the operator mints for this object: a grant's or guest token's
    /// token Secret, a ServiceKey's session token Secret (none without `sessionToken`).
    pub fn token_secret(&self) -> Option<String> {
        match &self.typed {
            Typed::Grant(o) => Some(o.token_secret_name()),
            Typed::Guest(o) => Some(o.token_secret_name()),
            Typed::Key(o) => o.spec.session_token.as_ref().map(|s| s.secret_name.clone()),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.meta()
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    pub fn rollout_restart(&self) -> &[WorkloadRef] {
        match &self.typed {
            Typed::Grant(o) => &o.spec.rollout_restart,
            Typed::Guest(o) => &o.spec.rollout_restart,
            Typed::Key(_) => &[],
        }
    }

    /// `dsg/name`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.kind.short(), self.name())
    }
}

/// Reads `kind` `name` in `namespace`.
pub async fn get(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Object, CliError> {
    let object = kind
        .api(client, Some(namespace))
        .get(name)
        .await
        .map_err(|e| CliError::api(format!("{} {namespace}/{name}", kind.name()), e))?;
    Object::from_json(kind, to_json(object)?)
}

/// Lists `kind` in `namespace` (`None`: all namespaces), optionally label-selected.
pub async fn list(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<Object>, CliError> {
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let scope = namespace.map_or("all namespaces".to_owned(), |ns| format!("namespace {ns}"));
    let listed = kind
        .api(client, namespace)
        .list(&params)
        .await
        .map_err(|e| CliError::api(format!("{} in {scope}", kind.plural()), e))?;
    let mut objects = listed
        .items
        .into_iter()
        .map(|o| Object::from_json(kind, to_json(o)?))
        .collect::<Result<Vec<_>, _>>()?;
    objects.sort_by_key(|o| (o.namespace(), o.name()));
    Ok(objects)
}

fn to_json(object: DynamicObject) -> Result<Value, CliError> {
    let name = object.name_any();
    serde_json::to_value(object)
        .map_err(|e| CliError::Format(format!("cannot read object {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names_parse_as_kubectl_takes_them() {
        for (text, kind) in [
            ("dsg", Kind::DatasourceGrant),
            ("DatasourceGrant", Kind::DatasourceGrant),
            ("datasourcegrants.tokenmint.dev", Kind::DatasourceGrant),
            ("gtr", Kind::GuestTokenRequest),
            ("guesttokenrequest", Kind::GuestTokenRequest),
            ("SK", Kind::ServiceKey),
            ("servicekeys", Kind::ServiceKey),
        ] {
            assert_eq!(Kind::parse(text).unwrap(), kind, "{text}");
        }
        let err = Kind::parse("secret").unwrap_err().to_string();
        assert!(
            err.contains("unknown kind \"secret\"") && err.contains("dsg"),
            "{err}"
        );

        let t = Target::parse("dsg/dashboards", None).unwrap();
        assert_eq!(
            (t.kind, t.name.as_deref()),
            (Kind::DatasourceGrant, Some("dashboards"))
        );
        assert_eq!(
            Target::parse("gtr", Some("x")).unwrap().name.as_deref(),
            Some("x")
        );
        assert_eq!(Target::parse("sk", None).unwrap().name, None);
        assert!(Target::parse("dsg/a", Some("b")).is_err());
        assert!(Target::parse("dsg/", None).is_err());
        let err = Target::parse("dsg", None)
            .unwrap()
            .require_name("status")
            .unwrap_err();
        assert_eq!(err.to_string(), "status needs one object: dsg/NAME");
    }
}
