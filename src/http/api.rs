//! The alerts API under `/api/v1`: list (with filters), show, ack, resolve. Owns the bearer
//! token check, query parsing and the JSON error shape `{"error": "..."}`. Alerts are
//! rendered as [`AlertRow`], the same shape as the scope report. Never writes to sled itself:
//! status changes go through [`Store::set_status`], which is durable when it returns and
//! queues the change for the notifiers in the same write.
//!
//! Errors say what was wrong with the request, never how the server is built: store and
//! task failures are logged here and answered with a short generic message.
//!
//! [`Store::set_status`]: crate::store::Store::set_status

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::HttpState;
use crate::detect::alert::AlertStatus;
use crate::report::AlertRow;
use crate::store::{AlertFilter, PageCursor, StoreError};

/// `limit` when the query has none.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest `limit` accepted: bounds one response (an alert row is at most a few KiB).
pub const MAX_LIMIT: usize = 10_000;
/// Header carrying how many alerts matched the filters before `limit` was applied.
pub const TOTAL_COUNT_HEADER: &str = "x-total-count";
/// Header carrying the `cursor` of the page before this one, when older alerts match.
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

/// The `/api/v1` routes, every one behind the bearer token.
pub fn router(state: HttpState) -> Router<HttpState> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/{id}", get(show))
        .route("/api/v1/alerts/{id}/ack", post(ack))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A JSON response written by [`crate::escape::json_compact`]: control, bidi and invisible
/// characters of log-derived fields arrive as `\uXXXX` escapes (the same strings, nothing a
/// terminal that shows the body acts on).
pub struct SafeJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for SafeJson<T> {
    fn into_response(self) -> Response {
        match crate::escape::json_compact(&self.0) {
            Ok(body) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise an API response");
                ApiError::Internal.into_response()
            }
        }
    }
}

/// Why an API request failed, as the client may see it.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    NotFound,
    /// The request conflicts with the alert's state (acking a resolved alert).
    Conflict(String),
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(message) => error(StatusCode::BAD_REQUEST, &message),
            ApiError::Unauthorized => {
                let mut response = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"recwatch\""));
                response
            }
            ApiError::NotFound => error(StatusCode::NOT_FOUND, "no such alert"),
            ApiError::Conflict(message) => error(StatusCode::CONFLICT, &message),
            ApiError::Internal => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(_) => ApiError::NotFound,
            e @ StoreError::AlertClosed { .. } => ApiError::Conflict(e.to_string()),
            e => {
                tracing::error!(error = %e, "alert store failed while serving the API");
                ApiError::Internal
            }
        }
    }
}

