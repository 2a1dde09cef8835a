//! `inspect`: header, claims and times of a token; its signature against the cluster's keyring
//! (valid, invalid, unknown kid, not checked: missing or unreadable keyring); revocation; and
//! never the token, its signature or a key.

use crate::support::fake_api::TEAM;
use crate::world::{
    DEMO_KEY, OPERATOR_NS, SERVICE_KEY_VALUE, World, ago, kubectl, kubectl_with_stdin, now, shows,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokenmint::cli::output::Exit;
use tokenmint::keyring::{Algorithm, Keyring};
use tokenmint::token::claims;

/// Asserts `output` carries nothing secret: the token, its signature, the keyring's key.
fn assert_no_secret(output: &str, token: &str) {
    let signature = token.rsplit('.').next().unwrap();
    for secret in [
        token.to_owned(),
        signature.to_owned(),
        STANDARD.encode(DEMO_KEY),
        String::from_utf8(DEMO_KEY.to_vec()).unwrap(),
        SERVICE_KEY_VALUE.to_owned(),
    ] {
        assert!(!output.contains(&secret), "leaked {secret:?} in\n{output}");
    }
}

fn put_token_secret(w: &World, name: &str, token: &str) {
    w.fake.put(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/token",
               "metadata": {"name": name, "namespace": TEAM},
               "data": {"token": STANDARD.encode(token)}}),
    );
}

#[tokio::test]
async fn a_token_secret_shows_header_claims_times_and_a_valid_signature() {
    let w = World::installed(now());
    let token = w.token("dashboards-token");
    let ran = w
        .kubectl(&["inspect", "secret", "dashboards-token", "-n", TEAM])
        .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    let jti = claims::unverified(&token).unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    shows(
        &ran,
        &[
            "Token in Secret team-a/dashboards-token (DatasourceGrant dashboards)\nHeader\n  {\n    \"typ\": \"JWT\",\n    \"alg\": \"HS256\",\n    \"kid\": \"hs256-5f1c0e9a7b2d\"\n  }\nClaims\n  {\n",
            "    \"iat\": \"2026-12-01T09:40:00Z (20m ago)\",\n",
            "    \"nbf\": \"2026-12-01T09:40:00Z (20m ago)\",\n",
            &format!("    \"jti\": \"{jti}\",\n"),
            "    \"exp\": \"2026-12-01T10:40:00Z (in 40m)\",\n",
            "\"filter\": \"USER_id = 123\"",
            "\"service_key\": \"team-a/analytics\"",
            "\"iss\": \"tokenmint\"",
            "Expires    2026-12-01T10:40:00Z (in 40m)\n",
            "Signature  signature valid: key hs256-5f1c0e9a7b2d of keyring tokenmint-system/tokenmint-keyring (active)\n",
            "Revoked    no\n",
        ],
    );
    assert_no_secret(&ran.out, &token);

    for format in ["json", "yaml"] {
        let ran = w
            .kubectl(&[
                "inspect",
                "secret",
                "dashboards-token",
                "-n",
                TEAM,
                "-o",
                format,
            ])
            .await;
        assert_eq!(ran.exit, Exit::Fine);
        assert_no_secret(&ran.out, &token);
        let report: Value = if format == "json" {
            serde_json::from_str(&ran.out).unwrap()
        } else {
            serde_saphyr::from_str(&ran.out).unwrap()
        };
        // The claims as the token has them (integers), the dates beside them.
        assert_eq!(
            report["claims"]["exp"],
            now().as_second() + 2_400,
            "{format}"
        );
        assert_eq!(report["times"]["expiresAt"], "2026-12-01T10:40:00Z");
        assert_eq!(report["times"]["expired"], false);
        assert_eq!(report["signature"]["result"], "valid");
        assert_eq!(report["revoked"]["result"], "notRevoked");
        assert_eq!(report["header"]["kid"], "hs256-5f1c0e9a7b2d");
        assert_eq!(report["owner"], "DatasourceGrant dashboards");
    }
}

#[tokio::test]
async fn a_token_of_an_unknown_kid_an_expired_one_and_a_forged_one_fail() {
    let w = World::installed(now());
    let token = w.token("dashboards-token");
    let claims = claims::unverified(&token).unwrap();

    // Signed by another keyring: a key this cluster does not have.
    let other = Keyring::generate(Algorithm::HS256, w.now).unwrap();
    let foreign = other.sign(&claims).unwrap();
    put_token_secret(&w, "foreign-token", &foreign);
    let ran = w
        .kubectl(&["inspect", "secret", "foreign-token", "-n", TEAM])
        .await;
    assert_eq!(ran.exit, Exit::NotFine, "{}{}", ran.out, ran.err);
    assert!(ran.out.contains(&format!(
        "Signature  unknown kid: {} is not in keyring tokenmint-system/tokenmint-keyring (keys: hs256-5f1c0e9a7b2d): signed by a key dropped after rotation, or by another installation\n",
        other.active_kid()
    )), "{}", ran.out);
    assert_no_secret(&ran.out, &foreign);

    // Two hours on, the token has expired; its signature still verifies.
    let later = w.now + ago(-7_200);
    let ran = kubectl(
        w.fake.client(),
        later,
        &["inspect", "secret", "dashboards-token", "-n", TEAM],
    )
    .await;
    assert_eq!(ran.exit, Exit::NotFine);
    assert!(
        ran.out
            .contains("Expires    EXPIRED 2026-12-01T10:40:00Z (1h20m ago)\n"),
        "{}",
        ran.out
    );
    assert!(
        ran.out.contains("Signature  signature valid"),
        "{}",
        ran.out
    );

    // Claims edited after signing (a longer life), read from standard input.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims.clone();
    forged["exp"] = json!(forged["exp"].as_i64().unwrap() + 86_400);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let forged = parts.join(".");
    let ran = kubectl_with_stdin(
        w.fake.client(),
        w.now,
        &["inspect", "token", "-"],
        &format!("{forged}\n"),
    )
    .await;
    assert_eq!(ran.exit, Exit::NotFine, "{}{}", ran.out, ran.err);
    assert!(ran.out.starts_with("Token from -\n"), "{}", ran.out);
    assert!(
        ran.out
            .contains("Signature  invalid: token signature is invalid\n"),
        "{}",
        ran.out
    );
    assert_no_secret(&ran.out, &forged);
}

