//! Checking a value against a compiled [`Node`], in the API server's order and words:
//! defaults first, then per node null, type, enum, and the bounds of its kind; objects report
//! missing required fields and refuse unknown ones.

use super::{Format, Node, Type, join};
use crate::admission::field::{FieldError, Problem};
use serde_json::{Number, Value};

/// What a check collects on its way down.
struct Walk<'a> {
    errors: &'a mut Vec<FieldError>,
    /// A type error was found: the API server then skips the CEL rules.
    typed_wrong: bool,
}

impl Node {
    /// Applies defaults to `value` and checks it, appending what is wrong to `errors`. Fields
    /// named in `implicit` (apiVersion, kind and metadata of an object's root) are not the
    /// schema's to judge. Returns whether a type error was found (the API server then skips the
    /// CEL rules).
    pub fn admit(
        &self,
        value: &mut Value,
        path: &str,
        implicit: &[&str],
        errors: &mut Vec<FieldError>,
    ) -> bool {
        let mut walk = Walk {
            errors,
            typed_wrong: false,
        };
        self.check(value, path, implicit, &mut walk);
        walk.typed_wrong
    }

    fn check(&self, value: &mut Value, path: &str, implicit: &[&str], walk: &mut Walk) {
        if value.is_null() && self.nullable {
            return;
        }
        if let Some(ty) = self.ty
            && !has_type(value, ty)
        {
            walk.typed_wrong = true;
            let actual = json_type(value);
            walk.errors.push(FieldError::invalid(
                path,
                Value::String(actual.into()),
                format!(
                    "{path} in body must be of type {}: {actual:?}",
                    self.type_name()
                ),
            ));
            return;
        }
        if self.ty == Some(Type::Integer)
            && let Some(integral) = value.as_f64().filter(|f| f.fract() == 0.0)
            && !value.is_i64()
            && !value.is_u64()
        {
            // 3600.0 is an integer to the API server (JSON has one number type).
            *value = Value::Number(Number::from(integral as i64));
        }
        if let Some(allowed) = &self.enumeration
            && !allowed.contains(value)
        {
            let supported = allowed
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect();
            walk.errors.push(FieldError::new(
                path,
                Problem::NotSupported {
                    value: value.clone(),
                    supported,
                },
            ));
        }
        match value {
            Value::Number(_) => self.check_number(value, path, walk.errors),
            Value::String(s) => self.check_string(s, path, walk.errors),
            Value::Array(items) => self.check_array(items, path, walk),
            Value::Object(_) => self.check_object(value, path, implicit, walk),
            _ => {}
        }
    }

    fn check_number(&self, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
        let Some(n) = value.as_f64() else { return };
        let mut bound = |ok: bool, relation: &str, limit: f64| {
            if !ok {
                errors.push(FieldError::invalid(
                    path,
                    value.clone(),
                    format!("{path} in body should be {relation} {}", plain(limit)),
                ));
            }
        };
        if let Some(min) = self.minimum {
            bound(n >= min, "greater than or equal to", min);
        }
        if let Some(max) = self.maximum {
            bound(n <= max, "less than or equal to", max);
        }
        let fits = match self.format {
            Some(Format::Int64) => value.is_i64(),
            Some(Format::Int32) => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            _ => true,
        };
        if !fits {
            errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!("{path} in body is out of range for its format"),
            ));
        }
    }

    fn check_string(&self, s: &str, path: &str, errors: &mut Vec<FieldError>) {
        let value = || Value::String(s.to_owned());
        let chars = s.chars().count();
        if let Some(max) = self.max_length
            && chars > max
        {
            errors.push(FieldError::new(path, Problem::TooLong { max }));
        }
        if let Some(min) = self.min_length
            && chars < min
        {
            errors.push(FieldError::invalid(
                path,
                value(),
                format!("{path} in body should be at least {min} chars long"),
            ));
        }
        if let Some((pattern, regex)) = &self.pattern
            && !regex.is_match(s)
        {
            errors.push(FieldError::invalid(
                path,
                value(),
                format!("{path} in body should match '{pattern}'"),
            ));
        }
        if self.format == Some(Format::DateTime) && s.parse::<jiff::Timestamp>().is_err() {
            errors.push(FieldError::invalid(
                path,
                value(),
                format!("{path} in body must be of type date-time: {s:?}"),
            ));
        }
    }

    fn check_array(&self, items: &mut [Value], path: &str, walk: &mut Walk) {
        if let Some(max) = self.max_items
            && items.len() > max
        {
            walk.errors.push(FieldError::new(
                path,
                Problem::TooMany {
                    actual: items.len(),
                    max,
                },
            ));
        }
        if let Some(min) = self.min_items
            && items.len() < min
        {
            walk.errors.push(FieldError::invalid(
                path,
                Value::from(items.len()),
                format!("{path} in body should have at least {min} items"),
            ));
        }
        if self.set {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    walk.errors.push(FieldError::new(
                        format!("{path}[{i}]"),
                        Problem::Duplicate {
                            value: item.clone(),
                        },
                    ));
                }
            }
        }
        if let Some(node) = &self.items {
            for (i, item) in items.iter_mut().enumerate() {
                node.check(item, &format!("{path}[{i}]"), &[], walk);
            }
        }
    }

    fn check_object(&self, value: &mut Value, path: &str, implicit: &[&str], walk: &mut Walk) {
        let Value::Object(map) = value else { return };
        for (name, node) in &self.properties {
            let absent = match map.get(name) {
                None => true,
                // A null where null is not allowed is dropped before defaulting.
                Some(Value::Null) => !node.nullable && node.default.is_some(),
                Some(_) => false,
            };
            if absent && let Some(default) = &node.default {
                map.insert(name.clone(), default.clone());
            }
        }
        for name in &self.required {
            if !map.contains_key(name) {
                walk.errors
                    .push(FieldError::new(join(path, name), Problem::Required(None)));
            }
        }
        for (name, child) in map.iter_mut() {
            let child_path = join(path, name);
            match self.properties.get(name) {
                Some(node) => node.check(child, &child_path, &[], walk),
                None if self.preserve_unknown || implicit.contains(&name.as_str()) => {}
                None => walk
                    .errors
                    .push(FieldError::new(child_path, Problem::Unknown)),
            }
        }
    }
}

fn has_type(value: &Value, ty: Type) -> bool {
    match ty {
        Type::Object => value.is_object(),
        Type::Array => value.is_array(),
        Type::String => value.is_string(),
        Type::Boolean => value.is_boolean(),
        Type::Number => value.is_number(),
        Type::Integer => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
    }
}

/// The JSON type of a value, as the API server names it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A bound as Go's `%v` prints it: 43200, not 43200.0.
fn plain(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}