async fn require_token(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| bearer_token(v.as_bytes()));
    let allowed = match (state.api_token.as_deref(), presented) {
        (Some(expected), Some(presented)) if !expected.is_empty() => token_matches(expected.as_bytes(), presented),
        _ => false,
    };
    if allowed {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Constant-time comparison whose time depends only on the expected token's length, never on
/// where the presented one differs or how long it is: the presented token is copied into (or
/// truncated to) a buffer of the expected length, compared, and the lengths compared as well.
fn token_matches(expected: &[u8], presented: &[u8]) -> bool {
    let mut padded = vec![0u8; expected.len()];
    let n = presented.len().min(expected.len());
    padded[..n].copy_from_slice(&presented[..n]);
    let same_length = (presented.len() as u64).ct_eq(&(expected.len() as u64));
    (padded.as_slice().ct_eq(expected) & same_length).into()
}

/// Query of `GET /api/v1/alerts`; all strings so every mistake gets our own 400 message.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Rule name or rule id.
    pub rule: Option<String>,
    /// Client IP address (any spelling; compared in canonical form).
    pub client: Option<String>,
    /// open | acked | resolved.
    pub status: Option<String>,
    /// Only alerts last seen at or after: Unix seconds or RFC 3339.
    pub since: Option<String>,
    /// At most this many alerts (the most recent ones), 1..=MAX_LIMIT.
    pub limit: Option<String>,
    /// Continue before this point: the `x-next-cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The store filter and the limit; empty parameters count as absent.
    pub fn build(self) -> Result<(AlertFilter, usize), ApiError> {
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let bad = |m: &str| ApiError::BadRequest(m.to_string());
        let rule = nonempty(self.rule);
        if rule.as_ref().is_some_and(|r| r.len() > 256) {
            return Err(bad("rule is too long"));
        }
        let client = match nonempty(self.client) {
            None => None,
            // Alerts show an address canonically and a host-name client in lower case.
            Some(c) => Some(match crate::parse::parse_client_ip(c.as_bytes()) {
                Some(ip) => ip.to_string(),
                None if crate::parse::is_host_name(c.as_bytes()) => c.to_ascii_lowercase(),
                None => return Err(bad("client must be an IPv4 or IPv6 address or a host name")),
            }),
        };
        let status = match nonempty(self.status).as_deref() {
            None => None,
            Some(s) => {
                Some(AlertStatus::from_name(s).ok_or_else(|| bad("status must be one of: open, acked, resolved"))?)
            }
        };
        let since = match nonempty(self.since) {
            None => None,
            Some(s) => Some(
                parse_since(&s)
                    .ok_or_else(|| bad("since must be Unix seconds or RFC 3339 like 2019-02-18T09:00:00Z"))?,
            ),
        };
        let limit = match nonempty(self.limit) {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| bad(&format!("limit must be an integer from 1 to {MAX_LIMIT}")))?,
        };
        Ok((AlertFilter { rule, client, status, since }, limit))
    }
}

/// Alerts matching the filters, in first-seen order; when more than `limit` match, the most
/// recent `limit` of them, and `X-Next-Cursor` for the page before (`?cursor=`): a page costs
/// its own size. `X-Total-Count` says how many matched (a count of the index without filters,
/// a scan with them).
async fn list(State(state): State<HttpState>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let result = async {
        let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let cursor = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(PageCursor::from_hex(c).ok_or_else(|| {
                ApiError::BadRequest("cursor must be the x-next-cursor of a previous page".to_string())
            })?),
        };
        let (filter, limit) = query.build()?;
        let store = state.store.clone();
        let (page, next, total) = blocking(move || {
            let (page, next) = store.list_page(&filter, cursor.as_ref(), limit)?;
            Ok((page, next, store.count(&filter)?))
        })
        .await?;
        let rows: Vec<AlertRow> = page.iter().map(AlertRow::from).collect();
        let mut response = ([(TOTAL_COUNT_HEADER, total.to_string())], SafeJson(rows)).into_response();
        if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n.to_hex()).ok()) {
            response.headers_mut().insert(NEXT_CURSOR_HEADER, next);
        }
        Ok::<_, ApiError>(response)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn show(
    State(state): State<HttpState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<SafeJson<AlertRow>, ApiError> {
    let id = alert_id(id)?;
    let store = state.store.clone();
    let alert = blocking(move || store.get(&id)).await?.ok_or(ApiError::NotFound)?;
    Ok(SafeJson(AlertRow::from(&alert)))
}

async fn ack(state: State<HttpState>, id: Result<Path<String>, PathRejection>) -> Result<SafeJson<AlertRow>, ApiError> {
    set_status(state, id, AlertStatus::Acked).await
}

async fn resolve(
    state: State<HttpState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<SafeJson<AlertRow>, ApiError> {
    set_status(state, id, AlertStatus::Resolved).await
}

async fn set_status(
    State(state): State<HttpState>,
    id: Result<Path<String>, PathRejection>,
    status: AlertStatus,
) -> Result<SafeJson<AlertRow>, ApiError> {
    let id = alert_id(id)?;
    let store = state.store.clone();
    let alert = blocking(move || store.set_status(&id, status)).await?;
    tracing::info!(alert = %alert.id, rule = %alert.rule, status = status.as_str(), "alert status set via the API");
    Ok(SafeJson(AlertRow::from(&alert)))
}

/// An id the store could hold (ids are short hex); anything else cannot exist.
fn alert_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::NotFound)?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ApiError::NotFound);
    }
    Ok(id)
}

