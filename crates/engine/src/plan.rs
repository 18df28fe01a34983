//! `vtbulk plan`: what a run would do, without doing it.
//!
//! The same reading, dedup and cache check as a run, and the same budget (one `GET /users`
//! unless offline), then arithmetic instead of lookups: how many requests, how long at the
//! rate, what share of today's and this month's budget, and, when it does not fit today, on
//! which day it would finish. The run that follows on the same input and cache sends at most
//! `requests_needed` (fewer when one file turns up under two of its hashes).

use std::sync::Arc;

use serde::Serialize;
use vtbulk_quota::{Scheduler, Tier, Window, WindowBudget};
use vtbulk_vt::Client;

use crate::counters::Counters;
use crate::entries::Target;
use crate::keyquota;
use crate::prepare::{Prepared, prepare};
use crate::run::EngineError;
use crate::settings::Settings;

/// How far ahead the finish is searched for (10 years of hours).
const HORIZON_HOURS: i64 = 24 * 3660;

/// What a run on these inputs would do.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Plan {
    /// Lines read.
    pub lines: u64,
    /// Values that are not hashes.
    pub invalid: u64,
    /// Hash-shaped tokens left out as not file hashes, by reason.
    pub excluded_by_reason: std::collections::BTreeMap<String, u64>,
    /// Each input: format used, lines, hashes, invalid, exclusions (as in the run summary).
    pub inputs: Vec<vtbulk_ioc::InputReport>,
    /// Distinct hashes.
    pub unique: u64,
    /// Answered by the cache (fresh).
    pub fresh_in_cache: u64,
    /// Left out by `--only-new` (the cache had seen them).
    pub already_seen: u64,
    /// Left to look up.
    pub to_query: u64,
    /// Requests the run needs at most: a lookup each (twins found during the run cost none),
    /// plus, with `--submit-unknown-urls`, `submission_requests_max`.
    pub requests_needed: u64,
    /// With `--submit-unknown-urls`: the most the URLs to look up can cost beyond their
    /// lookups, were every one unknown (a submission, the polls that fit in `--submit-wait`,
    /// a lookup after the analysis).
    #[serde(skip_serializing_if = "is_zero")]
    pub submission_requests_max: u64,
    /// The per-minute rate a run would be scheduled at (`unlimited`: none).
    pub rate: String,
    /// Seconds the requests take at that rate, ignoring the budget (`None`: unlimited).
    pub seconds_at_rate: Option<f64>,
    /// Where the budget came from (`live`, `ledger`, `offline`, `not_read`).
    pub quota_source: String,
    /// Why it is not live, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_note: Option<String>,
    /// Each window now.
    pub windows: Vec<WindowBudget>,
    /// `requests_needed` over what today still allows (`None`: no daily limit; nothing left
    /// counts as 1).
    pub share_of_today: Option<f64>,
    /// `requests_needed` over what this month still allows (`None`: no monthly limit).
    pub share_of_month: Option<f64>,
    /// Whether it all fits today.
    pub fits_today: bool,
    /// UTC days the run needs, today included (`None`: not within ten years).
    pub days_needed: Option<u64>,
    /// When it would finish at full speed, RFC 3339 UTC (`None`: not within ten years).
    pub finish_at: Option<String>,
}

/// Reads, dedups and checks the cache like a run (the same stage), reads the key's budget,
/// and plans.
pub async fn plan(settings: &Settings, client: &Client) -> Result<Plan, EngineError> {
    let counters = Arc::new(Counters::default());
    let Prepared {
        work,
        todo,
        mut store,
        ..
    } = prepare(settings, &counters, None).await?;
    let urls_to_query = todo
        .iter()
        .filter(|&&i| {
            matches!(work.target(i as usize), Target::Other(e) if e.kind() == vtbulk_ioc::Kind::Url)
        })
        .count() as u64;
    let submission_requests_max = settings
        .submit_urls
        .map_or(0, |p| urls_to_query * (p.max_requests() - 1));
    let fresh = Counters::get(&counters.cache_hits);
    let unique = work.len() as u64;
    let already_seen = Counters::get(&counters.already_seen);
    let to_query = unique - fresh - already_seen;
    let clock = settings.scheduler.clock;
    let quota = match keyquota::read(
        client,
        settings.scheduler.caps,
        settings.quota.offline,
        store.as_mut(),
        clock,
    )
    .await
    {
        Ok(quota) => quota,
        Err(keyquota::Refused(e)) => {
            return Err(EngineError::Refused(e));
        }
    };
    let config = quota.schedule(settings.scheduler);
    let rate = config.rate;
    let windows = Scheduler::new(config).budgets();
    let requests = to_query + submission_requests_max;
    let share = |w: Window| {
        windows[w as usize]
            .remaining
            .map(|left| requests as f64 / left.max(1) as f64)
    };
    let now = clock.now();
    let finish = finish(
        requests,
        now,
        rate.map(|r| r.per_second()),
        &windows,
        &quota.caps,
        settings.scheduler.reserve,
    );
    let days_needed = finish.map(|t| {
        let day = |s: i64| s.div_euclid(86_400);
        (day(t.floor() as i64) - day(now) + 1).max(1) as u64
    });
    let (inputs, _, excluded_by_reason) = counters.inputs();
    Ok(Plan {
        lines: Counters::get(&counters.lines),
        invalid: Counters::get(&counters.invalid),
        excluded_by_reason,
        inputs,
        unique,
        fresh_in_cache: fresh,
        already_seen,
        to_query,
        requests_needed: requests,
        submission_requests_max,
        rate: rate.map_or_else(|| "unlimited".to_owned(), |r| r.to_string()),
        seconds_at_rate: rate.map(|r| requests as f64 / r.per_second()),
        quota_source: quota.source.as_str().to_owned(),
        quota_note: quota.note,
        windows: windows.to_vec(),
        share_of_today: share(Window::Day),
        share_of_month: share(Window::Month),
        fits_today: days_needed == Some(1),
        days_needed,
        finish_at: finish.map(|t| keyquota::rfc3339(t.ceil() as i64)),
    })
}

