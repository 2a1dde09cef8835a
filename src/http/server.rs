//! The connection loop of the REST server (axum::serve sets no header-read timeout and has no
//! connection limit): HTTP/1.1 connections from a listener, each bounded in time and number.
//!
//! What protects the server from clients that misbehave:
//! - a connection limit (`--max-connections`): past it, new clients wait in the kernel's
//!   backlog, holding nothing of ours;
//! - a header-read timeout, which also bounds how long a kept-alive connection may sit idle;
//! - a write timeout: a client that stops reading its responses (pipelining requests it never
//!   reads) loses its connection once a write has stalled for [`WRITE_TIMEOUT`], instead of
//!   holding a slot for ever;
//! - the probes can be served on their own listener (`--probe-listen`), with its own slots, so
//!   no amount of traffic on the main port starves the kubelet;
//! - errors hyper answers by itself (a malformed request line or Content-Length, too many or too
//!   large headers) get the same JSON envelope as every other error ([`Guarded`]).
//!
//! `serve` hands accepted connections round-robin to one single-threaded runtime per core
//! ([`ServeOptions::workers`]), so a connection's requests never move between threads. On the
//! 2-core bench machine that served 3–12% more requests per second than the work-stealing
//! runtime, at about the same cost per request (README, "Throughput").

use super::error::Flavor;
use axum::Router;
use axum::http::StatusCode;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Longest a request may take, body upload included (the router's own timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a response write may stall before the connection is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of the probe listener (the kubelet needs one or two).
pub const PROBE_CONNECTIONS: usize = 64;
/// Most request headers hyper accepts (then 431).
const MAX_HEADERS: usize = 64;

/// Connection settings of [`serve_with`].
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long a client may take to send the request line and headers (also how long a
    /// kept-alive connection may sit idle). The request timeout only starts once the headers
    /// are in, so this bounds slow-header clients.
    pub header_read_timeout: Duration,
    /// How long a response write may stall (the client reads nothing) before the connection
    /// is dropped.
    pub write_timeout: Duration,
    /// How long in-flight requests may take to finish after the shutdown signal.
    pub drain_timeout: Duration,
    /// Most connections served at once. Past it the server stops accepting: further clients
    /// wait in the listen backlog (holding no file descriptor of ours) until a connection
    /// closes. At least 1.
    pub max_connections: usize,
    /// Threads serving the accepted connections, each a single-threaded runtime of its own;
    /// 0 serves them on the caller's runtime.
    pub workers: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: REQUEST_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            // Longer than the request timeout, so every in-flight request can finish.
            drain_timeout: REQUEST_TIMEOUT + Duration::from_secs(5),
            max_connections: crate::cli::DEFAULT_MAX_CONNECTIONS.get(),
            workers: 0,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, app, shutdown, ServeOptions::default()).await
}

/// [`serve`] with explicit connection settings.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> io::Result<()> {
    use hyper_util::rt::TokioTimer;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // One permit per open connection, taken before accepting: at the limit, new clients wait
    // in the kernel's backlog rather than costing a file descriptor each.
    let permits = Arc::new(tokio::sync::Semaphore::new(
        options
            .max_connections
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_headers(MAX_HEADERS);
    let handler = Handler {
        http,
        app,
        write_timeout: options.write_timeout,
    };
    let mut lanes = Lanes::start(options.workers, &handler)?;
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: back off rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small JSON answers: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            stream,
            permit,
            watcher: graceful.watcher(),
        };
        lanes.serve(&handler, accepted);
    }
    drop(listener);
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in time; closing them");
    }
    lanes.stop().await;
    Ok(())
}

/// An accepted connection, with what it holds until it closes.
struct Accepted<S> {
    stream: S,
    permit: tokio::sync::OwnedSemaphorePermit,
    watcher: hyper_util::server::graceful::Watcher,
}

/// What serves a connection: the same on every thread.
#[derive(Clone)]
struct Handler {
    http: hyper::server::conn::http1::Builder,
    app: Router,
    write_timeout: Duration,
}

impl Handler {
    /// Serves the connection on the current runtime.
    fn spawn(&self, accepted: Accepted<tokio::net::TcpStream>) {
        use hyper_util::rt::TokioIo;
        use hyper_util::service::TowerToHyperService;
        let io = Guarded::new(accepted.stream, self.write_timeout);
        let connection = self
            .http
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(self.app.clone()));
        let connection = accepted.watcher.watch(connection);
        let permit = accepted.permit;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection closed: {e}");
            }
            drop(permit);
        });
    }
}

type Lane = tokio::sync::mpsc::UnboundedSender<Accepted<std::net::TcpStream>>;

/// Where accepted connections are served. On worker threads each connection stays on one
/// single-threaded runtime: no work stealing, no cross-thread wakeup per request.
enum Lanes {
    Here,
    Workers {
        lanes: Vec<Lane>,
        next: usize,
        done: Vec<tokio::sync::oneshot::Receiver<()>>,
    },
}

