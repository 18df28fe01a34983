//! The key and its budget during a run: a key rotated at its source is taken up on a 401,
//! an unexpected QuotaExceededError re-reads the key's live quotas, and a spent window is
//! slept through when the run was asked to (`--wait-for-reset`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use vtbulk_quota::Exhausted;

use super::{Lookup, Woken};
use crate::counters::bump;
use crate::keyquota;
use crate::run::lock;
use crate::settings::KeyReload;

/// How long after a window's reset the run goes on: our clock and VirusTotal's need not agree
/// to the second, and a request a moment early would meet the old window.
const RESET_MARGIN: Duration = Duration::from_secs(5);

/// The key's state during a run.
pub(crate) struct KeyBudget {
    /// Reads the key again (a file, a command) when VirusTotal refuses it.
    reload: Option<KeyReload>,
    /// How many times the key was rotated in this run.
    generation: AtomicU64,
    /// One reader of the key at a time.
    rotation: tokio::sync::Mutex<()>,
    /// The budget was read live: an unexpected QuotaExceededError re-reads it.
    pub(super) quota_live: bool,
    /// When it was last re-read (at most once a minute).
    last_resync: Mutex<Option<Instant>>,
    /// Sleep through an exhausted window instead of stopping.
    pub(super) wait_for_reset: bool,
}

impl KeyBudget {
    pub(crate) fn new(reload: Option<KeyReload>, quota_live: bool, wait_for_reset: bool) -> Self {
        KeyBudget {
            reload,
            generation: AtomicU64::new(0),
            rotation: tokio::sync::Mutex::new(()),
            quota_live,
            last_resync: Mutex::new(None),
            wait_for_reset,
        }
    }

    /// The key's generation now (requests remember which key they went with).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl Lookup {
    /// VirusTotal refused the key a request was sent with (`generation`): true when the
    /// request should go again, because another worker rotated the key since, or because the
    /// key's source (a file, a command) now holds another key, taken up from here on. A key
    /// read again that is the one refused is not: the run stops as before.
    pub(super) async fn rotated(&self, generation: u64) -> bool {
        let key = &self.key;
        let Some(reload) = &key.reload else {
            return false;
        };
        let _one = key.rotation.lock().await;
        if key.generation() != generation {
            return true;
        }
        let read = reload.0.clone();
        let Ok(Ok(new)) = tokio::task::spawn_blocking(move || read()).await else {
            return false;
        };
        let client = &self.sender.client;
        if client.uses(&new) || client.set_key(new).is_err() {
            return false;
        }
        key.generation.fetch_add(1, Ordering::AcqRel);
        bump(&self.counters.key_rotations);
        true
    }

    /// Re-reads the key's quotas after a QuotaExceededError our books did not expect (at
    /// most once a minute). The request is paced like any other (VirusTotal counts "requests
    /// of any nature"), so the re-read cannot itself be refused by the per-minute limit; a
    /// stop while it waits (for the gate, the pacer) ends it at once.
    pub(super) async fn resync(&self, woken: Woken<'_, '_>) {
        if !self.key.quota_live {
            return;
        }
        {
            let mut last = lock(&self.key.last_resync);
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return;
            }
            *last = Some(Instant::now());
        }
        let user = tokio::select! {
            user = self.read_user() => user,
            () = woken => None,
        };
        let scheduler = &self.sender.scheduler;
        if let Some(user) = user
            && let Some((_, usage)) =
                keyquota::from_user(&user, Default::default(), scheduler.clock().now())
        {
            scheduler.resync(usage);
            bump(&self.counters.quota_resyncs);
        }
    }

    /// `GET /users/{key}`, paced like a lookup (and taking the fleet's turn, charged to no
    /// window).
    async fn read_user(&self) -> Option<vtbulk_vt::models::UserObject> {
        let sender = &self.sender;
        let ready = sender.client.ready().await.ok()?;
        let grant = sender.scheduler.acquire_rate().await;
        let interval = sender.fleet.as_ref().map_or(Duration::ZERO, |f| f.interval);
        let turn = match &sender.fleet {
            Some(fleet) => Some(fleet.coord.acquire_free_turn(interval).await.ok()?),
            None => None,
        };
        let departure = std::sync::Arc::new(std::sync::OnceLock::new());
        let left = departure.clone();
        let arrival = vtbulk_vt::Arrival::new();
        let user = ready
            .with_arrival(&arrival)
            .get_own_user(move |at| {
                let _ = left.set(grant.departed(at));
            })
            .await;
        if let (Some(fleet), Some(turn)) = (&sender.fleet, turn) {
            let _ = fleet.coord.departed(turn, Instant::now(), interval).await;
        }
        if let Some(&departure) = departure.get() {
            let at = arrival.get().unwrap_or_else(Instant::now);
            sender.scheduler.answered(departure, at);
        }
        user.ok()
    }

    /// Sleeps until `exhausted` resets, plus [`RESET_MARGIN`] (or until the run is stopped),
    /// showing when in the counters; then, when the budget was read live, reads it again:
    /// other users of the key may have spent in the new window already.
    pub(super) async fn wait_for_reset(&self, exhausted: Exhausted, mut woken: Woken<'_, '_>) {
        let clock = self.sender.scheduler.clock();
        let wait = Duration::from_millis(
            exhausted
                .resets_at
                .saturating_mul(1000)
                .saturating_sub(clock.now_ms())
                .max(0) as u64,
        ) + RESET_MARGIN;
        self.counters
            .waiting_until
            .store(exhausted.resets_at, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = woken.as_mut() => {}
        }
        self.counters.waiting_until.store(0, Ordering::Relaxed);
        self.resync(woken).await;
    }
}