#[tokio::test]
async fn a_missing_or_unreadable_keyring_leaves_the_signature_not_checked() {
    let w = World::installed(now());
    w.fake
        .delete("", "secrets", OPERATOR_NS, "tokenmint-keyring");
    let ran = w
        .kubectl(&["inspect", "secret", "dashboards-token", "-n", TEAM])
        .await;
    // Not checked is not a failure: the token is unexpired and not revoked.
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    assert!(ran.out.contains(
        "Signature  not checked: keyring Secret tokenmint-system/tokenmint-keyring not found (is the operator's namespace tokenmint-system? --operator-namespace)\n"
    ), "{}", ran.out);
    let ran = w
        .kubectl(&[
            "inspect",
            "secret",
            "dashboards-token",
            "-n",
            TEAM,
            "--operator-namespace",
            "tm",
        ])
        .await;
    assert!(
        ran.out
            .contains("not checked: keyring Secret tm/tokenmint-keyring not found"),
        "{}",
        ran.out
    );

    let w = World::installed(now());
    w.fake.forbid("", "secrets", "get", Some(OPERATOR_NS));
    w.fake.forbid("", "configmaps", "list", Some(OPERATOR_NS));
    let ran = w
        .kubectl(&["inspect", "secret", "dashboards-token", "-n", TEAM])
        .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    assert!(ran.out.contains(
        "Signature  not checked: cannot read keyring Secret tokenmint-system/tokenmint-keyring: 403 Forbidden: Forbidden\n"
    ), "{}", ran.out);
    assert!(ran.out.contains(
        "Revoked    not checked: cannot list the revocation ConfigMaps of tokenmint-system: 403 Forbidden: Forbidden\n",
    ), "{}", ran.out);
}

#[tokio::test]
async fn a_revoked_token_fails() {
    let w = World::installed(now());
    let token = w.token("dashboards-token");
    let revocation = tokenmint::revocation::Revocation::of_claims(
        &claims::unverified(&token).unwrap(),
        tokenmint::revocation::Origin::System,
        "DatasourceGrant team-a/dashboards: tokenmint.dev/revoke".into(),
        None,
        now().as_second(),
    )
    .unwrap();
    let stored = tokenmint::revocation::store::config_map_of(OPERATOR_NS, &revocation);
    w.fake
        .put("", "configmaps", serde_json::to_value(stored).unwrap());
    let ran = w
        .kubectl(&["inspect", "secret", "dashboards-token", "-n", TEAM])
        .await;
    assert_eq!(ran.exit, Exit::NotFine);
    assert!(
        ran.out
            .contains("Revoked    REVOKED: the token is revoked\n"),
        "{}",
        ran.out
    );
}

#[tokio::test]
async fn keys_are_never_read_into_a_report_and_bad_input_is_named() {
    let w = World::installed(now());
    let ran = w
        .kubectl(&["inspect", "secret", "analytics-service-key", "-n", TEAM])
        .await;
    assert_eq!(ran.exit, Exit::Error);
    assert_eq!(ran.out, "");
    assert_eq!(
        ran.err,
        "error: Secret team-a/analytics-service-key holds no token (type \"tokenmint.dev/service-key\", no `token` key): inspect reads token Secrets, and never prints keys"
    );
    let ran = w
        .kubectl(&["inspect", "secret", "tokenmint-keyring", "-n", OPERATOR_NS])
        .await;
    assert_eq!(ran.exit, Exit::Error);
    assert!(!ran.err.contains(&STANDARD.encode(DEMO_KEY)), "{}", ran.err);
    let ran = kubectl_with_stdin(
        w.fake.client(),
        w.now,
        &["inspect", "token", "-"],
        "not-a-token",
    )
    .await;
    assert_eq!(ran.exit, Exit::Error);
    assert_eq!(
        ran.err,
        "error: - does not hold a JWT (three base64url parts: a JSON header, JSON claims and a signature)"
    );
    let ran = w.kubectl(&["inspect", "token", "/nonexistent/token"]).await;
    assert_eq!(ran.exit, Exit::Error);
    assert!(
        ran.err
            .starts_with("error: cannot read /nonexistent/token: "),
        "{}",
        ran.err
    );

    // A mounted token file, as a pod sees it.
    let dir = std::env::temp_dir().join(format!("tokenmint-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, w.token("acme-embed-token")).unwrap();
    let ran = w
        .kubectl(&["inspect", "token", file.to_str().unwrap()])
        .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    assert!(ran.out.contains("\"type\": \"guest\""), "{}", ran.out);
    std::fs::remove_dir_all(&dir).unwrap();
}
