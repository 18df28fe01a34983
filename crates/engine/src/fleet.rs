//! This process's part in a fleet sharing one key through Redis (`--coordinator`): the
//! fleet's grant for every request, the heartbeat that lists it, and `vtbulk fleet`'s view.
//!
//! Every request also takes the fleet's turn (spaced one interval from the last departure of
//! any process, charged to the fleet's hour/day/month counters) and gives it back the moment
//! it leaves; at high rates it takes a slot of the process's lease instead. Nothing leaves
//! without the fleet's grant: when Redis stops answering, requests wait (pauses from one
//! backoff policy) until it answers again or the grace runs out, and then the run halts as a
//! whole. The fleet's shared answers (what another process looked up) are `peers`' concern.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use vtbulk_coord::{Allowances, Coordinator, Seeds};
use vtbulk_quota::{BackoffPolicy, Exhausted};

use crate::counters::Counters;
use crate::decide::HaltCause;
use crate::keyquota::KeyQuota;
use crate::run::{EngineError, Halt, lock};
use crate::settings::Settings;

/// The pauses between asks while Redis does not answer: a quarter second, doubling to 5 s.
const LOST: BackoffPolicy =
    BackoffPolicy::doubling(Duration::from_millis(250), Duration::from_secs(5));

/// How long leaving the fleet may wait for Redis at the end of a run.
const LEAVE_WITHIN: Duration = Duration::from_millis(300);

/// This process's part in the fleet.
#[derive(Clone, Debug)]
pub(crate) struct Fleet {
    pub(crate) coord: Coordinator,
    allow: Allowances,
    seeds: Seeds,
    /// The fleet's spacing, margin included (zero: no rate to keep): a turn per request, or
    /// leased slots below [`vtbulk_coord::LEASE_BELOW`] (then the local pacer is off).
    pub(crate) interval: Duration,
    /// How long Redis may stay lost before the run stops.
    grace: Duration,
    /// Since when Redis has been failing (`None`: it answered last time).
    lost_since: Arc<Mutex<Option<Instant>>>,
}

/// What a request holds of the fleet until it leaves: the fleet's turn, or a slot of this
/// process's lease.
#[derive(Debug)]
pub(crate) enum Hold {
    Turn(vtbulk_coord::Turn),
    Slot(vtbulk_coord::Slot),
}

/// A fleet turn or slot to give back: at the request's departure, or (when it never left)
/// after.
pub(crate) type HeldTurn = Arc<Mutex<Option<Hold>>>;

/// The fleet's answer to a request's ask.
pub(crate) enum Granted {
    /// Go: holding this (nothing to hold when there is no rate to keep).
    Go(Option<Hold>),
    /// A window of the fleet's books is spent.
    Spent(Exhausted),
    /// The run halted (or Redis stayed lost past the grace, which halts it): no request.
    Halted,
}

impl Fleet {
    /// This process's part: the key's allowances less the reserve (the fleet's counters in
    /// Redis start from VirusTotal's `used`, read live by this process).
    pub(crate) fn new(
        coord: Coordinator,
        settings: &Settings,
        quota: Option<&KeyQuota>,
        interval: Duration,
    ) -> Fleet {
        let caps = quota.map_or(settings.scheduler.caps, |q| q.caps);
        let reserve = settings.scheduler.reserve;
        let allow = |cap: Option<u64>| cap.map(|c| c.saturating_sub(reserve.of(c)));
        let used = quota.map(|q| q.used).unwrap_or_default();
        Fleet {
            coord,
            allow: Allowances {
                hour: allow(caps.hourly),
                day: allow(caps.daily),
                month: allow(caps.monthly),
            },
            seeds: Seeds {
                hour: used.hour,
                day: used.day,
                month: used.month,
            },
            interval,
            grace: settings.coordinator_grace,
            lost_since: Arc::default(),
        }
    }

    /// The fleet's grant for one request, asked again while Redis does not answer; a stop
    /// (`woken`) or a halt ends the wait.
    pub(crate) async fn grant(
        &self,
        halt: &Halt,
        mut woken: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Granted {
        let mut pauses = LOST.ceilings();
        loop {
            // Lost for the whole grace already (another worker found it so): the run stops
            // without one more call to Redis.
            let lost_for = lock(&self.lost_since).map(|since| since.elapsed());
            if lost_for.is_some_and(|lost| lost >= self.grace) {
                halt.set_because(HaltCause::CoordinatorLost, "no answer");
                return Granted::Halted;
            }
            // An ask may take no longer than the grace left: a Redis that hangs (stopped, a
            // dead link) is lost as surely as one that refuses.
            let limit = self.grace.saturating_sub(lost_for.unwrap_or_default());
            let started = Instant::now();
            let asked = tokio::select! {
                asked = tokio::time::timeout(limit, self.ask()) => asked.unwrap_or_else(|_| {
                    Err(vtbulk_coord::CoordError::Unreachable(format!(
                        "no answer within {limit:?}"
                    )))
                }),
                () = woken.as_mut() => return Granted::Halted,
            };
            let error = match asked {
                Ok(Ok(hold)) => {
                    lock(&self.lost_since).take();
                    return Granted::Go(hold);
                }
                Ok(Err((window, resets_at))) => {
                    return Granted::Spent(Exhausted {
                        window: window_of(window),
                        resets_at,
                    });
                }
                Err(e) => e,
            };
            // Blind: nothing leaves without the fleet's grant. Ask again (the connection
            // reconnects itself) until the grace runs out, then stop.
            // Lost since the failed ask was sent: Redis was last known well then.
            let lost = lock(&self.lost_since).get_or_insert(started).elapsed();
            if lost >= self.grace {
                halt.set_because(HaltCause::CoordinatorLost, error);
                return Granted::Halted;
            }
            let pause = pauses.next().unwrap_or(LOST.cap);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = woken.as_mut() => return Granted::Halted,
            }
        }
    }

