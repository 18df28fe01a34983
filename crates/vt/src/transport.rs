//! The wire: a pool of HTTP/1.1 keep-alive connections whose requests leave the moment the
//! caller sends them, and which report when each one really left.
//!
//! Pacing needs two things an off-the-shelf client hides. First, a connection that is ready
//! *before* the scheduler grants a request its slot: a pool that connects (TCP, TLS, a proxy's
//! CONNECT) after the grant makes the request leave hundreds of milliseconds late, and a strict
//! limiter then refuses the next one, which left on time. So [`Transport::ready`] hands out a
//! connection with nothing left to wait for, and the caller asks for its slot after that.
//! Second, the moment the request's first byte is handed to the kernel (its *departure*): the
//! scheduler spaces the next request from there, not from the grant. The socket is wrapped in a
//! [`Probed`] stream that stamps the moment just before the first write after a request is
//! armed (when that write succeeds) and calls the caller's departure callback with it.
//!
//! Each connection's hyper driver is polled by the task that sends on it (not by a task of its
//! own), so the write happens within the same poll as the send: no task switch between the
//! grant and the departure. An idle connection is not polled at all; its liveness is checked
//! when it is taken from the pool.
//!
//! HTTP/1.1 only: one request in flight per connection, which is what makes "this write is
//! that request" exact. A proxy (`--proxy`, or `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` and
//! `NO_PROXY`, see [`ProxySetting`]) is always a CONNECT tunnel, so the same holds through it.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::Body as _;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};

/// Called once with the moment a request's bytes were handed to the kernel.
pub type Departed = Box<dyn FnOnce(Instant) + Send>;

/// The moment the first bytes of a request's answer reached this host, filled in by the
/// transport when they are read: the kernel's receive timestamp where the system gives one
/// (Linux), so a process that wakes late to read its answer does not make the answer look
/// late; otherwise the moment of the read. Linux turns receive timestamps on for the system a
/// moment after the first socket asks, so the first answers of a run on a host where no socket
/// had them yet may come unstamped: those are timed by their read, as before.
#[derive(Clone, Debug, Default)]
pub struct Arrival(Arc<std::sync::OnceLock<Instant>>);

impl Arrival {
    /// A slot not filled yet.
    pub fn new() -> Arrival {
        Arrival::default()
    }

    /// When the answer's first bytes arrived (`None`: none arrived).
    pub fn get(&self) -> Option<Instant> {
        self.0.get().copied()
    }

    fn set(&self, at: Instant) {
        let _ = self.0.set(at);
    }
}

/// A test hook: the delay to hold request number `n` (0-based, per client) between the send and
/// its write, as a busy host would. The request still departs, late; tests check that the
/// scheduler spaces the next one from the real departure.
#[derive(Clone)]
pub struct DepartureDelay(pub Arc<dyn Fn(u64) -> Duration + Send + Sync>);

impl std::fmt::Debug for DepartureDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DepartureDelay(..)")
    }
}

/// Where requests go.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The `Host` header: host, and the port when it is not the scheme's default.
    pub(crate) authority: HeaderValue,
}

/// How connections are made and kept.
#[derive(Clone, Debug)]
pub(crate) struct TransportConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
    /// Sent with every request (the key among them, marked sensitive).
    pub(crate) headers: HeaderMap,
    pub(crate) departure_delay: Option<DepartureDelay>,
    /// Certificate authorities trusted besides the operating system's (`--ca-cert`).
    pub(crate) extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Which proxy, if any.
    pub(crate) proxy: ProxySetting,
    /// Bytes of answers being read, across every connection, at most.
    pub(crate) answer_budget: usize,
}

/// Where requests go through (`--proxy`, config `proxy`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// `HTTPS_PROXY`/`https_proxy` (https), `HTTP_PROXY`/`http_proxy` (http),
    /// `ALL_PROXY`/`all_proxy` (both) and `NO_PROXY`/`no_proxy`; when `NO_PROXY` is not set
    /// it is `localhost,127.0.0.1,::1`, so a local vt-mock under a corporate environment is
    /// reached directly.
    #[default]
    Environment,
    /// Straight to the host, whatever the environment says.
    Off,
    /// This proxy (`http://[user:password@]host[:port]`) for every host but those in
    /// `NO_PROXY`, loopback included (it was asked for by name).
    Url(String),
}

