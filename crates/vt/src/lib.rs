//! `vtbulk-vt`: the VirusTotal API v3 client, and the only crate that builds an HTTP client.
//!
//! Everything vtbulk knows about VirusTotal's wire lives here: the endpoints
//! ([`Client::get_file`], [`Client::get_user`], [`Client::overall_quotas`]), the serde models of
//! what comes back ([`models`]), and one error taxonomy ([`ErrorKind`]) with one function that
//! says what to do about each error ([`ErrorKind::class`]). Callers never look at HTTP status
//! codes or error strings; they match on [`ErrorClass`].
//!
//! The API key is an [`ApiKey`], whose `Debug` and `Display` never show it, and no error this
//! crate returns carries a URL (the users endpoint puts the key in the path).
#![deny(missing_docs)]

mod client;
mod error;
pub mod models;
mod secret;
mod transport;

pub use client::{
    Client, ClientConfig, ClientError, DEFAULT_HOST, FileLookup, MAX_INFLATED, Ready, USER_AGENT,
};
pub use error::{Error, ErrorClass, ErrorKind, RateLimitKind};
pub use secret::{ApiKey, InvalidApiKey};
pub use transport::{Arrival, DEFAULT_ANSWER_BUDGET, DepartureDelay, MAX_BODY, ProxySetting};