impl Lanes {
    fn start(workers: usize, handler: &Handler) -> io::Result<Lanes> {
        if workers == 0 {
            return Ok(Lanes::Here);
        }
        let mut lanes = Vec::with_capacity(workers);
        let mut done = Vec::with_capacity(workers);
        for i in 0..workers {
            let (lane, mut accepted) = tokio::sync::mpsc::unbounded_channel();
            let (finished, finished_rx) = tokio::sync::oneshot::channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handler = handler.clone();
            std::thread::Builder::new()
                .name(format!("tokenmint-http-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        // Ends when the acceptor has drained its connections and drops its
                        // lanes; the connections still open are cut with the runtime.
                        while let Some(Accepted {
                            stream,
                            permit,
                            watcher,
                        }) = accepted.recv().await
                        {
                            match tokio::net::TcpStream::from_std(stream) {
                                Ok(stream) => handler.spawn(Accepted {
                                    stream,
                                    permit,
                                    watcher,
                                }),
                                Err(e) => tracing::warn!("cannot serve a connection: {e}"),
                            }
                        }
                    });
                    drop(runtime);
                    let _ = finished.send(());
                })?;
            lanes.push(lane);
            done.push(finished_rx);
        }
        Ok(Lanes::Workers {
            lanes,
            next: 0,
            done,
        })
    }

    /// Serves `accepted` here, or hands it to the next worker in turn.
    fn serve(&mut self, handler: &Handler, accepted: Accepted<tokio::net::TcpStream>) {
        let Lanes::Workers { lanes, next, .. } = self else {
            return handler.spawn(accepted);
        };
        // Moving the socket to another runtime's reactor: deregistered here, registered there.
        let stream = match accepted.stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("cannot hand a connection to a worker: {e}");
                return;
            }
        };
        *next = (*next + 1) % lanes.len();
        let handed = Accepted {
            stream,
            permit: accepted.permit,
            watcher: accepted.watcher,
        };
        if lanes[*next].send(handed).is_err() {
            tracing::error!("a connection worker has stopped; connection dropped");
        }
    }

    /// Stops the workers (after the drain) and waits until their runtimes are gone.
    async fn stop(self) {
        if let Lanes::Workers { lanes, done, .. } = self {
            drop(lanes);
            for finished in done {
                let _ = finished.await;
            }
        }
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// A client connection with a write deadline, and JSON bodies for the error answers hyper
/// writes by itself.
pub struct Guarded<S> {
    inner: S,
    write_timeout: Duration,
    /// Armed while a write is stalled.
    stalled: Option<Pin<Box<Sleep>>>,
    /// A rewritten answer still being written, and how many bytes of hyper's it stands for.
    replacement: Option<(Vec<u8>, usize, usize)>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, write_timeout: Duration) -> Self {
        Guarded {
            inner,
            write_timeout,
            stalled: None,
            replacement: None,
        }
    }
}

/// Passes a write or flush through, failing it once it has been pending (the client reads
/// nothing) for `timeout`; `stalled` holds the timer while it is.
fn watch_stall<T>(
    stalled: &mut Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    cx: &mut Context<'_>,
    polled: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    if polled.is_ready() {
        *stalled = None;
        return polled;
    }
    let sleep = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
    if sleep.as_mut().poll(cx).is_ready() {
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading its responses",
        )));
    }
    Poll::Pending
}

/// The JSON answer standing for an answer hyper wrote itself (a bare status line, no body, no
/// content type: a parse error of the request), or `None` for any other write.
fn rewrite_bare_error(buf: &[u8]) -> Option<Vec<u8>> {
    // The common case, a head with a body, is out at once.
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status: u16 = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let lower = head.to_ascii_lowercase();
    if !(400..600).contains(&status)
        || lower.contains("\r\ncontent-type:")
        || !lower.contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let status = StatusCode::from_u16(status).ok()?;
    let message = match status {
        StatusCode::BAD_REQUEST => {
            "malformed HTTP request: request line, header or Content-Length could not be parsed"
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "request headers are too large or too many (at most 64 headers)"
        }
        StatusCode::URI_TOO_LONG => "request target (URI) is too long",
        _ => "request refused",
    };
    let body = serde_json::to_vec(&serde_json::json!({"error": {
        "code": super::error::code_for(Flavor::Generic, status),
        "message": message,
    }}))
    .ok()?;
    // The head as hyper wrote it, with the body's length and type.
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    let head = &head[..head.len() - 2];
    for line in head.split_inclusive("\r\n") {
        if line.to_ascii_lowercase().starts_with("content-length:") {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none()
            && let Some(bytes) = rewrite_bare_error(buf)
        {
            this.replacement = Some((bytes, 0, buf.len()));
        }
        if let Some((bytes, written, stands_for)) = &mut this.replacement {
            while *written < bytes.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                    Poll::Ready(Ok(n)) => {
                        this.stalled = None;
                        *written += n;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        return watch_stall(
                            &mut this.stalled,
                            this.write_timeout,
                            cx,
                            Poll::Pending,
                        );
                    }
                }
            }
            let stands_for = *stands_for;
            this.replacement = None;
            return Poll::Ready(Ok(stands_for));
        }
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        watch_stall(&mut this.stalled, this.write_timeout, cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        watch_stall(&mut this.stalled, this.write_timeout, cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_errors_get_a_json_body_and_everything_else_passes() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 05:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_bare_error(bare).unwrap()).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{out}"
        );
        assert!(out.contains("date: Thu"), "{out}");
        assert!(out.contains("content-type: application/json\r\n"), "{out}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "REQUEST_HEADER_FIELDS_TOO_LARGE");
        for untouched in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore",
            b"not http at all",
        ] {
            assert!(rewrite_bare_error(untouched).is_none(), "{untouched:?}");
        }
    }
}
