//! The key's budget for a run, and the scheduler that enforces it: one `GET /users` unless
//! offline (or nothing needs looking up), the scheduler sized from it, and the first lookup
//! spaced from that request's answer ("requests of any nature" count against the minute).

use std::time::Duration;

use vtbulk_coord::Coordinator;
use vtbulk_quota::{Rate, Scheduler, SchedulerConfig};
use vtbulk_store::Store;
use vtbulk_vt::Client;

use crate::keyquota::{self, KeyQuota};
use crate::run::Halt;
use crate::settings::Settings;

/// The key's budget for this run, and the scheduler that enforces it.
pub(crate) struct Budget {
    /// Read (live, or from the ledger); `None` when nothing needs looking up or the key was
    /// refused.
    pub(crate) quota: Option<KeyQuota>,
    /// VirusTotal refused the key when its quotas were read.
    pub(crate) refused: Option<vtbulk_vt::Error>,
    /// The rate scheduled at (`None`: unlimited).
    pub(crate) rate: Option<Rate>,
    /// The fleet's spacing (margin included; zero: no rate to keep).
    pub(crate) fleet_interval: Duration,
}

impl Budget {
    /// Reads the key's budget (`store` holds the ledger; `coord`, a fleet's turn for the
    /// read) and sizes the scheduler from it.
    pub(crate) async fn read(
        settings: &Settings,
        client: &Client,
        store: Option<&mut Store>,
        nothing_to_do: bool,
        coord: Option<&Coordinator>,
        halt: &Halt,
    ) -> (Budget, Scheduler) {
        let has_store = store.is_some();
        // `GET /users` takes the fleet's turn too ("requests of any nature"), charged to no
        // window, and gives it back once answered (its departure was before that).
        let interval = settings
            .scheduler
            .rate
            .map_or(Duration::ZERO, |r| r.interval());
        let users_turn = match coord {
            Some(c) if !nothing_to_do && !settings.quota.offline => {
                c.acquire_free_turn(interval).await.ok()
            }
            _ => None,
        };
        let (quota, refused) = if nothing_to_do {
            (None, None)
        } else {
            match read_quota(settings, client, store, halt).await {
                Ok(quota) => (Some(quota), None),
                Err(keyquota::Refused(e)) => (None, Some(e)),
            }
        };
        if let (Some(c), Some(turn)) = (coord, users_turn) {
            // Answered, so it left before now: the fleet's next slot errs long, never short.
            let _ = c
                .departed(turn, tokio::time::Instant::now(), interval)
                .await;
        }
        let config = SchedulerConfig {
            // The ledger (in the store) drains what is charged.
            keep_spend: has_store,
            ..quota
                .as_ref()
                .map_or(settings.scheduler, |q| q.schedule(settings.scheduler))
        };
        let fleet_interval = config.rate.map_or(Duration::ZERO, |r| {
            r.interval().mul_f64(1.0 + config.safety_margin.max(0.0))
        });
        // A fleet that leases its slots (high rates) is paced by them: the slots come one
        // interval apart on Redis's clock, each waited for precisely in turn, which a local
        // pacer spacing each departure from the last would only slow down (a timer tick late
        // each time: half the rate at 1 ms) or, on top of the slots, jostle. Its windows and
        // 429 gate stay.
        let leased = coord.is_some() && vtbulk_coord::lease_size(fleet_interval) > 1;
        let scheduler = Scheduler::new(SchedulerConfig {
            rate: if leased { None } else { config.rate },
            ..config
        });
        if let Some(at) = quota.as_ref().and_then(|q| q.handled_by) {
            // The users request counts against the per-minute rate ("requests of any nature"):
            // the first lookup is spaced from its answer, by when the server had handled it.
            scheduler.note_departure(at).await;
        }
        let budget = Budget {
            quota,
            refused,
            rate: config.rate,
            fleet_interval,
        };
        (budget, scheduler)
    }

    /// Whether the budget was read live (an unexpected QuotaExceededError re-reads it).
    pub(crate) fn live(&self) -> bool {
        self.quota
            .as_ref()
            .is_some_and(|q| q.source == keyquota::QuotaSource::Live)
    }
}

/// The key's quota (`keyquota::read`); a stop while `GET /users` waits (a silent server) gives
/// it up for the offline reading, so the run ends now instead of after the request timeout.
async fn read_quota(
    settings: &Settings,
    client: &Client,
    mut store: Option<&mut Store>,
    halt: &Halt,
) -> Result<KeyQuota, keyquota::Refused> {
    let (caps, clock) = (settings.scheduler.caps, settings.scheduler.clock);
    let woken = halt.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    if halt.check().is_none() {
        let live = keyquota::read(
            client,
            caps,
            settings.quota.offline,
            store.as_deref_mut(),
            clock,
        );
        tokio::select! {
            read = live => return read,
            () = woken => {}
        }
    }
    keyquota::read(client, caps, true, store, clock).await
}
