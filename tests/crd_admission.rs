//! What the API server will do with `crds/` at admission time, checked without a cluster: every
//! CEL rule compiles, stays within the cost budget and sees only its scope's variables, and the
//! rules accept the contract's examples and refuse the documented mistakes with their messages.
//!
//! One table of refusals ([`refusals`]) serves two tests: the CRDs' rules refuse each case
//! (kube's CEL engine over `crds/*.yaml`, as the API server would), and `serve --manifests`
//! refuses each case too, naming the same field — one admission for both worlds. Every schema
//! keyword of `crds/` must be one that admission checks.

use kube::core::cel::{CompiledSchema, ScopeContext, Validator, analyze_rule, compile_schema};
use serde_json::{Value, json};
use std::path::Path;

fn schema(plural: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crds")
        .join(format!("{plural}.yaml"));
    let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every rule of a compiled schema tree, with the node it sits on.
fn rules<'a>(node: &'a CompiledSchema, out: &mut Vec<(&'a CompiledSchema, String)>) {
    for rule in node.validations.iter().flatten() {
        out.push((node, rule.rule.rule.clone()));
    }
    for child in node.properties.values() {
        rules(child, out);
    }
    if let Some(items) = &node.items {
        rules(items, out);
    }
}

#[test]
fn every_rule_compiles_within_budget_and_scope() {
    for plural in ["servicekeys", "datasourcegrants", "guesttokenrequests"] {
        let compiled = compile_schema(&schema(plural));
        let mut all = Vec::new();
        rules(&compiled, &mut all);
        fn errors(node: &CompiledSchema, out: &mut Vec<String>) {
            out.extend(node.compilation_errors().iter().map(|e| format!("{e:?}")));
            node.properties.values().for_each(|c| errors(c, out));
            if let Some(items) = &node.items {
                errors(items, out);
            }
        }
        let mut compile_errors = Vec::new();
        errors(&compiled, &mut compile_errors);
        assert!(compile_errors.is_empty(), "{plural}: {compile_errors:?}");
        assert!(!all.is_empty(), "{plural} has no CEL rules");
        for (node, rule) in &all {
            let warnings = analyze_rule(rule, node, ScopeContext::CrdValidation);
            assert!(warnings.is_empty(), "{plural}: {rule}: {warnings:?}");
        }
    }
}

/// Runs the CEL rules of `plural` on an object with `spec`; returns the failure messages.
fn admit(plural: &str, spec: Value) -> Vec<String> {
    let object =
        json!({"apiVersion": "tokenmint.dev/v1alpha1", "metadata": {"name": "x"}, "spec": spec});
    match Validator::new().validate(&schema(plural), &object, None) {
        Ok(()) => vec![],
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

/// One object the CRDs' rules refuse: its kind, spec, the field the refusal names and the
/// rule's message.
struct Refusal {
    kind: &'static str,
    spec: Value,
    field: &'static str,
    message: &'static str,
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "ServiceKey" => "servicekeys",
        "DatasourceGrant" => "datasourcegrants",
        _ => "guesttokenrequests",
    }
}

const DSG_RENEW: &str = "renewBefore must be at least 30s shorter than expiration";
const GTR_RENEW: &str = "renewBefore requires expiryTime and must be at least 30s shorter";

/// A DatasourceGrant spec renewing `renew` before an `expiration`.
fn renew_spec(renew: &str, expiration: i64) -> Value {
    json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "expiration": expiration, "renewBefore": renew})
}

/// A DatasourceGrant spec with `filter`.
fn filter_spec(filter: &str) -> Value {
    json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "filter": filter})
}

/// A GuestTokenRequest spec with `extra` fields.
fn guest_spec(extra: Value) -> Value {
    let mut spec = json!({"serviceKeyRef": {"name": "a"}, "workspaceName": "w1", "clientId": "c"});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    spec
}

