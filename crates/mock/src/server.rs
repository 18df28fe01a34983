//! The HTTP server: VirusTotal's routes, its wire habits, quotas, latency and faults.
//!
//! Built directly on hyper's HTTP/1.1 connection driver rather than a web framework, because
//! faults need the wire: a reset must be a real TCP RST after half a body (the socket's
//! `SO_LINGER` is set to zero through a duplicate of its descriptor), and a truncated answer
//! must be a complete HTTP message whose JSON stops early.
//!
//! Order of decisions for a file lookup, as on the real service: key (401), then the quota
//! (429, nothing spent), then the latency, then an injected fault (quota already spent: the
//! server admitted the request), then the answer (200 or 404).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use vtbulk_ioc::Hash;

use crate::behavior::{Fault, FaultState, Faults, Latency};
use crate::clock::{Clock, ClockView, parse_rfc3339_ms};
use crate::quota::{KeyConfig, KeyUsage, Window};
use crate::stats::{LogEntry, Route, Snapshot, Stats};
use crate::universe::{DEFAULT_SIZE, Fixture, Universe};

/// Everything a mock instance is made of.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The keys it accepts, with their quotas.
    pub keys: Vec<KeyConfig>,
    /// Seed of the universe, the latencies and the faults.
    pub seed: u64,
    /// Number of generated files.
    pub universe_size: u64,
    /// Delay of each API answer.
    pub latency: Latency,
    /// Injected failures of file lookups.
    pub faults: Faults,
    /// Extra verbatim file answers (EICAR is always there).
    pub fixtures: Vec<Fixture>,
    /// Most log entries kept by the stats.
    pub log_limit: usize,
    /// Start the clock at this time (Unix ms) instead of now.
    pub clock_start_ms: Option<i64>,
    /// Start with the clock frozen.
    pub freeze_clock: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            keys: vec![KeyConfig::unlimited("testkey")],
            seed: 1,
            universe_size: DEFAULT_SIZE,
            latency: Latency::None,
            faults: Faults::default(),
            fixtures: Vec::new(),
            log_limit: 1_000_000,
            clock_start_ms: None,
            freeze_clock: false,
        }
    }
}

impl MockConfig {
    /// The default configuration with these keys.
    pub fn with_keys(keys: Vec<KeyConfig>) -> MockConfig {
        MockConfig {
            keys,
            ..MockConfig::default()
        }
    }
}

/// The shared state of one mock instance.
#[derive(Debug)]
struct State {
    config: MockConfig,
    by_key: HashMap<String, usize>,
    by_user: HashMap<String, usize>,
    key_ids: Vec<String>,
    usage: Vec<Mutex<KeyUsage>>,
    universe: Universe,
    clock: Clock,
    stats: Stats,
    faults: FaultState,
}

