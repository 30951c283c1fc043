//! The enforcement endpoint: gateway checks, the CrowdSec-compatible bouncer API and the
//! admin API, on a tokio runtime of its own threads.
//!
//! | path | who | what |
//! |---|---|---|
//! | `/v1/check` (also `/v1/check/nginx`, `/v1/check/traefik`) | nginx `auth_request`, Traefik `ForwardAuth` | the original method and URI from `X-Original-Method`/`X-Original-URI` (nginx) or `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik) |
//! | `/v1/check/envoy/<original path>` | Envoy `ext_authz` (`path_prefix: /v1/check/envoy`) | the method and path of the check request itself |
//! | `GET /v1/decisions/stream`, `GET /v1/decisions` | CrowdSec bouncers (`X-Api-Key`) | address decisions (other scopes on request) |
//! | `/v1/admin/decisions` | `shieldtap decisions` | list, add, delete |
//! | `GET /health` | load balancers | 200 |
//!
//! Bounded: at `max_connections` a new connection is closed at once; at `max_in_flight`
//! checks a check is answered 503 at once (the gateway's failure recipe decides: fail open
//! or closed); a request head must arrive within `header_read_timeout` and fit 64 KiB.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::check::{CheckInput, Checker};
use super::decisions::{Ban, Decision, DecisionError, Scope, canonical, go_duration, rfc3339};
use super::stats::{CheckResult, Reason};
use super::unix_now;
use crate::http::Headers;

/// Largest request head accepted (hyper's buffer; at least 8 KiB).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The peer's address, put in each request's extensions.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// Renders the Prometheus text of a scrape (a standalone endpoint serves `/metrics`).
pub type MetricsText = Arc<dyn Fn() -> String + Send + Sync>;

struct App {
    checker: Arc<Checker>,
    in_flight: Semaphore,
    hub: Option<MetricsText>,
}

/// A running endpoint; dropped or stopped, it shuts down (saving the decisions).
pub struct EnforceServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EnforceServer {
    /// Binds the config's `listen` (port 0 picks one) and serves. `hub`: also serve
    /// `/metrics` (a standalone `shieldtap enforce`).
    pub fn start(
        checker: Arc<Checker>,
        hub: Option<MetricsText>,
    ) -> std::io::Result<EnforceServer> {
        let cfg = checker.cfg.clone();
        let listener = std::net::TcpListener::bind(cfg.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .thread_name("shieldtap-enforce")
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let app = Arc::new(App {
            in_flight: Semaphore::new(cfg.max_in_flight),
            checker,
            hub,
        });
        let thread = std::thread::Builder::new()
            .name("shieldtap-enforce-main".into())
            .spawn(move || {
                rt.block_on(serve(listener, app, rx));
                rt.shutdown_timeout(Duration::from_secs(2));
            })?;
        tracing::info!(%addr, "enforcement endpoint listening");
        Ok(EnforceServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EnforceServer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/check", any(check_forwarded))
        .route("/v1/check/nginx", any(check_forwarded))
        .route("/v1/check/traefik", any(check_forwarded))
        .route("/v1/check/envoy", any(check_envoy_root))
        .route("/v1/check/envoy/{*rest}", any(check_envoy))
        .route("/v1/decisions/stream", get(bouncer_stream))
        .route("/v1/decisions", get(bouncer_query))
        .merge(
            Router::new()
                .route(
                    "/v1/admin/decisions",
                    get(admin_list).post(admin_add).delete(admin_delete_value),
                )
                .route(
                    "/v1/admin/decisions/{id}",
                    get(admin_get).delete(admin_delete),
                )
                .route_layer(axum::middleware::from_fn_with_state(
                    app.clone(),
                    admin_guard,
                )),
        )
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn serve(
    listener: std::net::TcpListener,
    app: Arc<App>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "enforcement endpoint: cannot listen");
            return;
        }
    };
    let cfg = app.checker.cfg.clone();
    let store = app.checker.store.clone();
    // Expiry and saving: once a second, off the request path.
    let housekeeping = {
        let store = store.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    s.expire(unix_now());
                    if let Err(e) = s.save_if_dirty() {
                        tracing::warn!(error = %e, "decisions: cannot save");
                    }
                })
                .await;
            }
        })
    };
    let follower = cfg.follow.clone().map(|f| {
        let store = store.clone();
        let stats = app.checker.stats.clone();
        let stop = stop.clone();
        tokio::spawn(super::follow::run(f, store, stats, stop))
    });
    let router = router(app.clone());
    let open = Arc::new(AtomicUsize::new(0));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "enforcement endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        if open.load(Ordering::Relaxed) >= cfg.max_connections {
            app.checker
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::Relaxed);
        let open = open.clone();
        let router = router.clone();
        let builder = builder.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    let r = router.clone();
                    async move {
                        use tower::ServiceExt;
                        Ok::<_, Infallible>(r.oneshot(req).await.unwrap_or_else(|e| match e {}))
                    }
                },
            );
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let _ = housekeeping.await;
    if let Some(f) = follower {
        let _ = f.await;
    }
    store.expire(unix_now());
    if let Err(e) = store.save_if_dirty() {
        tracing::warn!(error = %e, "decisions: cannot save at shutdown");
    }
}