impl ProxySetting {
    /// `off`, or a proxy URL (checked: http://, a host; its password never shown).
    pub fn parse(value: &str) -> Result<ProxySetting, String> {
        if value.eq_ignore_ascii_case("off") || value.eq_ignore_ascii_case("none") {
            return Ok(ProxySetting::Off);
        }
        let with_scheme = if value.contains("://") {
            value.to_owned()
        } else {
            format!("http://{value}")
        };
        let shown = redact_userinfo(&with_scheme);
        let uri: hyper::Uri = with_scheme.parse().map_err(|_| {
            format!("--proxy {shown}: not a URL (http://[user:password@]host:port)")
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "--proxy {shown}: an https:// proxy is not supported; use http:// (CONNECT)"
                ));
            }
            _ => return Err(format!("--proxy {shown}: expected http://host:port")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("--proxy {shown}: no host"));
        }
        Ok(ProxySetting::Url(with_scheme))
    }

    /// For display (`vtbulk config`): `off`, `the environment (...)`, or the URL with any
    /// password replaced by `[redacted]`.
    pub fn shown(&self) -> String {
        match self {
            ProxySetting::Off => "off".into(),
            ProxySetting::Url(url) => redact_userinfo(url),
            ProxySetting::Environment => {
                let set: Vec<String> = [
                    "HTTPS_PROXY",
                    "https_proxy",
                    "ALL_PROXY",
                    "all_proxy",
                    "NO_PROXY",
                    "no_proxy",
                ]
                .iter()
                .filter_map(|name| {
                    let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
                    Some(format!("{name}={}", redact_userinfo(&value)))
                })
                .collect();
                if set.is_empty() {
                    "from the environment (none set)".into()
                } else {
                    format!("from the environment ({})", set.join(", "))
                }
            }
        }
    }
}