/// The documented mistakes, each refused by a CEL rule of the CRDs.
fn refusals() -> Vec<Refusal> {
    let dsg = |spec: Value, field, message| Refusal {
        kind: "DatasourceGrant",
        spec,
        field,
        message,
    };
    let (renew, filter) = (renew_spec, filter_spec);
    let gtr = |extra: Value| Refusal {
        kind: "GuestTokenRequest",
        spec: guest_spec(extra),
        field: "spec",
        message: GTR_RENEW,
    };
    let sk = |ttl: &str, field, message| Refusal {
        kind: "ServiceKey",
        spec: json!({"principal": {"id": "1", "email": "a@b", "name": "a"}, "accessTokenTTL": ttl,
                     "sessionToken": {"secretName": "s", "ttl": ttl}}),
        field,
        message,
    };
    vec![
        dsg(renew("1h", 3600), "spec", DSG_RENEW),
        dsg(renew("2h", 3600), "spec", DSG_RENEW),
        // The write storm of a 1 s renewal window is refused at admission.
        dsg(renew("59m59s", 3600), "spec", DSG_RENEW),
        dsg(renew("59s", 60), "spec", DSG_RENEW),
        dsg(renew("59m31s", 3600), "spec", DSG_RENEW),
        dsg(
            renew("0s", 3600),
            "spec.renewBefore",
            "renewBefore must be at least 1s",
        ),
        // expiration defaults to 3600 before the rules run.
        dsg(
            json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "renewBefore": "2h"}),
            "spec",
            DSG_RENEW,
        ),
        gtr(json!({"renewBefore": "1m"})),
        gtr(json!({"renewBefore": "1h", "expiryTime": 3_600_000})),
        gtr(json!({"renewBefore": "59s", "expiryTime": 60_000})),
        dsg(
            filter("1=1; DROP TABLE users"),
            "spec.filter",
            "';' is not allowed",
        ),
        dsg(
            filter("1=1 -- x"),
            "spec.filter",
            "must not contain SQL comments",
        ),
        dsg(
            filter("1=1 /* x */"),
            "spec.filter",
            "must not contain SQL comments",
        ),
        dsg(
            filter("id IN (SELECT id FROM t)"),
            "spec.filter",
            "sub-queries",
        ),
        dsg(
            filter("id in (select id from t)"),
            "spec.filter",
            "sub-queries",
        ),
        dsg(
            filter("name = 'a\\' OR 1=1"),
            "spec.filter",
            "must not contain a backslash",
        ),
        dsg(
            filter("name = 'a\u{0}b'"),
            "spec.filter",
            "must not contain control characters",
        ),
        sk(
            "30s",
            "spec.accessTokenTTL",
            "accessTokenTTL must be between 1m and 720h",
        ),
        sk(
            "30s",
            "spec.sessionToken.ttl",
            "sessionToken.ttl must be between 1m and 720h",
        ),
        sk(
            "721h",
            "spec.accessTokenTTL",
            "accessTokenTTL must be between 1m and 720h",
        ),
        Refusal {
            kind: "ServiceKey",
            spec: json!({"principal": {"id": "1", "email": "a@b", "name": "a"}, "secretName": "same",
                         "sessionToken": {"secretName": "same"}}),
            field: "spec",
            message: "sessionToken.secretName must differ from secretName",
        },
    ]
}

#[test]
fn the_crds_rules_refuse_every_case_naming_its_field() {
    let validator = Validator::new();
    for case in refusals() {
        let object = json!({"apiVersion": "tokenmint.dev/v1alpha1", "metadata": {"name": "x"}, "spec": case.spec});
        let errors = match validator.validate(&schema(plural(case.kind)), &object, None) {
            Ok(()) => vec![],
            Err(errors) => errors.into_vec(),
        };
        assert!(
            errors
                .iter()
                .any(|e| e.field_path == case.field && e.message.contains(case.message)),
            "{} {}: expected {:?} at {}, got {errors:?}",
            case.kind,
            object["spec"],
            case.message,
            case.field
        );
    }
}

