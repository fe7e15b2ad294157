//! The daemon's HTTP face: `/metrics`, `/healthz`, `/readyz` and the alerts API under
//! `/api/v1` ([`api`]). Owns its settings ([`HttpSettings`]), the listener, the router, the
//! request limits (body size, per-request time; connection count, request-head time and idle
//! time in [`conn`]) and graceful shutdown. Never decides anything about alerts: it reads and
//! updates them through [`Store`] and renders [`Telemetry`] as it is.
//!
//! Every request passes one guard: a body over [`Limits::max_body`] is answered 413 before
//! any handler runs, and the whole request (body and handler) gets [`Limits::request_timeout`]
//! (408 when the client is too slow to send its body, 503 when we are too slow to answer).
//! Store calls run on the blocking pool, so a slow sled never stalls the accept loop.
//!
//! Once bound, the listener's real address is reported ([`announce`]): with `listen =
//! "127.0.0.1:0"` the kernel picks the port, and whoever started the daemon (a test, a
//! supervisor, `recwatch alerts` while the daemon holds the store) learns it from stderr or
//! from `<state_dir>/http.addr`.

pub mod api;
mod conn;
pub mod health;
pub mod metrics;

use std::future::{poll_fn, Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::store::Store;
use crate::telemetry::Telemetry;

pub use health::Readiness;
pub use metrics::render_metrics;

/// Name of the file in the state directory that holds the bound address while the daemon runs.
pub const ADDR_FILE: &str = "http.addr";

/// The bound address, reported once the listener is bound: the stderr line
/// `recwatch: listening on http://ADDR` (always written, whatever the log level: it is the
/// daemon's answer to "where are you", not a log event) and `<state_dir>/http.addr` holding
/// `ADDR` and a newline, written atomically (temporary file, then rename). The file is removed
/// when this value is dropped (every orderly exit, errors included); after a kill -9 it stays,
/// stale, until the next start overwrites it.
#[derive(Debug)]
pub struct BoundAddr {
    pub addr: SocketAddr,
    file: PathBuf,
}

/// Reports `addr` (see [`BoundAddr`]). Fails only when the state directory cannot be written.
pub fn announce(addr: SocketAddr, state_dir: &Path) -> io::Result<BoundAddr> {
    let file = state_dir.join(ADDR_FILE);
    let tmp = state_dir.join(format!(".{ADDR_FILE}.tmp"));
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, &file)?;
    eprintln!("recwatch: listening on http://{addr}");
    tracing::info!(listen = %addr, "serving /metrics, /healthz, /readyz, /api/v1/alerts");
    Ok(BoundAddr { addr, file })
}

impl Drop for BoundAddr {
    fn drop(&mut self) {
        // Only our own report: a newer daemon on the same state dir cannot exist (the store lock).
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The address a running daemon reported in `state_dir`, if it did (`None`: no file, or not an
/// address — a daemon killed while writing it never renames a partial file into place).
pub fn reported_addr(state_dir: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(state_dir.join(ADDR_FILE)).ok()?.trim().parse().ok()
}

/// Where the HTTP server listens and who may use the alert API (`[http]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Address of /metrics, /healthz, /readyz and the alert API.
    pub listen: SocketAddr,
    /// File holding the API bearer token; without one the alert API answers 401.
    pub token_file: Option<std::path::PathBuf>,
    /// Connections open at once ([`Limits::max_connections`]).
    pub max_connections: usize,
}

/// What the HTTP server reads and updates. Cheap to clone (handles and `Arc`s).
#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub telemetry: Arc<Telemetry>,
    /// Bearer token for /api/v1 (read from a file by the caller). None = the API answers 401 to
    /// everything; so does an empty token, which would otherwise match an empty header.
    pub api_token: Option<Arc<str>>,
    /// Set by the daemon (started, draining, pipeline progress); /readyz answers
    /// [`Readiness::ready`] over it and the store's health.
    pub ready: Arc<Readiness>,
}

/// Shortest API token accepted (characters, after trimming surrounding whitespace).
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the API token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read API token file {}: {source}", path.display())]
    Read { path: std::path::PathBuf, source: io::Error },
    #[error("API token in {} is shorter than {MIN_TOKEN_LEN} characters", path.display())]
    TooShort { path: std::path::PathBuf },
}

/// The bearer token in `path` (surrounding whitespace trimmed): what `recwatch run` serves the
/// API with and what `recwatch check` validates, one rule for both.
pub fn load_api_token(path: &std::path::Path) -> Result<Arc<str>, TokenFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| TokenFileError::Read { path: path.to_path_buf(), source })?;
    let token = text.trim();
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(TokenFileError::TooShort { path: path.to_path_buf() });
    }
    Ok(Arc::from(token))
}

