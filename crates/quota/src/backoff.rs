//! Every pause of a run: capped exponential backoff, with or without jitter.
//!
//! The ceiling of pause n (0-based) is `min(cap, base * g^n)`, g the policy's growth (doubling
//! by default; half again for the polls of a submitted URL's analysis). Retries wait a uniform
//! random time in `[0, ceiling]` ("full jitter", [`BackoffPolicy::delay`]): retries of many
//! workers spread out instead of colliding; the iterator ends after `max_retries` delays,
//! which is how callers know to give up. A pause of everyone (the 429 gate,
//! [`BackoffPolicy::pause`]) uses "equal jitter", `[c/2, c]`: it must really slow the key
//! down, so it never draws near zero. Waits for something another party does (a lookup
//! another process holds, a lost coordinator, an analysis) take the ceilings themselves
//! ([`BackoffPolicy::ceilings`]). The random unit comes from [`unit`], seeded, so a schedule
//! is tested by computing it, not by sleeping.

use std::time::Duration;

/// How pauses grow, and how many retries there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The ceiling of the first delay.
    pub base: Duration,
    /// The ceiling of any delay.
    pub cap: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Each ceiling over the one before, in percent: 200 doubles, 150 adds half again.
    /// Integer, so that ceilings are exact (15 s, 22.5 s, 33.75 s).
    pub growth_percent: u32,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retries: 5,
            growth_percent: 200,
        }
    }
}

impl BackoffPolicy {
    /// From `base`, doubling, up to `cap`, with no retries (a policy for pauses).
    pub const fn doubling(base: Duration, cap: Duration) -> BackoffPolicy {
        BackoffPolicy {
            base,
            cap,
            max_retries: 0,
            growth_percent: 200,
        }
    }

    /// The ceilings in turn, without end and without jitter: the pauses of a wait for
    /// something outside the run's hands.
    pub fn ceilings(&self) -> impl Iterator<Item = Duration> + use<> {
        let policy = *self;
        (0u32..).map(move |n| policy.ceiling(n))
    }

    /// The delays before each retry, drawn from `seed`.
    pub fn iter(&self, seed: u64) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 0,
            rng: vtbulk_rng::Rng::new(seed ^ 0x2545_f491_4f6c_dd1d),
        }
    }

    /// The ceiling of the delay before retry `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let (cap, growth) = (
            self.cap.as_nanos(),
            u128::from(self.growth_percent.max(100)),
        );
        let mut ceiling = self.base.as_nanos().min(cap);
        for _ in 0..attempt {
            if ceiling >= cap || growth == 100 {
                break;
            }
            ceiling = (ceiling * growth / 100).min(cap);
        }
        Duration::from_nanos(u64::try_from(ceiling).unwrap_or(u64::MAX))
    }

    /// The delay before retry `attempt` for a random `unit` in `[0, 1)`: full jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The `n`th pause in a row (0-based) for a random `unit` in `[0, 1)`: equal jitter,
    /// between half the ceiling and the ceiling.
    pub fn pause(&self, n: u32, unit: f64) -> Duration {
        self.ceiling(n).mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
    }
}

pub use vtbulk_rng::unit;

/// The delays of one item's retries.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
    rng: vtbulk_rng::Rng,
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt >= self.policy.max_retries {
            return None;
        }
        let u = self.rng.next_f64();
        let delay = self.policy.delay(self.attempt, u);
        self.attempt += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_capped_ceiling_and_stop_after_max_retries() {
        let policy = BackoffPolicy {
            max_retries: 6,
            ..BackoffPolicy::doubling(Duration::from_millis(100), Duration::from_secs(1))
        };
        let delays: Vec<Duration> = policy.iter(7).collect();
        assert_eq!(delays.len(), 6);
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for (d, c) in delays.iter().zip(ceilings) {
            assert!(*d <= Duration::from_millis(c), "{d:?} over {c} ms");
        }
    }

    #[test]
    fn jitter_spreads_delays_and_is_reproducible() {
        let policy = BackoffPolicy::default();
        let firsts: Vec<Duration> = (0..200)
            .map(|s| policy.iter(s).next().unwrap_or_default())
            .collect();
        let min = firsts.iter().min().copied().unwrap_or_default();
        let max = firsts.iter().max().copied().unwrap_or_default();
        assert!(
            min < Duration::from_millis(50) && max > Duration::from_millis(450),
            "{min:?}..{max:?}"
        );
        assert_eq!(
            policy.iter(3).collect::<Vec<_>>(),
            policy.iter(3).collect::<Vec<_>>()
        );
    }

    #[test]
    fn pauses_never_draw_below_half_the_ceiling() {
        let policy = BackoffPolicy::doubling(Duration::from_millis(100), Duration::from_secs(60));
        for n in 0..12 {
            let ceiling = policy.ceiling(n);
            for seed in 0..50 {
                let p = policy.pause(n, unit(seed));
                assert!(p >= ceiling / 2 && p <= ceiling, "pause {n}: {p:?}");
            }
        }
        assert_eq!(
            policy.pause(20, 0.999_999),
            policy.pause(30, 0.999_999),
            "capped"
        );
        assert!(policy.pause(20, 0.0) >= Duration::from_secs(30));
    }

    #[test]
    fn ceilings_grow_by_the_policy_up_to_the_cap_exactly() {
        let doubling = BackoffPolicy::doubling(Duration::from_millis(250), Duration::from_secs(5));
        let waits: Vec<Duration> = doubling.ceilings().take(7).collect();
        let ms = [250, 500, 1000, 2000, 4000, 5000, 5000];
        assert_eq!(waits, ms.map(Duration::from_millis).to_vec());
        let half_again = BackoffPolicy {
            base: Duration::from_secs(15),
            cap: Duration::from_secs(60),
            growth_percent: 150,
            ..BackoffPolicy::default()
        };
        let polls: Vec<Duration> = half_again.ceilings().take(5).collect();
        let ms = [15_000, 22_500, 33_750, 50_625, 60_000];
        assert_eq!(polls, ms.map(Duration::from_millis).to_vec());
        assert_eq!(half_again.ceiling(u32::MAX), Duration::from_secs(60));
        let flat = BackoffPolicy::doubling(Duration::from_millis(100), Duration::from_millis(100));
        assert!(
            flat.ceilings()
                .take(4)
                .all(|d| d == Duration::from_millis(100))
        );
    }

    #[test]
    fn zero_retries_means_no_delays() {
        let policy = BackoffPolicy {
            max_retries: 0,
            ..BackoffPolicy::default()
        };
        assert_eq!(policy.iter(1).next(), None);
    }
}
