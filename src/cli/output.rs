//! What `kubectl tokenmint` prints: the structured forms (`-o json|yaml`), the pieces of the text
//! for people (times as dates and relative to now, check marks), the exit codes and the errors.
//! Pure: every sub-command gathers a report through the API, then renders it here or beside it.

use clap::ValueEnum;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// `-o`: a structured form instead of the text for people.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// The exit code of a sub-command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked about is fine.
    Fine,
    /// The command ran and found something wrong: not Ready, a failed check, a bad signature, a
    /// renewal that did not complete.
    NotFine,
    /// The command could not run: bad arguments, no cluster, an object that does not exist.
    Error,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Fine => 0,
            Exit::NotFine => 1,
            Exit::Error => 2,
        }
    }

    /// `Fine` when `fine`, else `NotFine`.
    pub fn from_fine(fine: bool) -> Self {
        if fine { Exit::Fine } else { Exit::NotFine }
    }
}

/// Why a sub-command could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what}: {}", describe(.source))]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot format the output: {0}")]
    Format(String),
}

impl CliError {
    /// A failed API request about `what` (a 404 becomes [`CliError::NotFound`]).
    pub fn api(what: impl Into<String>, source: kube::Error) -> Self {
        let what = what.into();
        match &source {
            kube::Error::Api(s) if s.is_not_found() => CliError::NotFound { what },
            _ => CliError::Api { what, source },
        }
    }
}

/// An API error as a person reads it: `403 Forbidden: <the API server's message>`.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => {
            let message = if s.message.is_empty() {
                String::new()
            } else {
                format!(": {}", s.message)
            };
            format!("{} {}{message}", s.code, s.reason)
        }
        other => other.to_string(),
    }
}

/// `value` as pretty JSON or YAML, ending with a newline.
pub fn structured<T: Serialize>(value: &T, format: Format) -> Result<String, CliError> {
    match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| CliError::Format(e.to_string())),
        Format::Yaml => serde_saphyr::to_string(value).map_err(|e| CliError::Format(e.to_string())),
    }
}

/// The check marks of `check` and the verdict lines elsewhere.
pub const PASS: &str = "✔";
pub const FAIL: &str = "✘";
/// Something that could not be checked (no right to read it): reported, not failed.
pub const UNCHECKED: &str = "!";

/// A span in its two largest adjacent units: `1d2h`, `3h5m`, `40m`, `59s`.
pub fn span(duration: SignedDuration) -> String {
    let mut rest = duration.as_secs().unsigned_abs();
    if rest == 0 {
        return "0s".into();
    }
    let mut parts = Vec::new();
    for (size, unit) in [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")] {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            break;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.concat()
}

/// `at` relative to `now`: `in 40m`, `20m ago`, `now`.
pub fn relative(now: Timestamp, at: Timestamp) -> String {
    let delta = at.duration_since(now);
    if delta.as_secs() == 0 {
        "now".into()
    } else if delta.is_positive() {
        format!("in {}", span(delta))
    } else {
        format!("{} ago", span(delta))
    }
}

/// `2026-12-01T10:00:00Z (in 40m)`.
pub fn when(now: Timestamp, at: Timestamp) -> String {
    format!(
        "{} ({})",
        crate::token::assess::rfc3339(at),
        relative(now, at)
    )
}

/// Lines of `label value`, the labels padded to one column.
#[derive(Default)]
pub struct Fields {
    lines: Vec<(String, String)>,
    /// The least width of the label column, so that reports of one kind line up alike.
    min_width: usize,
}

impl Fields {
    pub fn padded(min_width: usize) -> Self {
        Fields {
            lines: Vec::new(),
            min_width,
        }
    }

    pub fn add(&mut self, label: &str, value: impl Into<String>) -> &mut Self {
        self.lines.push((label.to_owned(), value.into()));
        self
    }

    /// The fields, indented by `indent` spaces; a value spanning lines keeps the column.
    pub fn render(&self, indent: usize) -> String {
        let width = self
            .lines
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            .max(self.min_width);
        let pad = " ".repeat(indent);
        let mut out = String::new();
        for (label, value) in &self.lines {
            let mut lines = value.lines();
            let first = lines.next().unwrap_or_default();
            out.push_str(format!("{pad}{label:<width$}  {first}").trim_end());
            out.push('\n');
            for more in lines {
                out.push_str(&format!("{pad}{:width$}  {more}", ""));
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn spans_have_at_most_two_units() {
        let s = |secs| span(SignedDuration::from_secs(secs));
        assert_eq!(s(0), "0s");
        assert_eq!(s(59), "59s");
        assert_eq!(s(60), "1m");
        assert_eq!(s(61), "1m1s");
        assert_eq!(s(2_400), "40m");
        assert_eq!(s(3_723), "1h2m");
        assert_eq!(s(90_061), "1d1h");
        assert_eq!(s(3_605), "1h");
        assert_eq!(s(-2_400), "40m");
    }

    #[test]
    fn times_are_dates_and_relative() {
        let now = at("2026-12-01T10:00:00Z");
        assert_eq!(
            when(now, at("2026-12-01T10:40:00.9Z")),
            "2026-12-01T10:40:00Z (in 40m)"
        );
        assert_eq!(relative(now, at("2026-12-01T09:40:00Z")), "20m ago");
        assert_eq!(relative(now, now), "now");
    }

    #[test]
    fn fields_line_up() {
        let mut f = Fields::default();
        f.add("Ready", "True").add("Token id", "x\ny");
        assert_eq!(
            f.render(2),
            "  Ready     True\n  Token id  x\n            y\n"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Exit::from_fine(true).code(), 0);
        assert_eq!(Exit::from_fine(false).code(), 1);
        assert_eq!(Exit::Error.code(), 2);
    }
}
