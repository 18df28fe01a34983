//! The HTTP client: built once, shared by every worker, one method per endpoint.
//!
//! One `reqwest::Client` means one connection pool, so concurrent lookups reuse keep-alive
//! connections instead of paying a TCP (and TLS) handshake each. The client neither retries nor
//! rate-limits: a lookup is one request and one quota unit, and the callers that own the
//! scheduler decide what happens next from [`Error::class`].

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use url::{Host, Url};
use vtbulk_ioc::Hash;

use crate::error::{Error, ErrorKind};
use crate::models::{Body, Envelope, FileObject, FileSummary, OverallQuotas, UserObject};
use crate::secret::ApiKey;

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
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on one request, from sending to the last byte of the body.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept per host; size it to the largest concurrency.
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

/// A VirusTotal API v3 client for one API key.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `{host}/api/v3`, without a trailing slash.
    api: String,
    /// `{host}/api/v3/files/`, parsed once: building each lookup's URL from it skips the
    /// host parsing (IDNA included) that a string URL costs per request.
    files: Url,
    key: ApiKey,
    keep_raw: bool,
    keep_body: bool,
}

/// Checks the scheme policy and returns the API base (`.../api/v3`).
fn api_base(host: &str) -> Result<(String, bool), ClientError> {
    let url = Url::parse(host).map_err(|e| ClientError::BadUrl {
        url: host.to_owned(),
        reason: e.to_string(),
    })?;
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(ClientError::Insecure {
                url: host.to_owned(),
            });
        }
    }
    if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::BadUrl {
            url: host.to_owned(),
            reason: "expected scheme://host[:port] with no query".to_owned(),
        });
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api/v3").unwrap_or(path);
    let origin = url.origin().ascii_serialization();
    Ok((format!("{origin}{path}/api/v3"), loopback))
}

impl Client {
    /// Builds the client: one connection pool for the life of the program.
    pub fn new(key: ApiKey, config: &ClientConfig) -> Result<Client, ClientError> {
        let (api, loopback) = api_base(&config.host)?;
        let mut key_value = HeaderValue::from_str(key.expose())
            .map_err(|_| ClientError::Build("the API key is not a valid header value".into()))?;
        // Sensitive values are left out of hyper's and reqwest's debug output.
        key_value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("x-apikey", key_value);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if config.gzip {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        }

        // This crate is the one place allowed to build an HTTP client (see clippy.toml).
        #[allow(clippy::disallowed_methods)]
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        if loopback {
            // A proxy from the environment must not capture traffic meant for a local mock.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(e.without_url().to_string()))?;
        let files = Url::parse(&format!("{api}/files/")).map_err(|e| ClientError::BadUrl {
            url: config.host.clone(),
            reason: e.to_string(),
        })?;
        Ok(Client {
            http,
            api,
            files,
            key,
            keep_raw: config.keep_raw,
            keep_body: config.keep_body,
        })
    }

    /// The key's fingerprint (see [`ApiKey::fingerprint`]).
    pub fn key_fingerprint(&self) -> String {
        self.key.fingerprint()
    }

    /// `GET /files/{hash}`: one request, one quota unit. A 404 is [`FileLookup::NotFound`].
    pub async fn get_file(&self, hash: &Hash) -> Result<FileLookup, Error> {
        self.file(hash).await
    }

    /// [`Client::get_file`] read into the lean [`FileSummary`]: only the attributes a
    /// record needs are decoded (the bulk of an answer, per-engine results, names, sandbox
    /// verdicts, is skipped without allocating), which is what a bulk run wants.
    pub async fn get_file_summary(&self, hash: &Hash) -> Result<FileLookup<FileSummary>, Error> {
        self.file(hash).await
    }

    async fn file<T: FileModel>(&self, hash: &Hash) -> Result<FileLookup<T>, Error> {
        let mut buf = [0u8; 64];
        let mut url = self.files.clone();
        url.set_path(&format!(
            "{}{}",
            self.files.path(),
            hash.encode_hex(&mut buf)
        ));
        let (body, wire) = match self.get_url(url).await {
            Ok(answer) => answer,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(FileLookup::NotFound),
            Err(e) => return Err(e),
        };
        let mut file = if self.keep_raw {
            let envelope: Envelope<Box<RawValue>> = decode(&body)?;
            let mut file: T = decode(envelope.data.get().as_bytes())?;
            file.set_raw(envelope.data);
            file
        } else {
            decode::<Envelope<T>>(&body)?.data
        };
        if self.keep_body {
            file.set_body(match wire {
                Some(gzip) => Body::Gzip(gzip),
                None => Body::Json(body),
            });
        }
        Ok(FileLookup::Found(Box::new(file)))
    }

    /// `GET /users/{id}` for the key's own user (VirusTotal accepts the key as the id), which
    /// is the only way to see its `quotas`.
    pub async fn get_own_user(&self) -> Result<UserObject, Error> {
        let url = format!("{}/users/{}", self.api, self.key.expose());
        Ok(decode::<Envelope<UserObject>>(&self.get(&url).await?.0)?.data)
    }

    /// `GET /users/{id}` for a user id (or another key).
    pub async fn get_user(&self, id: &str) -> Result<UserObject, Error> {
        let url = format!("{}/users/{}", self.api, encode_segment(id));
        Ok(decode::<Envelope<UserObject>>(&self.get(&url).await?.0)?.data)
    }

    /// `GET /users/{id}/overall_quotas` for the key's own user.
    pub async fn own_overall_quotas(&self) -> Result<OverallQuotas, Error> {
        let url = format!("{}/users/{}/overall_quotas", self.api, self.key.expose());
        Ok(decode::<Envelope<OverallQuotas>>(&self.get(&url).await?.0)?.data)
    }

    /// `GET /users/{id}/overall_quotas`: user and group allowances in one call.
    pub async fn overall_quotas(&self, id: &str) -> Result<OverallQuotas, Error> {
        let url = format!("{}/users/{}/overall_quotas", self.api, encode_segment(id));
        Ok(decode::<Envelope<OverallQuotas>>(&self.get(&url).await?.0)?.data)
    }

    /// Sends a GET and returns the body of a 200 JSON answer (decoded, and as it came when
    /// it came gzipped); anything else is an [`Error`], with the key scrubbed from its
    /// message.
    async fn get(&self, url: &str) -> Result<(Bytes, Option<Bytes>), Error> {
        let url = Url::parse(url).map_err(|e| {
            Error::new(ErrorKind::OtherClientError, None, format!("bad URL: {e}"))
                .redact(self.key.expose())
        })?;
        self.get_url(url).await
    }

    async fn get_url(&self, url: Url) -> Result<(Bytes, Option<Bytes>), Error> {
        self.get_unredacted(url)
            .await
            .map_err(|e| e.redact(self.key.expose()))
    }

    async fn get_unredacted(&self, url: Url) -> Result<(Bytes, Option<Bytes>), Error> {
        let response = self.http.get(url).send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let headers = response.headers();
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        let encoding = match headers
            .get(header::CONTENT_ENCODING)
            .map(HeaderValue::as_bytes)
        {
            None => None,
            Some(v) if v.eq_ignore_ascii_case(b"identity") => None,
            Some(v) if v.eq_ignore_ascii_case(b"gzip") => Some(()),
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::UnexpectedContentType,
                    Some(status),
                    "the answer has a content encoding that was not asked for",
                ));
            }
        };
        let wire = response.bytes().await.map_err(transport_error)?;
        let (body, wire) = match encoding {
            Some(()) => (Bytes::from(gunzip(&wire, status)?), Some(wire)),
            None => (wire, None),
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
}