fn headers_of(map: &HeaderMap) -> Headers {
    map.iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect()
}

fn text<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
    map.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

async fn check_forwarded(
    State(app): State<Arc<App>>,
    Extension(Peer(peer)): Extension<Peer>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let m = text(&headers, "x-original-method")
        .or_else(|| text(&headers, "x-forwarded-method"))
        .unwrap_or(method.as_str())
        .to_ascii_uppercase();
    let uri = text(&headers, "x-original-uri").or_else(|| text(&headers, "x-forwarded-uri"));
    let host = text(&headers, "x-original-host")
        .or_else(|| text(&headers, "x-forwarded-host"))
        .or_else(|| text(&headers, "host"));
    judge(&app, &m, uri, host, peer.ip(), &headers)
}

async fn check_envoy_root(
    State(app): State<Arc<App>>,
    Extension(Peer(peer)): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let target = match uri.query() {
        Some(q) => format!("/?{q}"),
        None => "/".to_string(),
    };
    let host = text(&headers, "host");
    judge(
        &app,
        method.as_str(),
        Some(&target),
        host,
        peer.ip(),
        &headers,
    )
}

async fn check_envoy(
    State(app): State<Arc<App>>,
    Extension(Peer(peer)): Extension<Peer>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    // The raw path after the prefix (percent-encoding kept, as the API server sees it).
    let raw = uri
        .path()
        .strip_prefix("/v1/check/envoy")
        .map(str::to_string)
        .unwrap_or_else(|| format!("/{rest}"));
    let target = match uri.query() {
        Some(q) => format!("{raw}?{q}"),
        None => raw,
    };
    let host = text(&headers, "host");
    judge(
        &app,
        method.as_str(),
        Some(&target),
        host,
        peer.ip(),
        &headers,
    )
}

fn judge(
    app: &App,
    method: &str,
    uri: Option<&str>,
    host: Option<&str>,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Response {
    let Ok(_permit) = app.in_flight.try_acquire() else {
        let stats = &app.checker.stats;
        stats.count("default", CheckResult::Shed, Reason::Overloaded, None);
        let mut r = (StatusCode::SERVICE_UNAVAILABLE, "overloaded\n").into_response();
        let h = r.headers_mut();
        h.insert("x-shieldtap-result", HeaderValue::from_static("shed"));
        h.insert("x-shieldtap-reason", HeaderValue::from_static("overloaded"));
        return r;
    };
    // hyper caps what it buffers, but a head read in one go may pass its cap: judge nothing
    // past 64 KiB of headers.
    let head_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if head_bytes > MAX_HEAD_BYTES {
        app.checker
            .stats
            .count("default", CheckResult::Deny, Reason::Verdict, None);
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large\n",
        )
            .into_response();
    }
    let hs = headers_of(headers);
    let input = CheckInput {
        method,
        uri,
        host,
        peer,
        headers: &hs,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let o = app.checker.check(&input, now);
    let status = StatusCode::from_u16(o.status).unwrap_or(StatusCode::FORBIDDEN);
    let body = match o.result {
        CheckResult::Deny => match o.reason {
            Reason::Decision => "forbidden\n",
            _ => "attestation required\n",
        },
        _ => "",
    };
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    let mut put = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put("x-shieldtap-result", o.result.as_str());
    put("x-shieldtap-reason", o.reason.as_str());
    put("x-shieldtap-verdict", o.verdict.as_str());
    put("x-shieldtap-policy", &o.policy);
    if let Some(d) = &o.device {
        put("x-shieldtap-device", d);
    }
    if let Some(hit) = o.decision {
        put("x-shieldtap-decision", &hit.id.to_string());
        put("x-shieldtap-decision-scope", hit.scope.as_str());
    }
    put("cache-control", "no-store");
    r
}

// ---- bouncer API (CrowdSec LAPI shape) ----

/// The bouncer named by the request's `X-Api-Key`.
fn bouncer<'a>(app: &'a App, headers: &HeaderMap) -> Option<&'a str> {
    let key = headers.get("x-api-key")?.as_bytes();
    app.checker
        .cfg
        .bouncers
        .iter()
        .find(|(_, k)| aws_lc_rs::constant_time::verify_slices_are_equal(k.as_bytes(), key).is_ok())
        .map(|(n, _)| n.as_str())
}

