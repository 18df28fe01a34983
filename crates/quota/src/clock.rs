//! UTC wall time for the calendar windows and the cache's fetch times.
//!
//! The system's clock in real runs; in tests either a fixed time or one that follows tokio's
//! (paused) clock from a chosen start, so a run can cross 00:00 UTC, wait for a daily reset
//! and carry on without a test ever sleeping. vt-mock's clock can follow tokio's the same way,
//! so both sides of a test agree on what time it is.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where "now" comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WallClock {
    /// `SystemTime::now()`.
    #[default]
    System,
    /// Always this many seconds since the Unix epoch.
    Fixed(i64),
    /// `base_ms` plus the tokio time elapsed since `origin` (tests under a paused clock).
    FollowTokio {
        /// Unix milliseconds at `origin`.
        base_ms: i64,
        /// The tokio instant `base_ms` stands for.
        origin: tokio::time::Instant,
    },
}

impl WallClock {
    /// A clock reading `base_ms` now and moving with tokio's clock from here.
    pub fn following_tokio(base_ms: i64) -> WallClock {
        WallClock::FollowTokio {
            base_ms,
            origin: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(self) -> i64 {
        match self {
            WallClock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            WallClock::Fixed(secs) => secs.saturating_mul(1000),
            WallClock::FollowTokio { base_ms, origin } => {
                base_ms.saturating_add(origin.elapsed().as_millis() as i64)
            }
        }
    }

    /// Seconds since the Unix epoch.
    pub fn now(self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_following_clock_moves_with_tokio_time() {
        let clock = WallClock::following_tokio(1_000_500);
        assert_eq!(clock.now_ms(), 1_000_500);
        tokio::time::sleep(std::time::Duration::from_secs(86_400)).await;
        assert_eq!(clock.now_ms(), 1_000_500 + 86_400_000);
        assert_eq!(clock.now(), 1_000 + 86_400);
        assert_eq!(WallClock::Fixed(7).now_ms(), 7_000);
    }
}
