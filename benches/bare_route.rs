//! Baseline for the load benchmark (`bench/load.sh`): an axum route returning a fixed body on
//! the same runtime flavour as `tokenmint serve`, so the cost of minting shows as a ratio.
//!
//! `cargo bench --bench bare_route -- 127.0.0.1:18081` serves until killed.

use axum::Router;
use axum::routing::post;

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; the first argument that parses as an address wins.
    let addr = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .unwrap_or_else(|| "127.0.0.1:18081".parse().expect("literal address"));
    let body = r#"{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl","expiration":86400.0}"#;
    let app = Router::new().route(
        "/bare",
        post(move || async move { ([("content-type", "application/json")], body) }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"));
    eprintln!("bare route listening on http://{addr}/bare");
    axum::serve(listener, app).await.expect("server error");
}