/// Runs a store call on the blocking pool (sled does disk I/O).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "store task failed while serving the API");
            Err(ApiError::Internal)
        }
    }
}

/// `since`: Unix seconds (`1550480400`) or RFC 3339 (`2019-02-18T09:00:00Z`,
/// `2019-02-18T10:00:00.5+01:00`; a `+` that arrived as a space from an unencoded query is
/// taken as `+`). Fractions of a second are dropped.
pub fn parse_since(s: &str) -> Option<i64> {
    if !s.is_empty() && s.bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-')) {
        return s.parse().ok();
    }
    crate::parse::time::parse_rfc3339(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::time::format_rfc3339;

    #[test]
    fn since_accepts_unix_seconds_and_rfc3339_with_offsets() {
        assert_eq!(parse_since("1550480400"), Some(1_550_480_400));
        assert_eq!(parse_since("-5"), Some(-5));
        assert_eq!(parse_since("2019-02-18T09:00:00Z"), Some(1_550_480_400));
        assert_eq!(parse_since("2019-02-18t09:00:00.999z"), Some(1_550_480_400));
        assert_eq!(parse_since("2019-02-18T10:00:00+01:00"), Some(1_550_480_400));
        assert_eq!(parse_since("2019-02-18T10:00:00 01:00"), Some(1_550_480_400));
        assert_eq!(parse_since("2019-02-18T08:30:00-00:30"), Some(1_550_480_400));
        assert_eq!(parse_since("2016-12-31T23:59:60Z"), parse_since("2016-12-31T23:59:59Z"));
        for t in [0, 1, 951_782_400, 1_582_977_600, 4_102_444_799, -86_401] {
            assert_eq!(parse_since(&format_rfc3339(t)), Some(t), "{t}");
        }
    }

    #[test]
    fn since_rejects_what_is_not_a_time() {
        for s in [
            "",
            "-",
            "12a",
            "yesterday",
            "2019-02-18",
            "2019-02-18T09:00:00",
            "2019-02-29T09:00:00Z",
            "2019-13-01T00:00:00Z",
            "2019-02-18T24:00:00Z",
            "2019-02-18T09:00:61Z",
            "2019-02-18T09:00:00.Z",
            "2019-02-18T09:00:00+0100",
            "2019-02-18T09:00:00Z ",
            "２019-02-18T09:00:00Z",
            "99999999999999999999",
        ] {
            assert_eq!(parse_since(s), None, "{s:?}");
        }
    }

    #[test]
    fn token_comparison_needs_the_exact_token() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cret", b"s3creT"));
        assert!(!token_matches(b"s3cret", b"s3cre"));
        assert!(!token_matches(b"s3cret", b"s3cret\0"));
        assert!(!token_matches(b"s3cret", b""));
        assert_eq!(bearer_token(b"Bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
    }

    #[test]
    fn list_query_validates_every_filter() {
        let q = |f: fn(&mut ListQuery)| {
            let mut q = ListQuery::default();
            f(&mut q);
            q.build()
        };
        let (filter, limit) = q(|q| {
            q.client = Some("::ffff:10.1.2.3".into());
            q.status = Some("acked".into());
            q.rule = Some(String::new());
        })
        .unwrap();
        assert_eq!(
            (filter.client.as_deref(), filter.status, filter.rule, limit),
            (Some("10.1.2.3"), Some(AlertStatus::Acked), None, DEFAULT_LIMIT)
        );
        assert!(q(|q| q.client = Some("host example".into())).is_err());
        let named = q(|q| q.client = Some("Host.Example".into())).unwrap().0;
        assert_eq!(named.client.as_deref(), Some("host.example"));
        assert!(q(|q| q.status = Some("closed".into())).is_err());
        assert!(q(|q| q.limit = Some("0".into())).is_err());
        assert!(q(|q| q.limit = Some("10001".into())).is_err());
        assert_eq!(q(|q| q.limit = Some("10000".into())).unwrap().1, 10_000);
    }
}
