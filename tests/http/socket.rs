//! Over a real socket: raw HTTP/1.1 on a TcpStream against `tokenmint::http::serve`, then a
//! graceful shutdown.

use super::common::*;
use serde_json::Value;
use std::io::{Read, Write};

async fn exchange(addr: std::net::SocketAddr, request: String) -> (u16, String, Value) {
    // A plain blocking socket (off the runtime): no HTTP client library in between.
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        raw
    })
    .await
    .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        head.to_owned(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn serves_over_tcp_and_shuts_down_gracefully() {
    let t = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tokenmint::http::serve(listener, t.router.clone(), async {
        let _ = stopped.await;
    }));

    // The Nibi PHP client: POST with `0` as form fields.
    let (status, head, body) = exchange(
        addr,
        format!(
            "POST /api/admin/v1/api_token/get_user_token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1\r\nConnection: close\r\n\r\n0"
        ),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    let claims = verify(&t.keyring, body["access_token"].as_str().unwrap(), true);
    assert_eq!(claims["identity"]["id"], 1);

    // Nexla's curl line.
    let (status, _, body) = exchange(
        addr,
        format!(
            "POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {KEY_A}\r\nAccept: application/vnd.nexla.api.v1+json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 3600);

    // A DataBrain request with a JSON body.
    let json = r#"{"workspaceName":"w1","clientId":"acme"}"#;
    let (status, _, body) = exchange(
        addr,
        format!(
            "POST /api/v1/guest-token/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["token"].is_string());

    // An oversized body announced by Content-Length is refused with a JSON 413.
    let (status, _, body) = exchange(
        addr,
        format!(
            "POST /api/admin/v1/get_datasource_token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Length: 70000\r\nConnection: close\r\n\r\n{}",
            "x".repeat(70_000)
        ),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");

    let (status, _, body) = exchange(
        addr,
        "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the server stops after the shutdown signal")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn slow_headers_and_idle_connections_do_not_hold_the_server() {
    let t = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = tokenmint::http::ServeOptions {
        header_read_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let server = tokio::spawn(tokenmint::http::serve_with(
        listener,
        t.router.clone(),
        async {
            let _ = stopped.await;
        },
        options,
    ));

    // Headers that never end: the server hangs up after the header-read timeout.
    let started = std::time::Instant::now();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"POST /token HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut rest = Vec::new();
        // EOF (or a reset) well before our own 10 s read timeout.
        let _ = stream.read_to_end(&mut rest);
    })
    .await
    .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // A kept-alive connection that went idle does not delay the shutdown.
    let idle = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        stream
    })
    .await
    .unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("shutdown is not held by an idle connection")
        .unwrap()
        .unwrap();
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_for_a_free_slot() {
    connection_limit(0).await;
}

#[tokio::test]
async fn connections_past_the_limit_wait_for_a_free_slot_on_worker_threads() {
    // The limit holds across the workers: the slots are taken before the hand-off.
    connection_limit(2).await;
}

async fn connection_limit(workers: usize) {
    use std::time::Duration;
    let t = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = tokenmint::http::ServeOptions {
        max_connections: 2,
        workers,
        ..Default::default()
    };
    let server = tokio::spawn(tokenmint::http::serve_with(
        listener,
        t.router.clone(),
        async {
            let _ = stopped.await;
        },
        options,
    ));

    let open = tokio::task::spawn_blocking(move || {
        const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let answered = |stream: &mut std::net::TcpStream, wait: Duration| {
            stream.set_read_timeout(Some(wait)).unwrap();
            let mut buf = [0u8; 512];
            match stream.read(&mut buf) {
                Ok(n) => String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ),
                        "{e}"
                    );
                    false
                }
            }
        };
        // Two kept-alive connections take both slots.
        let mut held: Vec<_> = (0..2)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(REQUEST).unwrap();
                assert!(answered(&mut s, Duration::from_secs(5)));
                s
            })
            .collect();
        // A third connects (the kernel's backlog) but is not served while both are open.
        let mut third = std::net::TcpStream::connect(addr).unwrap();
        third.write_all(REQUEST).unwrap();
        assert!(
            !answered(&mut third, Duration::from_millis(500)),
            "served past the limit"
        );
        // One closes: the third is served.
        drop(held.pop());
        assert!(answered(&mut third, Duration::from_secs(5)));
        // And the slot is taken again: a fourth waits.
        let mut fourth = std::net::TcpStream::connect(addr).unwrap();
        fourth.write_all(REQUEST).unwrap();
        assert!(!answered(&mut fourth, Duration::from_millis(300)));
        drop(third);
        assert!(answered(&mut fourth, Duration::from_secs(5)));
        // Both slots stay taken.
        (held, fourth)
    })
    .await
    .unwrap();

    // A full server still shuts down (its idle connections are closed).
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the server stops while at its connection limit")
        .unwrap()
        .unwrap();
    drop(open);
}

