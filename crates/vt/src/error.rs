//! One error taxonomy for everything that can go wrong talking to VirusTotal, and one function
//! ([`ErrorKind::class`]) that says what to do about it.
//!
//! VirusTotal reports errors as `{"error": {"code", "message"}}` with an HTTP status; vt-go reads
//! only the code and vt-py only the status, so we read both: a known code decides the kind, and
//! the status decides only when the code is missing or unknown. Transport failures (timeouts,
//! resets, truncated or undecodable bodies) get kinds of their own so that the retry policy can
//! treat them like VirusTotal's own transient errors.

use std::fmt;

/// What went wrong, as one closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400 BadRequestError.
    BadRequest,
    /// 400 InvalidArgumentError.
    InvalidArgument,
    /// 400 NotAvailableYet: the resource will exist later.
    NotAvailableYet,
    /// 400 UnselectiveContentQueryError.
    UnselectiveContentQuery,
    /// 400 UnsupportedContentQueryError.
    UnsupportedContentQuery,
    /// 401 AuthenticationRequiredError: no key was sent.
    AuthenticationRequired,
    /// 401 UserNotActiveError.
    UserNotActive,
    /// 401 WrongCredentialsError: the key is wrong.
    WrongCredentials,
    /// 403 ForbiddenError.
    Forbidden,
    /// 404 NotFoundError.
    NotFound,
    /// 409 AlreadyExistsError.
    AlreadyExists,
    /// 424 FailedDependencyError.
    FailedDependency,
    /// 429 QuotaExceededError: a minute, daily or monthly quota is used up.
    QuotaExceeded,
    /// 429 TooManyRequestsError.
    TooManyRequests,
    /// 503 TransientError.
    Transient,
    /// 504 DeadlineExceededError.
    DeadlineExceeded,
    /// An error code this client does not know, on a 4xx status.
    OtherClientError,
    /// A 5xx status without a code this client knows (a proxy's 502, a plain 500).
    ServerError,
    /// A status VirusTotal never uses for success or failure (1xx, 2xx other than 200, 3xx).
    UnexpectedStatus,
    /// The request or the response took longer than the client allows.
    Timeout,
    /// The connection could not be established (refused, DNS, a TLS handshake cut short).
    Connect,
    /// The server's TLS certificate was refused (not trusted, expired, for another host):
    /// never retried, never downgraded; the run stops.
    Certificate,
    /// The proxy refused the CONNECT for want of credentials, or refused them (407).
    ProxyAuth,
    /// The connection was reset or closed while the request or response was in flight.
    ConnectionReset,
    /// The response ended before its announced length, or its JSON ended early.
    TruncatedBody,
    /// The body could not be decoded (bad gzip, JSON of an unexpected shape).
    InvalidBody,
    /// A 200 answer that is not JSON.
    UnexpectedContentType,
    /// The reply is not HTTP at all (random bytes, another protocol): the URL does not lead
    /// to an HTTP API.
    NotHttp,
}

/// What the caller should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Try again later, through the rate limiter, with backoff.
    Retry,
    /// VirusTotal refused for quota: stop sending, find out which window, then requeue or stop.
    RateLimited(RateLimitKind),
    /// The object does not exist: a result, not a failure.
    NotFound,
    /// Nothing else will work with this key: stop the run.
    Fatal,
    /// This request will never succeed: record it and move on.
    Permanent,
}

/// Which 429 VirusTotal sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateLimitKind {
    /// QuotaExceededError: the minute, daily or monthly quota; which one is not said.
    QuotaExceeded,
    /// TooManyRequestsError: short-term overload of the key.
    TooManyRequests,
}

impl ErrorKind {
    /// Every kind, for exhaustive tests and documentation.
    pub const ALL: [ErrorKind; 28] = [
        ErrorKind::BadRequest,
        ErrorKind::InvalidArgument,
        ErrorKind::NotAvailableYet,
        ErrorKind::UnselectiveContentQuery,
        ErrorKind::UnsupportedContentQuery,
        ErrorKind::AuthenticationRequired,
        ErrorKind::UserNotActive,
        ErrorKind::WrongCredentials,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::FailedDependency,
        ErrorKind::QuotaExceeded,
        ErrorKind::TooManyRequests,
        ErrorKind::Transient,
        ErrorKind::DeadlineExceeded,
        ErrorKind::OtherClientError,
        ErrorKind::ServerError,
        ErrorKind::UnexpectedStatus,
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Certificate,
        ErrorKind::ProxyAuth,
        ErrorKind::ConnectionReset,
        ErrorKind::TruncatedBody,
        ErrorKind::InvalidBody,
        ErrorKind::UnexpectedContentType,
        ErrorKind::NotHttp,
    ];

