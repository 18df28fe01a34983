//! IOC types shared by every vtbulk crate.
//!
//! First the file hash: MD5, SHA-1 or SHA-256, validated once at the edge and then
//! carried as a binary digest (16, 20 or 32 bytes), never as a string. Binary digests make
//! deduplication exact and cheap, and they make "the same hash in upper and lower case" one
//! value by construction. Text comes back out only through [`Hash`](enum@Hash)'s `Display`, which is
//! always lower-case hex, the form VirusTotal returns.
//!
//! [`reader`] turns inputs (plain lists, CSV, free text, JSON, XML; compressed or not, UTF-8
//! or UTF-16) into hashes and `invalid` items with their origin; [`context`] decides which
//! hash-shaped tokens are not file hashes (import hashes, certificate thumbprints, ids);
//! [`dedup`] keeps one entry per distinct digest; [`indicator`] refangs and canonicalises
//! URLs, domains and IP addresses, which the readers take where `--kinds` asks for them
//! ([`reader::default_kinds`]) and [`names::Names`] keeps once each. All are synchronous and
//! need no runtime.
#![deny(missing_docs)]

pub mod context;
pub mod dedup;
mod hash;
pub mod indicator;
pub mod names;
pub mod reader;
pub mod table;

pub use context::Exclusion;
pub use dedup::{Seen, Unique};
pub use hash::{Hash, HashKind, ParseHashError};
pub use indicator::{Indicator, Kind, Kinds};
pub use names::{Named, Names};
pub use reader::{Column, InputFormat, InputReport, Item, Origin, ReadOptions};
