//! The OpenAPI v3 part of admission: what the API server checks of a custom resource against
//! its CRD's structural schema before any CEL rule runs — types, required and unknown fields,
//! enums, bounds, lengths, patterns, item counts, set uniqueness and defaults.
//!
//! Only the keywords our CRDs use are implemented; [`Node::compile`] refuses any other, so a
//! schema attribute added to a CRD cannot go unchecked here (a test compiles every CRD of
//! `crds/`). CEL rules (`x-kubernetes-validations`) are evaluated by the caller.

mod check;

use regex::Regex;
use serde_json::Value;
use std::collections::BTreeMap;

/// The schema keywords admission handles. Anything else in a CRD schema is an error.
pub const KEYWORDS: &[&str] = &[
    "type",
    "nullable",
    "format",
    "properties",
    "required",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "default",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    // Evaluated by the CEL engine (see `super`).
    "x-kubernetes-validations",
    // Documentation only.
    "description",
    "title",
];

/// A schema keyword or value admission does not handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema at {path}: {problem}")]
pub struct SchemaError {
    pub path: String,
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Int32,
    Int64,
    DateTime,
}

/// One compiled schema node.
#[derive(Debug, Default)]
pub struct Node {
    ty: Option<Type>,
    nullable: bool,
    format: Option<Format>,
    properties: BTreeMap<String, Node>,
    required: Vec<String>,
    items: Option<Box<Node>>,
    enumeration: Option<Vec<Value>>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<(String, Regex)>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    default: Option<Value>,
    preserve_unknown: bool,
    /// `x-kubernetes-list-type: set`: items are unique.
    set: bool,
}

fn count(value: &Value, keyword: &str, path: &str) -> Result<usize, SchemaError> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| schema_error(path, format!("{keyword} is not a count")))
}

fn schema_error(path: &str, problem: impl Into<String>) -> SchemaError {
    SchemaError {
        path: if path.is_empty() { "<root>" } else { path }.to_owned(),
        problem: problem.into(),
    }
}

impl Node {
    /// Compiles one `openAPIV3Schema` (or a node of it); `path` names it in errors.
    pub fn compile(schema: &Value, path: &str) -> Result<Node, SchemaError> {
        let object = schema
            .as_object()
            .ok_or_else(|| schema_error(path, "not a schema object"))?;
        let mut node = Node::default();
        for (keyword, value) in object {
            let number = || {
                value
                    .as_f64()
                    .ok_or_else(|| schema_error(path, format!("{keyword} is not a number")))
            };
            match keyword.as_str() {
                "type" => {
                    node.ty = Some(match value.as_str() {
                        Some("object") => Type::Object,
                        Some("array") => Type::Array,
                        Some("string") => Type::String,
                        Some("integer") => Type::Integer,
                        Some("number") => Type::Number,
                        Some("boolean") => Type::Boolean,
                        _ => return Err(schema_error(path, format!("unknown type {value}"))),
                    })
                }
                "nullable" => node.nullable = value.as_bool() == Some(true),
                "format" => {
                    node.format = Some(match value.as_str() {
                        Some("int32") => Format::Int32,
                        Some("int64") => Format::Int64,
                        Some("date-time") => Format::DateTime,
                        _ => return Err(schema_error(path, format!("unhandled format {value}"))),
                    })
                }
                "properties" => {
                    for (name, child) in value.as_object().into_iter().flatten() {
                        let child_path = join(path, name);
                        node.properties
                            .insert(name.clone(), Node::compile(child, &child_path)?);
                    }
                }
                "required" => {
                    node.required = value
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                }
                "items" => node.items = Some(Box::new(Node::compile(value, &format!("{path}[]"))?)),
                "enum" => node.enumeration = value.as_array().cloned(),
                "minimum" => node.minimum = Some(number()?),
                "maximum" => node.maximum = Some(number()?),
                "minLength" => node.min_length = Some(count(value, keyword, path)?),
                "maxLength" => node.max_length = Some(count(value, keyword, path)?),
                "minItems" => node.min_items = Some(count(value, keyword, path)?),
                "maxItems" => node.max_items = Some(count(value, keyword, path)?),
                "pattern" => {
                    let pattern = value
                        .as_str()
                        .ok_or_else(|| schema_error(path, "pattern is not a string"))?;
                    let regex = Regex::new(pattern)
                        .map_err(|e| schema_error(path, format!("pattern: {e}")))?;
                    node.pattern = Some((pattern.to_owned(), regex));
                }
                "default" => node.default = Some(value.clone()),
                "x-kubernetes-preserve-unknown-fields" => {
                    node.preserve_unknown = value.as_bool() == Some(true)
                }
                "x-kubernetes-list-type" => match value.as_str() {
                    Some("set") => node.set = true,
                    Some("atomic") => {}
                    _ => {
                        return Err(schema_error(
                            path,
                            format!("unhandled x-kubernetes-list-type {value}"),
                        ));
                    }
                },
                "x-kubernetes-validations" => check_rules(value, path)?,
                "description" | "title" => {}
                other => {
                    return Err(schema_error(
                        path,
                        format!("keyword {other:?} is not checked by admission"),
                    ));
                }
            }
        }
        Ok(node)
    }

    /// The node at `path` (`spec.rolloutRestart[0].kind`), below this one.
    pub fn at(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for segment in path.split('.').filter(|s| !s.is_empty()) {
            let (name, indexed) = match segment.find('[') {
                Some(at) => (&segment[..at], segment[at..].matches('[').count()),
                None => (segment, 0),
            };
            node = node.properties.get(name)?;
            for _ in 0..indexed {
                node = node.items.as_deref()?;
            }
        }
        Some(node)
    }

    /// The schema type's name, as the API server shows it in CEL errors.
    pub fn type_name(&self) -> &'static str {
        match self.ty {
            Some(Type::Object) | None => "object",
            Some(Type::Array) => "array",
            Some(Type::String) => "string",
            Some(Type::Integer) => "integer",
            Some(Type::Number) => "number",
            Some(Type::Boolean) => "boolean",
        }
    }
}

/// `x-kubernetes-validations` entries: the CEL engine evaluates them. Transition rules
/// (`oldSelf`) need the stored object, which does not exist without a cluster: refused so
/// that such a rule is not silently skipped.
fn check_rules(rules: &Value, path: &str) -> Result<(), SchemaError> {
    for rule in rules.as_array().into_iter().flatten() {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        if text.contains("oldSelf") {
            return Err(schema_error(
                path,
                format!("transition rule {text:?} cannot be evaluated without a cluster"),
            ));
        }
        for key in rule.as_object().into_iter().flatten().map(|(k, _)| k) {
            if ![
                "rule",
                "message",
                "messageExpression",
                "reason",
                "fieldPath",
            ]
            .contains(&key.as_str())
            {
                return Err(schema_error(
                    path,
                    format!("validation rule field {key:?} is not handled"),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}
