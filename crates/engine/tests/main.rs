//! The engine's integration tests, one binary (one link) with a module per concern: whole
//! runs against vt-mock on loopback (the pipeline, the cache and journal, pacing under
//! 429s and outages, the key's quotas and the probe, URLs, domains and IP addresses), under
//! tokio's paused clock wherever time matters; `common` is what they share.

mod cache;
mod common;
mod indicators;
mod pacing;
mod pipeline;
mod quota;
