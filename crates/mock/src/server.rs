//! The HTTP server: VirusTotal's routes, its wire habits, quotas, latency and faults.
//!
//! Built directly on hyper's HTTP/1.1 connection driver rather than a web framework, because
//! faults need the wire: a reset must be a real TCP RST after half a body (the socket's
//! `SO_LINGER` is set to zero through a duplicate of its descriptor), and a truncated answer
//! must be a complete HTTP message whose JSON stops early.
//!
//! Order of decisions for a file lookup, as on the real service: key (401), then a strict
//! spacing limiter when the key has one (429, any request), then the quota (429, nothing
//! spent), then the latency, then an injected fault (quota already spent: the server admitted
//! the request), then the answer (200 or 404).

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
use crate::objects::{self, ObjectKind};
use crate::quota::{KeyConfig, KeyUsage, Window};
use crate::stats::{IdRef, KeyRef, Record, Route, Snapshot, Stats};
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
    /// Engines in each generated file's results (1 to 70).
    pub engines: usize,
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
    /// Make the clock follow tokio's (for tests under a paused tokio clock; see
    /// [`Clock::following_tokio`]). Starts at `clock_start_ms` or now.
    pub follow_tokio_clock: bool,
    /// How long a submitted URL's analysis takes (each URL: half to one and a half times it).
    pub analysis_delay: Duration,
    /// Serve HTTPS with this certificate (see [`crate::tls`]); plain HTTP when `None`.
    pub tls: Option<crate::tls::MockTls>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            keys: vec![KeyConfig::unlimited("testkey")],
            seed: 1,
            universe_size: DEFAULT_SIZE,
            engines: crate::universe::ENGINE_COUNT,
            latency: Latency::None,
            faults: Faults::default(),
            fixtures: Vec::new(),
            log_limit: 1_000_000,
            clock_start_ms: None,
            freeze_clock: false,
            follow_tokio_clock: false,
            analysis_delay: Duration::from_secs(30),
            tls: None,
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
    submissions: objects::Submissions,
    /// Keys revoked since the start (a key rotated away: 401 from then on).
    revoked: Vec<std::sync::atomic::AtomicBool>,
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
        let clock = if config.follow_tokio_clock {
            Clock::following_tokio(
                config
                    .clock_start_ms
                    .unwrap_or_else(|| Clock::default().now_ms()),
            )
        } else {
            let clock = Clock::default();
            if config.freeze_clock {
                clock.freeze();
            }
            if let Some(ms) = config.clock_start_ms {
                clock.set_ms(ms);
            }
            clock
        };
        let now = clock.now_ms();
        let mut universe =
            Universe::with_engines(config.seed, config.universe_size, config.engines);
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
            stats: Stats::new(
                config.log_limit,
                config.keys.iter().map(|k| crate::key_id(&k.key)).collect(),
            ),
            faults: FaultState::default(),
            submissions: objects::Submissions::default(),
            revoked: config.keys.iter().map(|_| Default::default()).collect(),
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

    /// `http://ADDR` (`https://` with TLS), the host to give a client.
    pub fn url(&self) -> String {
        let scheme = if self.state.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
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

    /// Waits (for requests, not for time) until the stats satisfy `done`.
    pub async fn wait_for(&self, done: impl Fn(&Snapshot) -> bool) {
        loop {
            let next = self.state.stats.recorded();
            tokio::pin!(next);
            next.as_mut().enable();
            if done(&self.stats(true)) {
                return;
            }
            next.await;
        }
    }

    /// Revokes `key` (rotated away): every request with it is a 401 `WrongCredentialsError`
    /// from now on. False when the mock has no such key.
    pub fn revoke(&self, key: &str) -> bool {
        match self.state.by_key.get(key) {
            Some(&i) => {
                self.state.revoked[i].store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            None => false,
        }
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
                    let state = state.clone();
                    match state.config.tls.clone() {
                        None => connections.spawn(serve_connection(stream, socket, state)),
                        Some(tls) => connections.spawn(async move {
                            // A client that refuses the certificate ends the handshake: no
                            // request, nothing counted.
                            if let Ok(stream) = tls.acceptor.accept(stream).await {
                                serve_connection(stream, socket, state).await;
                            }
                        }),
                    };
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

async fn serve_connection<S>(stream: S, socket: Arc<std::net::TcpStream>, state: Arc<State>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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

/// Response bodies: whole (in up to three shared pieces), or cut short by a reset.
#[derive(Debug)]
pub enum MockBody {
    /// A complete body, written piece by piece without copying.
    Full {
        /// The pieces, in order; empty ones are skipped.
        chunks: [Bytes; 3],
        /// The next piece to send.
        next: usize,
    },
    /// Half a body, a pause for hyper to flush it, then an error that aborts the connection.
    Reset {
        /// The bytes sent before the reset.
        first: Option<Bytes>,
        /// Whether the flush pause happened.
        paused: bool,
    },
}

impl MockBody {
    fn whole(bytes: Bytes) -> MockBody {
        MockBody::Full {
            chunks: [bytes, Bytes::new(), Bytes::new()],
            next: 0,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Full { chunks, next } => {
                while *next < chunks.len() {
                    let chunk = std::mem::take(&mut chunks[*next]);
                    *next += 1;
                    if !chunk.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                }
                Poll::Ready(None)
            }
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
        match self {
            MockBody::Full { chunks, next } => chunks[*next..].iter().all(Bytes::is_empty),
            MockBody::Reset { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full { chunks, next } => {
                SizeHint::with_exact(chunks[*next..].iter().map(|c| c.len() as u64).sum())
            }
            MockBody::Reset { .. } => SizeHint::default(),
        }
    }
}

type Answer = Result<Response<MockBody>, Dropped>;

fn respond(status: StatusCode, content_type: &'static str, body: MockBody) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<MockBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    respond(
        status,
        "application/json",
        MockBody::whole(Bytes::from(body)),
    )
}

/// VirusTotal's error envelope; error bodies are never compressed.
fn api_error(status: StatusCode, code: &'static str, message: &str) -> Response<MockBody> {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// A 200 JSON answer, gzipped when the client asks the way VirusTotal's front end requires:
/// `Accept-Encoding: gzip` and a User-Agent containing "gzip". Returns whether it gzipped.
fn success(req_headers: &hyper::HeaderMap, chunks: [Bytes; 3]) -> (Response<MockBody>, bool) {
    let header_has = |name: header::HeaderName, needle: &str| {
        req_headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains(needle))
    };
    if !(header_has(header::ACCEPT_ENCODING, "gzip") && header_has(header::USER_AGENT, "gzip")) {
        let body = MockBody::Full { chunks, next: 0 };
        return (respond(StatusCode::OK, "application/json", body), false);
    }
    use std::io::Write;
    let len = chunks.iter().map(Bytes::len).sum::<usize>();
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(len / 4), flate2::Compression::fast());
    let gz = chunks
        .iter()
        .try_for_each(|c| encoder.write_all(c))
        .and_then(|()| encoder.finish());
    match gz {
        Ok(gz) => {
            let mut response = respond(
                StatusCode::OK,
                "application/json",
                MockBody::whole(Bytes::from(gz)),
            );
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (response, true)
        }
        Err(_) => {
            let body = MockBody::Full { chunks, next: 0 };
            (respond(StatusCode::OK, "application/json", body), false)
        }
    }
}

fn concat(chunks: &[Bytes; 3]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

/// Decodes `%XX` escapes in a path segment; borrows when there are none.
fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s);
    }
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
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Charges a request to the key's quota (it is then spent): `None`; or the 429 that refuses
/// it.
fn refused(
    state: &State,
    key_index: usize,
    now: i64,
    record: &mut Record,
) -> Option<Response<MockBody>> {
    match lock(&state.usage[key_index]).admit(now) {
        Ok(()) => {
            record.spent = true;
            None
        }
        Err(window) => {
            record.window = Some(window);
            Some(api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "QuotaExceededError",
                quota_message(window),
            ))
        }
    }
}

/// The `url` of a `POST /urls` form body.
fn url_of_form(form: &[u8]) -> Option<String> {
    url_form_pairs(form)
        .into_iter()
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v)
}

/// The pairs of an `application/x-www-form-urlencoded` body.
fn url_form_pairs(form: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(form);
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| percent_decode(&s.replace('+', " ")).into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

/// An API route and its path parameter.
enum ApiRoute<'a> {
    Files(&'a str),
    Object(ObjectKind, &'a str),
    SubmitUrl,
    Analysis(&'a str),
    Users(&'a str),
    OverallQuotas(&'a str),
    Other,
}

fn route_of(api_path: &str) -> ApiRoute<'_> {
    let path = api_path.trim_end_matches('/');
    if let Some(id) = path.strip_prefix("files/")
        && !id.contains('/')
    {
        return ApiRoute::Files(id);
    }
    if path == "urls" {
        return ApiRoute::SubmitUrl;
    }
    if let Some(id) = path.strip_prefix("analyses/")
        && !id.contains('/')
    {
        return ApiRoute::Analysis(id);
    }
    if let Some((collection, id)) = path.split_once('/')
        && let Some(kind) = ObjectKind::of_collection(collection)
        && !id.contains('/')
    {
        return ApiRoute::Object(kind, id);
    }
    if let Some(rest) = path.strip_prefix("users/") {
        if let Some(id) = rest.strip_suffix("/overall_quotas")
            && !id.contains('/')
        {
            return ApiRoute::OverallQuotas(id);
        }
        if !rest.contains('/') {
            return ApiRoute::Users(rest);
        }
    }
    ApiRoute::Other
}

/// What a route's handler decided: an answer to record and send, or `None` for a dropped
/// request (a stall: recorded already, never answered).
type Reply = Option<Response<MockBody>>;

async fn handle(state: &State, socket: &std::net::TcpStream, req: Request<Incoming>) -> Answer {
    if req.uri().path().starts_with("/_mock/") {
        return Ok(handle_control(state, req).await);
    }
    let Some(api_path) = req.uri().path().strip_prefix("/api/v3/") else {
        return Ok(api_error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            "Resource not found",
        ));
    };
    let seq = state.faults.next_request();
    let latency = state.config.latency.sample(state.config.seed, seq);
    let now = state.clock.now_ms();
    let api_route = route_of(api_path);
    let mut record = Record::new(now, route_name(&api_route));
    let reply = match admit(state, &req, &api_route, now, &mut record) {
        Err(refusal) => Some(*refusal),
        Ok(key) => match api_route {
            ApiRoute::SubmitUrl => submit(state, req, key, now, &mut record).await,
            ApiRoute::Analysis(id) => analysis(state, id, key, now, &mut record),
            ApiRoute::Files(id) => lookup(state, socket, &req, None, id, key, &mut record).await,
            ApiRoute::Object(kind, id) => {
                lookup(state, socket, &req, Some(kind), id, key, &mut record).await
            }
            ApiRoute::Users(id) | ApiRoute::OverallQuotas(id) => {
                users(state, &req, id, key, now, &mut record)
            }
            ApiRoute::Other => Some(api_error(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                "Resource not found",
            )),
        },
    };
    match reply {
        Some(answer) => Ok(finish(state, record, latency, answer).await),
        None => Err(Dropped),
    }
}

/// The log's name for a route.
fn route_name(route: &ApiRoute<'_>) -> Route {
    match route {
        ApiRoute::Files(_) => Route::Files,
        ApiRoute::Object(..) => Route::Objects,
        ApiRoute::SubmitUrl => Route::SubmitUrl,
        ApiRoute::Analysis(_) => Route::Analyses,
        ApiRoute::Users(_) => Route::Users,
        ApiRoute::OverallQuotas(_) => Route::OverallQuotas,
        ApiRoute::Other => Route::Other,
    }
}

/// The checks every API request meets first: a key (known, not revoked), the strict spacing
/// limiter (requests of any nature), the method. The key's index, or the refusal.
fn admit(
    state: &State,
    req: &Request<Incoming>,
    route: &ApiRoute<'_>,
    now: i64,
    record: &mut Record,
) -> Result<usize, Box<Response<MockBody>>> {
    let Some(key) = req.headers().get("x-apikey").map(|v| v.as_bytes()) else {
        return Err(Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationRequiredError",
            "X-Apikey header is missing",
        )));
    };
    let key = String::from_utf8_lossy(key);
    let revoked = |i: usize| state.revoked[i].load(std::sync::atomic::Ordering::Relaxed);
    let index = match state.by_key.get(key.as_ref()) {
        Some(&i) if !revoked(i) => i,
        _ => {
            record.key = KeyRef::Unknown(crate::key_id(&key).into());
            return Err(Box::new(api_error(
                StatusCode::UNAUTHORIZED,
                "WrongCredentialsError",
                "Wrong API key",
            )));
        }
    };
    record.key = KeyRef::Known(index);
    // A strict spacing limiter counts requests of any nature, before anything else.
    if let Err(window) = lock(&state.usage[index]).admit_spacing(now) {
        record.window = Some(window);
        return Err(Box::new(api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "QuotaExceededError",
            quota_message(window),
        )));
    }
    let post = matches!(route, ApiRoute::SubmitUrl);
    if (req.method() != Method::GET && !post) || (post && req.method() != Method::POST) {
        return Err(Box::new(api_error(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            "Only GET (and POST /urls) is supported by this mock",
        )));
    }
    Ok(index)
}

/// `POST /urls`: an analysis id for the form's URL (counted against the quota).
async fn submit(
    state: &State,
    req: Request<Incoming>,
    key: usize,
    now: i64,
    record: &mut Record,
) -> Reply {
    if let Some(answer) = refused(state, key, now, record) {
        return Some(answer);
    }
    let limited = http_body_util::Limited::new(req.into_body(), 64 * 1024);
    let form = match http_body_util::BodyExt::collect(limited).await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let Some(url) = url_of_form(&form).filter(|url| url.contains("://")) else {
        return Some(api_error(
            StatusCode::BAD_REQUEST,
            "InvalidArgumentError",
            "Unable to canonicalize url",
        ));
    };
    let id = state
        .submissions
        .submit(state.config.seed, &url, now, state.config.analysis_delay);
    record.id = IdRef::Text(format!("urls/{id}").into());
    let body = serde_json::json!({"data": {
        "type": "analysis",
        "id": id,
        "links": {"self": format!("https://www.virustotal.com/api/v3/analyses/{id}")},
    }});
    Some(respond(
        StatusCode::OK,
        "application/json",
        MockBody::whole(Bytes::from(body.to_string())),
    ))
}

/// `GET /analyses/{id}` (counted against the quota).
fn analysis(state: &State, id: &str, key: usize, now: i64, record: &mut Record) -> Reply {
    if let Some(answer) = refused(state, key, now, record) {
        return Some(answer);
    }
    let id = percent_decode(id).into_owned();
    record.id = IdRef::Text(format!("analyses/{id}").into());
    Some(
        match state.submissions.analysis(state.config.seed, &id, now) {
            Some(body) => respond(StatusCode::OK, "application/json", MockBody::whole(body)),
            None => api_error(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                &format!("Analysis \"{id}\" not found"),
            ),
        },
    )
}

/// A file (`object` none) or a URL, domain or IP address: a 429 burst refuses without
/// spending, then the quota, then the object and what the drawn fault does to its answer.
async fn lookup(
    state: &State,
    socket: &std::net::TcpStream,
    req: &Request<Incoming>,
    object: Option<ObjectKind>,
    raw_id: &str,
    key: usize,
    record: &mut Record,
) -> Reply {
    let now = record.t_ms;
    let id = percent_decode(raw_id);
    let hash = object.is_none().then(|| Hash::parse(&id).ok()).flatten();
    record.id = match (hash, object) {
        (Some(h), _) => IdRef::Hash(h),
        (None, Some(kind)) => IdRef::Text(format!("{}/{id}", kind.collection()).into()),
        (None, None) => IdRef::Text(id.to_ascii_lowercase().into()),
    };
    let fault = match state.config.faults.is_empty() {
        true => None,
        false => state.faults.draw(
            &state.config.faults,
            state.config.seed,
            &id.to_ascii_lowercase(),
        ),
    };
    record.fault = fault;
    if fault == Some(Fault::TooManyRequests) {
        return Some(api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsError",
            "Too many requests",
        ));
    }
    if let Some(answer) = refused(state, key, now, record) {
        return Some(answer);
    }
    let known: Option<[Bytes; 3]> = match object {
        None => {
            let known = hash.and_then(|h| state.universe.lookup(&h));
            record.sha256 = known.map(|k| state.universe.sha256_of(k));
            known.map(|k| state.universe.render_chunks(k))
        }
        Some(kind) => {
            let submitted = kind == ObjectKind::Url && state.submissions.known(&id, now);
            objects::render_with(state.config.seed, kind, &id, submitted)
                .map(|body| [body, Bytes::new(), Bytes::new()])
        }
    };
    // Injected faults, after admission: the quota is spent. A fault of the body needs a body:
    // drawn for an unknown id, it is not applied.
    let reply = match (fault, known) {
        (Some(Fault::Stall), _) => {
            state.stats.record(record.clone());
            tokio::time::sleep(state.config.faults.stall_for).await;
            return None;
        }
        (Some(fault @ (Fault::ServerError | Fault::Transient | Fault::DeadlineExceeded)), _) => {
            faulted(fault)
        }
        (_, None) => {
            record.fault = None;
            let noun = object.map_or("File", ObjectKind::noun);
            api_error(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                &format!("{noun} \"{id}\" not found"),
            )
        }
        (Some(Fault::Truncate), Some(known)) => {
            let mut body = concat(&known);
            body.truncate(body.len() / 2);
            respond(
                StatusCode::OK,
                "application/json",
                MockBody::whole(Bytes::from(body)),
            )
        }
        (Some(Fault::Reset), Some(known)) => reset_halfway(socket, &known),
        (None | Some(Fault::TooManyRequests), Some(known)) => {
            let (response, gz) = success(req.headers(), known);
            record.gzip = gz;
            response
        }
    };
    Some(reply)
}