/// A model a file answer's `data` can be read into.
trait FileModel: DeserializeOwned {
    /// Keeps the raw `data` object (for `--raw`).
    fn set_raw(&mut self, raw: Box<RawValue>);
    /// Keeps the whole body (for storing); models without the field ignore it.
    fn set_body(&mut self, _body: Body) {}
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

/// Percent-encodes one path segment (user ids may contain anything).
fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The most an answer may inflate to: VirusTotal's largest file objects are a few MB; a body
/// that inflates past this is refused rather than allowed to eat memory.
const MAX_INFLATED: u64 = 256 << 20;

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

/// Maps a reqwest failure to a kind by walking its cause chain, and drops the URL from the
/// message (the users endpoint has the key in its path).
fn transport_error(e: reqwest::Error) -> Error {
    let e = e.without_url();
    let mut kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else if e.is_decode() {
        ErrorKind::InvalidBody
    } else if e.is_body() {
        ErrorKind::TruncatedBody
    } else {
        ErrorKind::ConnectionReset
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        if kind != ErrorKind::Timeout && kind != ErrorKind::Connect {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as Io;
                match io.kind() {
                    Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe => {
                        kind = ErrorKind::ConnectionReset;
                    }
                    Io::UnexpectedEof => kind = ErrorKind::TruncatedBody,
                    Io::TimedOut => kind = ErrorKind::Timeout,
                    _ => {}
                }
            } else if let Some(h) = cause.downcast_ref::<hyper::Error>() {
                if h.is_incomplete_message() && kind != ErrorKind::ConnectionReset {
                    kind = ErrorKind::TruncatedBody;
                } else if h.is_timeout() {
                    kind = ErrorKind::Timeout;
                }
            }
        }
        source = cause.source();
    }
    Error::new(kind, None, message)
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
                api_base(host).map(|(a, _)| a).ok().as_deref(),
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
