//! `--manifests DIR`: data vs stringData, multi-document files, the keyring Secret, and clear
//! errors naming the file at fault.

use super::common::*;
use std::path::{Path, PathBuf};
use tokenmint::key_store::{KeyIndex, KeyStore};
use tokenmint::keyring::{Algorithm, Keyring};
use tokenmint::manifests::Manifests;

/// A fresh directory under the system temp dir holding `files`.
fn dir_with(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokenmint-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, content) in files {
        std::fs::write(dir.join(file), content).unwrap();
    }
    dir
}

const SK: &str = r#"
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: one}
spec:
  principal: {id: "1", email: a@example.com, name: a}
  dataSources: ["*"]
"#;

#[tokio::test]
async fn multi_document_files_with_data_and_string_data() {
    let keyring = Keyring::generate(Algorithm::EdDSA, jiff::Timestamp::now()).unwrap();
    let keyring_yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tokenmint-keyring, namespace: tokenmint-system}}\nstringData:\n  keyring.json: '{}'\n",
        String::from_utf8(keyring.to_json()).unwrap()
    );
    let dir = dir_with(
        "multi",
        &[
            // No namespace: `default`. Key in base64 `data`.
            (
                "a.yaml",
                &format!(
                    "{SK}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: one-service-key}}\ndata: {{key: a2V5LW9uZQ==}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: ignored}}\nspec: {{}}\n---\n"
                ),
            ),
            // Custom secretName, plain `stringData`, explicit namespace.
            (
                "b.yml",
                "apiVersion: tokenmint.dev/v1alpha1\nkind: ServiceKey\nmetadata: {name: two, namespace: ns2}\nspec:\n  principal: {id: \"2\", email: b@example.com, name: b}\n  secretName: custom\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: custom, namespace: ns2}\nstringData: {key: key-two}\n",
            ),
            ("keyring.yaml", &keyring_yaml),
            ("notes.txt", "not yaml: ["),
        ],
    );
    let m = Manifests::load_dir(&dir).unwrap();
    assert_eq!(m.service_keys.len(), 2);
    assert_eq!(m.files.len(), 3);
    let index = KeyIndex::build(&m.service_keys, &m.secrets);
    assert_eq!(index.by_key(b"key-one").unwrap().reference(), "default/one");
    assert_eq!(index.by_key(b"key-two").unwrap().reference(), "ns2/two");
    let loaded = m
        .keyring("tokenmint-system", "tokenmint-keyring")
        .unwrap()
        .unwrap();
    assert_eq!(loaded.active_kid(), keyring.active_kid());
    assert!(
        m.keyring("elsewhere", "tokenmint-keyring")
            .unwrap()
            .is_none()
    );

    // And `serve`'s loader uses it, so tokens verify with the manifest's keyring.
    let args = serve_args(&dir);
    let store = tokenmint::serve::from_manifests(&dir, &args)
        .await
        .unwrap()
        .store;
    assert_eq!(store.keyring().unwrap().active_kid(), keyring.active_kid());
    assert!(store.readiness().is_ok());
}