fn forbidden(app: &App) -> Response {
    app.checker
        .stats
        .bouncer_unauthorized
        .fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"message": "access forbidden"})),
    )
        .into_response()
}

/// A decision as a CrowdSec bouncer reads it: remaining `duration` as a Go duration.
fn crowdsec(d: &Decision, now: u64) -> Value {
    let left = d.until as i64 - now as i64;
    let duration = if left >= 0 {
        go_duration(left as u64)
    } else {
        format!("-{}", go_duration(left.unsigned_abs()))
    };
    json!({
        "id": d.id,
        "origin": d.origin,
        "type": "ban",
        "scope": d.scope.crowdsec(),
        "value": d.value,
        "duration": duration,
        "until": rfc3339(d.until),
        "scenario": d.scenario,
        "simulated": false,
    })
}

/// `scopes=ip,range` (default) → the scopes asked for; unknown names are ignored.
fn scopes(q: Option<&str>) -> Vec<Scope> {
    match q {
        None | Some("") => vec![Scope::Ip, Scope::Range],
        Some(list) => list
            .split(',')
            .filter_map(|s| Scope::from_name(s.trim()))
            .collect(),
    }
}

#[derive(Deserialize)]
struct StreamQuery {
    startup: Option<String>,
    scopes: Option<String>,
    /// The custom bouncer's filters, comma-separated (it filters nothing itself).
    origins: Option<String>,
    scenarios_containing: Option<String>,
    scenarios_not_containing: Option<String>,
}

impl StreamQuery {
    fn keeps(&self, d: &Decision) -> bool {
        let list = |v: &Option<String>| -> Vec<String> {
            v.iter()
                .flat_map(|s| s.split(','))
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        };
        let origins = list(&self.origins);
        let with = list(&self.scenarios_containing);
        let without = list(&self.scenarios_not_containing);
        (origins.is_empty() || origins.contains(&d.origin))
            && (with.is_empty() || with.iter().any(|w| d.scenario.contains(w.as_str())))
            && !without.iter().any(|w| d.scenario.contains(w.as_str()))
    }
}

async fn bouncer_stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    let Some(name) = bouncer(&app, &headers) else {
        return forbidden(&app);
    };
    app.checker
        .stats
        .bouncer_pulls
        .fetch_add(1, Ordering::Relaxed);
    let now = unix_now();
    let store = &app.checker.store;
    store.expire(now);
    let startup = q
        .startup
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("true"));
    let mut delta = store.stream(name, startup, &scopes(q.scopes.as_deref()));
    delta.new.retain(|d| q.keeps(d));
    delta.deleted.retain(|d| q.keeps(d));
    let list = |v: &[Decision]| -> Value {
        if v.is_empty() {
            Value::Null
        } else {
            Value::Array(v.iter().map(|d| crowdsec(d, now)).collect())
        }
    };
    axum::Json(json!({"new": list(&delta.new), "deleted": list(&delta.deleted)})).into_response()
}

#[derive(Deserialize)]
struct DecisionsQuery {
    ip: Option<String>,
    range: Option<String>,
    scope: Option<String>,
    value: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn bouncer_query(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<DecisionsQuery>,
) -> Response {
    if bouncer(&app, &headers).is_none() {
        return forbidden(&app);
    }
    let now = unix_now();
    let store = &app.checker.store;
    store.expire(now);
    if q.kind
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("ban"))
    {
        return axum::Json(Value::Null).into_response();
    }
    let ip: Option<IpAddr> = q.ip.as_deref().and_then(|s| s.trim().parse().ok());
    let range: Option<crate::token::Cidr> = q.range.as_deref().and_then(|s| s.trim().parse().ok());
    let scope = q.scope.as_deref().and_then(Scope::from_name);
    let found: Vec<Value> = store
        .list()
        .iter()
        .filter(|d| d.until > now)
        .filter(|d| scope.is_none_or(|s| s == d.scope))
        .filter(|d| q.value.as_deref().is_none_or(|v| v.trim() == d.value))
        .filter(|d| match (ip, &range) {
            (None, None) => true,
            (Some(ip), _) => match d.scope {
                Scope::Ip => d.value.parse::<IpAddr>().is_ok_and(|x| x == ip),
                Scope::Range => d
                    .value
                    .parse::<crate::token::Cidr>()
                    .is_ok_and(|c| c.contains(ip)),
                _ => false,
            },
            (None, Some(r)) => d.scope == Scope::Range && d.value == r.to_string(),
        })
        .map(|d| crowdsec(d, now))
        .collect();
    let body = if found.is_empty() {
        Value::Null
    } else {
        Value::Array(found)
    };
    axum::Json(body).into_response()
}

