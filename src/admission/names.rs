//! Kubernetes name rules (RFC 1123), worded as the API server words them: object and Secret
//! names are DNS subdomains, namespaces DNS labels. Without a cluster these names become path
//! components, so a name that passes here is also a safe one: no `/`, never `.` or `..`.

/// Longest DNS subdomain (object and Secret names).
pub const MAX_SUBDOMAIN: usize = 253;
/// Longest DNS label (namespaces).
pub const MAX_LABEL: usize = 63;

const SUBDOMAIN_FORMAT: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_FORMAT: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// One label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// The problems of `name` as a DNS subdomain, in the API server's words (empty: valid).
pub fn subdomain_problems(name: &str) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if name.len() > MAX_SUBDOMAIN {
        problems.push("must be no more than 253 characters");
    }
    if !name.split('.').all(is_label) {
        problems.push(SUBDOMAIN_FORMAT);
    }
    problems
}

/// The problems of `name` as a DNS label, in the API server's words (empty: valid).
pub fn label_problems(name: &str) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if name.len() > MAX_LABEL {
        problems.push("must be no more than 63 characters");
    }
    if !is_label(name) {
        problems.push(LABEL_FORMAT);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_and_labels() {
        for ok in ["a", "dashboards-token", "a.b-c.d", "0", &"a".repeat(253)] {
            assert!(subdomain_problems(ok).is_empty(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/abs",
            "A",
            "-a",
            "a-",
            "a..b",
            "%2e%2e",
            "a_b",
            &"a".repeat(254),
        ] {
            assert!(!subdomain_problems(bad).is_empty(), "{bad}");
        }
        assert!(label_problems("team-a").is_empty());
        for bad in ["a.b", "", "..", &"a".repeat(64), "Team"] {
            assert!(!label_problems(bad).is_empty(), "{bad}");
        }
        assert_eq!(
            subdomain_problems(&"a".repeat(254)),
            ["must be no more than 253 characters"]
        );
    }
}