/// The answer of a server-side fault.
fn faulted(fault: Fault) -> Response<MockBody> {
    match fault {
        Fault::ServerError => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/html; charset=utf-8",
            MockBody::whole(Bytes::from_static(
                b"<html><body><h1>500 Internal Server Error</h1></body></html>",
            )),
        ),
        Fault::DeadlineExceeded => api_error(
            StatusCode::GATEWAY_TIMEOUT,
            "DeadlineExceededError",
            "The operation took too long to complete",
        ),
        _ => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "TransientError",
            "Transient error, please try again later",
        ),
    }
}

/// The announced length is the whole body; half of it arrives, then a RST.
fn reset_halfway(socket: &std::net::TcpStream, known: &[Bytes; 3]) -> Response<MockBody> {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
    let body = concat(known);
    let full = body.len();
    let mut response = respond(
        StatusCode::OK,
        "application/json",
        MockBody::Reset {
            first: Some(Bytes::from(body).slice(..full / 2)),
            paused: false,
        },
    );
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(full));
    response
}

/// `GET /users/{id}` and `/users/{id}/overall_quotas` (free, as VirusTotal's are).
fn users(
    state: &State,
    req: &Request<Incoming>,
    id: &str,
    key: usize,
    now: i64,
    record: &mut Record,
) -> Reply {
    let id = percent_decode(id);
    let target = state
        .by_key
        .get(id.as_ref())
        .or_else(|| state.by_user.get(id.as_ref()))
        .copied();
    Some(match target {
        None => api_error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            &format!("User \"{id}\" not found"),
        ),
        Some(target)
            if state.config.keys[key].users_forbidden
                || (record.route == Route::OverallQuotas && target != key) =>
        {
            api_error(
                StatusCode::FORBIDDEN,
                "ForbiddenError",
                "You are not allowed to perform the requested operation",
            )
        }
        Some(target) => {
            let body = if record.route == Route::Users {
                user_object(state, target, target == key, now)
            } else {
                overall_quotas(state, target, now)
            };
            let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            let (response, gz) = success(req.headers(), [body, Bytes::new(), Bytes::new()]);
            record.gzip = gz;
            response
        }
    })
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
async fn finish(
    state: &State,
    mut record: Record,
    latency: Duration,
    answer: Response<MockBody>,
) -> Response<MockBody> {
    record.status = answer.status().as_u16();
    record.code = error_code(&record);
    state.stats.record(record);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    answer
}

/// The VirusTotal code of the answer the server chose, for the log.
fn error_code(record: &Record) -> Option<&'static str> {
    Some(match record.status {
        400 => "BadRequestError",
        401 if matches!(record.key, KeyRef::Missing) => "AuthenticationRequiredError",
        401 => "WrongCredentialsError",
        403 => "ForbiddenError",
        404 => "NotFoundError",
        429 if record.window.is_some() => "QuotaExceededError",
        429 => "TooManyRequestsError",
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

async fn handle_control(state: &State, req: Request<Incoming>) -> Response<MockBody> {
    let what = req.uri().path().trim_start_matches("/_mock/").to_owned();
    let bad = |msg: String| json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": msg}));
    match (req.method().clone(), what.as_str()) {
        (Method::GET, "stats") => {
            let with_log = !matches!(req.uri().query(), Some(q) if q.split('&').any(|p| p == "log=0" || p == "log=false"));
            json(
                StatusCode::OK,
                &state.stats.snapshot(state.clock.now_ms(), with_log),
            )
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
