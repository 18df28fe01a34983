//! The API key as a secret: it can be used, never shown.
//!
//! `Debug` and `Display` print `[redacted]`, so a key inside any struct that is logged or
//! formatted into an error stays hidden. Code that needs an identity for the key (cache rows,
//! Redis keys, spend ledgers) uses [`ApiKey::fingerprint`], a salted SHA-256 prefix that cannot
//! be turned back into the key.

use std::fmt;

use sha2::{Digest, Sha256};

/// A VirusTotal API key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<str>);

/// Why a string cannot be an API key. Never contains the candidate key itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidApiKey {
    /// Empty, or only whitespace.
    #[error("the API key is empty")]
    Empty,
    /// A character that cannot travel in an HTTP header.
    #[error("the API key contains whitespace or a control character at position {0}")]
    BadCharacter(usize),
}

impl ApiKey {
    /// Validates a key. Surrounding whitespace (a trailing newline from a key file) is trimmed.
    pub fn new(key: impl AsRef<str>) -> Result<ApiKey, InvalidApiKey> {
        let key = key.as_ref().trim();
        if key.is_empty() {
            return Err(InvalidApiKey::Empty);
        }
        if let Some(i) = key
            .chars()
            .position(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InvalidApiKey::BadCharacter(i + 1));
        }
        Ok(ApiKey(key.into()))
    }

    /// A stable, non-reversible identity for the key: 16 hex digits of a salted SHA-256.
    /// Safe to store and print.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"vtbulk api key fingerprint v1\0")
            .chain_update(self.0.as_bytes())
            .finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "CANARY-6d1f0c3e-key-must-never-be-printed";

    #[test]
    fn debug_and_display_never_show_the_key() {
        let key = ApiKey::new(CANARY).expect("valid");
        let shown = format!("{key} {key:?} {:?}", Some(&key));
        assert!(!shown.contains(CANARY), "{shown}");
        assert!(!shown.contains("CANARY"), "{shown}");
    }

    #[test]
    fn fingerprint_is_stable_short_and_not_the_key() {
        let a = ApiKey::new(CANARY).expect("valid");
        let b = ApiKey::new(format!("  {CANARY}\n")).expect("trimmed");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert!(!CANARY.contains(&a.fingerprint()));
        let other = ApiKey::new("another-key").expect("valid");
        assert_ne!(a.fingerprint(), other.fingerprint());
    }

    #[test]
    fn rejects_empty_and_inner_whitespace_without_echoing_the_key() {
        assert_eq!(ApiKey::new(" \n"), Err(InvalidApiKey::Empty));
        let err = ApiKey::new("abc def").expect_err("space inside");
        assert_eq!(err, InvalidApiKey::BadCharacter(4));
        assert!(!err.to_string().contains("abc"));
    }
}
