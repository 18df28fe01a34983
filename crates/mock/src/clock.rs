//! The mock's clock: real time, real time with an offset, or frozen and moved by hand.
//!
//! Quota windows (a sliding minute, the UTC hour, day and month) are computed from this clock,
//! so a test can freeze it at 23:59:50 UTC, advance it past midnight, and watch the daily
//! counter reset, without waiting. It is deliberately separate from tokio's clock: the mock's
//! notion of "now" is wall-clock calendar time, which tokio's paused clock does not provide.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A settable wall clock in Unix milliseconds.
#[derive(Debug, Default)]
pub struct Clock {
    state: Mutex<ClockState>,
    /// When set, the clock reads `base + tokio elapsed`, so that a test under tokio's paused
    /// clock moves the mock's windows with its virtual time.
    tokio: Option<(i64, tokio::time::Instant)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ClockState {
    offset_ms: i64,
    frozen_at: Option<i64>,
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A read-only view of the clock, for the control endpoint.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ClockView {
    /// The mock's now, Unix milliseconds.
    pub now_ms: i64,
    /// The same, RFC 3339 UTC.
    #[serde(serialize_with = "ser_rfc3339")]
    pub now: i64,
    /// Whether the clock stands still.
    pub frozen: bool,
    /// Mock time minus real time, in milliseconds (0 when frozen).
    pub offset_ms: i64,
}

fn ser_rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ms(*ms))
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-26T23:59:59.500Z`.
pub fn format_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => ms.to_string(),
    }
}

/// Parses an RFC 3339 time (`2026-11-26T23:59:00Z`) into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("not an RFC 3339 time ({s:?}): {e}"))
}

impl Clock {
    /// A clock that follows tokio's (possibly paused) clock from `base_ms`.
    pub fn following_tokio(base_ms: i64) -> Clock {
        Clock {
            state: Mutex::default(),
            tokio: Some((base_ms, tokio::time::Instant::now())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        // A poisoned lock only means another thread panicked mid-update of two integers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        if let Some((base, start)) = self.tokio {
            return base + start.elapsed().as_millis() as i64 + self.lock().offset_ms;
        }
        let s = *self.lock();
        s.frozen_at.unwrap_or_else(|| system_ms() + s.offset_ms)
    }

    /// Makes the clock read `ms` now; it keeps running (or stays frozen) from there.
    pub fn set_ms(&self, ms: i64) {
        let mut s = self.lock();
        match s.frozen_at {
            Some(_) => s.frozen_at = Some(ms),
            None => s.offset_ms = ms - system_ms(),
        }
    }

    /// Moves the clock by `delta_ms` (negative goes back).
    pub fn advance_ms(&self, delta_ms: i64) {
        let mut s = self.lock();
        match s.frozen_at.as_mut() {
            Some(at) => *at += delta_ms,
            None => s.offset_ms += delta_ms,
        }
    }

    /// Stops the clock at its current reading.
    pub fn freeze(&self) {
        let mut s = self.lock();
        if s.frozen_at.is_none() {
            s.frozen_at = Some(system_ms() + s.offset_ms);
        }
    }

    /// Lets the clock run again from its current reading.
    pub fn unfreeze(&self) {
        let mut s = self.lock();
        if let Some(at) = s.frozen_at.take() {
            s.offset_ms = at - system_ms();
        }
    }

    /// Back to real time.
    pub fn reset_to_real(&self) {
        *self.lock() = ClockState::default();
    }

    /// A snapshot for display.
    pub fn view(&self) -> ClockView {
        let s = *self.lock();
        let now_ms = s.frozen_at.unwrap_or_else(|| system_ms() + s.offset_ms);
        ClockView {
            now_ms,
            now: now_ms,
            frozen: s.frozen_at.is_some(),
            offset_ms: if s.frozen_at.is_some() {
                0
            } else {
                s.offset_ms
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_by_hand() {
        let clock = Clock::default();
        clock.freeze();
        let t = parse_rfc3339_ms("2026-11-26T23:59:50Z").expect("valid");
        clock.set_ms(t);
        assert_eq!(clock.now_ms(), t);
        clock.advance_ms(15_000);
        assert_eq!(clock.now_ms(), t + 15_000);
        assert_eq!(format_ms(clock.now_ms()), "2026-11-27T00:00:05.000Z");
    }

    #[test]
    fn running_clock_keeps_its_offset() {
        let clock = Clock::default();
        let t = parse_rfc3339_ms("2030-01-01T00:00:00Z").expect("valid");
        clock.set_ms(t);
        let now = clock.now_ms();
        assert!((now - t).abs() < 5_000, "{now} vs {t}");
        clock.reset_to_real();
        assert!((clock.now_ms() - system_ms()).abs() < 5_000);
    }
}
