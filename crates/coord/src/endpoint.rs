//! Where the fleet's Redis is, and the password to it, as something that can be shown.
//!
//! The coordinator's URL often carries a password (`redis://:secret@host:6379/0`), and the
//! password may instead come from `VTBULK_REDIS_PASSWORD` or a file. An [`Endpoint`] holds
//! both, and every way of showing it (`Debug`, [`Endpoint::shown`], the errors made from it)
//! puts `[redacted]` where the password was: `vtbulk config`, a summary or an error never
//! carries it.

use std::fmt;

use redis::IntoConnectionInfo;

use crate::CoordError;

/// A Redis URL (`redis://` or `rediss://` for TLS) and, when the URL has none, a password
/// from elsewhere. `Debug` shows the URL with its password redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    password: Option<String>,
}

impl Endpoint {
    /// Checks `url` and keeps `password` for a URL that has none (a password in the URL
    /// wins). The error never contains the password.
    pub fn parse(url: &str, password: Option<String>) -> Result<Endpoint, CoordError> {
        let endpoint = Endpoint {
            url: url.trim().to_owned(),
            password: password.filter(|p| !p.is_empty()),
        };
        endpoint.connection_info()?;
        Ok(endpoint)
    }

    /// The URL with any password replaced by `[redacted]`.
    pub fn shown(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                match authority.rsplit_once('@') {
                    Some((_, host)) => format!("{scheme}://[redacted]@{host}{tail}"),
                    None => self.url.clone(),
                }
            }
            None => "[not a URL]".into(),
        }
    }

    /// Whether the connection is encrypted (`rediss://`).
    pub fn tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// `message` with every form of the password in it replaced (a library's error may quote
    /// the URL).
    pub(crate) fn scrub(&self, message: String) -> String {
        let mut secrets: Vec<String> = self.password.iter().cloned().collect();
        if let Some((_, rest)) = self.url.split_once("://") {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                secrets.push(userinfo.to_owned());
                if let Some((_, password)) = userinfo.split_once(':') {
                    secrets.push(password.to_owned());
                }
            }
        }
        secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .fold(message, |m, s| m.replace(&s, "[redacted]"))
    }

    /// What the `redis` crate connects with.
    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo, CoordError> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err(CoordError::Url(format!(
                "{}: expected redis://[:password@]host:port/db or rediss://",
                self.shown()
            )));
        }
        let info = self.url.as_str().into_connection_info().map_err(|e| {
            CoordError::Url(format!("{}: {}", self.shown(), self.scrub(e.to_string())))
        })?;
        Ok(match &self.password {
            Some(password) if info.redis_settings().password().is_none() => {
                let settings = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(settings)
            }
            _ => info,
        })
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.shown())
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        let e = Endpoint::parse("redis://:CanaryPass1@10.0.0.5:6380/2", None).expect("url");
        assert_eq!(e.shown(), "redis://[redacted]@10.0.0.5:6380/2");
        assert!(!format!("{e:?}").contains("CanaryPass1"));
        let e = Endpoint::parse("rediss://fleet:CanaryPass2@redis.corp/0", None).expect("url");
        assert_eq!(e.shown(), "rediss://[redacted]@redis.corp/0");
        assert!(e.tls());
        let e =
            Endpoint::parse("redis://127.0.0.1:6379/0", Some("CanaryPass3".into())).expect("url");
        assert_eq!(e.shown(), "redis://127.0.0.1:6379/0");
        assert!(!format!("{e:?}").contains("CanaryPass3"));
        assert_eq!(
            e.scrub("auth CanaryPass3 failed".into()),
            "auth [redacted] failed"
        );
    }

    #[test]
    fn a_password_from_elsewhere_fills_a_url_without_one_only() {
        let e = Endpoint::parse("redis://127.0.0.1:6379/0", Some("from-file".into())).expect("url");
        let info = e.connection_info().expect("info");
        assert_eq!(info.redis_settings().password(), Some("from-file"));
        let e = Endpoint::parse("redis://:in-url@127.0.0.1:6379/0", Some("from-file".into()))
            .expect("url");
        let info = e.connection_info().expect("info");
        assert_eq!(info.redis_settings().password(), Some("in-url"));
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        for url in [
            "http://:CanaryPass4@127.0.0.1/",
            "redis://:CanaryPass4@[::1/0",
        ] {
            let err = Endpoint::parse(url, None).expect_err(url).to_string();
            assert!(!err.contains("CanaryPass4"), "{err}");
        }
    }
}