#[tokio::test]
async fn worker_threads_serve_every_connection_and_finish_in_flight_requests_on_shutdown() {
    use std::time::Duration;
    let t = app();
    let options = tokenmint::http::ServeOptions {
        workers: 2,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tokenmint::http::serve_with(
        listener,
        t.router.clone(),
        async {
            let _ = stopped.await;
        },
        options,
    ));
    // Connections go to the workers in turn: every one of them is answered, with a token.
    for _ in 0..6 {
        let (status, _, body) = exchange(
            addr,
            format!(
                "POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {KEY_A}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body["access_token"].is_string(), "{body}");
    }
    // A request in flight when the shutdown signal comes (half its body sent) still gets
    // its answer, and the server stops after it.
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let json = r#"{"workspaceName":"w1","clientId":"acme"}"#;
    let (first, rest) = json.split_at(10);
    write!(
        stream,
        "POST /api/v1/guest-token/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        json.len()
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.is_finished(), "stopped with a request in flight");
    let answer = tokio::task::spawn_blocking(move || {
        stream.write_all(rest.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        String::from_utf8(raw).unwrap()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"token\""), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops once the in-flight request is answered")
        .unwrap()
        .unwrap();
}

#[test]
fn connection_flags() {
    use clap::Parser;
    let parse = |extra: &[&str]| {
        let args = [&["tokenmint", "serve"][..], extra].concat();
        match tokenmint::cli::Cli::try_parse_from(args).map(|c| c.command) {
            Ok(tokenmint::cli::Command::Serve(a)) => Ok(a),
            Ok(_) => unreachable!(),
            Err(e) => Err(e),
        }
    };
    let defaults = parse(&[]).unwrap();
    assert_eq!(
        defaults.max_connections,
        tokenmint::cli::DEFAULT_MAX_CONNECTIONS
    );
    assert_eq!(defaults.http_workers, None);
    let set = parse(&["--max-connections", "16", "--http-workers", "3"]).unwrap();
    assert_eq!(set.max_connections.get(), 16);
    assert_eq!(set.http_workers.map(|n| n.get()), Some(3));
    assert!(parse(&["--max-connections", "0"]).is_err());
    assert!(parse(&["--http-workers", "0"]).is_err());
}

/// Starts `router` with `options` on a fresh port; returns the address and a stop handle.
async fn spawn_server(
    router: axum::Router,
    options: tokenmint::http::ServeOptions,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tokenmint::http::serve_with(
        listener,
        router,
        async {
            let _ = stopped.await;
        },
        options,
    ));
    (addr, stop)
}

/// Writes `request` and reads until the peer closes or `wait` passes; returns what came back.
fn raw_exchange(addr: std::net::SocketAddr, request: &[u8], wait: std::time::Duration) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&raw).into_owned()
}

fn json_body(raw: &str) -> Value {
    let (_, body) = raw.split_once("\r\n\r\n").unwrap_or(("", ""));
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_hyper_answers_itself_are_json_too() {
    use std::time::{Duration, Instant};
    let t = app();
    let (addr, _stop) = spawn_server(t.router.clone(), Default::default()).await;
    let checks = tokio::task::spawn_blocking(move || {
        let wait = Duration::from_secs(5);
        // Too many headers: 431 with the envelope.
        let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
        for i in 0..100 {
            request.push_str(&format!("X-Filler-{i}: y\r\n"));
        }
        request.push_str("\r\n");
        let raw = raw_exchange(addr, request.as_bytes(), wait);
        assert!(raw.starts_with("HTTP/1.1 431"), "{raw}");
        assert_eq!(
            json_body(&raw)["error"]["code"],
            "REQUEST_HEADER_FIELDS_TOO_LARGE",
            "{raw}"
        );
        // A Content-Length that is not a number: 400 with the envelope.
        let raw = raw_exchange(
            addr,
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            wait,
        );
        assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
        assert_eq!(json_body(&raw)["error"]["code"], "BAD_REQUEST", "{raw}");
        // A huge declared body: 413 at once, not a 408 after waiting for it.
        let started = Instant::now();
        let raw = raw_exchange(
            addr,
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
            wait,
        );
        assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
        assert_eq!(
            json_body(&raw)["error"]["code"],
            "PAYLOAD_TOO_LARGE",
            "{raw}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Expect: 100-continue with a body over the limit: 413, never `100 Continue`.
        let raw = raw_exchange(
            addr,
            b"POST /token HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n",
            wait,
        );
        assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
        assert!(!raw.contains("100 Continue"), "{raw}");
    });
    checks.await.unwrap();
}

/// Three clients that pipeline requests and never read their answers (~10 MB of them: every
/// socket buffer between us fills, the server's writes stall).
fn attackers(addr: std::net::SocketAddr) -> Vec<std::net::TcpStream> {
    use std::time::Duration;
    (0..3)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
            let request = format!(
                "POST /api/admin/v1/api_token/get_access_token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = s.write_all(request.repeat(25_000).as_bytes());
            s
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_cannot_starve_the_probes() {
    use std::time::Duration;
    let t = app();
    // The write timeout out of the way: the attackers hold every slot for the whole test.
    let options = tokenmint::http::ServeOptions {
        max_connections: 3,
        write_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let (addr, _stop) = spawn_server(t.router.clone(), options).await;
    // The probes on their own listener, as `--probe-listen` serves them.
    let store = std::sync::Arc::new(tokenmint::key_store::SharedKeyStore::fixed(
        index(),
        tokenmint::keyring::Keyring::generate(
            tokenmint::keyring::Algorithm::HS256,
            jiff::Timestamp::now(),
        )
        .unwrap(),
    ));
    let probes = tokenmint::http::probe_router(tokenmint::http::AppState::new(store, ISSUER));
    let (probe_addr, _stop_probes) = spawn_server(probes, Default::default()).await;
    tokio::task::spawn_blocking(move || {
        let held = attackers(addr);
        // The main port is full...
        let raw = raw_exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_millis(500),
        );
        assert!(raw.is_empty(), "served past the limit: {raw}");
        // ...and the probe answers.
        let raw = raw_exchange(
            probe_addr,
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        drop(held);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_lose_their_slots_at_the_write_timeout() {
    use std::time::Duration;
    let t = app();
    let options = tokenmint::http::ServeOptions {
        max_connections: 3,
        write_timeout: Duration::from_millis(800),
        ..Default::default()
    };
    let (addr, _stop) = spawn_server(t.router.clone(), options).await;
    tokio::task::spawn_blocking(move || {
        let held = attackers(addr);
        // The stalled writes time out and free the slots: the port answers again, well
        // before the attackers let go.
        let raw = raw_exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(8),
        );
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        drop(held);
    })
    .await
    .unwrap();
}