/// `scheme://user:password@host...` as `scheme://[redacted]@host...`.
fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let prefix = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{prefix}[redacted]@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// The certificates of a PEM bundle (`--ca-cert`); an error names the file and what is
/// wrong with it.
pub(crate) fn read_ca_bundle(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path)
        .map_err(|e| format!("failed to read the CA bundle {}: {e}", path.display()))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA bundle {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the CA bundle {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A proxy for https targets, from the environment.
#[derive(Clone, Debug)]
struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization` for the CONNECT, from the proxy URL's user info.
    auth: Option<HeaderValue>,
}

/// The pool.
pub(crate) struct Transport {
    target: Target,
    config: TransportConfig,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    proxy: Option<Proxy>,
    idle: Mutex<Vec<Idle>>,
    sent: std::sync::atomic::AtomicU64,
    /// Replaces the headers' `x-apikey` once the key was rotated ([`Transport::set_key`]).
    key: std::sync::RwLock<Option<HeaderValue>>,
    /// The answers' bytes in flight: a permit per KiB read, held until the answer is handed
    /// over (see [`AnswerBudget`]).
    budget: AnswerBudget,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("target", &self.target.host)
            .field("port", &self.target.port)
            .field("https", &self.target.https)
            .field("proxied", &self.proxy.is_some())
            .finish_non_exhaustive()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

type Driver = http1::Connection<TokioIo<Wire>, Full<Bytes>>;

/// A plain or TLS connection over a probed socket.
enum Wire {
    Plain(Probed),
    Tls(Box<tokio_rustls::client::TlsStream<Probed>>),
}

/// One keep-alive connection, driven by whoever holds it.
pub(crate) struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Pin<Box<Driver>>,
    /// The driver finished (the connection is closed): it must not be polled again.
    ended: bool,
    probe: Arc<Mutex<Probe>>,
}

/// What the socket wrapper and the sender share about the request in flight.
#[derive(Default)]
struct Probe {
    /// Called at the first write after arming.
    departed: Option<Departed>,
    /// The test hook's hold before that write.
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Filled at the first read after the request left.
    arrival: Option<Arrival>,
    /// When the request left: no answer arrives before it (a kernel stamp converted to this
    /// clock could, by a few microseconds, or by a lot under tokio's paused test clock).
    left: Option<Instant>,
}

/// A TCP stream that stamps the first write of each armed request.
pub(crate) struct Probed {
    tcp: TcpStream,
    probe: Arc<Mutex<Probe>>,
}

fn lock(probe: &Mutex<Probe>) -> std::sync::MutexGuard<'_, Probe> {
    probe.lock().unwrap_or_else(|e| e.into_inner())
}

impl AsyncRead for Probed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let awaited = {
            let probe = lock(&self.probe);
            // The answer's first bytes: awaited once the request has left.
            probe.departed.is_none() && probe.arrival.is_some()
        };
        if !awaited {
            return Pin::new(&mut self.tcp).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let (read, kernel) = stamped::poll_read(&self.tcp, cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let mut probe = lock(&self.probe);
            let mut at = kernel.unwrap_or_else(Instant::now);
            if let Some(left) = probe.left {
                at = at.max(left);
            }
            if let Some(arrival) = probe.arrival.take() {
                arrival.set(at);
            }
        }
        read
    }
}

/// Reads that also return the kernel's receive timestamp of the bytes read.
#[cfg(target_os = "linux")]
mod stamped {
    use std::io;
    use std::os::fd::AsRawFd;
    use std::task::{Context, Poll};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use nix::sys::socket::{MsgFlags, recvmsg, setsockopt, sockopt};
    use nix::sys::time::TimeSpec;
    use tokio::io::{Interest, ReadBuf};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    /// Asks the kernel to timestamp what arrives on `tcp` (best effort: without it reads
    /// are stamped when they happen).
    pub(super) fn enable(tcp: &TcpStream) {
        let _ = setsockopt(tcp, sockopt::ReceiveTimestampns, &true);
    }

    /// A read into `buf`, with the moment its bytes arrived when the kernel says.
    pub(super) fn poll_read(
        tcp: &TcpStream,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> (Poll<io::Result<()>>, Option<Instant>) {
        loop {
            match tcp.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                other => return (other, None),
            }
            let dst = buf.initialize_unfilled();
            let got = tcp.try_io(Interest::READABLE, || {
                let mut iov = [io::IoSliceMut::new(dst)];
                let mut control = nix::cmsg_space!(TimeSpec);
                let n = recvmsg::<()>(
                    tcp.as_raw_fd(),
                    &mut iov,
                    Some(&mut control),
                    MsgFlags::empty(),
                )
                .map_err(io::Error::from)?
                .bytes;
                Ok((n, timestamp(&control)))
            });
            match got {
                Ok((n, kernel)) => {
                    buf.advance(n);
                    return (Poll::Ready(Ok(())), kernel.and_then(instant));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return (Poll::Ready(Err(e)), None),
            }
        }
    }

    /// The `SCM_TIMESTAMPNS` message in a control buffer filled by `recvmsg`, read by hand
    /// (nix's iterator gave nothing for TCP here): the first header is `cmsg_len` (a
    /// `size_t`), level, type (two `int`s), then the `timespec` (two 64-bit words on 64-bit
    /// Linux). The buffer starts zeroed, so no message reads as a zero length.
    fn timestamp(control: &[u8]) -> Option<(i64, i64)> {
        if cfg!(not(target_pointer_width = "64")) {
            return None;
        }
        let word = |at: usize| -> Option<[u8; 8]> { control.get(at..at + 8)?.try_into().ok() };
        let int = |at: usize| -> Option<i32> {
            Some(i32::from_ne_bytes(
                control.get(at..at + 4)?.try_into().ok()?,
            ))
        };
        let len = u64::from_ne_bytes(word(0)?);
        let (level, kind) = (int(8)?, int(12)?);
        if len < 32 || level != nix::libc::SOL_SOCKET || kind != nix::libc::SCM_TIMESTAMPNS {
            return None;
        }
        Some((i64::from_ne_bytes(word(16)?), i64::from_ne_bytes(word(24)?)))
    }

    /// A kernel timestamp (the wall clock) as an [`Instant`]; `None` when it is in the future
    /// or implausibly old (the wall clock stepped).
    fn instant((secs, nanos): (i64, i64)) -> Option<Instant> {
        let at = UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, u32::try_from(nanos).ok()?);
        let ago = SystemTime::now().duration_since(at).ok()?;
        if ago > Duration::from_secs(10) {
            return None;
        }
        Instant::now().checked_sub(ago)
    }
}

/// Elsewhere reads are stamped when they happen.
#[cfg(not(target_os = "linux"))]
mod stamped {
    use std::io;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    pub(super) fn enable(_: &TcpStream) {}

    pub(super) fn poll_read(
        tcp: &TcpStream,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> (Poll<io::Result<()>>, Option<Instant>) {
        loop {
            match tcp.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                other => return (other, None),
            }
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return (Poll::Ready(Ok(())), None);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return (Poll::Ready(Err(e)), None),
            }
        }
    }
}

impl AsyncWrite for Probed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let armed = {
            let mut probe = lock(&self.probe);
            if let Some(hold) = probe.hold.as_mut() {
                if hold.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                probe.hold = None;
            }
            probe.departed.is_some()
        };
        // The departure is the moment the bytes are handed to the kernel: on loopback the
        // write itself delivers them and wakes the server (100+ µs on a VM, milliseconds when
        // the host is busy), and stamping after it would charge that to every interval. A
        // delivery that was slow shows in the answer's round trip, which the pacer uses.
        let handed = Instant::now();
        let written = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if armed && matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            let departed = {
                let mut probe = lock(&self.probe);
                probe.left = Some(handed);
                probe.departed.take()
            };
            if let Some(departed) = departed {
                departed(handed);
            }
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_flush(cx),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A complete answer: status, headers, body as it came off the wire.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Its share of the answers' budget, released when the answer is dropped.
    pub(crate) held: Held,
}

/// The most one body may be on the wire: VirusTotal's largest objects (a PE's full
/// `pe_info`, an APK's `androguard`, `--raw` included) are a few MB, gzipped less.
pub const MAX_BODY: usize = 32 << 20;

/// The default of the answers' bytes in flight across all connections (`answer_budget`).
pub const DEFAULT_ANSWER_BUDGET: usize = 64 << 20;

/// What an answer may hold before it counts against the budget.
const UNCOUNTED: usize = 64 << 10;

/// The bytes of answers being read at once, across every connection, bounded: a reader takes
/// a permit per KiB before its buffer grows, and gives them back when its answer is inflated
/// (or dropped). A server that sends endless bodies on every connection then holds at most the
/// budget in memory, whatever the concurrency. Only an answer's first permits are waited for
/// (a new answer waits for room: backpressure); one already being read that finds no room to
/// grow fails at once (a retryable error, its permits freed for the others), so readers never
/// wait on each other in a circle.
#[derive(Clone, Debug)]
pub(crate) struct AnswerBudget {
    permits: Arc<tokio::sync::Semaphore>,
    kib: u32,
}

/// The permits an answer holds until it is handed over.
pub(crate) type Held = Option<tokio::sync::OwnedSemaphorePermit>;

impl AnswerBudget {
    pub(crate) fn new(bytes: usize) -> AnswerBudget {
        // At least one whole answer fits, or the largest could never be read.
        let kib = (bytes.max(MAX_BODY) >> 10).min(u32::MAX as usize) as u32;
        AnswerBudget {
            permits: Arc::new(tokio::sync::Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// Adds the permits for a body grown to `len` bytes to `held`: waited for when it holds
    /// none yet, else taken only if free now (`false`: no room, the answer must give up).
    /// A body of [`UNCOUNTED`] bytes or less takes none: VirusTotal's answers are mostly a
    /// few KB, and the common path then never touches the semaphore (at most 64 KiB x the
    /// connections, 16 MiB at the largest concurrency, stays outside the budget).
    async fn cover(&self, held: &mut Held, len: usize) -> bool {
        if len <= UNCOUNTED {
            return true;
        }
        let want = len.div_ceil(1024).clamp(1, self.kib as usize) as u32;
        let have = held.as_ref().map_or(0, |p| p.num_permits() as u32);
        if want <= have {
            return true;
        }
        let permits = self.permits.clone();
        let more = match held {
            None => permits.acquire_many_owned(want).await.ok(),
            Some(_) => permits.try_acquire_many_owned(want - have).ok(),
        };
        match (held, more) {
            (_, None) => false,
            (Some(permit), Some(more)) => {
                permit.merge(more);
                true
            }
            (held @ None, more) => {
                *held = more;
                true
            }
        }
    }
}

impl Conn {
    /// Polls `fut` and the connection's driver together until `fut` is done.
    async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            if !self.ended && self.driver.as_mut().poll(cx).is_ready() {
                // The connection is over; whatever waited on it resolves with an error now.
                self.ended = true;
                return fut.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }

    /// Waits until the connection can take a request; `false` when it is closed.
    async fn ready(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let Conn {
            sender,
            driver,
            ended,
            ..
        } = self;
        poll_fn(|cx| {
            if driver.as_mut().poll(cx).is_ready() {
                *ended = true;
                return Poll::Ready(false);
            }
            sender.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }

    /// Sends `request` and reads the whole answer; `departed` is called at its first write,
    /// `arrival` filled at the answer's first read.
    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        departed: Departed,
        arrival: Option<Arrival>,
        hold: Option<Duration>,
        budget: &AnswerBudget,
    ) -> Result<Answer, Error> {
        {
            let mut probe = lock(&self.probe);
            probe.departed = Some(departed);
            probe.arrival = arrival;
            probe.hold = hold
                .filter(|d| !d.is_zero())
                .map(|d| Box::pin(tokio::time::sleep(d)));
        }
        let response = self.sender.send_request(request);
        let result = self.drive(response).await;
        // Not written (the connection failed first): the callback is dropped unsent.
        let _ = lock(&self.probe).departed.take();
        let response = result.map_err(hyper_error)?;
        let (parts, mut body) = response.into_parts();
        let mut buf = BytesMut::with_capacity(
            body.size_hint()
                .exact()
                .map_or(16 << 10, |n| n.min(MAX_BODY as u64) as usize),
        );
        let mut held: Held = None;
        budget.cover(&mut held, buf.capacity()).await;
        let over_budget = |status: StatusCode| {
            Error::new(
                ErrorKind::InvalidBody,
                Some(status.as_u16()),
                "the answers being read exceed answer_budget: this one gave way (retried)",
            )
        };
        loop {
            let frame = self
                .drive(poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)))
                .await;
            match frame {
                None => break,
                Some(Err(e)) => return Err(hyper_error(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if buf.len() + data.len() > MAX_BODY {
                            return Err(Error::new(
                                ErrorKind::InvalidBody,
                                Some(parts.status.as_u16()),
                                format!("the answer is larger than {MAX_BODY} bytes: refused"),
                            ));
                        }
                        // Charged for what the buffer may grow to (it doubles).
                        let grown = (buf.len() + data.len()).max(buf.capacity());
                        if grown > buf.capacity()
                            && !budget.cover(&mut held, grown.next_power_of_two()).await
                        {
                            return Err(over_budget(parts.status));
                        }
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: buf.freeze(),
            held,
        })
    }
}

impl Transport {
    /// A pool for `target`.
    pub(crate) fn new(target: Target, config: TransportConfig) -> Result<Transport, String> {
        let tls = if target.https {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            // The operating system's trust store (where a SOC installs its TLS-inspection
            // CA), Mozilla's roots built in (a container without ca-certificates still
            // reaches VirusTotal), and `--ca-cert`'s authorities on top.
            let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
                webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .cloned()
                    .chain(config.extra_roots.iter().cloned()),
                provider.clone(),
            )
            .map_err(|e| format!("failed to load the trust store: {e}"))?;
            let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("failed to set up TLS: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("not a TLS server name ({}): {e}", target.host))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(tls)), name))
        } else {
            None
        };
        let proxy = proxy_for(&target, &config.proxy)?;
        Ok(Transport {
            target,
            tls,
            proxy,
            idle: Mutex::new(Vec::new()),
            sent: std::sync::atomic::AtomicU64::new(0),
            key: std::sync::RwLock::new(None),
            budget: AnswerBudget::new(config.answer_budget),
            config,
        })
    }

    /// Sends `value` (sensitive) as `x-apikey` from the next request on: the key was rotated.
    pub(crate) fn set_key(&self, mut value: HeaderValue) {
        value.set_sensitive(true);
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }

    /// A connection with nothing left to wait for: an idle one that is still open, or a new
    /// one (connected, TLS done, ready for a request).
    pub(crate) async fn ready(&self) -> Result<Conn, Error> {
        loop {
            let idle = {
                let mut pool = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                pool.pop()
            };
            let Some(Idle { mut conn, since }) = idle else {
                break;
            };
            if since.elapsed() > self.config.idle_timeout {
                continue;
            }
            // An open idle connection is ready at once (its driver, polled now, finishes the
            // last answer's bookkeeping); a closed one says so and is dropped.
            if conn.ready().await {
                return Ok(conn);
            }
        }
        let mut conn = tokio::time::timeout(self.config.connect_timeout, self.connect())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Connect,
                    None,
                    format!(
                        "failed to connect to {}: no connection within {:?}",
                        self.target.host, self.config.connect_timeout
                    ),
                )
            })??;
        if conn.ready().await {
            Ok(conn)
        } else {
            Err(Error::new(
                ErrorKind::ConnectionReset,
                None,
                "the connection closed right after it was opened",
            ))
        }
    }

    /// Sends a GET for `path` (with its query) on `conn`, reads the answer, and puts the
    /// connection back in the pool when it can take another request.
    /// A GET of `path`, or with `form` a POST of that `application/x-www-form-urlencoded`
    /// body (`POST /urls`).
    pub(crate) async fn request(
        &self,
        mut conn: Conn,
        path: &str,
        form: Option<Bytes>,
        departed: Departed,
        arrival: Option<Arrival>,
    ) -> Result<Answer, Error> {
        let builder = match &form {
            Some(_) => Request::post(path).header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            ),
            None => Request::get(path),
        };
        let mut request = builder
            .body(Full::new(form.unwrap_or_default()))
            .map_err(|e| {
                Error::new(
                    ErrorKind::OtherClientError,
                    None,
                    format!("bad request: {e}"),
                )
            })?;
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.target.authority.clone());
        for (name, value) in &self.config.headers {
            headers.insert(name, value.clone());
        }
        if let Some(key) = &*self.key.read().unwrap_or_else(|e| e.into_inner()) {
            headers.insert("x-apikey", key.clone());
        }
        let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hold = self.config.departure_delay.as_ref().map(|d| (d.0)(n));
        let answer = conn
            .send(request, departed, arrival, hold, &self.budget)
            .await?;
        if !conn.ended {
            self.put_back(conn);
        }
        Ok(answer)
    }

    /// Returns a connection to the pool (it is checked when taken again).
    pub(crate) fn put_back(&self, conn: Conn) {
        let mut pool = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < self.config.max_idle {
            pool.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let (host, port) = match &self.proxy {
            Some(p) => (p.host.as_str(), p.port),
            None => (self.target.host.as_str(), self.target.port),
        };
        let mut tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| connect_error(host, &e))?;
        let _ = tcp.set_nodelay(true);
        if let Some(proxy) = &self.proxy {
            tunnel(&mut tcp, &self.target, proxy.auth.as_ref()).await?;
        }
        stamped::enable(&tcp);
        let probe = Arc::new(Mutex::new(Probe::default()));
        let probed = Probed {
            tcp,
            probe: probe.clone(),
        };
        let wire = match &self.tls {
            Some((connector, name)) => Wire::Tls(Box::new(
                connector
                    .connect(name.clone(), probed)
                    .await
                    .map_err(|e| handshake_error(&self.target.host, &e))?,
            )),
            None => Wire::Plain(probed),
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "this crate is the one place allowed to open HTTP connections (clippy.toml)"
        )]
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(wire))
            .await
            .map_err(hyper_error)?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
            ended: false,
            probe,
        })
    }
}

/// A failed TLS handshake: a refused certificate is [`ErrorKind::Certificate`] (named:
/// untrusted issuer, expired, another host's), anything else a connection failure.
fn handshake_error(host: &str, e: &io::Error) -> Error {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let problem = match tls {
        Some(rustls::Error::InvalidCertificate(reason)) => Some(match reason {
            rustls::CertificateError::UnknownIssuer => {
                "it is signed by an authority this host does not trust (behind a TLS-inspecting \
                 proxy? trust its CA with --ca-cert FILE or the system's store)"
                    .to_owned()
            }
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                "it has expired".to_owned()
            }
            rustls::CertificateError::NotValidYet
            | rustls::CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet (is this host's clock right?)".to_owned()
            }
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. } => {
                format!("it is not valid for {host} (another host's certificate)")
            }
            rustls::CertificateError::Revoked => "it has been revoked".to_owned(),
            other => format!("{other:?}"),
        }),
        Some(rustls::Error::NoCertificatesPresented) => Some("it presented none".to_owned()),
        _ => None,
    };
    match problem {
        Some(problem) => Error::new(
            ErrorKind::Certificate,
            None,
            format!("refused the TLS certificate of {host}: {problem}"),
        ),
        None => Error::new(
            ErrorKind::Connect,
            None,
            format!("failed the TLS handshake with {host}: {e}"),
        ),
    }
}

fn connect_error(host: &str, e: &io::Error) -> Error {
    Error::new(
        ErrorKind::Connect,
        None,
        format!("failed to connect to {host}: {e}"),
    )
}

/// `NO_PROXY` when the environment does not set it.
const LOCAL: &str = "localhost,127.0.0.1,::1";

/// The proxy for requests to `target` under `setting` (see [`ProxySetting`]).
fn proxy_for(target: &Target, setting: &ProxySetting) -> Result<Option<Proxy>, String> {
    use hyper_util::client::proxy::matcher::Matcher;
    let matcher = match setting {
        ProxySetting::Off => return Ok(None),
        ProxySetting::Environment => {
            let var = |names: [&str; 2]| names.iter().find_map(|name| std::env::var(name).ok());
            Matcher::builder()
                .all(var(["ALL_PROXY", "all_proxy"]).unwrap_or_default())
                .http(var(["HTTP_PROXY", "http_proxy"]).unwrap_or_default())
                .https(var(["HTTPS_PROXY", "https_proxy"]).unwrap_or_default())
                .no(var(["NO_PROXY", "no_proxy"]).unwrap_or_else(|| LOCAL.to_owned()))
                .build()
        }
        ProxySetting::Url(url) => {
            let no = ["NO_PROXY", "no_proxy"]
                .iter()
                .find_map(|name| std::env::var(name).ok())
                .unwrap_or_default();
            Matcher::builder().all(url.clone()).no(no).build()
        }
    };
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let scheme = if target.https { "https" } else { "http" };
    let uri: hyper::Uri = format!("{scheme}://{host}:{}/", target.port)
        .parse()
        .map_err(|e| format!("bad target: {e}"))?;
    let Some(intercept) = matcher.intercept(&uri) else {
        return Ok(None);
    };
    let proxy = intercept.uri();
    let host = proxy
        .host()
        .ok_or("the proxy URL from the environment has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = proxy
        .port_u16()
        .unwrap_or(if proxy.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    if proxy.scheme_str() == Some("https") {
        return Err(
            "an https:// proxy is not supported; use http:// (CONNECT) for the proxy".into(),
        );
    }
    Ok(Some(Proxy {
        host,
        port,
        auth: intercept.basic_auth().cloned(),
    }))
}

/// Opens a CONNECT tunnel to `target` through the proxy on `tcp`.
async fn tunnel(
    tcp: &mut TcpStream,
    target: &Target,
    auth: Option<&HeaderValue>,
) -> Result<(), Error> {
    let mut head = format!(
        "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n",
        host = target.host,
        port = target.port
    )
    .into_bytes();
    if let Some(auth) = auth {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(auth.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let failed = |what: String| Error::new(ErrorKind::Connect, None, what);
    tcp.write_all(&head)
        .await
        .map_err(|e| failed(format!("failed to reach the proxy: {e}")))?;
    // The proxy's answer head, read a byte at a time so nothing of the tunnel is consumed.
    let mut answer = Vec::with_capacity(128);
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() > 8192 {
            return Err(failed("the proxy's answer to CONNECT is too long".into()));
        }
        let byte = tcp
            .read_u8()
            .await
            .map_err(|e| failed(format!("the proxy closed the CONNECT: {e}")))?;
        answer.push(byte);
    }
    let status = parse_connect_status(&answer)
        .ok_or_else(|| failed("the proxy's answer to CONNECT is not HTTP".into()))?;
    if (200..300).contains(&status) {
        Ok(())
    } else if status == 407 || status == 401 {
        // Credentials missing or wrong (407, or 401 from proxies such as tinyproxy): no retry
        // will change that.
        Err(Error::new(
            ErrorKind::ProxyAuth,
            Some(status),
            if auth.is_some() {
                format!("the proxy refused its credentials (HTTP {status})")
            } else {
                format!(
                    "the proxy wants credentials (HTTP {status}): give them in its URL \
                     (http://user:password@host:port)"
                )
            },
        ))
    } else {
        Err(failed(format!(
            "the proxy refused the CONNECT with HTTP {status}"
        )))
    }
}

/// The status of an HTTP/1.x answer head.
fn parse_connect_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Maps a hyper failure to a kind by walking its cause chain.
pub(crate) fn hyper_error(e: hyper::Error) -> Error {
    let mut kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_incomplete_message() || e.is_body_write_aborted() {
        ErrorKind::TruncatedBody
    } else if e.is_canceled() || e.is_closed() {
        ErrorKind::ConnectionReset
    } else if e.is_parse() || e.is_parse_status() {
        // hyper could not read a response head: what came back is not HTTP.
        ErrorKind::NotHttp
    } else {
        ErrorKind::ConnectionReset
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            use std::io::ErrorKind as Io;
            match io.kind() {
                Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe => {
                    kind = ErrorKind::ConnectionReset;
                }
                Io::UnexpectedEof => kind = ErrorKind::TruncatedBody,
                Io::TimedOut => kind = ErrorKind::Timeout,
                _ => {}
            }
        }
        source = cause.source();
    }
    Error::new(kind, None, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer's arrival is when its bytes reached the host, not when they were read: a
    /// reader that gets round to them 20 ms later still sees the moment of the write (on Linux,
    /// from the kernel's receive timestamp; elsewhere the read's moment, which this checks
    /// only as a bound).
    #[tokio::test]
    async fn an_answer_read_late_is_stamped_when_it_arrived() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut peer, _) = listener.accept().await.expect("accept");
        stamped::enable(&tcp);
        // Linux turns receive timestamps on for the whole system a moment after the first
        // socket asks (a deferred work item): until then bytes arrive unstamped. Exchange
        // single bytes until one comes stamped (bounded), so the check below is about the
        // stamp, not about that moment.
        if cfg!(target_os = "linux") {
            let started = Instant::now();
            loop {
                peer.write_all(b"w").await.expect("write");
                let mut one = [0u8; 1];
                let kernel = poll_fn(|cx| {
                    let mut buf = ReadBuf::new(&mut one);
                    let (read, kernel) = stamped::poll_read(&tcp, cx, &mut buf);
                    read.map(|r| r.map(|()| kernel))
                })
                .await
                .expect("read");
                if kernel.is_some() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the kernel never stamped an arrival"
                );
                tokio::task::yield_now().await;
            }
        }
        let arrival = Arrival::new();
        let probe = Arc::new(Mutex::new(Probe {
            arrival: Some(arrival.clone()),
            ..Probe::default()
        }));
        let mut probed = Probed { tcp, probe };
        let before = Instant::now();
        peer.write_all(b"HTTP/1.1 200 OK\r\n").await.expect("write");
        // On loopback the write has delivered the bytes when it returns.
        let written = Instant::now();
        // This reader is late: it reads 20 ms after the bytes came (a busy wait, not a
        // sleep: the point is a reader that did not run).
        while written.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let read_at = Instant::now();
        let mut buf = [0u8; 64];
        let n = probed.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"HTTP/1.1 200 OK\r\n");
        let at = arrival.get().expect("stamped at the first read");
        assert!(
            at >= before
                .checked_sub(Duration::from_millis(1))
                .unwrap_or(before)
        );
        if cfg!(target_os = "linux") {
            assert!(
                at < written + Duration::from_millis(5),
                "stamped {:?} after the write, the read came {:?} after it",
                at.saturating_duration_since(written),
                read_at - written
            );
        } else {
            assert!(at >= read_at);
        }
        // Only the first read after a departure is stamped.
        peer.write_all(b"more").await.expect("write");
        let _ = probed.read(&mut buf).await.expect("read");
        assert_eq!(arrival.get(), Some(at));
    }

    #[test]
    fn a_proxy_setting_is_off_or_an_http_url_and_its_password_is_never_shown() {
        assert_eq!(ProxySetting::parse("off"), Ok(ProxySetting::Off));
        let with = ProxySetting::parse("http://alice:s3cret@proxy.corp:3128").expect("url");
        assert_eq!(with.shown(), "http://[redacted]@proxy.corp:3128");
        // No scheme: http is meant.
        assert_eq!(
            ProxySetting::parse("proxy.corp:3128"),
            Ok(ProxySetting::Url("http://proxy.corp:3128".into()))
        );
        for bad in [
            "https://bob:s3cret@proxy.corp:3128",
            "ftp://proxy.corp",
            "http://",
        ] {
            let e = ProxySetting::parse(bad).expect_err(bad);
            assert!(!e.contains("s3cret"), "{e}");
        }
        assert_eq!(
            redact_userinfo("http://u:p@h:1/path@x"),
            "http://[redacted]@h:1/path@x"
        );
        assert_eq!(redact_userinfo("http://h:1"), "http://h:1");
    }

    #[test]
    fn connect_answers_are_read_by_their_status_line() {
        assert_eq!(
            parse_connect_status(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some(200)
        );
        assert_eq!(
            parse_connect_status(b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n"),
            Some(407)
        );
        assert_eq!(parse_connect_status(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        assert_eq!(parse_connect_status(b""), None);
    }
}
