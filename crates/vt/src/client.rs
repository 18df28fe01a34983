//! The client: built once, shared by every worker, one method per endpoint.
//!
//! One [`Transport`](crate::transport) means one pool of keep-alive connections, so lookups
//! reuse connections instead of paying a TCP (and TLS) handshake each. The client neither
//! retries nor rate-limits: a lookup is one request and one quota unit, and the callers that
//! own the scheduler decide what happens next from [`Error::class`].
//!
//! A paced caller works in two steps: [`Client::ready`] takes a connection with nothing left
//! to wait for, then, once the scheduler has granted the slot, [`Ready`]'s method sends the
//! request at once and reports through its `departed` callback when the request was handed
//! to the kernel. The plain methods ([`Client::get_file`], ...) do both for callers that
//! do not pace.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::time::Instant;
use url::{Host, Url};
use vtbulk_ioc::Hash;

use crate::error::{Error, ErrorKind};
use crate::models::{
    Analysis, AnalysisRef, Body, Envelope, FileObject, FileSummary, ObjectSummary, OverallQuotas,
    UserObject,
};
use crate::secret::ApiKey;
use crate::transport::{Answer, Arrival, Conn, DepartureDelay, Target, Transport, TransportConfig};

/// VirusTotal's production host.
pub const DEFAULT_HOST: &str = "https://www.virustotal.com";

/// Our User-Agent. VirusTotal's front end gzips only for agents whose name contains "gzip"
/// (see the comment in vt-py's and vt-go's clients), hence the suffix.
pub const USER_AGENT: &str = concat!("vtbulk/", env!("CARGO_PKG_VERSION"), "; gzip");

/// How to build a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Scheme and host (and port), e.g. `https://www.virustotal.com` or
    /// `http://127.0.0.1:8080` for vt-mock. A trailing `/api/v3` is accepted and ignored.
    /// Plain `http://` is refused unless the host is loopback.
    pub host: String,
    /// Limit on establishing a connection (TCP, a proxy's CONNECT, TLS).
    pub connect_timeout: Duration,
    /// Limit on one request, from sending to the last byte of the body.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept; size it to the largest concurrency.
    pub pool_max_idle_per_host: usize,
    /// Ask for gzip bodies (`Accept-Encoding: gzip`) and decode them (here, not in the HTTP
    /// stack, so that the compressed bytes can be kept: see [`ClientConfig::keep_body`]).
    pub gzip: bool,
    /// Keep the raw `data` object of file answers ([`FileObject::raw`]).
    pub keep_raw: bool,
    /// Keep the whole body of file answers as received ([`FileSummary::body`]), still
    /// gzipped when it came so: free (the buffer is shared, not copied, and needs no
    /// compressing), for callers that store answers.
    pub keep_body: bool,
    /// Test hook: hold chosen requests between the send and the write (a busy host).
    pub departure_delay: Option<DepartureDelay>,
    /// Certificate authorities to trust besides the operating system's store (`--ca-cert`:
    /// a PEM bundle; a TLS-inspecting proxy's CA).
    pub ca_cert: Option<std::path::PathBuf>,
    /// The proxy (`--proxy`): the environment's by default.
    pub proxy: crate::ProxySetting,
    /// Bytes of answers being read at once, across all connections, at most (each answer
    /// also at most [`crate::MAX_BODY`] on the wire and [`MAX_INFLATED`] inflated).
    pub answer_budget: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            host: DEFAULT_HOST.to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: 512,
            gzip: true,
            keep_raw: false,
            keep_body: false,
            departure_delay: None,
            ca_cert: None,
            proxy: crate::ProxySetting::Environment,
            answer_budget: crate::transport::DEFAULT_ANSWER_BUDGET,
        }
    }
}

/// Why a [`Client`] could not be built. Never contains the API key.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host is not a URL.
    #[error("failed to parse the API URL {url:?}: {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why it is not a URL.
        reason: String,
    },
    /// `http://` to a host that is not loopback, or a scheme other than http(s).
    #[error(
        "refusing {url:?}: the API key would travel unencrypted; use https:// (plain http:// is allowed only on loopback)"
    )]
    Insecure {
        /// What was given.
        url: String,
    },
    /// The TLS or HTTP stack could not be set up.
    #[error("failed to build the HTTP client: {0}")]
    Build(String),
}