/// Bounds on what one client can make the server hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body accepted (413 above). Nothing we serve needs a body; 4 KiB leaves
    /// room for a future small JSON payload without letting a client make us buffer much.
    pub max_body: usize,
    /// Time for the whole request, from the handler's start (body read included) to the
    /// response head.
    pub request_timeout: Duration,
    /// A connection with no byte read or written for this long is closed: bounds idle
    /// keep-alive connections. Longer than `request_timeout`, so it never cuts a request that
    /// is still within its time.
    pub idle_timeout: Duration,
    /// A request head (request line and headers) must be complete this long after its first
    /// byte (after the accept, for a connection's first request): clients that trickle header
    /// bytes are closed.
    pub head_timeout: Duration,
    /// Connections open at once (`http.max_connections`); at the cap, the one waiting longest
    /// for a complete head is closed to make room (see [`conn`]).
    pub max_connections: usize,
    /// After shutdown is asked for, how long in-flight requests get before `serve` returns anyway.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 4 * 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            head_timeout: Duration::from_secs(10),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(15),
        }
    }
}

/// Serves until `shutdown` resolves, then finishes in-flight requests (graceful).
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, state, Limits::default(), shutdown).await
}

/// [`serve`] with explicit [`Limits`]. After `shutdown` resolves no new connection is accepted;
/// in-flight requests get [`Limits::shutdown_grace`] to finish, then this returns regardless.
pub async fn serve_with(
    listener: TcpListener,
    state: HttpState,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving HTTP");
    let listener = conn::LimitedListener::new(listener, &limits);
    let (asked_tx, asked_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(state, limits)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = asked_tx.send(());
    });
    let mut server = pin!(server.into_future());
    tokio::select! {
        result = &mut server => return result,
        _ = asked_rx => {}
    }
    match tokio::time::timeout(limits.shutdown_grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "HTTP requests still running at shutdown; abandoning them");
            Ok(())
        }
    }
}

/// The whole application: probes, metrics, the API, a JSON 404 for anything else, and the
/// size/time guard around all of it.
pub fn router(mut state: HttpState, limits: Limits) -> Router {
    // A store call gives up before the request's own time limit, so a stuck store answers
    // 503 and frees the blocking thread instead of holding it.
    state.store = state.store.with_deadline(limits.request_timeout.mul_f32(0.8));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .merge(api::router(state.clone()))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(limits, guard))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 `ready`, or 503 with the reason (never waits on the store).
async fn readyz(State(state): State<HttpState>) -> Response {
    match state.ready.ready(&state.store) {
        Ok(()) => "ready\n".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

/// How long a scrape waits for the store's numbers.
const METRICS_STORE_WAIT: Duration = Duration::from_secs(1);

async fn metrics_handler(State(state): State<HttpState>) -> Response {
    // The store's numbers wait at most a second: a busy store drops those families from
    // this scrape instead of holding /metrics.
    let (telemetry, store) = (state.telemetry.clone(), state.store.with_deadline(METRICS_STORE_WAIT));
    // count_unresolved walks the alert tree: not on the async workers.
    match tokio::task::spawn_blocking(move || render_metrics(&telemetry, &store)).await {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics rendering failed");
            api::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

async fn not_found() -> Response {
    api::error(StatusCode::NOT_FOUND, "not found")
}

/// Body size and time limits for every request (see the module docs).
async fn guard(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let deadline = Instant::now() + limits.request_timeout;
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return refuse_body(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    // Chunked bodies have no declared length: read at most max_body of them, under the deadline.
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout_at(deadline, read_body(body, limits.max_body)).await {
        Err(_) => return refuse_body(StatusCode::REQUEST_TIMEOUT, "request body not received in time"),
        Ok(Err(BodyError::TooLarge)) => return refuse_body(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        Ok(Err(BodyError::Read)) => return refuse_body(StatusCode::BAD_REQUEST, "cannot read request body"),
        Ok(Ok(body)) => body,
    };
    let request = Request::from_parts(parts, Body::from(body));
    let path = request.uri().path().to_owned();
    match tokio::time::timeout_at(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(path = %crate::escape::text(&crate::privacy::redact(&path)), limit = ?limits.request_timeout, "HTTP request timed out");
            api::error(StatusCode::SERVICE_UNAVAILABLE, "request timed out")
        }
    }
}

/// An error answered before the body was read to its end: the connection is closed after it
/// (and says so, so a client does not reuse it for its next request).
fn refuse_body(status: StatusCode, message: &str) -> Response {
    let mut response = api::error(status, message);
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

enum BodyError {
    TooLarge,
    Read,
}

async fn read_body(body: Body, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = pin!(body);
    let mut out = Vec::new();
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|_| BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard's own time limit: a handler slower than `request_timeout` is cut off with 503.
    #[test]
    fn a_handler_over_the_time_limit_is_answered_503() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let limits = Limits { request_timeout: Duration::from_millis(100), ..Limits::default() };
            let app = Router::new()
                .route("/slow", get(|| tokio::time::sleep(Duration::from_secs(30))))
                .layer(middleware::from_fn_with_state(limits, guard));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/slow", listener.local_addr().unwrap());
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let started = std::time::Instant::now();
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(started.elapsed() < Duration::from_secs(5));
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "request timed out");
            server.abort();
        });
    }
}
