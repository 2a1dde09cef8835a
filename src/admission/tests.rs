//! Admission of whole documents against the generated CRDs: every schema keyword our CRDs use
//! refuses what the API server refuses, in its words; defaults are applied; CEL rules run.

use super::*;
use serde_json::json;

fn admission() -> Admission {
    Admission::new().expect("the CRDs compile")
}

fn grant(spec: Value) -> Value {
    json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant",
           "metadata": {"name": "g", "namespace": "default"}, "spec": spec})
}

fn refusal(doc: Value) -> String {
    match admission().admit(doc) {
        Err(refusal) => refusal.0,
        Ok(admitted) => panic!("admitted: {admitted:?}"),
    }
}

fn assert_refused(doc: Value, expected: &str) {
    let message = refusal(doc);
    assert!(
        message.contains(expected),
        "expected {expected:?} in {message:?}"
    );
}

#[test]
fn a_valid_grant_is_admitted_with_its_defaults() {
    let Ok(Some(Admitted::DatasourceGrant(grant))) = admission().admit(grant(
        json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}),
    )) else {
        panic!("refused")
    };
    assert_eq!(grant.spec.expiration, 3600);
    // A status in a manifest is dropped, as on create with the status subresource.
    let with_status = json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant",
        "metadata": {"name": "g"}, "spec": {"serviceKeyRef": {"name": "a"}, "dataSource": "d"},
        "status": {"tokenId": "forged"}});
    let Ok(Some(Admitted::DatasourceGrant(grant))) = admission().admit(with_status) else {
        panic!("refused")
    };
    assert!(grant.status.is_none());
}

#[test]
fn every_structural_keyword_refuses_in_the_api_servers_words() {
    let spec = |extra: Value| {
        let mut spec = json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d"});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        grant(spec)
    };
    for (extra, expected) in [
        (
            json!({"expiration": 50000}),
            "spec.expiration: Invalid value: 50000: spec.expiration in body should be less than or equal to 43200",
        ),
        (
            json!({"expiration": 30}),
            "spec.expiration: Invalid value: 30: spec.expiration in body should be greater than or equal to 60",
        ),
        (
            json!({"expiration": "soon"}),
            "spec.expiration: Invalid value: \"string\": spec.expiration in body must be of type integer: \"string\"",
        ),
        (
            json!({"secretName": "../../escaped"}),
            "spec.secretName: Invalid value: \"../../escaped\": spec.secretName in body should match '^[a-z0-9]",
        ),
        (
            json!({"secretName": "/tmp/abs"}),
            "spec.secretName: Invalid value: \"/tmp/abs\"",
        ),
        (
            json!({"secretName": "..%2F..%2Fescaped"}),
            "spec.secretName: Invalid value: \"..%2F..%2Fescaped\"",
        ),
        (
            json!({"secretName": ""}),
            "spec.secretName: Invalid value: \"\": spec.secretName in body should be at least 1 chars long",
        ),
        (
            json!({"filter": "a".repeat(4097)}),
            "spec.filter: Too long: may not be more than 4096 bytes",
        ),
        (
            json!({"rolloutRestart": [{"kind": "Pod", "name": "x"}]}),
            "spec.rolloutRestart[0].kind: Unsupported value: \"Pod\": supported values: \"Deployment\", \"StatefulSet\", \"DaemonSet\"",
        ),
        (
            json!({"rolloutRestart": vec![json!({"kind": "Deployment", "name": "x"}); 17]}),
            "spec.rolloutRestart: Too many: 17: must have at most 16 items",
        ),
        (
            json!({"rolloutRestart": [{"kind": "Deployment"}]}),
            "spec.rolloutRestart[0].name: Required value",
        ),
        (json!({"colour": "blue"}), "unknown field \"spec.colour\""),
        (
            json!({"expiration": null}),
            // A null for a defaulted, non-nullable field is dropped and defaulted: admitted.
            "",
        ),
    ] {
        let doc = spec(extra.clone());
        if expected.is_empty() {
            assert!(admission().admit(doc).is_ok(), "{extra}");
        } else {
            assert_refused(doc, expected);
        }
    }
    assert_refused(
        grant(json!({"dataSource": "d"})),
        "spec.serviceKeyRef: Required value",
    );
    assert_refused(
        json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant", "metadata": {"name": "g"}}),
        "spec: Required value",
    );
    // A wrong type skips the CEL rules, and says so.
    assert_refused(
        spec(json!({"expiration": "soon", "renewBefore": "2h"})),
        "some validation rules were not checked",
    );
}

