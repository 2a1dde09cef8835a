//! One refusal of one field, rendered as the API server renders its field errors
//! (`spec.expiration: Invalid value: 50000: spec.expiration in body should be less than or
//! equal to 43200`), so a message reads the same with and without a cluster.

use serde_json::Value;

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// `Required value`, with what is required when the API server says more.
    Required(Option<&'static str>),
    /// `Invalid value: <value>: <detail>` (also type errors: same wording).
    Invalid { value: Value, detail: String },
    /// `Unsupported value: <value>: supported values: "a", "b"`.
    NotSupported {
        value: Value,
        supported: Vec<String>,
    },
    /// `Too long: may not be more than <max> bytes` (the value is not repeated).
    TooLong { max: usize },
    /// `Too many: <actual>: must have at most <max> items`.
    TooMany { actual: usize, max: usize },
    /// `Duplicate value: <value>`.
    Duplicate { value: Value },
    /// A field the schema does not declare: `kubectl apply`'s strict field validation refuses
    /// it as `unknown field "<path>"`.
    Unknown,
}

/// A refused field: its path (`spec.rolloutRestart[0].kind`) and the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub problem: Problem,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        FieldError {
            field: field.into(),
            problem,
        }
    }

    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError::new(
            field,
            Problem::Invalid {
                value,
                detail: detail.into(),
            },
        )
    }
}

/// A value as the API server prints it in a field error: numbers and booleans plain, strings
/// quoted, anything else as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let field = &self.field;
        match &self.problem {
            Problem::Unknown => write!(f, "unknown field {:?}", field),
            Problem::Required(None) => write!(f, "{field}: Required value"),
            Problem::Required(Some(detail)) => write!(f, "{field}: Required value: {detail}"),
            Problem::Invalid { value, detail } => {
                write!(f, "{field}: Invalid value: {}: {detail}", shown(value))
            }
            Problem::NotSupported { value, supported } => {
                let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                write!(
                    f,
                    "{field}: Unsupported value: {}: supported values: {}",
                    shown(value),
                    quoted.join(", ")
                )
            }
            Problem::TooLong { max } => {
                write!(f, "{field}: Too long: may not be more than {max} bytes")
            }
            Problem::TooMany { actual, max } => {
                write!(
                    f,
                    "{field}: Too many: {actual}: must have at most {max} items"
                )
            }
            Problem::Duplicate { value } => write!(f, "{field}: Duplicate value: {}", shown(value)),
        }
    }
}

/// Several field errors, as one message.
pub fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rendered_as_the_api_server_renders_them() {
        let cases = [
            (
                FieldError::invalid(
                    "spec.expiration",
                    json!(50000),
                    "spec.expiration in body should be less than or equal to 43200",
                ),
                "spec.expiration: Invalid value: 50000: spec.expiration in body should be less than or equal to 43200",
            ),
            (
                FieldError::new("spec.dataSource", Problem::Required(None)),
                "spec.dataSource: Required value",
            ),
            (
                FieldError::new(
                    "spec.rolloutRestart[0].kind",
                    Problem::NotSupported {
                        value: json!("Pod"),
                        supported: vec!["Deployment".into(), "StatefulSet".into()],
                    },
                ),
                "spec.rolloutRestart[0].kind: Unsupported value: \"Pod\": supported values: \"Deployment\", \"StatefulSet\"",
            ),
            (
                FieldError::new("spec.filter", Problem::TooLong { max: 4096 }),
                "spec.filter: Too long: may not be more than 4096 bytes",
            ),
            (
                FieldError::new(
                    "spec.rolloutRestart",
                    Problem::TooMany {
                        actual: 17,
                        max: 16,
                    },
                ),
                "spec.rolloutRestart: Too many: 17: must have at most 16 items",
            ),
            (
                FieldError::new(
                    "spec.serviceAccounts[1]",
                    Problem::Duplicate { value: json!("a") },
                ),
                "spec.serviceAccounts[1]: Duplicate value: \"a\"",
            ),
            (
                FieldError::new("spec.colour", Problem::Unknown),
                "unknown field \"spec.colour\"",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