/// A running mock. Dropping it stops the server.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl MockServer {
    /// Binds, and serves on the current tokio runtime until dropped.
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let clock = Clock::default();
        if config.freeze_clock {
            clock.freeze();
        }
        if let Some(ms) = config.clock_start_ms {
            clock.set_ms(ms);
        }
        let now = clock.now_ms();
        let mut universe = Universe::new(config.seed, config.universe_size);
        for fixture in &config.fixtures {
            universe.add_fixture(fixture.clone());
        }
        let state = Arc::new(State {
            by_key: config
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.key.clone(), i))
                .collect(),
            by_user: config
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.user.clone(), i))
                .collect(),
            key_ids: config.keys.iter().map(|k| crate::key_id(&k.key)).collect(),
            usage: config
                .keys
                .iter()
                .map(|k| Mutex::new(KeyUsage::new(k, now)))
                .collect(),
            universe,
            clock,
            stats: Stats::new(config.log_limit),
            faults: FaultState::default(),
            config,
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(MockServer {
            addr,
            state,
            accept,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the host to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The mock's clock (freeze it, set it, advance it).
    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    /// The universe of known files.
    pub fn universe(&self) -> &Universe {
        &self.state.universe
    }

    /// What the mock saw so far.
    pub fn stats(&self, with_log: bool) -> Snapshot {
        self.state
            .stats
            .snapshot(self.state.clock.now_ms(), with_log)
    }

    /// Forgets stats, usage (back to the preload) and fault draws.
    pub fn reset(&self) {
        self.state.reset();
    }
}

impl State {
    fn reset(&self) {
        let now = self.clock.now_ms();
        self.stats.reset();
        self.faults.reset();
        for usage in &self.usage {
            lock(usage).reset(now);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only follows a panic elsewhere; the counters are still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Connection tasks live in this set, so stopping the server stops them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if let Ok((stream, socket)) = split_socket(stream) {
                    connections.spawn(serve_connection(stream, socket, state.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Returns the stream and a duplicate of its socket, kept to set `SO_LINGER` for resets.
fn split_socket(stream: TcpStream) -> io::Result<(TcpStream, Arc<std::net::TcpStream>)> {
    stream.set_nodelay(true)?;
    let std_stream = stream.into_std()?;
    let dup = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, Arc::new(dup)))
}

async fn serve_connection(stream: TcpStream, socket: Arc<std::net::TcpStream>, state: Arc<State>) {
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let socket = socket.clone();
        async move { handle(&state, &socket, req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Why a connection is dropped without an answer.
#[derive(Debug, thiserror::Error)]
#[error("stalled request dropped")]
struct Dropped;

/// Response bodies: whole, or cut short by a reset.
#[derive(Debug)]
pub enum MockBody {
    /// A complete body.
    Full(Option<Bytes>),
    /// Half a body, a pause for hyper to flush it, then an error that aborts the connection.
    Reset {
        /// The bytes sent before the reset.
        first: Option<Bytes>,
        /// Whether the flush pause happened.
        paused: bool,
    },
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Reset { first, paused } => {
                if let Some(b) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                if !*paused {
                    *paused = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "injected reset",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Reset { .. } => SizeHint::default(),
        }
    }
}

type Answer = Result<Response<MockBody>, Dropped>;

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<MockBody> {
    let mut response = Response::new(MockBody::Full(Some(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<MockBody> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// VirusTotal's error envelope; error bodies are never compressed.
fn api_error(status: StatusCode, code: &'static str, message: &str) -> Response<MockBody> {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// Gzips a success body when the client asks for it the way VirusTotal's front end requires:
/// `Accept-Encoding: gzip` and a User-Agent containing "gzip".
fn maybe_gzip(req_headers: &hyper::HeaderMap, body: Vec<u8>) -> (Vec<u8>, bool) {
    let header_has = |name: header::HeaderName, needle: &str| {
        req_headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains(needle))
    };
    if !(header_has(header::ACCEPT_ENCODING, "gzip") && header_has(header::USER_AGENT, "gzip")) {
        return (body, false);
    }
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    match encoder.write_all(&body).and_then(|()| encoder.finish()) {
        Ok(gz) => (gz, true),
        Err(_) => (body, false),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(Ok(b)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16))
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(state: &State, socket: &std::net::TcpStream, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    if let Some(control) = path.strip_prefix("/_mock/") {
        return Ok(handle_control(state, control, req).await);
    }
    let Some(api_path) = path.strip_prefix("/api/v3/") else {
        return Ok(api_error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            "Resource not found",
        ));
    };
    let seq = state.faults.next_request();
    let latency = state.config.latency.sample(state.config.seed, seq);
    let now = state.clock.now_ms();
    let segments: Vec<&str> = api_path.trim_end_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        ["files", _] => Route::Files,
        ["users", _] => Route::Users,
        ["users", _, "overall_quotas"] => Route::OverallQuotas,
        _ => Route::Other,
    };
    let mut entry = LogEntry {
        t_ms: now,
        key: "missing".to_owned(),
        route,
        status: 0,
        code: None,
        id: None,
        sha256: None,
        window: None,
        fault: None,
        gzip: false,
    };

    // 1. The key.
    let key_index = match req.headers().get("x-apikey").map(|v| v.as_bytes()) {
        None => {
            return Ok(finish(
                state,
                entry,
                latency,
                api_error(
                    StatusCode::UNAUTHORIZED,
                    "AuthenticationRequiredError",
                    "X-Apikey header is missing",
                ),
                false,
                None,
                None,
            )
            .await);
        }
        Some(key) => {
            let key = String::from_utf8_lossy(key);
            match state.by_key.get(key.as_ref()) {
                Some(&i) => {
                    entry.key = state.key_ids[i].clone();
                    i
                }
                None => {
                    entry.key = format!("unknown:{}", crate::key_id(&key));
                    return Ok(finish(
                        state,
                        entry,
                        latency,
                        api_error(
                            StatusCode::UNAUTHORIZED,
                            "WrongCredentialsError",
                            "Wrong API key",
                        ),
                        false,
                        None,
                        None,
                    )
                    .await);
                }
            }
        }
    };

    if req.method() != Method::GET {
        return Ok(finish(
            state,
            entry,
            latency,
            api_error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "Only GET is supported by this mock",
            ),
            false,
            None,
            None,
        )
        .await);
    }

    match segments.as_slice() {
        ["files", id] => {
            let id = percent_decode(id);
            let hash = Hash::parse(&id).ok();
            entry.id = Some(id.to_ascii_lowercase());
            // 2. A TooManyRequestsError burst refuses without spending.
            let fault = state.faults.draw(&state.config.faults, state.config.seed, &entry.id.clone().unwrap_or_default());
            if fault == Some(Fault::TooManyRequests) {
                entry.fault = fault;
                let answer = api_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsError",
                    "Too many requests",
                );
                return Ok(finish(state, entry, latency, answer, false, hash, None).await);
            }
            // 3. The quota.
            let admitted = lock(&state.usage[key_index]).admit(now);
            if let Err(window) = admitted {
                entry.window = Some(window);
                let answer = api_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "QuotaExceededError",
                    quota_message(window),
                );
                return Ok(finish(state, entry, latency, answer, false, hash, None).await);
            }
            let known = hash.and_then(|h| state.universe.lookup(&h));
            let file = known.map(|k| state.universe.sha256_of(k));
            entry.sha256 = file.map(|f| f.to_string());
            // 4. Injected faults, after admission: the quota is spent.
            entry.fault = fault;
            match fault {
                Some(Fault::ServerError) => {
                    let answer = respond(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/html; charset=utf-8",
                        b"<html><body><h1>500 Internal Server Error</h1></body></html>".to_vec(),
                    );
                    return Ok(finish(state, entry, latency, answer, true, hash, file).await);
                }
                Some(Fault::Transient) => {
                    let answer = api_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "TransientError",
                        "Transient error, please try again later",
                    );
                    return Ok(finish(state, entry, latency, answer, true, hash, file).await);
                }
                Some(Fault::DeadlineExceeded) => {
                    let answer = api_error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "DeadlineExceededError",
                        "The operation took too long to complete",
                    );
                    return Ok(finish(state, entry, latency, answer, true, hash, file).await);
                }
                Some(Fault::Stall) => {
                    state.stats.record(entry, true, hash, file);
                    tokio::time::sleep(state.config.faults.stall_for).await;
                    return Err(Dropped);
                }
                _ => {}
            }
            // 5. The answer.
            let answer = match known {
                None => api_error(
                    StatusCode::NOT_FOUND,
                    "NotFoundError",
                    &format!("File \"{id}\" not found"),
                ),
                Some(known) => {
                    let mut body = Vec::with_capacity(16 * 1024);
                    state.universe.render(known, &mut body);
                    match fault {
                        Some(Fault::Truncate) => {
                            body.truncate(body.len() / 2);
                            respond(StatusCode::OK, "application/json", body)
                        }
                        Some(Fault::Reset) => {
                            // The announced length is the whole body; half of it arrives.
                            let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
                            let full = body.len();
                            body.truncate(full / 2);
                            let mut response = Response::new(MockBody::Reset {
                                first: Some(Bytes::from(body)),
                                paused: false,
                            });
                            let headers = response.headers_mut();
                            headers.insert(
                                header::CONTENT_TYPE,
                                HeaderValue::from_static("application/json"),
                            );
                            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full));
                            response
                        }
                        _ => {
                            let (body, gz) = maybe_gzip(req.headers(), body);
                            entry.gzip = gz;
                            let mut response = respond(StatusCode::OK, "application/json", body);
                            if gz {
                                response.headers_mut().insert(
                                    header::CONTENT_ENCODING,
                                    HeaderValue::from_static("gzip"),
                                );
                            }
                            response
                        }
                    }
                }
            };
            Ok(finish(state, entry, latency, answer, true, hash, file).await)
        }
        ["users", id] | ["users", id, "overall_quotas"] => {
            let id = percent_decode(id);
            let target = state
                .by_key
                .get(&id)
                .or_else(|| state.by_user.get(&id))
                .copied();
            let answer = match target {
                None => api_error(
                    StatusCode::NOT_FOUND,
                    "NotFoundError",
                    &format!("User \"{id}\" not found"),
                ),
                Some(target) => {
                    let own = target == key_index;
                    let body = if route == Route::Users {
                        user_object(state, target, own, now)
                    } else if own {
                        overall_quotas(state, target, now)
                    } else {
                        return Ok(finish(
                            state,
                            entry,
                            latency,
                            api_error(
                                StatusCode::FORBIDDEN,
                                "ForbiddenError",
                                "You are not allowed to perform the requested operation",
                            ),
                            false,
                            None,
                            None,
                        )
                        .await);
                    };
                    let (body, gz) = maybe_gzip(req.headers(), serde_json::to_vec(&body).unwrap_or_default());
                    entry.gzip = gz;
                    let mut response = respond(StatusCode::OK, "application/json", body);
                    if gz {
                        response
                            .headers_mut()
                            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    }
                    response
                }
            };
            Ok(finish(state, entry, latency, answer, false, None, None).await)
        }
        _ => Ok(finish(
            state,
            entry,
            latency,
            api_error(StatusCode::NOT_FOUND, "NotFoundError", "Resource not found"),
            false,
            None,
            None,
        )
        .await),
    }
}

fn quota_message(window: Window) -> &'static str {
    // VirusTotal's exact texts are unknown (VT_API.md, open question 3); these say which window
    // refused, which the real service may not. Clients must not depend on the text.
    match window {
        Window::Minute => "Quota exceeded (per-minute request rate)",
        Window::Hour => "Quota exceeded (hourly quota)",
        Window::Day => "Quota exceeded (daily quota; resets at 00:00 UTC)",
        Window::Month => "Quota exceeded (monthly quota; resets on the 1st at 00:00 UTC)",
    }
}

/// Records the request, waits out the latency, returns the answer.
#[allow(clippy::too_many_arguments)]
async fn finish(
    state: &State,
    mut entry: LogEntry,
    latency: Duration,
    answer: Response<MockBody>,
    spent: bool,
    id: Option<Hash>,
    file: Option<Hash>,
) -> Response<MockBody> {
    entry.status = answer.status().as_u16();
    if entry.status >= 400 {
        entry.code = error_code(answer.status());
    }
    state.stats.record(entry, spent, id, file);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    answer
}

fn error_code(status: StatusCode) -> Option<&'static str> {
    // The log keeps the code by status; the body already went out with the precise code, and
    // 429 and 401 are told apart by `window`/`fault` and `key` in the entry.
    Some(match status.as_u16() {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "ForbiddenError",
        404 => "NotFoundError",
        429 => "QuotaOrRateError",
        500 => "ServerError",
        503 => "TransientError",
        504 => "DeadlineExceededError",
        _ => return None,
    })
}

fn user_object(state: &State, index: usize, own: bool, now: i64) -> serde_json::Value {
    let user = &state.config.keys[index].user;
    let mut attributes = serde_json::json!({
        "status": "active",
        "user_since": 1_557_214_525,
        "reputation": 1,
        "has_2fa": false,
    });
    if own {
        attributes["quotas"] = quotas(state, index, now);
    }
    serde_json::json!({
        "data": {
            "type": "user",
            "id": user,
            "links": {"self": format!("https://www.virustotal.com/api/v3/users/{user}")},
            "attributes": attributes,
        }
    })
}

fn quotas(state: &State, index: usize, now: i64) -> serde_json::Value {
    let [hour, day, month] = lock(&state.usage[index]).allowances(now);
    serde_json::json!({
        "api_requests_hourly": hour,
        "api_requests_daily": day,
        "api_requests_monthly": month,
        "intelligence_searches_monthly": {"allowed": 0, "used": 0},
        "intelligence_downloads_monthly": {"allowed": 0, "used": 0},
        "cases_creation_monthly": {"allowed": 0, "used": 0},
    })
}

fn overall_quotas(state: &State, index: usize, now: i64) -> serde_json::Value {
    let [hour, day, month] = lock(&state.usage[index]).allowances(now);
    serde_json::json!({
        "data": {
            "api_requests_hourly": {"user": hour},
            "api_requests_daily": {"user": day},
            "api_requests_monthly": {"user": month},
            "cases_creation_monthly": {"user": {"allowed": 0, "used": 0}},
        }
    })
}

/// `POST /_mock/clock` body: any of these, applied in this order.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockCommand {
    real: Option<bool>,
    freeze: Option<bool>,
    set: Option<String>,
    set_ms: Option<i64>,
    advance: Option<String>,
    advance_ms: Option<i64>,
}

#[derive(Serialize)]
struct ConfigView<'a> {
    seed: u64,
    universe_size: u64,
    keys: Vec<KeyView<'a>>,
    latency: &'a Latency,
    faults: &'a Faults,
    fixtures: usize,
}

