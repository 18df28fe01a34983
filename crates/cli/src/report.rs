//! The text of `vtbulk quota` and `vtbulk plan` (their `--json` is the engine's structs as
//! they are). Times in UTC and in the machine's local time zone: a nightly job is scheduled
//! in local time, VirusTotal's windows reset in UTC.

use std::fmt::Write as _;
use std::time::Duration;

use vtbulk_engine::{Plan, QuotaView};

/// `2026-11-27 00:00:00 UTC (2026-11-27 01:00:00 CET)`.
fn when(secs: i64) -> String {
    let Ok(t) = jiff::Timestamp::from_second(secs) else {
        return secs.to_string();
    };
    let utc = t.strftime("%Y-%m-%d %H:%M:%S UTC");
    let local = t
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S %Z");
    format!("{utc} ({local})")
}

fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

fn span(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0.0).round() as u64)).to_string()
}

/// The `vtbulk quota` table.
pub fn quota(v: &QuotaView) -> String {
    let mut t = String::new();
    let note = v
        .note
        .as_deref()
        .map_or(String::new(), |n| format!(": {n}"));
    let _ = writeln!(
        t,
        "quota of key {} ({}{note}), rate {}",
        v.key, v.source, v.rate
    );
    let _ = writeln!(
        t,
        "  {:<7} {:>12} {:>10} {:>8} {:>12}  resets at",
        "window", "allowed", "used", "reserve", "remaining"
    );
    for r in &v.windows {
        let resets = if r.window == "minute" {
            if r.used == 0 {
                "now (sliding 60 s; our own requests only)".to_owned()
            } else {
                format!("{} (sliding 60 s; ours only)", when(r.resets_at))
            }
        } else {
            when(r.resets_at)
        };
        let _ = writeln!(
            t,
            "  {:<7} {:>12} {:>10} {:>8} {:>12}  {resets}",
            r.window,
            count(r.allowed),
            r.used,
            r.reserve,
            count(r.remaining),
        );
    }
    match v.today_spent_at {
        Some(at) => {
            let _ = writeln!(
                t,
                "at {}, today's budget would run out at {} (in {})",
                v.rate,
                when(at),
                span((at - v.now) as f64)
            );
        }
        None => {
            let _ = writeln!(t, "at {}, today's budget lasts the day", v.rate);
        }
    }
    if let Some(f) = &v.fleet {
        t.push_str(&fleet(f));
    }
    if let Some(h) = &v.history {
        t.push_str(&history(h));
    }
    t
}

/// The `vtbulk probe` table.
pub fn probe(p: &vtbulk_engine::ProbeReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "probe of key {}: {} requests of at most {} ({})",
        p.key, p.requests, p.max_requests, p.stopped
    );
    let _ = writeln!(
        t,
        "  {:>10} {:>9} {:>9} {:>6} {:>7} {:>9} {:>9}",
        "rate/min", "requests", "answered", "429s", "errors", "p50 ms", "p99 ms"
    );
    for s in &p.steps {
        let _ = writeln!(
            t,
            "  {:>10.1} {:>9} {:>9} {:>6} {:>7} {:>9.1} {:>9.1}",
            s.per_min, s.requests, s.answered, s.rate_limited, s.errors, s.p50_ms, s.p99_ms
        );
    }
    let sustained = p.sustained_per_min.map_or_else(
        || "none (the first step was refused)".to_owned(),
        |r| format!("{r}/min"),
    );
    let _ = writeln!(t, "sustained: {sustained}");
    if let (Some(at), Some(kind)) = (p.refused_at_per_min, &p.first_429) {
        let _ = writeln!(t, "refused at: {at}/min (first 429: {kind})");
    }
    let _ = writeln!(t, "latency: p50 {:.1} ms, p99 {:.1} ms", p.p50_ms, p.p99_ms);
    t
}

