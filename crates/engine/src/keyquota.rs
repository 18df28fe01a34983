//! The key's quotas: read live from `GET /users/{key}`, or, when VirusTotal refuses that
//! (403) or cannot be reached, the tier's profile minus our own spend from the ledger.
//!
//! Quotas differ per account and other people may share a key, so a run plans against what
//! the key has left now, not against a profile. The ledger (in the cache file, by key
//! fingerprint) is the fallback's memory: back-to-back runs know what the earlier ones spent.
//! `enrich`, `plan` and `quota` all read the key's budget here, so they agree.

use serde::Serialize;
use vtbulk_quota::{LedgerWindow, SchedulerConfig, Tier, Usage, WallClock, Window, effective_rate};
use vtbulk_store::Store;
use vtbulk_vt::models::quota_names;
use vtbulk_vt::{Client, ErrorClass};

/// Where a run's budget came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaSource {
    /// `GET /users/{key}`: everybody's spend.
    Live,
    /// The tier's profile minus the spend in the ledger (ours only).
    Ledger,
    /// The tier's profile minus the ledger, because `--offline-quota` said not to ask.
    Offline,
    /// Not read: nothing needed looking up.
    NotRead,
}

impl QuotaSource {
    /// `live`, `ledger`, `offline`, `not_read`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaSource::Live => "live",
            QuotaSource::Ledger => "ledger",
            QuotaSource::Offline => "offline",
            QuotaSource::NotRead => "not_read",
        }
    }
}

/// The key's allowances and spend at a moment.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyQuota {
    /// Allowances: hour, day, month from VirusTotal when read live (else the profile's); the
    /// per-minute figure is always the profile's (VirusTotal does not report it).
    pub caps: Tier,
    /// Spent in the current windows.
    pub used: Usage,
    /// Where this came from.
    pub source: QuotaSource,
    /// Why it is not live, when it is not (e.g. "GET /users answered 403 ForbiddenError").
    pub note: Option<String>,
    /// When the answer to `GET /users` arrived, if a request left: the server had handled it
    /// by then, so the first lookup is spaced from this moment (a first request on a fresh
    /// connection is often handled late; one round trip, once a run, is the price).
    pub handled_by: Option<tokio::time::Instant>,
}

impl KeyQuota {
    /// `base` planned against this quota: its allowances, its spend, and the rate lowered
    /// so no minute exceeds the smallest window (what `enrich`, `plan` and `quota` all use).
    pub fn schedule(&self, base: SchedulerConfig) -> SchedulerConfig {
        SchedulerConfig {
            caps: self.caps,
            used: Some(self.used),
            rate: effective_rate(base.rate, &self.caps),
            ..base
        }
    }
}

/// The request quotas of a user object: allowances (missing ones from `profile`) and spend
/// at `now`; `None` when it shows none (not the key's own user, or an unusual account).
pub fn from_user(
    user: &vtbulk_vt::models::UserObject,
    profile: Tier,
    now: i64,
) -> Option<(Tier, Usage)> {
    let quotas = &user.attributes.quotas;
    let get = |name: &str| quotas.get(name).copied();
    let (hour, day, month) = (
        get(quota_names::HOURLY),
        get(quota_names::DAILY),
        get(quota_names::MONTHLY),
    );
    if hour.is_none() && day.is_none() && month.is_none() {
        return None;
    }
    Some((
        Tier {
            per_minute: profile.per_minute,
            hourly: hour.map(|q| q.allowed).or(profile.hourly),
            daily: day.map(|q| q.allowed).or(profile.daily),
            monthly: month.map(|q| q.allowed).or(profile.monthly),
        },
        Usage {
            at: now,
            hour: hour.map_or(0, |q| q.used),
            day: day.map_or(0, |q| q.used),
            month: month.map_or(0, |q| q.used),
        },
    ))
}

/// The key cannot be used at all (401 and the like on `/users`): stop before any lookup.
#[derive(Debug)]
pub struct Refused(pub vtbulk_vt::Error);

/// Our spend in the windows containing `now`, per the ledger (0 without one).
pub fn ledger_usage(store: Option<&mut Store>, key_id: &str, now: i64) -> Usage {
    let mut usage = Usage {
        at: now,
        ..Usage::default()
    };
    if let Some(store) = store {
        for window in Window::ALL {
            let id = window.id(now);
            let (spent, _) = store
                .spent(key_id, window.into(), id..=id)
                .unwrap_or_default();
            match window {
                Window::Hour => usage.hour = spent,
                Window::Day => usage.day = spent,
                Window::Month => usage.month = spent,
            }
        }
    }
    usage
}

/// Our requests in the last 60 s, per the ledger's one-second buckets, and when the oldest
/// of them leaves the sliding minute (Unix seconds).
pub fn ledger_minute(store: Option<&mut Store>, key_id: &str, now: i64) -> (u64, Option<i64>) {
    let Some(store) = store else { return (0, None) };
    let (used, oldest) = store
        .spent(key_id, LedgerWindow::Second, now - 59..=now)
        .unwrap_or_default();
    (used, oldest.map(|s| s + 60))
}

/// The key's quota now: live unless `offline`, else (or when `/users` is refused or
/// unreachable) `profile` minus the ledger. `Err` when the key itself is refused.
pub async fn read(
    client: &Client,
    profile: Tier,
    offline: bool,
    store: Option<&mut Store>,
    clock: WallClock,
) -> Result<KeyQuota, Refused> {
    let key_id = client.key_fingerprint();
    let departure = std::sync::Arc::new(std::sync::OnceLock::new());
    let mut handled_by = None;
    let fallback = |store: Option<&mut Store>, source, note, handled_by| KeyQuota {
        caps: profile,
        used: ledger_usage(store, &key_id, clock.now()),
        source,
        note: Some(note),
        handled_by,
    };
    if offline {
        return Ok(fallback(
            store,
            QuotaSource::Offline,
            "--offline-quota: the tier's profile minus the ledger".into(),
            None,
        ));
    }
    let answer = match client.ready().await {
        Ok(ready) => {
            let cell = departure.clone();
            let arrival = vtbulk_vt::Arrival::new();
            let answer = ready
                .with_arrival(&arrival)
                .get_own_user(move |at| {
                    let _ = cell.set(at);
                })
                .await;
            if departure.get().is_some() {
                handled_by = Some(arrival.get().unwrap_or_else(tokio::time::Instant::now));
            }
            answer
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(user) => match from_user(&user, profile, clock.now()) {
            Some((caps, used)) => Ok(KeyQuota {
                caps,
                used,
                source: QuotaSource::Live,
                note: None,
                handled_by,
            }),
            None => Ok(fallback(
                store,
                QuotaSource::Ledger,
                "GET /users showed no request quotas".into(),
                handled_by,
            )),
        },
        Err(e) if e.status() == Some(403) => Ok(fallback(
            store,
            QuotaSource::Ledger,
            format!("GET /users answered 403 {}", e.code()),
            handled_by,
        )),
        Err(e) if e.class() == ErrorClass::Fatal => Err(Refused(e)),
        Err(e) => Ok(fallback(
            store,
            QuotaSource::Ledger,
            format!("GET /users failed: {}", e.message()),
            handled_by,
        )),
    }
}

pub use vtbulk_output::rfc3339;