#[tokio::test]
async fn serve_manifests_refuses_every_case_naming_the_same_field() {
    let dir = std::env::temp_dir().join(format!(
        "tokenmint-admission-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = refusals();
    for (i, case) in cases.iter().enumerate() {
        let doc = json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": case.kind,
                         "metadata": {"name": format!("case-{i}"), "namespace": "team-a"}, "spec": case.spec});
        // JSON is YAML: each case in a file of its own.
        std::fs::write(dir.join(format!("case-{i:02}.yaml")), doc.to_string()).unwrap();
    }
    // The live loader: each document refused, naming file, document, object and rule.
    let mut live = tokenmint::manifests::LiveManifests::new().unwrap();
    let refused: Vec<String> = live
        .reload(&dir)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(refused.len(), cases.len(), "{refused:#?}");
    for (i, (case, message)) in cases.iter().zip(&refused).enumerate() {
        let expected = format!(
            "case-{i:02}.yaml, document 1 ({} team-a/case-{i}): ",
            case.kind
        );
        assert!(message.contains(&expected), "{message}");
        let field = format!("{}: Invalid value: ", case.field);
        assert!(
            message.contains(&field) && message.contains(case.message),
            "expected {:?} at {}: {message}",
            case.message,
            case.field
        );
    }
    assert!(live.merged().datasource_grants.is_empty());
    // And `serve --manifests` refuses to start on them, listing each.
    let err = tokenmint::manifests::Manifests::load_dir(&dir)
        .unwrap_err()
        .to_string();
    assert_eq!(err.lines().count(), cases.len(), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_schema_keyword_of_the_crds_is_checked_by_admission() {
    for plural in ["servicekeys", "datasourcegrants", "guesttokenrequests"] {
        // Compiling refuses any keyword admission does not implement.
        tokenmint::admission::schema::Node::compile(&schema(plural), "")
            .unwrap_or_else(|e| panic!("{plural}: {e}"));
    }
    // And the admission of the binary is built from the same schemas.
    tokenmint::admission::Admission::new().unwrap();
}

#[test]
fn contract_examples_are_admitted() {
    let sk = json!({
        "principal": {"id": "1", "email": "jcw@example.com", "name": "jcw", "fullName": "Jeff Williams",
                      "orgId": "1", "orgName": "Main Org."},
        "dataSources": ["Data_3_E"], "workspaces": ["w1"], "secretName": "analytics-key",
        "accessTokenTTL": "24h", "sessionToken": {"secretName": "analytics-session", "ttl": "1h"}
    });
    assert_eq!(admit("servicekeys", sk), Vec::<String>::new());
    let dsg = json!({
        "serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E", "appUuid": "123",
        "filter": "USER_id = 123", "expiration": 3600, "secretName": "dashboards-token", "renewBefore": "20m"
    });
    assert_eq!(admit("datasourcegrants", dsg), Vec::<String>::new());
    // expiration defaults to 3600 before the rules run.
    let defaulted =
        json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "renewBefore": "59m"});
    assert_eq!(admit("datasourcegrants", defaulted), Vec::<String>::new());
    let gtr = json!({
        "serviceKeyRef": {"name": "analytics"}, "workspaceName": "w1", "clientId": "acme",
        "datasourceName": "sales",
        "params": {"dashboardAppFilters": [{"dashboardId": "d1", "values": {"region": "EU"}, "isShowOnUrl": false}],
                   "appFilters": [{"metricId": "m1", "values": {"plan": "pro"}}]},
        "expiryTime": 3_600_000, "renewBefore": "20m"
    });
    assert_eq!(admit("guesttokenrequests", gtr), Vec::<String>::new());
}

#[test]
fn the_rules_admit_what_they_should() {
    assert!(admit("datasourcegrants", renew_spec("59m30s", 3600)).is_empty());
    assert!(admit("datasourcegrants", renew_spec("30s", 60)).is_empty());
    for ok in [
        json!({"renewBefore": "59m", "expiryTime": 3_600_000}),
        json!({"renewBefore": "30s", "expiryTime": 60_000}),
        json!({}),
    ] {
        assert!(
            admit("guesttokenrequests", guest_spec(ok.clone())).is_empty(),
            "{ok}"
        );
    }
    for ok in [
        "USER_id = 123",
        "selected = true",
        "region IN ('EU', 'US') AND tenant_id = 42",
        "note = 'tab\there'",
    ] {
        assert_eq!(
            admit("datasourcegrants", filter_spec(ok)),
            Vec::<String>::new(),
            "{ok}"
        );
    }
    let sk = json!({"principal": {"id": "1", "email": "a@b", "name": "a"}, "accessTokenTTL": "90m",
                    "sessionToken": {"secretName": "s", "ttl": "90m"}});
    assert!(admit("servicekeys", sk).is_empty());
}