    /// The kind for one of VirusTotal's documented error codes.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        Some(match code {
            "BadRequestError" => ErrorKind::BadRequest,
            "InvalidArgumentError" => ErrorKind::InvalidArgument,
            "NotAvailableYet" => ErrorKind::NotAvailableYet,
            "UnselectiveContentQueryError" => ErrorKind::UnselectiveContentQuery,
            "UnsupportedContentQueryError" => ErrorKind::UnsupportedContentQuery,
            "AuthenticationRequiredError" => ErrorKind::AuthenticationRequired,
            "UserNotActiveError" => ErrorKind::UserNotActive,
            "WrongCredentialsError" => ErrorKind::WrongCredentials,
            "ForbiddenError" => ErrorKind::Forbidden,
            "NotFoundError" => ErrorKind::NotFound,
            "AlreadyExistsError" => ErrorKind::AlreadyExists,
            "FailedDependencyError" => ErrorKind::FailedDependency,
            "QuotaExceededError" => ErrorKind::QuotaExceeded,
            "TooManyRequestsError" => ErrorKind::TooManyRequests,
            "TransientError" => ErrorKind::Transient,
            "DeadlineExceededError" => ErrorKind::DeadlineExceeded,
            _ => return None,
        })
    }

    /// The kind for a status that came without a known code.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            400 => ErrorKind::BadRequest,
            401 => ErrorKind::WrongCredentials,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::AlreadyExists,
            424 => ErrorKind::FailedDependency,
            429 => ErrorKind::TooManyRequests,
            503 => ErrorKind::Transient,
            504 => ErrorKind::DeadlineExceeded,
            402..=499 => ErrorKind::OtherClientError,
            500..=599 => ErrorKind::ServerError,
            _ => ErrorKind::UnexpectedStatus,
        }
    }

    /// The name that goes in output records: VirusTotal's own code for API errors, a name of
    /// ours (without the `Error` suffix VirusTotal uses, so the two cannot be confused) for
    /// transport failures.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "BadRequestError",
            ErrorKind::InvalidArgument => "InvalidArgumentError",
            ErrorKind::NotAvailableYet => "NotAvailableYet",
            ErrorKind::UnselectiveContentQuery => "UnselectiveContentQueryError",
            ErrorKind::UnsupportedContentQuery => "UnsupportedContentQueryError",
            ErrorKind::AuthenticationRequired => "AuthenticationRequiredError",
            ErrorKind::UserNotActive => "UserNotActiveError",
            ErrorKind::WrongCredentials => "WrongCredentialsError",
            ErrorKind::Forbidden => "ForbiddenError",
            ErrorKind::NotFound => "NotFoundError",
            ErrorKind::AlreadyExists => "AlreadyExistsError",
            ErrorKind::FailedDependency => "FailedDependencyError",
            ErrorKind::QuotaExceeded => "QuotaExceededError",
            ErrorKind::TooManyRequests => "TooManyRequestsError",
            ErrorKind::Transient => "TransientError",
            ErrorKind::DeadlineExceeded => "DeadlineExceededError",
            ErrorKind::OtherClientError => "ClientError",
            ErrorKind::ServerError => "ServerError",
            ErrorKind::UnexpectedStatus => "UnexpectedStatus",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::Connect => "ConnectFailed",
            ErrorKind::Certificate => "CertificateError",
            ErrorKind::ProxyAuth => "ProxyAuthenticationRequired",
            ErrorKind::ConnectionReset => "ConnectionReset",
            ErrorKind::TruncatedBody => "TruncatedBody",
            ErrorKind::InvalidBody => "InvalidBody",
            ErrorKind::UnexpectedContentType => "UnexpectedContentType",
            ErrorKind::NotHttp => "NotHttp",
        }
    }

    /// What to do about this kind of error. The one place that decides it.
    pub fn class(self) -> ErrorClass {
        match self {
            ErrorKind::NotFound => ErrorClass::NotFound,
            ErrorKind::QuotaExceeded => ErrorClass::RateLimited(RateLimitKind::QuotaExceeded),
            ErrorKind::TooManyRequests => ErrorClass::RateLimited(RateLimitKind::TooManyRequests),
            ErrorKind::AuthenticationRequired
            | ErrorKind::UserNotActive
            | ErrorKind::WrongCredentials
            | ErrorKind::Forbidden
            | ErrorKind::Certificate
            | ErrorKind::ProxyAuth => ErrorClass::Fatal,
            // NotAvailableYet says in its name that a later try will work.
            ErrorKind::NotAvailableYet
            | ErrorKind::Transient
            | ErrorKind::DeadlineExceeded
            | ErrorKind::ServerError
            | ErrorKind::Timeout
            | ErrorKind::Connect
            | ErrorKind::ConnectionReset
            | ErrorKind::TruncatedBody
            | ErrorKind::InvalidBody
            | ErrorKind::NotHttp => ErrorClass::Retry,
            ErrorKind::BadRequest
            | ErrorKind::InvalidArgument
            | ErrorKind::UnselectiveContentQuery
            | ErrorKind::UnsupportedContentQuery
            | ErrorKind::AlreadyExists
            | ErrorKind::FailedDependency
            | ErrorKind::OtherClientError
            | ErrorKind::UnexpectedStatus
            | ErrorKind::UnexpectedContentType => ErrorClass::Permanent,
        }
    }

    /// True for kinds that come from VirusTotal's answer rather than from the transport.
    pub fn is_api_error(self) -> bool {
        !matches!(
            self,
            ErrorKind::Timeout
                | ErrorKind::Connect
                | ErrorKind::ConnectionReset
                | ErrorKind::TruncatedBody
                | ErrorKind::InvalidBody
                | ErrorKind::UnexpectedContentType
                | ErrorKind::UnexpectedStatus
                | ErrorKind::NotHttp
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error from the client. Its text never contains the API key or a request URL.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    status: Option<u16>,
    code: Option<String>,
    message: String,
}

impl Error {
    /// An error of this taxonomy met outside the client, with no HTTP status: a fleet
    /// coordinator that cannot be reached is a `Connect` failure (nothing was sent).
    pub fn without_status(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(kind, None, message)
    }

    pub(crate) fn new(kind: ErrorKind, status: Option<u16>, message: impl Into<String>) -> Error {
        Error {
            kind,
            status,
            code: None,
            message: message.into(),
        }
    }

    /// Builds the error for a non-200 answer from its status and (maybe JSON) body.
    pub fn from_response(status: u16, json_body: Option<&[u8]>) -> Error {
        let parsed = json_body
            .and_then(|body| serde_json::from_slice::<crate::models::ErrorBody>(body).ok())
            .map(|body| body.error);
        match parsed {
            Some(detail) => {
                let kind = ErrorKind::from_code(&detail.code)
                    .unwrap_or_else(|| ErrorKind::from_status(status));
                Error {
                    kind,
                    status: Some(status),
                    code: Some(detail.code),
                    message: detail.message,
                }
            }
            // VirusTotal says "not found" in JSON; a bare 404 (a web server's page, a wrong
            // --api-url) is not its answer, and must never become a `not_found` record.
            None if status == 404 => Error::new(
                ErrorKind::UnexpectedContentType,
                Some(status),
                "HTTP 404 without VirusTotal's JSON error: not the API",
            ),
            None => {
                let kind = ErrorKind::from_status(status);
                Error::new(
                    kind,
                    Some(status),
                    format!("HTTP {status} without an error body"),
                )
            }
        }
    }

    /// Replaces every occurrence of `secret` in the message (VirusTotal may echo a path that
    /// holds the key, e.g. `User "<key>" not found`).
    pub(crate) fn redact(mut self, secret: &str) -> Error {
        if !secret.is_empty() && self.message.contains(secret) {
            self.message = self.message.replace(secret, "[redacted]");
        }
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What to do about it (shorthand for `self.kind().class()`).
    pub fn class(&self) -> ErrorClass {
        self.kind.class()
    }

    /// The HTTP status, when an answer arrived.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The code as it goes in an output record: VirusTotal's own string when it sent one
    /// (even one this client does not know), else the kind's name.
    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or(self.kind.code())
    }

    /// VirusTotal's message, or a description of the transport failure.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} (HTTP {status}): {}", self.code(), self.message),
            None => write!(f, "{}: {}", self.code(), self.message),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table from VT_API.md section 3: status, code, and the class we give it.
    const DOCUMENTED: [(u16, &str, ErrorClass); 16] = [
        (400, "BadRequestError", ErrorClass::Permanent),
        (400, "InvalidArgumentError", ErrorClass::Permanent),
        (400, "NotAvailableYet", ErrorClass::Retry),
        (400, "UnselectiveContentQueryError", ErrorClass::Permanent),
        (400, "UnsupportedContentQueryError", ErrorClass::Permanent),
        (401, "AuthenticationRequiredError", ErrorClass::Fatal),
        (401, "UserNotActiveError", ErrorClass::Fatal),
        (401, "WrongCredentialsError", ErrorClass::Fatal),
        (403, "ForbiddenError", ErrorClass::Fatal),
        (404, "NotFoundError", ErrorClass::NotFound),
        (409, "AlreadyExistsError", ErrorClass::Permanent),
        (424, "FailedDependencyError", ErrorClass::Permanent),
        (
            429,
            "QuotaExceededError",
            ErrorClass::RateLimited(RateLimitKind::QuotaExceeded),
        ),
        (
            429,
            "TooManyRequestsError",
            ErrorClass::RateLimited(RateLimitKind::TooManyRequests),
        ),
        (503, "TransientError", ErrorClass::Retry),
        (504, "DeadlineExceededError", ErrorClass::Retry),
    ];

    #[test]
    fn every_documented_code_maps_to_its_kind_and_class() {
        for (status, code, class) in DOCUMENTED {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
            let err = Error::from_response(status, Some(body.as_bytes()));
            assert_eq!(err.code(), code);
            assert_eq!(err.kind().code(), code, "kind name for {code}");
            assert_eq!(err.class(), class, "class of {code}");
            assert_eq!(err.status(), Some(status));
            assert!(err.kind().is_api_error());
        }
    }

    #[test]
    fn code_decides_over_status() {
        // vt-go trusts the code alone; so do we when the code is known.
        let err = Error::from_response(
            400,
            Some(br#"{"error":{"code":"TransientError","message":"x"}}"#),
        );
        assert_eq!(err.kind(), ErrorKind::Transient);
    }

    #[test]
    fn unknown_code_falls_back_to_status_and_keeps_the_code() {
        let err = Error::from_response(
            418,
            Some(br#"{"error":{"code":"TeapotError","message":"short and stout"}}"#),
        );
        assert_eq!(err.kind(), ErrorKind::OtherClientError);
        assert_eq!(err.code(), "TeapotError");
        assert_eq!(err.class(), ErrorClass::Permanent);
        let err = Error::from_response(
            502,
            Some(br#"{"error":{"code":"BadGatewayError","message":""}}"#),
        );
        assert_eq!(err.class(), ErrorClass::Retry);
    }

    #[test]
    fn status_without_body_is_classified_by_status_but_a_bare_404_is_not_the_api() {
        let cases = [
            (500, ErrorKind::ServerError, ErrorClass::Retry),
            (502, ErrorKind::ServerError, ErrorClass::Retry),
            (503, ErrorKind::Transient, ErrorClass::Retry),
            (401, ErrorKind::WrongCredentials, ErrorClass::Fatal),
            (403, ErrorKind::Forbidden, ErrorClass::Fatal),
            // A bare 404 is not VirusTotal's "not found": never a not_found record.
            (404, ErrorKind::UnexpectedContentType, ErrorClass::Permanent),
            (
                429,
                ErrorKind::TooManyRequests,
                ErrorClass::RateLimited(RateLimitKind::TooManyRequests),
            ),
            (302, ErrorKind::UnexpectedStatus, ErrorClass::Permanent),
            (204, ErrorKind::UnexpectedStatus, ErrorClass::Permanent),
        ];
        for (status, kind, class) in cases {
            let err = Error::from_response(status, Some(b"<html>bad gateway</html>"));
            assert_eq!((err.kind(), err.class()), (kind, class), "status {status}");
            assert_eq!(err.code(), kind.code());
        }
    }

    #[test]
    fn transport_kinds_are_retried_except_content_type() {
        for kind in [
            ErrorKind::Timeout,
            ErrorKind::Connect,
            ErrorKind::ConnectionReset,
            ErrorKind::TruncatedBody,
            ErrorKind::InvalidBody,
        ] {
            assert_eq!(kind.class(), ErrorClass::Retry, "{kind}");
            assert!(!kind.is_api_error());
        }
        assert_eq!(
            ErrorKind::UnexpectedContentType.class(),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn redact_removes_the_secret_from_the_message() {
        let body =
            br#"{"error":{"code":"NotFoundError","message":"User \"sekrit-key\" not found"}}"#;
        let err = Error::from_response(404, Some(body)).redact("sekrit-key");
        assert_eq!(err.message(), "User \"[redacted]\" not found");
        assert!(!err.to_string().contains("sekrit-key"));
    }

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<_> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
    }
}