#[derive(Serialize)]
struct KeyView<'a> {
    key_id: &'a str,
    user: &'a str,
    limits: crate::quota::Limits,
    preload: crate::quota::Preload,
}

async fn handle_control(state: &State, what: &str, req: Request<Incoming>) -> Response<MockBody> {
    let bad = |msg: String| json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": msg}));
    match (req.method().clone(), what) {
        (Method::GET, "stats") => {
            let with_log = !matches!(req.uri().query(), Some(q) if q.split('&').any(|p| p == "log=0" || p == "log=false"));
            json(StatusCode::OK, &state.stats.snapshot(state.clock.now_ms(), with_log))
        }
        (Method::POST, "reset") => {
            state.reset();
            json(StatusCode::OK, &serde_json::json!({"reset": true}))
        }
        (Method::GET, "clock") => json(StatusCode::OK, &state.clock.view()),
        (Method::POST, "clock") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return bad(format!("failed to read the body: {e}")),
            };
            let cmd: ClockCommand = if body.is_empty() {
                ClockCommand::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(c) => c,
                    Err(e) => return bad(format!("bad clock command: {e}")),
                }
            };
            if cmd.real == Some(true) {
                state.clock.reset_to_real();
            }
            match cmd.freeze {
                Some(true) => state.clock.freeze(),
                Some(false) => state.clock.unfreeze(),
                None => {}
            }
            if let Some(s) = &cmd.set {
                match parse_rfc3339_ms(s) {
                    Ok(ms) => state.clock.set_ms(ms),
                    Err(e) => return bad(e),
                }
            }
            if let Some(ms) = cmd.set_ms {
                state.clock.set_ms(ms);
            }
            if let Some(s) = &cmd.advance {
                match crate::behavior::parse_duration(s) {
                    Ok(d) => state.clock.advance_ms(d.as_millis() as i64),
                    Err(e) => return bad(e),
                }
            }
            if let Some(ms) = cmd.advance_ms {
                state.clock.advance_ms(ms);
            }
            let view: ClockView = state.clock.view();
            json(StatusCode::OK, &view)
        }
        (Method::GET, "config") => {
            let c = &state.config;
            let view = ConfigView {
                seed: c.seed,
                universe_size: c.universe_size,
                keys: c
                    .keys
                    .iter()
                    .zip(&state.key_ids)
                    .map(|(k, id)| KeyView {
                        key_id: id,
                        user: &k.user,
                        limits: k.limits,
                        preload: k.preload,
                    })
                    .collect(),
                latency: &c.latency,
                faults: &c.faults,
                fixtures: state.universe.fixtures().len(),
            };
            json(StatusCode::OK, &view)
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "unknown control endpoint; see GET /_mock/stats, POST /_mock/reset, GET|POST /_mock/clock, GET /_mock/config"}),
        ),
    }
}
