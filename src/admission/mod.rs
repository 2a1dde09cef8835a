//! Admission without a cluster: what the API server refuses at `kubectl apply` time is refused
//! when `serve --manifests` reads a manifest, with the same field named in the same words.
//!
//! The rules are not restated here: they are read from the generated CRDs ([`crate::crd::all`],
//! the schemas of `crds/`) and compiled once — the OpenAPI constraints by [`schema`], the CEL
//! rules by kube's CEL engine — so the loader and the cluster cannot drift apart. Metadata
//! follows Kubernetes' name rules ([`names`]). Unknown fields are refused, as `kubectl apply`'s
//! default strict field validation does.

pub mod field;
pub mod names;
pub mod schema;

pub use field::{FieldError, Problem};

use crate::crd::{DatasourceGrant, GROUP, GuestTokenRequest, ServiceKey, VERSION};
use k8s_openapi::api::core::v1::Secret;
use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use schema::{Node, SchemaError};
use serde_json::Value;
use std::collections::HashMap;

/// An object the API server would store.
#[derive(Debug, Clone)]
pub enum Admitted {
    ServiceKey(ServiceKey),
    DatasourceGrant(DatasourceGrant),
    GuestTokenRequest(GuestTokenRequest),
    Secret(Secret),
}

/// Why an object was refused: one or more field errors, or a problem the API server words
/// without a field (an unknown kind).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Vec<FieldError>> for Refusal {
    fn from(errors: Vec<FieldError>) -> Self {
        Refusal(field::join(&errors))
    }
}

/// One kind's compiled schema.
struct Kind {
    structural: Node,
    cel: CompiledSchema,
}

/// The CRDs' rules, compiled once; [`Admission::admit`] judges one object.
pub struct Admission {
    kinds: HashMap<String, Kind>,
    cel: Validator,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

/// Fields of `metadata` a manifest may set (ObjectMeta's).
const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
];
/// Top-level fields of a Secret.
const SECRET_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "data",
    "stringData",
    "type",
    "immutable",
];
/// Top-level fields every object has besides its schema's.
const OBJECT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

impl Admission {
    /// Compiles the schemas of the three CRDs.
    pub fn new() -> Result<Self, SchemaError> {
        let mut kinds = HashMap::new();
        for crd in crate::crd::all() {
            let kind = crd.spec.names.kind.clone();
            let schema = crd
                .spec
                .versions
                .first()
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| SchemaError {
                    path: kind.clone(),
                    problem: e.to_string(),
                })?
                .ok_or_else(|| SchemaError {
                    path: kind.clone(),
                    problem: "the CRD has no schema".into(),
                })?;
            let structural = Node::compile(&schema, "")?;
            let cel = compile_schema(&schema);
            if let Some(e) = cel.compilation_errors().first() {
                return Err(SchemaError {
                    path: kind,
                    problem: format!("a CEL rule does not compile: {e:?}"),
                });
            }
            kinds.insert(kind, Kind { structural, cel });
        }
        Ok(Admission {
            kinds,
            cel: Validator::new(),
        })
    }

    /// Judges one document: `Ok(None)` for a kind tokenmint does not read (a Deployment beside
    /// the manifests), else the object as stored, defaults applied, or why it is refused.
    pub fn admit(&self, mut doc: Value) -> Result<Option<Admitted>, Refusal> {
        let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        if group == GROUP {
            let Some(schema) = self.kinds.get(&kind).filter(|_| version == VERSION) else {
                return Err(Refusal(format!(
                    "no matches for kind {kind:?} in version {api_version:?}"
                )));
            };
            self.custom_resource(schema, &mut doc)?;
            return Ok(Some(match kind.as_str() {
                "ServiceKey" => Admitted::ServiceKey(typed(doc)?),
                "DatasourceGrant" => Admitted::DatasourceGrant(typed(doc)?),
                _ => Admitted::GuestTokenRequest(typed(doc)?),
            }));
        }
        if (group, version, kind.as_str()) != ("", "v1", "Secret") {
            return Ok(None);
        }
        let mut errors = metadata(&doc);
        unknown_fields(&doc, SECRET_FIELDS, "", &mut errors);
        if !errors.is_empty() {
            return Err(errors.into());
        }
        // The error names the field, never the value: it may be a key.
        serde_path_to_error::deserialize(doc)
            .map(|secret| Some(Admitted::Secret(secret)))
            .map_err(|e| {
                Refusal(format!(
                    "{}: not a valid value (not shown: a Secret holds keys)",
                    e.path()
                ))
            })
    }

    /// Metadata, the structural schema (defaults applied) and, unless a type was wrong, the
    /// CEL rules; every error at once, as the API server reports them.
    fn custom_resource(&self, schema: &Kind, doc: &mut Value) -> Result<(), Refusal> {
        let mut errors = metadata(doc);
        if let Some(object) = doc.as_object_mut() {
            // The status subresource: what a manifest says of status is dropped on create.
            object.remove("status");
        }
        let typed_wrong = schema.structural.admit(doc, "", OBJECT_FIELDS, &mut errors);
        if typed_wrong {
            errors.push(FieldError::invalid(
                "<root>",
                Value::String("object".into()),
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
        } else if let Err(failures) = self.cel.validate_compiled(&schema.cel, doc, None) {
            for failure in failures.into_vec() {
                let ty = schema
                    .structural
                    .at(&failure.field_path)
                    .map_or("object", Node::type_name);
                errors.push(FieldError::invalid(
                    failure.field_path,
                    Value::String(ty.into()),
                    failure.message,
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.into())
        }
    }
}

/// The name rules of `metadata`, and its unknown fields.
fn metadata(doc: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let meta = doc.get("metadata");
    match meta.and_then(|m| m.get("name")).and_then(Value::as_str) {
        // generateName needs the API server to pick the name: without one, a name is required.
        None | Some("") => errors.push(FieldError::new(
            "metadata.name",
            Problem::Required(Some("name is required")),
        )),
        Some(name) => {
            for problem in names::subdomain_problems(name) {
                errors.push(FieldError::invalid(
                    "metadata.name",
                    Value::String(name.into()),
                    problem,
                ));
            }
        }
    }
    if let Some(namespace) = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        && !namespace.is_empty()
    {
        for problem in names::label_problems(namespace) {
            errors.push(FieldError::invalid(
                "metadata.namespace",
                Value::String(namespace.into()),
                problem,
            ));
        }
    }
    if let Some(meta) = meta {
        unknown_fields(meta, METADATA_FIELDS, "metadata", &mut errors);
    }
    errors
}

fn unknown_fields(object: &Value, known: &[&str], path: &str, errors: &mut Vec<FieldError>) {
    for name in object.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !known.contains(&name.as_str()) {
            let field = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            errors.push(FieldError::new(field, Problem::Unknown));
        }
    }
}

/// An admitted document as its Rust type; the error names the field (for what the schema lets
/// through but the type refuses, such as a label of the wrong type).
fn typed<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, Refusal> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        Refusal(if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        })
    })
}

#[cfg(test)]
mod tests;
