//! One access-log line per request (successes at debug, refusals at info), without keys,
//! tokens, headers or query strings.
//!
//! Its own test binary: tracing caches per-callsite interest process-wide, so a scoped
//! subscriber only reliably sees events when no other test runs concurrently.

#[allow(dead_code)]
#[path = "http/common.rs"]
mod common;

mod support;

use common::*;
use support::inproc::Capture;

#[tokio::test(flavor = "current_thread")]
async fn access_log_has_one_line_per_request_and_no_secrets() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let t = app();
    let r = call(
        &t.router,
        "POST",
        "/ds-api/user-token",
        Some(&basic("jcw", KEY_A)),
        "",
    )
    .await;
    let token = r.json["user-token"].as_str().unwrap().to_owned();
    call(
        &t.router,
        "GET",
        &format!("/ds-api/user-token?token={token}"),
        Some(&basic("jcw", KEY_A)),
        "",
    )
    .await;
    call(
        &t.router,
        "POST",
        "/token",
        Some(&format!("Basic {KEY_B}")),
        "",
    )
    .await;
    call(
        &t.router,
        "POST",
        "/api/admin/v1/api_token/get_access_token",
        Some(&bearer("wrong-key-xyz")),
        "",
    )
    .await;
    call(
        &t.router,
        "POST",
        "/api/admin/v1/get_datasource_token",
        Some(&bearer(KEY_A)),
        r#"{"data_source":"Data_3_E","filter":"secret_col = 'x'"}"#,
    )
    .await;

    let log = capture.text();
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tokenmint::access"))
        .collect();
    assert_eq!(access.len(), 5, "{log}");
    assert!(
        access[0].contains("method=POST")
            && access[0].contains("route=/ds-api/user-token")
            && access[0].contains("status=201"),
        "{log}"
    );
    assert!(
        access[1].contains("status=200") && access[1].contains("latency_ms="),
        "{log}"
    );
    assert!(access[3].contains("status=401"), "{log}");
    // Successes at debug (not logged at the default level), refusals at info.
    assert!(
        access[0].contains("DEBUG") && access[2].contains("DEBUG"),
        "{log}"
    );
    assert!(access[3].contains(" INFO "), "{log}");
    for secret in [
        KEY_A,
        KEY_B,
        "wrong-key-xyz",
        token.as_str(),
        "?token",
        "Authorization",
        "authorization",
        "secret_col",
    ] {
        assert!(!log.contains(secret), "the log leaks {secret}:\n{log}");
    }
}
