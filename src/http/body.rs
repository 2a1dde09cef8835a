//! Request bodies. Bodies are read as bytes and parsed as JSON whatever their Content-Type:
//! the vendors' PHP examples post JSON through `CURLOPT_POSTFIELDS` without a Content-Type,
//! which curl sends as `application/x-www-form-urlencoded`, and those clients must work.
//! Fields are then read one by one so that each problem is named (and, on the DataBrain route,
//! answered with the right code).

use super::error::{ApiError, Flavor, json_body_message};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::{Map, Value};

/// The body, or the error of reading it (413 past the limit) in the route's vocabulary.
pub fn bytes(body: Result<Bytes, BytesRejection>, flavor: Flavor) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            super::error::default_message(status).to_owned()
        } else {
            format!("cannot read the request body: {}", rejection.body_text())
        };
        ApiError::status(flavor, status, message)
    })
}

/// The body as a JSON object; an empty body is an empty object, so that the missing fields
/// are named rather than "EOF while parsing".
pub fn object(body: &[u8], flavor: Flavor) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad_request(
            flavor,
            format!(
                "request body must be a JSON object, got {}",
                kind_of(&other)
            ),
        )),
        Err(e) => Err(ApiError::bad_request(flavor, json_body_message(&e))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads typed fields of a body object; `null` counts as absent.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn string(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("{name} must be a string, got {}", kind_of(other))),
        }
    }

    /// A string, or a number taken as its decimal text (an app's user id is often numeric).
    pub fn string_or_number(&self, name: &str) -> Result<Option<String>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!(
                "{name} must be a string or a number, got {}",
                kind_of(other)
            )),
        }
    }

    /// A whole number: an integer or a float without fraction (`3600.0`, the vendor's own
    /// example form). A string is refused, even of digits: the vendors document numbers, and
    /// the OpenAPI document can then say exactly what is accepted.
    pub fn integer(&self, name: &str) -> Result<Option<i64>, String> {
        let wrong = |what: &str| format!("{name} must be a whole number, got {what}");
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(i) = n.as_i64() {
                    Ok(Some(i))
                } else {
                    match n.as_f64() {
                        // Saturating `as` is fine: the range checks refuse huge values.
                        Some(f) if f.fract() == 0.0 && f.is_finite() => Ok(Some(f as i64)),
                        _ => Err(wrong(&n.to_string())),
                    }
                }
            }
            Some(other) => Err(wrong(kind_of(other))),
        }
    }

    pub fn object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(format!("{name} must be an object, got {}", kind_of(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers() {
        let m = json!({"a": 3600, "b": 3600.0, "c": "60", "d": 1.5, "e": true, "f": null});
        let f = Fields(m.as_object().unwrap());
        assert_eq!(f.integer("a"), Ok(Some(3600)));
        assert_eq!(f.integer("b"), Ok(Some(3600)));
        assert_eq!(
            f.integer("c"),
            Err("c must be a whole number, got a string".into())
        );
        assert!(f.integer("d").unwrap_err().contains("whole number"));
        assert!(f.integer("e").is_err());
        assert_eq!(f.integer("f"), Ok(None));
        assert_eq!(f.integer("zz"), Ok(None));
    }

    #[test]
    fn bodies() {
        assert!(object(b"", Flavor::Generic).unwrap().is_empty());
        assert!(object(b" \n", Flavor::Generic).unwrap().is_empty());
        let e = object(b"[1]", Flavor::Generic).unwrap_err();
        assert!(e.message.contains("an array"), "{}", e.message);
        let e = object(b"{", Flavor::DataBrain).unwrap_err();
        assert_eq!(e.code, "INVALID_REQUEST_BODY");
        assert!(e.message.contains("malformed JSON"));
    }
}
