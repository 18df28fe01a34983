//! What the store is given and what it gives back: answers to keep (`Put`), what it knows of
//! a hash or an object (`Hit`, `ObjectHit`), and when a kept answer is still fresh.
//!
//! Plain types, apart from the code that reads and writes them, so that every concern of the
//! store (files, objects, the journal's segments, claims) shares them without importing one
//! another.

use vtbulk_ioc::Hash;

/// How old an answer may be and still be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Seconds a found answer stays fresh (7 days by default).
    pub found_ttl: i64,
    /// Seconds a not-found answer stays fresh (1 day by default).
    pub not_found_ttl: i64,
    /// For one run: nothing older than this many seconds, whatever the TTLs say.
    pub max_age: Option<i64>,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            found_ttl: 7 * 86_400,
            not_found_ttl: 86_400,
            max_age: None,
        }
    }
}

impl Freshness {
    /// True when `hit`, read at `now`, may be used instead of a lookup.
    pub fn is_fresh(&self, hit: &Hit, now: i64) -> bool {
        let (fetched_at, ttl) = match hit {
            Hit::Found(f) => (f.fetched_at, self.found_ttl),
            Hit::NotFound { fetched_at } => (*fetched_at, self.not_found_ttl),
        };
        let limit = self.max_age.map_or(ttl, |m| m.min(ttl));
        now.saturating_sub(fetched_at) <= limit
    }
}

/// A found file as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFile {
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its MD5, when VirusTotal gave it.
    pub md5: Option<[u8; 16]>,
    /// Its SHA-1, when VirusTotal gave it.
    pub sha1: Option<[u8; 20]>,
    /// When the answer was fetched (Unix seconds).
    pub fetched_at: i64,
    /// The attributes a record needs (the engine's format; opaque here).
    pub summary: Vec<u8>,
    /// VirusTotal's `data` object, when asked for.
    pub data: Option<Vec<u8>>,
}

/// What the store knows of a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hit {
    /// VirusTotal knew the file.
    Found(FoundFile),
    /// VirusTotal answered 404 for this digest.
    NotFound {
        /// When (Unix seconds).
        fetched_at: i64,
    },
}

/// VirusTotal's answer to a file lookup, as it came off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Gzip-compressed JSON: stored as it is.
    Gzip(bytes::Bytes),
    /// Plain JSON: LZ4-compressed on the way in.
    Json(bytes::Bytes),
}

/// One answer to store.
#[derive(Clone, Debug)]
pub enum Put {
    /// A found file: its three digests, the summary, and the answer.
    Found {
        /// SHA-256.
        sha256: [u8; 32],
        /// MD5, when VirusTotal gave it.
        md5: Option<[u8; 16]>,
        /// SHA-1, when VirusTotal gave it.
        sha1: Option<[u8; 20]>,
        /// The record's attributes (the engine's format; opaque here).
        summary: Vec<u8>,
        /// VirusTotal's answer (`{"data": ...}`) as received.
        body: Option<Body>,
    },
    /// A 404 for this digest.
    NotFound(Hash),
    /// A URL, domain or IP address (found or not): written straight to the index in the
    /// batch's transaction, not to the segment (see `objects`).
    Object(ObjectPut),
    /// A URL submitted for scanning (`POST /urls`) and its analysis id, so that a run killed
    /// while it polls picks the analysis up again instead of submitting twice.
    Submission {
        /// The URL as submitted.
        url: String,
        /// VirusTotal's analysis id.
        analysis: String,
    },
}

/// One URL, domain or IP address answer to store.
#[derive(Clone, Debug)]
pub struct ObjectPut {
    /// 1 URL, 2 domain, 3 IP.
    pub kind: u8,
    /// The canonical text (the URL as submitted, the domain, the address).
    pub id: String,
    /// Found: the record's attributes; `None`: VirusTotal answered 404.
    pub summary: Option<Vec<u8>>,
    /// The answer as received, when found and kept.
    pub body: Option<Body>,
}

/// What the store knows of a URL, domain or IP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHit {
    /// When it was fetched (Unix seconds).
    pub fetched_at: i64,
    /// Found: the record's attributes; `None`: not found.
    pub summary: Option<Vec<u8>>,
    /// The gzip answer, when asked for and kept.
    pub gzip: Option<Vec<u8>>,
}

impl Freshness {
    /// True when an object answer fetched at `fetched_at` (found or not), read at `now`, may
    /// be used instead of a lookup.
    pub fn is_fresh_object(&self, hit: &ObjectHit, now: i64) -> bool {
        let ttl = if hit.summary.is_some() {
            self.found_ttl
        } else {
            self.not_found_ttl
        };
        let limit = self.max_age.map_or(ttl, |m| m.min(ttl));
        now.saturating_sub(hit.fetched_at) <= limit
    }
}
