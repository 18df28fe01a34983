//! The `vtbulk` binary's integration tests, one binary (one link) with a module per concern:
//! the commands as a user runs them, resuming and sharing a cache, fleets through a real
//! Redis, proxies, TLS, the HTML report and the probe. Everything talks to vt-mock (or Redis,
//! tinyproxy) on loopback; `common` is what they share.

mod commands;
mod common;
mod faults;
mod fleet;
mod probe;
mod proxy;
mod report;
mod resume;
mod tls;