/// `quota --history`: days, hours with spend, the busiest minute, the month's outlook.
fn history(h: &vtbulk_engine::History) -> String {
    use vtbulk_engine::SpendRow;
    let mut t = String::new();
    // "2026-11-29T22:00:00Z" shortened to what the window needs.
    let cut = |s: &str, n: usize| s.get(..n).unwrap_or(s).replace('T', " ");
    let line = |t: &mut String, label: String, r: &SpendRow| {
        let share = r
            .share
            .map_or(String::new(), |s| format!("{:>5.0}%", s * 100.0));
        let _ = writeln!(
            t,
            "  {label:<17} {:>9} {:>10} {share}",
            r.spent,
            count(r.allowed)
        );
    };
    let _ = writeln!(
        t,
        "history {} .. {} (UTC; {})",
        cut(&h.since, 10),
        cut(&h.until, 16),
        h.source
    );
    let _ = writeln!(
        t,
        "  {:<17} {:>9} {:>10} {:>6}",
        "day", "spent", "allowed", "share"
    );
    for r in &h.days {
        line(&mut t, cut(&r.start, 10), r);
    }
    if h.hours.is_empty() {
        let _ = writeln!(t, "  no spend in any hour of the span");
    } else {
        let _ = writeln!(
            t,
            "  {:<17} {:>9} {:>10} {:>6}",
            "hour (with spend)", "spent", "allowed", "share"
        );
        for r in &h.hours {
            line(&mut t, cut(&r.start, 16), r);
        }
    }
    if let Some(p) = &h.peak_minute {
        let of = p.allowed.map_or(String::new(), |a| format!(" of {a}"));
        let _ = writeln!(
            t,
            "  busiest minute: {} UTC, {} requests{of}",
            cut(&p.start, 16),
            p.spent
        );
    }
    let m = &h.month;
    let used = match (m.allowed, m.share) {
        (Some(a), Some(s)) => format!("{} of {a} used ({:.0}%)", m.used, s * 100.0),
        _ => format!("{} used (no monthly limit)", m.used),
    };
    let outlook = match &m.runs_out_at {
        Some(at) => format!("runs out at {} UTC", cut(at, 16)),
        None => format!(
            "{} by the month's end ({} UTC)",
            m.projected,
            cut(&m.ends_at, 16)
        ),
    };
    let _ = writeln!(
        t,
        "  month {}: {used}; at the recent pace ({}/day) {outlook}",
        m.month, m.recent_per_day
    );
    t
}

/// The `vtbulk plan` table.
pub fn plan(p: &Plan) -> String {
    let mut t = String::new();
    let row = |t: &mut String, k: &str, v: String| crate::progress::row(t, 18, k, v);
    let note = p
        .quota_note
        .as_deref()
        .map_or(String::new(), |n| format!(": {n}"));
    let _ = writeln!(
        t,
        "vtbulk plan (quota {}{note}; nothing looked up)",
        p.quota_source
    );
    row(&mut t, "lines", p.lines.to_string());
    row(&mut t, "invalid", p.invalid.to_string());
    let excluded: u64 = p.excluded_by_reason.values().sum();
    row(
        &mut t,
        "excluded",
        format!(
            "{excluded}{}",
            crate::progress::by_code(&p.excluded_by_reason)
        ),
    );
    crate::progress::inputs(&mut t, 18, &p.inputs);
    row(&mut t, "unique", p.unique.to_string());
    row(&mut t, "fresh in cache", p.fresh_in_cache.to_string());
    if p.already_seen > 0 {
        row(
            &mut t,
            "already seen",
            format!("{} (--only-new)", p.already_seen),
        );
    }
    row(&mut t, "to query", p.to_query.to_string());
    if p.submission_requests_max > 0 {
        row(
            &mut t,
            "submissions",
            format!(
                "up to {} more requests (--submit-unknown-urls: a submission, polls and a lookup per unknown URL)",
                p.submission_requests_max
            ),
        );
    }
    row(
        &mut t,
        "requests needed",
        format!(
            "{} (at most: a file met under two hashes costs one)",
            p.requests_needed
        ),
    );
    row(
        &mut t,
        &format!("time at {}", p.rate),
        p.seconds_at_rate
            .map_or_else(|| "no rate limit".to_owned(), span),
    );
    let share = |s: Option<f64>, left: Option<u64>| match (s, left) {
        (_, Some(0)) => "none left".to_owned(),
        (Some(s), Some(left)) => format!("{:.1}% of the {left} left", s * 100.0),
        _ => "no limit".to_owned(),
    };
    let left = |i: usize| p.windows.get(i).and_then(|w| w.remaining);
    row(&mut t, "today's budget", share(p.share_of_today, left(1)));
    row(&mut t, "this month's", share(p.share_of_month, left(2)));
    match (&p.finish_at, p.days_needed) {
        (Some(at), Some(days)) => {
            let secs = at.parse::<jiff::Timestamp>().map_or(0, |t| t.as_second());
            row(&mut t, "finish", when(secs));
            row(
                &mut t,
                "days needed",
                if days == 1 {
                    "1 (fits today's budget)".to_owned()
                } else {
                    format!("{days} (today's budget is not enough; --wait-for-reset carries on)")
                },
            );
        }
        _ => row(
            &mut t,
            "finish",
            "not within ten years at this key's quotas".to_owned(),
        ),
    }
    t
}

/// `vtbulk fleet` as text.
pub fn fleet(f: &vtbulk_engine::FleetView) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "fleet spent  hour {}, day {}, month {} (the coordinator's books)",
        f.spent.hour, f.spent.day, f.spent.month
    );
    let _ = writeln!(t, "processes    {}", f.members.len());
    for m in &f.members {
        let _ = writeln!(
            t,
            "  {}:{}  since {}  {} requests, {} in the last minute",
            m.host,
            m.pid,
            vtbulk_output::rfc3339(m.started),
            m.requests,
            m.last_minute
        );
    }
    t
}
