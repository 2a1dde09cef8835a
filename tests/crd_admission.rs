//! What the API server will do with `crds/` at admission time, checked without a cluster: every
//! CEL rule compiles, stays within the cost budget and sees only its scope's variables, and the
//! rules accept the contract's examples and refuse the documented mistakes with their messages.
//! (Schema bounds — minimum, maximum, maxLength, pattern — are plain OpenAPI and are asserted on
//! the rendered schema in `src/crd`.)

use kube_core::cel::{CompiledSchema, ScopeContext, Validator, analyze_rule, compile_schema};
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

fn assert_refused(plural: &str, spec: Value, expected: &str) {
    let messages = admit(plural, spec.clone());
    assert!(
        messages.iter().any(|m| m.contains(expected)),
        "{plural} {spec}: expected a message containing {expected:?}, got {messages:?}"
    );
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
fn renew_before_leaves_the_token_at_least_30s() {
    const DSG: &str = "renewBefore must be at least 30s shorter than expiration";
    const GTR: &str = "renewBefore requires expiryTime and must be at least 30s shorter";
    let dsg = |renew: &str, expiration: i64| json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "expiration": expiration, "renewBefore": renew});
    assert_refused("datasourcegrants", dsg("1h", 3600), DSG);
    assert_refused("datasourcegrants", dsg("2h", 3600), DSG);
    // The write storm of a 1 s renewal window is refused at admission.
    assert_refused("datasourcegrants", dsg("59m59s", 3600), DSG);
    assert_refused("datasourcegrants", dsg("59s", 60), DSG);
    assert_refused("datasourcegrants", dsg("59m31s", 3600), DSG);
    assert!(admit("datasourcegrants", dsg("59m30s", 3600)).is_empty());
    assert!(admit("datasourcegrants", dsg("30s", 60)).is_empty());
    assert_refused(
        "datasourcegrants",
        dsg("0s", 3600),
        "renewBefore must be at least 1s",
    );
    assert_refused(
        "datasourcegrants",
        json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "renewBefore": "2h"}),
        DSG,
    );

    let gtr = |extra: Value| {
        let mut spec =
            json!({"serviceKeyRef": {"name": "a"}, "workspaceName": "w1", "clientId": "c"});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    };
    assert_refused("guesttokenrequests", gtr(json!({"renewBefore": "1m"})), GTR);
    assert_refused(
        "guesttokenrequests",
        gtr(json!({"renewBefore": "1h", "expiryTime": 3_600_000})),
        GTR,
    );
    assert_refused(
        "guesttokenrequests",
        gtr(json!({"renewBefore": "59s", "expiryTime": 60_000})),
        GTR,
    );
    for ok in [
        json!({"renewBefore": "59m", "expiryTime": 3_600_000}),
        json!({"renewBefore": "30s", "expiryTime": 60_000}),
        json!({}),
    ] {
        assert!(
            admit("guesttokenrequests", gtr(ok.clone())).is_empty(),
            "{ok}"
        );
    }
}

#[test]
fn filter_rules_refuse_statements_comments_and_subqueries() {
    let dsg =
        |filter: &str| json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "filter": filter});
    assert_refused(
        "datasourcegrants",
        dsg("1=1; DROP TABLE users"),
        "';' is not allowed",
    );
    assert_refused(
        "datasourcegrants",
        dsg("1=1 -- x"),
        "must not contain SQL comments",
    );
    assert_refused(
        "datasourcegrants",
        dsg("1=1 /* x */"),
        "must not contain SQL comments",
    );
    assert_refused(
        "datasourcegrants",
        dsg("id IN (SELECT id FROM t)"),
        "sub-queries",
    );
    assert_refused(
        "datasourcegrants",
        dsg("id in (select id from t)"),
        "sub-queries",
    );
    assert_refused(
        "datasourcegrants",
        dsg("name = 'a\\' OR 1=1"),
        "must not contain a backslash",
    );
    assert_refused(
        "datasourcegrants",
        dsg("name = 'a\u{0}b'"),
        "must not contain control characters",
    );
    for ok in [
        "USER_id = 123",
        "selected = true",
        "region IN ('EU', 'US') AND tenant_id = 42",
        "note = 'tab\there'",
    ] {
        assert_eq!(
            admit("datasourcegrants", dsg(ok)),
            Vec::<String>::new(),
            "{ok}"
        );
    }
}

#[test]
fn ttl_rules_bound_the_service_key_lifetimes() {
    let sk = |ttl: &str| {
        json!({"principal": {"id": "1", "email": "a@b", "name": "a"}, "accessTokenTTL": ttl,
               "sessionToken": {"secretName": "s", "ttl": ttl}})
    };
    assert!(admit("servicekeys", sk("90m")).is_empty());
    assert_refused(
        "servicekeys",
        sk("30s"),
        "accessTokenTTL must be between 1m and 720h",
    );
    assert_refused(
        "servicekeys",
        sk("30s"),
        "sessionToken.ttl must be between 1m and 720h",
    );
    assert_refused(
        "servicekeys",
        sk("721h"),
        "accessTokenTTL must be between 1m and 720h",
    );
    let clash = json!({"principal": {"id": "1", "email": "a@b", "name": "a"}, "secretName": "same",
                       "sessionToken": {"secretName": "same"}});
    assert_refused(
        "servicekeys",
        clash,
        "sessionToken.secretName must differ from secretName",
    );
}