/// The result of a file lookup: 404 is an answer, not an error. `T` is the model the answer
/// is read into: the full [`FileObject`], or the lean [`FileSummary`].
#[derive(Debug)]
pub enum FileLookup<T = FileObject> {
    /// VirusTotal knows the file.
    Found(Box<T>),
    /// VirusTotal has never seen it (404 NotFoundError).
    NotFound,
}

/// The key in use and those it replaced.
#[derive(Debug)]
struct Keys {
    now: ApiKey,
    before: Vec<ApiKey>,
}

/// A VirusTotal API v3 client for one API key.
#[derive(Clone, Debug)]
pub struct Client {
    transport: std::sync::Arc<Transport>,
    /// The path before `/files/...`: `/api/v3`, or `/prefix/api/v3` behind a gateway.
    api: String,
    /// The key now, and those it replaced (still scrubbed from every error).
    keys: std::sync::Arc<std::sync::RwLock<Keys>>,
    keep_raw: bool,
    keep_body: bool,
    request_timeout: Duration,
    /// The base URL as configured (for messages: it holds no key).
    base_url: String,
}

/// Checks the scheme policy; returns the target and the API path (`.../api/v3`).
fn api_base(host: &str) -> Result<(Target, String), ClientError> {
    let url = Url::parse(host).map_err(|e| ClientError::BadUrl {
        url: host.to_owned(),
        reason: e.to_string(),
    })?;
    let (name, loopback) = match url.host() {
        Some(Host::Ipv4(ip)) => (ip.to_string(), ip.is_loopback()),
        Some(Host::Ipv6(ip)) => (ip.to_string(), ip.is_loopback()),
        Some(Host::Domain(d)) => (d.to_owned(), d.eq_ignore_ascii_case("localhost")),
        None => (String::new(), false),
    };
    let https = match url.scheme() {
        "https" => true,
        "http" if loopback => false,
        _ => {
            return Err(ClientError::Insecure {
                url: host.to_owned(),
            });
        }
    };
    if url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ClientError::BadUrl {
            url: host.to_owned(),
            reason: "expected scheme://host[:port] with no query and no credentials".to_owned(),
        });
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api/v3").unwrap_or(path);
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let authority = HeaderValue::from_str(&authority).map_err(|e| ClientError::BadUrl {
        url: host.to_owned(),
        reason: e.to_string(),
    })?;
    Ok((
        Target {
            https,
            host: name,
            port,
            authority,
        },
        format!("{path}/api/v3"),
    ))
}

/// A departure callback for callers that do not pace.
fn nowhere() -> crate::transport::Departed {
    Box::new(|_| {})
}