#[test]
fn sets_are_unique_and_free_form_params_are_kept() {
    let key = |accounts: Value| {
        json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey", "metadata": {"name": "k"},
               "spec": {"principal": {"id": "1", "email": "a@b", "name": "a"}, "serviceAccounts": accounts}})
    };
    assert_refused(
        key(json!(["a", "b", "a"])),
        "spec.serviceAccounts[2]: Duplicate value: \"a\"",
    );
    assert!(admission().admit(key(json!(["a", "b"]))).is_ok());
    let request = json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": "GuestTokenRequest",
        "metadata": {"name": "r"},
        "spec": {"serviceKeyRef": {"name": "a"}, "workspaceName": "w", "clientId": "c",
                 "params": {"anything": {"deep": [1, 2]}, "appFilters": [{"metricId": "m", "x": 1}]}}});
    let Ok(Some(Admitted::GuestTokenRequest(request))) = admission().admit(request) else {
        panic!("refused")
    };
    assert_eq!(
        request.spec.params.unwrap().0["anything"],
        json!({"deep": [1, 2]})
    );
}

#[test]
fn names_namespaces_and_kinds() {
    let named = |name: &str, namespace: &str| {
        json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"serviceKeyRef": {"name": "a"}, "dataSource": "d"}})
    };
    assert_refused(
        named("../x", "default"),
        "metadata.name: Invalid value: \"../x\": a lowercase RFC 1123 subdomain",
    );
    assert_refused(
        named("x", "team.a"),
        "metadata.namespace: Invalid value: \"team.a\": a lowercase RFC 1123 label",
    );
    assert_refused(
        named(&"a".repeat(254), "default"),
        "metadata.name: Invalid value: \"aaaa",
    );
    assert_refused(
        named("x", &"n".repeat(64)),
        "must be no more than 63 characters",
    );
    assert_refused(
        json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant", "metadata": {"generateName": "x-"},
               "spec": {"serviceKeyRef": {"name": "a"}, "dataSource": "d"}}),
        "metadata.name: Required value: name is required",
    );
    assert_refused(
        json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant", "metadata": {"name": "x", "nickname": "y"},
               "spec": {"serviceKeyRef": {"name": "a"}, "dataSource": "d"}}),
        "unknown field \"metadata.nickname\"",
    );
    assert_refused(
        json!({"apiVersion": "tokenmint.dev/v2", "kind": "DatasourceGrant", "metadata": {"name": "x"}}),
        "no matches for kind \"DatasourceGrant\" in version \"tokenmint.dev/v2\"",
    );
    assert_refused(
        json!({"apiVersion": "tokenmint.dev/v1alpha1", "kind": "Grant", "metadata": {"name": "x"}}),
        "no matches for kind \"Grant\"",
    );
    // Secrets: names, unknown fields; values never quoted.
    assert_refused(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "../k"}, "stringData": {"key": "v"}}),
        "metadata.name: Invalid value: \"../k\"",
    );
    let message = refusal(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}, "stringData": {"key": 123456789}}),
    );
    assert!(
        message.contains("stringData") && !message.contains("123456789"),
        "{message}"
    );
    assert_refused(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}, "strngData": {}}),
        "unknown field \"strngData\"",
    );
    // Other kinds are not ours to judge.
    assert!(matches!(
        admission().admit(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "Not_A_Name"}})),
        Ok(None)
    ));
}

#[test]
fn cel_rules_run_after_defaults_and_name_their_field() {
    assert_refused(
        grant(json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "renewBefore": "2h"})),
        "spec: Invalid value: \"object\": renewBefore must be at least 30s shorter than expiration",
    );
    assert_refused(
        grant(
            json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "filter": "1=1; DROP TABLE t"}),
        ),
        "spec.filter: Invalid value: \"string\": filter must be a single SQL boolean expression",
    );
    assert!(
        admission()
            .admit(grant(
                json!({"serviceKeyRef": {"name": "a"}, "dataSource": "d", "renewBefore": "59m"})
            ))
            .is_ok()
    );
}

#[test]
fn a_schema_keyword_admission_does_not_check_is_refused_when_compiling() {
    for (schema, needle) in [
        (json!({"type": "integer", "multipleOf": 5}), "multipleOf"),
        (
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            "additionalProperties",
        ),
        (json!({"type": "string", "format": "uuid"}), "format"),
        (
            json!({"type": "array", "x-kubernetes-list-type": "map"}),
            "list-type",
        ),
        (
            json!({"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}),
            "transition rule",
        ),
    ] {
        let error = Node::compile(&json!({"properties": {"spec": schema}}), "")
            .unwrap_err()
            .to_string();
        assert!(error.contains(needle) && error.contains("spec"), "{error}");
    }
}