/// One row of `vtbulk quota`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct QuotaRow {
    /// `minute` (sliding), `hour`, `day`, `month`.
    pub window: &'static str,
    /// The allowance (`None`: unlimited).
    pub allowed: Option<u64>,
    /// Spent in it: everybody's when read live; the minute is always ours (from the ledger:
    /// VirusTotal does not report it).
    pub used: u64,
    /// Kept back for other users of the key.
    pub reserve: u64,
    /// What may still be sent (`None`: unlimited).
    pub remaining: Option<u64>,
    /// When it resets, Unix seconds (the minute: when its oldest request leaves it).
    pub resets_at: i64,
}

/// What `vtbulk quota` shows.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct QuotaView {
    /// Where the figures came from (`live`, `ledger`, `offline`).
    pub source: String,
    /// Why they are not live, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The key's fingerprint (never the key).
    pub key: String,
    /// The rate runs are scheduled at (`unlimited`: none).
    pub rate: String,
    /// The time of the figures, Unix seconds.
    pub now: i64,
    /// Minute, hour, day, month.
    pub windows: Vec<QuotaRow>,
    /// When today's budget would be spent if a run started now at full speed, Unix seconds
    /// (`None`: no daily limit, or not today).
    pub today_spent_at: Option<i64>,
    /// With `--coordinator`: the fleet's spend by its own books and its live processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::FleetView>,
    /// With `--history`: spend per day and hour, the busiest minute, the month's outlook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<crate::History>,
}

/// The key's quotas in every window now (one `GET /users` unless offline); with
/// `history_days`, its spend over that many UTC days from the ledger (see [`crate::History`]).
pub async fn quota_view(
    settings: &Settings,
    client: &Client,
    history_days: Option<u32>,
) -> Result<QuotaView, EngineError> {
    let mut store = settings
        .cache
        .as_ref()
        .map(crate::cache::open)
        .transpose()?;
    let clock = settings.scheduler.clock;
    let quota = keyquota::read(
        client,
        settings.scheduler.caps,
        settings.quota.offline,
        store.as_mut(),
        clock,
    )
    .await
    .map_err(|keyquota::Refused(e)| EngineError::Refused(e))?;
    let config = quota.schedule(settings.scheduler);
    let rate = config.rate;
    let windows = Scheduler::new(config).budgets();
    let now = clock.now();
    let key = client.key_fingerprint();
    let (minute_used, minute_reset) = keyquota::ledger_minute(store.as_mut(), &key, now);
    let minute_allowed = rate.map(|r| (r.per_second() * 60.0).floor() as u64);
    let mut rows = vec![QuotaRow {
        window: "minute",
        allowed: minute_allowed,
        used: minute_used,
        reserve: 0,
        remaining: minute_allowed.map(|a| a.saturating_sub(minute_used)),
        resets_at: minute_reset.unwrap_or(now),
    }];
    rows.extend(windows.iter().map(|w| QuotaRow {
        window: w.window.name(),
        allowed: w.allowed,
        used: w.used,
        reserve: w.reserve,
        remaining: w.remaining,
        resets_at: w.resets_at,
    }));
    let today = windows[Window::Day as usize];
    let today_spent_at = today.remaining.and_then(|left| {
        finish(
            left,
            now,
            rate.map(|r| r.per_second()),
            &windows,
            &quota.caps,
            settings.scheduler.reserve,
        )
        .map(|t| t.ceil() as i64)
        .filter(|&t| t < today.resets_at)
    });
    let history = match (history_days, store.as_ref()) {
        (Some(days), Some(store)) => Some(crate::history::build(
            store,
            &key,
            now,
            days,
            &quota.caps,
            minute_allowed,
            quota.used.month,
        )),
        // No cache, no ledger (the command line refuses `--history` with `--cache off`).
        _ => None,
    };
    Ok(QuotaView {
        source: quota.source.as_str().to_owned(),
        note: quota.note,
        history,
        key,
        rate: rate.map_or_else(|| "unlimited".to_owned(), |r| r.to_string()),
        now,
        windows: rows,
        today_spent_at,
        fleet: match &settings.coordinator {
            Some(_) => Some(crate::fleet_view(settings, client).await?),
            None => None,
        },
    })
}