impl Client {
    /// Builds the client: one connection pool for the life of the program.
    pub fn new(key: ApiKey, config: &ClientConfig) -> Result<Client, ClientError> {
        let (target, api) = api_base(&config.host)?;
        let mut key_value = HeaderValue::from_str(key.expose())
            .map_err(|_| ClientError::Build("the API key is not a valid header value".into()))?;
        // Sensitive values are left out of hyper's debug output.
        key_value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("x-apikey", key_value);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if config.gzip {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let transport = Transport::new(
            target,
            TransportConfig {
                connect_timeout: config.connect_timeout,
                max_idle: config.pool_max_idle_per_host,
                idle_timeout: Duration::from_secs(90),
                headers,
                departure_delay: config.departure_delay.clone(),
                proxy: config.proxy.clone(),
                answer_budget: config.answer_budget,
                extra_roots: match &config.ca_cert {
                    Some(path) => {
                        crate::transport::read_ca_bundle(path).map_err(ClientError::Build)?
                    }
                    None => Vec::new(),
                },
            },
        )
        .map_err(ClientError::Build)?;
        Ok(Client {
            transport: std::sync::Arc::new(transport),
            api,
            keys: std::sync::Arc::new(std::sync::RwLock::new(Keys {
                now: key,
                before: Vec::new(),
            })),
            keep_raw: config.keep_raw,
            keep_body: config.keep_body,
            request_timeout: config.request_timeout,
            base_url: config.host.clone(),
        })
    }

    /// VirusTotal's base URL, as configured.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// How long a request may wait for its whole answer.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The key's fingerprint (see [`ApiKey::fingerprint`]).
    pub fn key_fingerprint(&self) -> String {
        self.keys().now.fingerprint()
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` is the key in use.
    pub fn uses(&self, key: &ApiKey) -> bool {
        &self.keys().now == key
    }

    /// Uses `key` from the next request on (the old one was rotated away); the old key stays
    /// scrubbed from errors.
    pub fn set_key(&self, key: ApiKey) -> Result<(), ClientError> {
        let value = HeaderValue::from_str(key.expose())
            .map_err(|_| ClientError::Build("the API key is not a valid header value".into()))?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut keys.now, key);
        keys.before.push(old);
        self.transport.set_key(value);
        Ok(())
    }

    /// `err` with every key this client used scrubbed from its message.
    fn scrub(&self, err: Error) -> Error {
        let keys = self.keys();
        keys.before
            .iter()
            .fold(err.redact(keys.now.expose()), |e, k| e.redact(k.expose()))
    }

    fn key_segment(&self) -> String {
        encode_segment(self.keys().now.expose())
    }

    /// A connection with nothing left to wait for (pooled, or connected now): ask the
    /// scheduler for the slot after this, then send through the [`Ready`] at once. A failure
    /// here spent nothing: no request left.
    pub async fn ready(&self) -> Result<Ready<'_>, Error> {
        let conn = tokio::time::timeout(self.request_timeout, self.transport.ready())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Connect,
                    None,
                    "failed to get a connection in time",
                )
            })?
            .map_err(|e| self.scrub(e))?;
        Ok(Ready {
            client: self,
            conn: Some(conn),
            arrival: None,
        })
    }

    /// `GET /files/{hash}`: one request, one quota unit. A 404 is [`FileLookup::NotFound`].
    pub async fn get_file(&self, hash: &Hash) -> Result<FileLookup, Error> {
        self.ready().await?.file(hash, nowhere()).await
    }

    /// [`Client::get_file`] read into the lean [`FileSummary`]: only the attributes a
    /// record needs are decoded (the bulk of an answer, per-engine results, names, sandbox
    /// verdicts, is skipped without allocating), which is what a bulk run wants.
    pub async fn get_file_summary(&self, hash: &Hash) -> Result<FileLookup<FileSummary>, Error> {
        self.ready().await?.file(hash, nowhere()).await
    }

    /// A URL, domain or IP address object, lean (see [`Ready::get_object_summary`]).
    pub async fn get_object_summary(
        &self,
        kind: vtbulk_ioc::Kind,
        canonical: &str,
    ) -> Result<FileLookup<ObjectSummary>, Error> {
        self.ready()
            .await?
            .get_object_summary(kind, canonical, |_| {})
            .await
    }

    /// `GET /users/{id}` for the key's own user (VirusTotal accepts the key as the id), which
    /// is the only way to see its `quotas`.
    pub async fn get_own_user(&self) -> Result<UserObject, Error> {
        self.ready().await?.get_own_user(|_| {}).await
    }

    /// `GET /users/{id}` for a user id (or another key).
    pub async fn get_user(&self, id: &str) -> Result<UserObject, Error> {
        let path = format!("{}/users/{}", self.api, encode_segment(id));
        let body = self.ready().await?.get(&path, nowhere()).await?.0;
        Ok(decode::<Envelope<UserObject>>(&body)?.data)
    }

    /// `GET /users/{id}/overall_quotas` for the key's own user.
    pub async fn own_overall_quotas(&self) -> Result<OverallQuotas, Error> {
        let path = format!("{}/users/{}/overall_quotas", self.api, self.key_segment());
        let body = self.ready().await?.get(&path, nowhere()).await?.0;
        Ok(decode::<Envelope<OverallQuotas>>(&body)?.data)
    }

    /// `GET /users/{id}/overall_quotas`: user and group allowances in one call.
    pub async fn overall_quotas(&self, id: &str) -> Result<OverallQuotas, Error> {
        let path = format!("{}/users/{}/overall_quotas", self.api, encode_segment(id));
        let body = self.ready().await?.get(&path, nowhere()).await?.0;
        Ok(decode::<Envelope<OverallQuotas>>(&body)?.data)
    }
}

/// A connection taken from the pool with nothing left to wait for: one request goes out
/// through it the moment a method is called. Dropped unused, it goes back to the pool.
#[derive(Debug)]
pub struct Ready<'a> {
    client: &'a Client,
    conn: Option<Conn>,
    arrival: Option<Arrival>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Drop for Ready<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.client.transport.put_back(conn);
        }
    }
}

impl Ready<'_> {
    /// Fills `arrival` with the moment the answer's first bytes reach this host (see
    /// [`Arrival`]): what a pacer compares with the departure to see when the server handled
    /// the request, without this process's own lateness in reading it.
    #[must_use]
    pub fn with_arrival(mut self, arrival: &Arrival) -> Self {
        self.arrival = Some(arrival.clone());
        self
    }

    /// [`Client::get_file_summary`] on this connection, now; `departed` is called with the
    /// moment the request was handed to the kernel (not at all when it never was).
    pub async fn get_file_summary(
        self,
        hash: &Hash,
        departed: impl FnOnce(Instant) + Send + 'static,
    ) -> Result<FileLookup<FileSummary>, Error> {
        self.file(hash, Box::new(departed)).await
    }

    /// [`Client::get_file`] on this connection, now.
    pub async fn get_file(
        self,
        hash: &Hash,
        departed: impl FnOnce(Instant) + Send + 'static,
    ) -> Result<FileLookup, Error> {
        self.file(hash, Box::new(departed)).await
    }

    /// [`Client::get_own_user`] on this connection, now.
    pub async fn get_own_user(
        self,
        departed: impl FnOnce(Instant) + Send + 'static,
    ) -> Result<UserObject, Error> {
        let client = self.client;
        let path = format!("{}/users/{}", client.api, client.key_segment());
        let body = self.get(&path, Box::new(departed)).await?.0;
        Ok(decode::<Envelope<UserObject>>(&body)?.data)
    }

    /// `GET /urls/{id}` (the id made from the canonical URL), `/domains/{name}` or
    /// `/ip_addresses/{ip}` on this connection, now, read into the lean
    /// [`ObjectSummary`]; a 404 is `NotFound`.
    pub async fn get_object_summary(
        self,
        kind: vtbulk_ioc::Kind,
        canonical: &str,
        departed: impl FnOnce(Instant) + Send + 'static,
    ) -> Result<FileLookup<ObjectSummary>, Error> {
        let client = self.client;
        let path = object_path(&client.api, kind, canonical);
        self.lookup(path, Box::new(departed)).await
    }

    /// `POST /urls` (form `url=…`): submits `url` for scanning, now; the analysis id to poll.
    /// The URL goes as given (canonical already): VirusTotal identifies it by those bytes.
    pub async fn submit_url(
        self,
        url: &str,
        departed: impl FnOnce(Instant) + Send + 'static,
    ) -> Result<String, Error> {
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("url", url)
            .finish();
        let path = format!("{}/urls", self.client.api);
        let body = self
            .send(&path, Some(Bytes::from(form)), Box::new(departed))
            .await?
            .0;
        Ok(decode::<Envelope<AnalysisRef>>(&body)?.data.id)
    }

    /// `GET /analyses/{id}` on this connection, now.
    pub async fn get_analysis(
        self,
        id: &str,
        departed: impl FnOnce(Instant) + Send + 'static,
    ) -> Result<Analysis, Error> {
        let client = self.client;
        let path = format!("{}/analyses/{}", client.api, encode_segment(id));
        let body = self.get(&path, Box::new(departed)).await?.0;
        Ok(decode::<Envelope<Analysis>>(&body)?.data)
    }

    async fn file<T: FileModel>(
        self,
        hash: &Hash,
        departed: crate::transport::Departed,
    ) -> Result<FileLookup<T>, Error> {
        let client = self.client;
        let mut buf = [0u8; 64];
        let path = format!("{}/files/{}", client.api, hash.encode_hex(&mut buf));
        self.lookup(path, departed).await
    }

    /// A GET of one object: the model, or `NotFound` for a 404.
    async fn lookup<T: FileModel>(
        self,
        path: String,
        departed: crate::transport::Departed,
    ) -> Result<FileLookup<T>, Error> {
        let client = self.client;
        let (body, wire) = match self.get(&path, departed).await {
            Ok(answer) => answer,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(FileLookup::NotFound),
            Err(e) => return Err(e),
        };
        let mut file = if client.keep_raw {
            let envelope: Envelope<Box<RawValue>> = decode(&body)?;
            let mut file: T = decode(envelope.data.get().as_bytes())?;
            file.set_raw(envelope.data);
            file
        } else {
            decode::<Envelope<T>>(&body)?.data
        };
        if client.keep_body {
            file.set_body(match wire {
                Some(gzip) => Body::Gzip(gzip),
                None => Body::Json(body),
            });
        }
        Ok(FileLookup::Found(Box::new(file)))
    }

    /// Sends a GET and returns the body of a 200 JSON answer (decoded, and as it came when
    /// it came gzipped); anything else is an [`Error`], with the key scrubbed from its
    /// message.
    async fn get(
        self,
        path: &str,
        departed: crate::transport::Departed,
    ) -> Result<(Bytes, Option<Bytes>), Error> {
        self.send(path, None, departed).await
    }

    /// A GET, or a POST of `form`, now (see [`Ready::get`]).
    async fn send(
        mut self,
        path: &str,
        form: Option<Bytes>,
        departed: crate::transport::Departed,
    ) -> Result<(Bytes, Option<Bytes>), Error> {
        let client = self.client;
        let conn = self.conn.take().ok_or_else(|| {
            Error::new(ErrorKind::ConnectionReset, None, "the connection was used")
        })?;
        let sent = tokio::time::timeout(
            client.request_timeout,
            client
                .transport
                .request(conn, path, form, departed, self.arrival.take()),
        )
        .await;
        let answer = match sent {
            Ok(answer) => answer.and_then(read_answer),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                None,
                format!("no complete answer within {:?}", client.request_timeout),
            )),
        };
        answer.map_err(|e| client.scrub(e))
    }
}

/// The body of a 200 JSON answer (inflated, and as it came when gzipped), or the error.
fn read_answer(answer: Answer) -> Result<(Bytes, Option<Bytes>), Error> {
    // `_held`: the answer's share of the budget, kept while it inflates.
    let Answer {
        status,
        headers,
        body: wire,
        held: _held,
    } = answer;
    let status = status.as_u16();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let gzipped = match headers
        .get(header::CONTENT_ENCODING)
        .map(HeaderValue::as_bytes)
    {
        None => false,
        Some(v) if v.eq_ignore_ascii_case(b"identity") => false,
        Some(v) if v.eq_ignore_ascii_case(b"gzip") => true,
        Some(_) => {
            return Err(Error::new(
                ErrorKind::UnexpectedContentType,
                Some(status),
                "the answer has a content encoding that was not asked for",
            ));
        }
    };
    let (body, wire) = if gzipped {
        (Bytes::from(gunzip(&wire, status)?), Some(wire))
    } else {
        (wire, None)
    };
    if status == 200 {
        if !is_json {
            return Err(Error::new(
                ErrorKind::UnexpectedContentType,
                Some(status),
                "the answer is not application/json",
            ));
        }
        return Ok((body, wire));
    }
    Err(Error::from_response(status, is_json.then_some(&body[..])))
}

/// A model a file answer's `data` can be read into.
trait FileModel: DeserializeOwned {
    /// Keeps the raw `data` object (for `--raw`).
    fn set_raw(&mut self, raw: Box<RawValue>);
    /// Keeps the whole body (for storing); models without the field ignore it.
    fn set_body(&mut self, _body: Body) {}
}

impl FileModel for ObjectSummary {
    fn set_raw(&mut self, raw: Box<RawValue>) {
        self.raw = Some(raw);
    }

    fn set_body(&mut self, body: Body) {
        self.body = Some(body);
    }
}

impl FileModel for FileObject {
    fn set_raw(&mut self, raw: Box<RawValue>) {
        self.raw = Some(raw);
    }
}

impl FileModel for FileSummary {
    fn set_raw(&mut self, raw: Box<RawValue>) {
        self.raw = Some(raw);
    }

    fn set_body(&mut self, body: Body) {
        self.body = Some(body);
    }
}

/// The path of a URL, domain or IP address object: VirusTotal's URL identifier (unpadded
/// base64url of the URL), the domain and the address as they are (canonical already).
fn object_path(api: &str, kind: vtbulk_ioc::Kind, canonical: &str) -> String {
    match kind {
        vtbulk_ioc::Kind::Url => format!("{api}/urls/{}", vtbulk_ioc::indicator::url_id(canonical)),
        vtbulk_ioc::Kind::Domain => format!("{api}/domains/{}", encode_segment(canonical)),
        vtbulk_ioc::Kind::Ip => format!("{api}/ip_addresses/{canonical}"),
        vtbulk_ioc::Kind::File => format!("{api}/files/{}", encode_segment(canonical)),
    }
}

/// Percent-encodes one path segment (user ids may contain anything).
fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The most an answer may inflate to: VirusTotal's largest file objects are a few MB; a body
/// that inflates past this is refused rather than allowed to eat memory.
pub const MAX_INFLATED: u64 = 64 << 20;

/// Inflates a gzip body (sized from its trailer, so the buffer is allocated once). A stream
/// that ends early is a truncated body; one that inflates past [`MAX_INFLATED`], or anything
/// else wrong, an invalid one.
fn gunzip(z: &[u8], status: u16) -> Result<Vec<u8>, Error> {
    gunzip_capped(z, status, MAX_INFLATED)
}

fn gunzip_capped(z: &[u8], status: u16, cap: u64) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let size = z
        .last_chunk::<4>()
        .map_or(0, |t| u32::from_le_bytes(*t) as usize);
    // The trailer is the sender's word: a hint, capped.
    let mut out = Vec::with_capacity(size.min(16 << 20).min(cap as usize));
    flate2::bufread::MultiGzDecoder::new(z)
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ErrorKind::TruncatedBody
            } else {
                ErrorKind::InvalidBody
            };
            Error::new(
                kind,
                Some(status),
                format!("failed to inflate the answer: {e}"),
            )
        })?;
    if out.len() as u64 > cap {
        return Err(Error::new(
            ErrorKind::InvalidBody,
            Some(status),
            format!("the answer inflates past {cap} bytes: refused"),
        ));
    }
    Ok(out)
}

/// Parses a 200 body. JSON that ends early is a truncated body; JSON of the wrong shape is an
/// invalid body. Neither message quotes the body.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = if e.is_eof() {
            ErrorKind::TruncatedBody
        } else {
            ErrorKind::InvalidBody
        };
        Error::new(kind, Some(200), format!("failed to decode the answer: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_inflating_past_the_cap_is_refused_not_buffered() {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&vec![b' '; 1 << 20]).expect("gzip");
        let z = z.finish().expect("gzip");
        assert_eq!(
            gunzip_capped(&z, 200, 1 << 20).expect("at the cap").len(),
            1 << 20
        );
        let err = gunzip_capped(&z, 200, (1 << 20) - 1).expect_err("past the cap");
        assert_eq!(err.kind(), ErrorKind::InvalidBody);
        assert!(err.message().contains("inflates past"), "{}", err.message());
    }

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        let ok = [
            (
                "https://www.virustotal.com",
                "https://www.virustotal.com/api/v3",
            ),
            (
                "https://www.virustotal.com/api/v3/",
                "https://www.virustotal.com/api/v3",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/v3"),
            ("http://127.9.9.9:1/", "http://127.9.9.9:1/api/v3"),
            ("http://[::1]:8080", "http://[::1]:8080/api/v3"),
            ("http://localhost:9", "http://localhost:9/api/v3"),
            (
                "https://proxy.example/vt",
                "https://proxy.example/vt/api/v3",
            ),
        ];
        for (host, api) in ok {
            assert_eq!(
                api_base(host)
                    .map(|(t, path)| format!(
                        "{}://{}{path}",
                        if t.https { "https" } else { "http" },
                        t.authority.to_str().unwrap_or_default()
                    ))
                    .ok()
                    .as_deref(),
                Some(api),
                "{host}"
            );
        }
        for bad in [
            "http://www.virustotal.com",
            "http://10.0.0.1:8080",
            "http://localhost.evil.example",
            "ftp://127.0.0.1",
        ] {
            assert!(
                matches!(api_base(bad), Err(ClientError::Insecure { .. })),
                "{bad} must be refused"
            );
        }
        assert!(matches!(
            api_base("not a url"),
            Err(ClientError::BadUrl { .. })
        ));
    }

    #[test]
    fn user_agent_asks_for_gzip() {
        assert!(USER_AGENT.starts_with("vtbulk/"));
        assert!(USER_AGENT.contains("gzip"));
    }

    #[test]
    fn truncated_json_is_distinguished_from_wrong_json() {
        let cut = br#"{"data": {"id": "abc", "attributes": {"md5": "4"#;
        let err = decode::<Envelope<FileObject>>(cut).expect_err("cut");
        assert_eq!(err.kind(), ErrorKind::TruncatedBody);
        let wrong = br#"{"data": {"id": 5}}"#;
        let err = decode::<Envelope<FileObject>>(wrong).expect_err("wrong shape");
        assert_eq!(err.kind(), ErrorKind::InvalidBody);
    }
}