    /// One ask: a turn or a leased slot to give back at departure, or a charge (`None`), or
    /// the spent window.
    async fn ask(
        &self,
    ) -> Result<Result<Option<Hold>, (vtbulk_coord::Window, i64)>, vtbulk_coord::CoordError> {
        let coord = &self.coord;
        if self.interval.is_zero() {
            // No rate to keep (`--rate unlimited`): no turn, only the fleet's books.
            Ok(coord.charge(self.allow, self.seeds).await?.map(|()| None))
        } else if vtbulk_coord::lease_size(self.interval) > 1 {
            Ok(coord
                .acquire_slot(self.interval, self.allow, self.seeds)
                .await?
                .map(|slot| Some(Hold::Slot(slot))))
        } else {
            Ok(coord
                .acquire_turn(self.interval, self.allow, self.seeds)
                .await?
                .map(|turn| Some(Hold::Turn(turn))))
        }
    }

    /// Gives the hold back, its request having left at `at` (a turn through a task: the
    /// caller does not wait for Redis; a slot at once, locally).
    pub(crate) fn give_back(&self, held: &HeldTurn, at: Instant) {
        match lock(held).take() {
            Some(Hold::Turn(turn)) => {
                let (coord, interval) = (self.coord.clone(), self.interval);
                tokio::spawn(async move {
                    // A failure leaves the turn to its lease: the fleet waits, it never
                    // overspends.
                    let _ = coord.departed(turn, at, interval).await;
                });
            }
            Some(Hold::Slot(slot)) => slot.departed(at),
            None => {}
        }
    }

    /// The server handled a request later than its spacing assumed: the fleet's next slot
    /// moves back by `by` too, not only ours.
    pub(crate) fn push(&self, seq: i64, by: Duration) {
        let coord = self.coord.clone();
        tokio::spawn(async move {
            let _ = coord.push(seq, by).await;
        });
    }

    /// A 429 spent nothing: off the fleet's books too.
    pub(crate) fn refund(&self) {
        let coord = self.coord.clone();
        tokio::spawn(async move {
            let _ = coord.refund().await;
        });
    }
}

/// The quota crate's window for the coordinator's.
fn window_of(window: vtbulk_coord::Window) -> vtbulk_quota::Window {
    match window {
        vtbulk_coord::Window::Hour => vtbulk_quota::Window::Hour,
        vtbulk_coord::Window::Day => vtbulk_quota::Window::Day,
        vtbulk_coord::Window::Month => vtbulk_quota::Window::Month,
    }
}

/// `vtbulk fleet`: the processes sharing this key through the coordinator, and what the fleet
/// spent in the current UTC hour, day and month (Redis's books).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FleetView {
    /// What the fleet spent.
    pub spent: vtbulk_coord::Spent,
    /// The live processes (a heartbeat in the last 5 s).
    pub members: Vec<vtbulk_coord::Member>,
}

/// Reads the fleet's view (needs `--coordinator`).
pub async fn fleet_view(
    settings: &Settings,
    client: &vtbulk_vt::Client,
) -> Result<FleetView, EngineError> {
    let url = settings.coordinator.as_ref().ok_or_else(|| {
        vtbulk_coord::CoordError::Url(
            "no coordinator: give --coordinator redis://... (or VTBULK_REDIS_URL)".into(),
        )
    })?;
    let coord =
        Coordinator::connect(url, &client.key_fingerprint(), Duration::from_secs(5)).await?;
    Ok(FleetView {
        spent: coord.spent().await?,
        members: coord.members().await?,
    })
}

/// This host's name, for the fleet's list of processes.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The process's membership: a heartbeat task, until [`Membership::leave`].
pub(crate) struct Membership {
    task: tokio::task::JoinHandle<()>,
    me: vtbulk_coord::Member,
}

impl Membership {
    /// Says every second that this process is in the fleet, with its requests in all and in
    /// the last minute and its lease (`vtbulk fleet` lists them); the entry lapses 5 s after
    /// the last, and with it the claims this process holds. The first is said before any
    /// claim is made.
    pub(crate) async fn join(fleet: &Fleet, counters: Arc<Counters>) -> Membership {
        let me = vtbulk_coord::Member {
            host: host_name(),
            pid: std::process::id(),
            started: unix_now(),
            ..vtbulk_coord::Member::default()
        };
        let _ = fleet.coord.heartbeat(&me).await;
        let coord = fleet.coord.clone();
        let mut beat = me.clone();
        let task = tokio::spawn(async move {
            let mut history = std::collections::VecDeque::new();
            loop {
                let requests = Counters::get(&counters.requests);
                let now = Instant::now();
                history.push_back((now, requests));
                while history
                    .front()
                    .is_some_and(|&(t, _)| now.duration_since(t) > Duration::from_secs(60))
                {
                    history.pop_front();
                }
                beat.requests = requests;
                beat.leased = coord.leased();
                beat.last_minute = requests - history.front().map_or(requests, |&(_, n)| n);
                beat.seen = unix_now();
                let _ = coord.heartbeat(&beat).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Membership { task, me }
    }

    /// Leaves the fleet: what is left of a lease goes back to the fleet (and off its books).
    /// A Redis that does not answer gets 300 ms: the lease's slots expire by themselves
    /// and the membership lapses, and a stop must not wait for Redis's response timeouts.
    pub(crate) async fn leave(self, fleet: &Fleet) {
        self.task.abort();
        let goodbye = async {
            let _ = fleet.coord.end_lease().await;
            let _ = fleet.coord.leave(&self.me).await;
        };
        let _ = tokio::time::timeout(LEAVE_WITHIN, goodbye).await;
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