/// When `requests` would be done, sending at `per_second` (`None`: at once) from `now`
/// within every window's budget, hour by hour; `None` when not within the horizon.
fn finish(
    requests: u64,
    now: i64,
    per_second: Option<f64>,
    windows: &[WindowBudget; 3],
    caps: &Tier,
    reserve: vtbulk_quota::Reserve,
) -> Option<f64> {
    let full = |w: Window| {
        w.cap(caps)
            .map_or(f64::INFINITY, |a| a.saturating_sub(reserve.of(a)) as f64)
    };
    let left_now = |w: Window| {
        windows[w as usize]
            .remaining
            .map_or(f64::INFINITY, |r| r as f64)
    };
    let (mut hour_left, mut day_left, mut month_left) = (
        left_now(Window::Hour),
        left_now(Window::Day),
        left_now(Window::Month),
    );
    let mut left = requests as f64;
    let mut t = now as f64;
    if left == 0.0 {
        return Some(t);
    }
    for _ in 0..HORIZON_HOURS {
        let hour_end = Window::Hour.end(t as i64) as f64;
        let by_rate = per_second.map_or(f64::INFINITY, |r| r * (hour_end - t));
        let take = left
            .min(hour_left)
            .min(day_left)
            .min(month_left)
            .min(by_rate.floor());
        left -= take;
        if left <= 0.0 {
            return Some(t + per_second.map_or(0.0, |r| take / r));
        }
        day_left -= take;
        month_left -= take;
        // The next hour, and the windows it starts.
        let next = hour_end;
        hour_left = full(Window::Hour);
        if Window::Day.end(t as i64) as f64 <= next {
            day_left = full(Window::Day);
        }
        if Window::Month.end(t as i64) as f64 <= next {
            month_left = full(Window::Month);
        }
        t = next;
    }
    None
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use vtbulk_quota::{Reserve, SchedulerConfig, Usage};

    /// Nothing spent yet at `now`.
    fn fresh(now: i64) -> Usage {
        Usage {
            at: now,
            ..Usage::default()
        }
    }

    fn budgets(caps: Tier, used: Usage, now: i64) -> [WindowBudget; 3] {
        Scheduler::new(SchedulerConfig {
            caps,
            used: Some(used),
            clock: vtbulk_quota::WallClock::Fixed(now),
            ..SchedulerConfig::default()
        })
        .budgets()
    }

    #[test]
    fn a_public_key_spreads_a_big_list_over_days() {
        // 2026-11-26 12:00 UTC, 100 spent today.
        let now = 1_795_694_400 + 12 * 3600;
        let caps = Tier {
            per_minute: std::num::NonZeroU32::new(4),
            hourly: Some(240),
            daily: Some(500),
            monthly: Some(15_500),
        };
        let used = Usage {
            at: now,
            hour: 0,
            day: 100,
            month: 100,
        };
        let w = budgets(caps, used, now);
        // 400 left today at 4/min: 100 minutes.
        let t = finish(400, now, Some(4.0 / 60.0), &w, &caps, Reserve::Nothing).expect("fits");
        assert!(
            (t - (now as f64 + 6000.0)).abs() < 1.0,
            "{}",
            t - now as f64
        );
        // 1,400: today's 400, then 500 on each of the next two days.
        let t = finish(1400, now, Some(4.0 / 60.0), &w, &caps, Reserve::Nothing).expect("fits");
        assert_eq!((t as i64).div_euclid(86_400) - now.div_euclid(86_400), 2);
        // A key with 1 a day needs a day per hash.
        let tiny = Tier {
            daily: Some(1),
            ..caps
        };
        let w = budgets(tiny, fresh(now), now);
        let t = finish(5, now, Some(1.0 / 60.0), &w, &tiny, Reserve::Nothing).expect("fits");
        assert_eq!((t as i64).div_euclid(86_400) - now.div_euclid(86_400), 4);
        // Nothing left this month and no monthly allowance to come: never.
        let dead = Tier {
            monthly: Some(0),
            ..caps
        };
        let w = budgets(dead, fresh(now), now);
        assert_eq!(finish(1, now, None, &w, &dead, Reserve::Nothing), None);
    }
}
