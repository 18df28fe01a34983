//! `vtbulk config`: every key of the merged configuration with its value, in declaration
//! order, the key itself only as where it came from.
//!
//! Derived from the declaration: a new key shows up here with no code. A few keys are shown
//! as they resolved, which says more than the raw value (the tier's profile, the rate the run
//! is paced at, what is trusted, where the cache is); credentials in any URL are redacted.

use std::collections::HashMap;

use super::{KeySource, Resolved, keys};

/// `vtbulk config`: the resolved settings as TOML-like lines, the key redacted.
pub fn describe(r: &Resolved) -> String {
    let mut lines = vec![format!("api_key = {}", key_line(&r.key_source))];
    let set: HashMap<&str, toml::Value> = r.layer.entries().into_iter().collect();
    for &key in keys() {
        let value = match resolved(r, key) {
            Some(text) => text,
            None => match set.get(key) {
                Some(value) => redact_urls(&value.to_string()),
                None => "(not set)".to_owned(),
            },
        };
        lines.push(format!("{key} = {value}"));
    }
    lines.join("\n")
}

/// Where the key came from.
fn key_line(source: &KeySource) -> String {
    match source {
        KeySource::File(p) => format!("[redacted] (from --api-key-file {})", p.display()),
        KeySource::Command(program) => format!("[redacted] (from --api-key-command {program})"),
        KeySource::Env(v) => format!("[redacted] (from {v})"),
        KeySource::Missing => {
            "none (set VT_API_KEY, or pass --api-key-file or --api-key-command)".into()
        }
    }
}

/// The keys shown as they resolved.
fn resolved(r: &Resolved, key: &str) -> Option<String> {
    let s = &r.settings;
    let cap = |c: Option<u64>| c.map_or("unlimited".to_owned(), |c| c.to_string());
    Some(match key {
        "tier" => {
            let (name, tier) = &r.tier;
            format!(
                "{name:?} ({}; hourly {}, daily {}, monthly {})",
                tier.rate()
                    .map_or("unlimited".to_owned(), |r| r.to_string()),
                cap(tier.hourly),
                cap(tier.daily),
                cap(tier.monthly)
            )
        }
        "rate" => format!(
            "{:?}",
            s.scheduler
                .rate
                .map_or("unlimited".to_owned(), |r| r.to_string())
        ),
        "ca_cert" => match &r.client.ca_cert {
            Some(path) => format!("{:?} (and the system's trust store)", path.display()),
            None => "none (the system's trust store)".to_owned(),
        },
        "proxy" => r.client.proxy.shown(),
        "coordinator" => format!(
            "{:?}",
            s.coordinator
                .as_ref()
                .map_or("off".to_owned(), |e| e.shown())
        ),
        "cache" => match &s.cache {
            None => "\"off\"".to_owned(),
            Some(c) => format!("{:?}", c.path.display().to_string()),
        },
        _ => return None,
    })
}

/// `text` with the credentials of any URL in it replaced by `[redacted]`.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str("[redacted]");
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_any_url_are_redacted() {
        assert_eq!(
            redact_urls("\"redis://:s3cret@10.0.0.1:6379/0\""),
            "\"redis://[redacted]@10.0.0.1:6379/0\""
        );
        assert_eq!(
            redact_urls("http://alice:pw@proxy:3128 and https://example.org/x"),
            "http://[redacted]@proxy:3128 and https://example.org/x"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
    }
}