// ---- admin API ----

fn admin_ok(app: &App, peer: SocketAddr, headers: &HeaderMap) -> bool {
    match &app.checker.cfg.admin_key {
        Some(k) => headers.get("x-api-key").is_some_and(|v| {
            aws_lc_rs::constant_time::verify_slices_are_equal(k.as_bytes(), v.as_bytes()).is_ok()
        }),
        None => peer.ip().is_loopback(),
    }
}

/// Every admin route: the admin key, or a loopback client when none is configured.
async fn admin_guard(
    State(app): State<Arc<App>>,
    Extension(Peer(peer)): Extension<Peer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !admin_ok(&app, peer, req.headers()) {
        return admin_denied();
    }
    next.run(req).await
}

fn admin_denied() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": "the admin API needs the admin key (X-Api-Key), or a loopback client when none is configured"})),
    )
        .into_response()
}

fn problem(status: StatusCode, msg: String) -> Response {
    (status, axum::Json(json!({"error": msg}))).into_response()
}

async fn admin_list(State(app): State<Arc<App>>) -> Response {
    let store = &app.checker.store;
    store.expire(unix_now());
    axum::Json(json!({"decisions": store.list()})).into_response()
}

async fn admin_get(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    match app.checker.store.get(id) {
        Some(d) => axum::Json(d).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            DecisionError::NotFound(id).to_string(),
        ),
    }
}

/// `POST /v1/admin/decisions`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDecision {
    pub scope: String,
    pub value: String,
    pub duration_secs: u64,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Adds a decision by hand (checked against the allow-list).
pub fn add_manual(checker: &Checker, n: &NewDecision, now: u64) -> Result<Decision, (u16, String)> {
    let scope = Scope::from_name(&n.scope).ok_or((
        400,
        "scope: expected ip, range, device, token or user".to_string(),
    ))?;
    let value = canonical(scope, &n.value).map_err(|e| (400, e.to_string()))?;
    if n.duration_secs == 0 || n.duration_secs as f64 > crate::rules::MAX_BAN_SECS {
        return Err((400, "duration_secs: expected 1 to 30 days".into()));
    }
    let allow = &checker.cfg.allow;
    let listed = match scope {
        Scope::Ip => value.parse::<IpAddr>().is_ok_and(|ip| allow.ip(ip)),
        Scope::Range => false,
        Scope::Device => allow.devices.contains(&value),
        Scope::User => allow.users.contains(&value),
        Scope::Token => false,
    };
    if listed {
        return Err((409, DecisionError::AllowListed(value).to_string()));
    }
    let reason = n.reason.as_deref().unwrap_or("added by hand");
    checker
        .store
        .add(Ban {
            scope,
            value,
            origin: "manual",
            scenario: "manual",
            reason,
            now,
            until: now + n.duration_secs,
        })
        .ok_or((409, "a ban at least as long holds already".into()))
}

async fn admin_add(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    let n: NewDecision = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    match add_manual(&app.checker, &n, unix_now()) {
        Ok(d) => {
            tracing::info!(
                id = d.id,
                scope = d.scope.as_str(),
                "decision added by hand"
            );
            (StatusCode::CREATED, axum::Json(d)).into_response()
        }
        Err((s, m)) => problem(
            StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST),
            m,
        ),
    }
}

async fn admin_delete(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    match app.checker.store.delete(id) {
        Ok(d) => {
            tracing::info!(
                id = d.id,
                scope = d.scope.as_str(),
                "decision deleted by hand"
            );
            axum::Json(d).into_response()
        }
        Err(e) => problem(StatusCode::NOT_FOUND, e.to_string()),
    }
}

#[derive(Deserialize)]
struct ValueQuery {
    scope: String,
    value: String,
}

async fn admin_delete_value(State(app): State<Arc<App>>, Query(q): Query<ValueQuery>) -> Response {
    let Some(scope) = Scope::from_name(&q.scope) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "scope: expected ip, range, device, token or user".into(),
        );
    };
    let value = match canonical(scope, &q.value) {
        Ok(v) => v,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match app.checker.store.delete_value(scope, &value) {
        Ok(d) => axum::Json(d).into_response(),
        Err(_) => problem(
            StatusCode::NOT_FOUND,
            format!("no decision on that {}", scope.as_str()),
        ),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    match &app.hub {
        Some(hub) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            hub(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are on the daemon's --metrics-listen\n",
        )
            .into_response(),
    }
}