fn serve_args(dir: &Path) -> tokenmint::cli::ServeArgs {
    use clap::Parser;
    let cli = tokenmint::cli::Cli::try_parse_from([
        "tokenmint",
        "serve",
        "--namespace",
        "tokenmint-system",
        "--manifests",
        dir.to_str().unwrap(),
        "--tokens-dir",
        dir.join("tokens").to_str().unwrap(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
    ])
    .unwrap();
    match cli.command {
        tokenmint::cli::Command::Serve(args) => args,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn without_a_keyring_secret_the_keyring_persists_in_the_state_directory() {
    let dir = dir_with("persist", &[("a.yaml", SK)]);
    let store = tokenmint::serve::from_manifests(&dir, &serve_args(&dir))
        .await
        .unwrap()
        .store;
    let kid = store.keyring().unwrap().active_kid().to_owned();
    // No key Secret: a key is generated (once) into the tokens directory.
    assert_eq!(store.keys().len(), 1);
    let key = std::fs::read(dir.join("tokens/default/one-service-key/key")).unwrap();
    assert!(store.keys().by_key(&key).is_some());
    // A restart finds the same keyring and the same key.
    let again = tokenmint::serve::from_manifests(&dir, &serve_args(&dir))
        .await
        .unwrap()
        .store;
    assert_eq!(again.keyring().unwrap().active_kid(), kid);
    assert!(again.keys().by_key(&key).is_some());
    // In the state directory, outside the tokens directory consumers mount.
    assert!(dir.join("state/keyring.json").exists());
    assert!(!dir.join("tokens/.tokenmint").exists());
}

/// What a read of `dir` refuses, one message per document or file, as `serve` logs them.
fn refusals(dir: &Path) -> String {
    let mut live = tokenmint::manifests::LiveManifests::new().unwrap();
    let refused = live.reload(dir).unwrap();
    refused.iter().map(|e| format!("{e}\n")).collect()
}

#[tokio::test]
async fn bad_manifests_are_skipped_and_named_and_the_rest_starts() {
    for (case, content, needle) in [
        ("yaml", "kind: [unclosed", "not valid YAML"),
        ("scalar", "just a string", "not a Kubernetes object"),
        (
            "nokind",
            "apiVersion: v1\nmetadata: {name: x}\n",
            "apiVersion and kind are required",
        ),
        (
            "noname",
            "apiVersion: v1\nkind: Secret\nmetadata: {}\n",
            "metadata.name: Required value",
        ),
        (
            "spec",
            "apiVersion: tokenmint.dev/v1alpha1\nkind: ServiceKey\nmetadata: {name: broken}\nspec: {principal: {id: \"1\"}}\n",
            "ServiceKey default/broken",
        ),
        (
            "data",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {key: \"not base64!\"}\n",
            "Secret default/s",
        ),
    ] {
        // A restart (the keyring is in the state directory) with a broken file added.
        let dir = dir_with(&format!("bad-{case}"), &[("ok.yaml", SK)]);
        let args = serve_args(&dir);
        tokenmint::serve::from_manifests(&dir, &args).await.unwrap();
        std::fs::write(dir.join("broken.yaml"), content).unwrap();
        let store = tokenmint::serve::from_manifests(&dir, &args)
            .await
            .unwrap_or_else(|e| panic!("{case}: did not start: {e}"))
            .store;
        assert_eq!(store.keys().len(), 1, "{case}: the good ServiceKey");
        let refused = refusals(&dir);
        assert_eq!(refused.lines().count(), 1, "{case}: {refused}");
        assert!(refused.contains("broken.yaml"), "{case}: {refused}");
        assert!(refused.contains(needle), "{case}: {refused}");
    }
    // What prevents signing stays a startup error: a keyring Secret that is refused, or broken.
    for (case, content, needle) in [
        (
            "refused",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: tokenmint-keyring, namespace: tokenmint-system}\ndata: {keyring.json: \"not base64!\"}\n",
            "cannot sign: the keyring Secret tokenmint-system/tokenmint-keyring: its manifest is refused",
        ),
        (
            "broken",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: tokenmint-keyring, namespace: tokenmint-system}\nstringData: {keyring.json: \"{}\"}\n",
            "keyring",
        ),
    ] {
        let dir = dir_with(
            &format!("keyring-{case}"),
            &[("ok.yaml", SK), ("broken.yaml", content)],
        );
        let err = tokenmint::serve::from_manifests(&dir, &serve_args(&dir))
            .await
            .err()
            .unwrap_or_else(|| panic!("{case}: accepted"))
            .to_string();
        assert!(err.contains("broken.yaml"), "{case}: {err}");
        assert!(err.contains(needle), "{case}: {err}");
    }
    // A first start (no keyring yet) beside a file that does not parse: it may hold the
    // keyring Secret, and a generated keyring would replace it.
    let dir = dir_with(
        "first-start",
        &[("ok.yaml", SK), ("broken.yaml", "kind: [")],
    );
    let err = tokenmint::serve::from_manifests(&dir, &serve_args(&dir))
        .await
        .err()
        .expect("generated a keyring beside an unreadable file")
        .to_string();
    assert!(
        err.contains("keyring Secret tokenmint-system/tokenmint-keyring")
            && err.contains("broken.yaml, which cannot be read"),
        "{err}"
    );
    let missing = std::env::temp_dir().join("tokenmint-test-does-not-exist");
    let err = Manifests::load_dir(&missing).unwrap_err().to_string();
    assert!(err.contains("tokenmint-test-does-not-exist"), "{err}");
    let err = tokenmint::serve::from_manifests(&missing, &serve_args(&dir))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot read the manifests directory"), "{err}");
}

#[tokio::test]
async fn the_quickstart_example_works() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let tokens = dir_with("quickstart-tokens", &[]);
    let mut args = serve_args(&dir);
    args.state_dir = tokens.join("state");
    args.tokens_dir = tokens.join("tokens");
    let tokens = args.tokens_dir.clone();
    let store = tokenmint::serve::from_manifests(&dir, &args)
        .await
        .unwrap()
        .store;
    assert_eq!(store.keys().len(), 1);
    // The quick start's grant is in a file, as a pod would see its Secret.
    let token = std::fs::read_to_string(tokens.join("default/dashboards-token/token")).unwrap();
    assert!(!store.keyring().unwrap().kids().next().unwrap().is_empty());
    store
        .keyring()
        .unwrap()
        .verify::<serde_json::Value>(
            &token,
            tokenmint::keyring::Expect {
                issuer: "tokenmint",
                require_exp: true,
            },
        )
        .unwrap();
    let router = tokenmint::http::router(tokenmint::http::AppState::new(store, "tokenmint"));
    let key = "tmk_demo_PUBLIC_DEMO_KEY_do_not_use_in_production";
    let r = call(
        &router,
        "POST",
        "/api/admin/v1/get_datasource_token",
        Some(&bearer(key)),
        r#"{"data_source":"Data_3_E"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &router,
        "POST",
        "/api/v1/guest-token/create",
        Some(&bearer(key)),
        r#"{"workspaceName":"w1","clientId":"acme"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &router,
        "POST",
        "/ds-api/user-token",
        Some(&basic("jcw", key)),
        "",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn errors_in_manifests_never_quote_a_key() {
    const KEY: &str = "sk_live_do_not_log_me_0123456789";
    for (case, content) in [
        // A YAML syntax error two lines from the key: parsers quote the lines around an error.
        (
            "yaml",
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{key: \"{KEY}\"}}\noops: [unclosed\n"
            ),
        ),
        // A key of the wrong type: serde quotes the value it refused.
        (
            "type",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {key: 1234567890123}\n"
                .to_owned(),
        ),
        // A keyring whose list of keys is a string: serde quotes it.
        (
            "keyring",
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: tokenmint-keyring, namespace: tokenmint-system}}\nstringData: {{keyring.json: '{{\"active\":\"k\",\"keys\":\"{KEY}\"}}'}}\n"
            ),
        ),
    ] {
        let dir = dir_with(&format!("quote-{case}"), &[("a.yaml", &content)]);
        // Refused documents are logged (these lines), a broken keyring stops the start.
        let message = match tokenmint::serve::from_manifests(&dir, &serve_args(&dir)).await {
            Ok(_) => refusals(&dir),
            Err(e) => format!("{e}\n{}", refusals(&dir)),
        };
        assert!(message.contains("a.yaml"), "{case}: {message}");
        assert!(
            !message.contains(KEY) && !message.contains("1234567890123"),
            "{case} quotes the key: {message}"
        );
    }
}
