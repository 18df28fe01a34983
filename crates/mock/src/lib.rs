//! `vt-mock`: a local VirusTotal API v3 for tests, benchmarks, demos and offline rehearsals.
//!
//! It speaks VirusTotal v3 closely enough that the official Python client works against it
//! unchanged (see `tests/conformance`): the same envelopes, error codes and statuses, per-key
//! quotas with a sliding minute and UTC calendar windows, `/users/{key}` reporting real usage,
//! gzip only for clients that ask the way VirusTotal requires. On top, what the real service
//! cannot give a test: a settable clock, seeded latency and faults, and `/_mock/stats` to check
//! exactly what a client spent.
//!
//! Use [`MockServer::start`] from Rust tests, or the `vt-mock` binary.
#![deny(missing_docs)]

pub mod behavior;
pub mod clock;
pub mod generate;
pub mod objects;
pub mod quota;
mod server;
pub mod stats;
pub mod tls;
pub mod universe;

pub use behavior::{Fault, Faults, Latency};
pub use quota::{KeyConfig, Limits};
pub use server::{MockBody, MockConfig, MockServer};
pub use universe::Universe;

use sha2::{Digest, Sha256};

/// How the mock names a key in its stats and logs: 12 hex digits of its SHA-256.
pub fn key_id(key: &str) -> String {
    Sha256::digest(key.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
