//! One attempt, in the order that lets the request leave the moment it may: a connection
//! with nothing left to wait for, then the scheduler's grant (and the fleet's), then the
//! send, the grant going with the request to be released at its departure; then what the
//! answer tells the pacer about when the server handled it.

use std::sync::{Arc, OnceLock};

use tokio::time::Instant;
use vtbulk_quota::Exhausted;
use vtbulk_vt::models::{Analysis, FileSummary, ObjectSummary};
use vtbulk_vt::{FileLookup, Ready};

use super::{Lookup, Step, Woken};
use crate::counters::bump;
use crate::entries::Target;
use crate::fleet::{Granted, HeldTurn, Hold};

/// What a request answered.
pub(super) enum Answer {
    File(Box<FileSummary>),
    Object(Box<ObjectSummary>),
    NotFound,
    /// `POST /urls`: the analysis to poll.
    Submitted(String),
    /// `GET /analyses/{id}`.
    Analysis(Box<Analysis>),
}

/// How one attempt went.
pub(super) enum Attempt {
    /// A connection failed (no request left: `None`), or the request was sent in the gate
    /// cycle given.
    Sent(Result<Answer, vtbulk_vt::Error>, Option<u64>),
    /// The run was stopped while waiting.
    Woken,
    /// A calendar budget is spent.
    Exhausted(Exhausted),
}

impl Lookup {
    /// One attempt at `step` of `target`.
    pub(super) async fn attempt(
        &self,
        target: Target<'_>,
        step: &Step,
        mut woken: Woken<'_, '_>,
    ) -> Attempt {
        let sender = &self.sender;
        let ready = tokio::select! {
            ready = sender.client.ready() => ready,
            () = woken.as_mut() => return Attempt::Woken,
        };
        let ready = match ready {
            Ok(ready) => ready,
            Err(e) => return Attempt::Sent(Err(e), None),
        };
        let grant = tokio::select! {
            acquired = sender.scheduler.acquire() => match acquired {
                Ok(grant) => grant,
                Err(exhausted) => return Attempt::Exhausted(exhausted),
            },
            () = woken.as_mut() => return Attempt::Woken,
        };
        if self.halt.check().is_some() {
            return Attempt::Woken;
        }
        // Only a fleet has a turn to hold: a lone process allocates nothing here.
        let held: Option<HeldTurn> = match &sender.fleet {
            None => None,
            Some(fleet) => match fleet.grant(&self.halt, woken.as_mut()).await {
                Granted::Go(hold) => Some(Arc::new(std::sync::Mutex::new(hold))),
                Granted::Spent(exhausted) => return Attempt::Exhausted(exhausted),
                Granted::Halted => return Attempt::Woken,
            },
        };
        let fleet_seq = held.as_ref().and_then(|h| match &*crate::run::lock(h) {
            Some(Hold::Turn(turn)) => Some(turn.seq()),
            _ => None,
        });
        let cycle = grant.cycle();
        bump(&self.counters.requests);
        let sent = Instant::now();
        let departure = Arc::new(OnceLock::new());
        let left = departure.clone();
        let arrival = vtbulk_vt::Arrival::new();
        let fleet_turn = sender.fleet.clone().zip(held.clone());
        let departed = move |at| {
            let _ = left.set(grant.departed(at));
            if let Some((fleet, held)) = &fleet_turn {
                fleet.give_back(held, at);
            }
        };
        let send = self.send(ready.with_arrival(&arrival), target, step, departed);
        tokio::pin!(send);
        let result = tokio::select! {
            result = &mut send => Some(result),
            () = woken.as_mut() => {
                // Stopped with this request in flight: its answer is waited for a moment
                // (it was spent), not for a silent server's whole timeout.
                let grace = in_flight_grace(self.halt.check());
                tokio::time::timeout(grace, &mut send).await.ok()
            }
        };
        let Some(result) = result else {
            bump(&self.counters.abandoned);
            if let (Some(fleet), Some(held)) = (&sender.fleet, &held) {
                fleet.give_back(held, Instant::now());
            }
            return Attempt::Woken;
        };
        let now = Instant::now();
        sender.note_latency(now - sent);
        if let (Some(fleet), Some(held)) = (&sender.fleet, &held) {
            // Never sent (the connection failed first): the turn goes back all the same.
            fleet.give_back(held, Instant::now());
        }
        // The server answered: how long its first bytes took to arrive tells the pacer when
        // the server handled it (the kernel's arrival stamp: not when this process got round
        // to reading them).
        let answered = result
            .as_ref()
            .map_or_else(|e| e.status().is_some(), |_| true);
        if let (Some(&departure), true) = (departure.get(), answered) {
            let at = arrival.get().unwrap_or(now);
            let push = sender.scheduler.answered(departure, at);
            // The server handled it late: the fleet's next slot moves back too, not only ours.
            if let (Some(fleet), Some(seq), false) = (&sender.fleet, fleet_seq, push.is_zero()) {
                fleet.push(seq, push);
            }
        }
        Attempt::Sent(result, Some(cycle))
    }

    /// The request of `step` for `target`, sent on `ready`; `departed` is called as it leaves.
    async fn send(
        &self,
        ready: Ready<'_>,
        target: Target<'_>,
        step: &Step,
        departed: impl FnOnce(Instant) + Send + 'static,
    ) -> Result<Answer, vtbulk_vt::Error> {
        match (target, step) {
            (Target::Other(entry), Step::Submit) => ready
                .submit_url(self.work.text(entry), departed)
                .await
                .map(Answer::Submitted),
            (_, Step::Poll { id, .. }) => ready
                .get_analysis(id, departed)
                .await
                .map(|a| Answer::Analysis(Box::new(a))),
            (Target::File(_, entry), _) => ready
                .get_file_summary(&entry.hash(), departed)
                .await
                .map(|answer| match answer {
                    FileLookup::Found(file) => Answer::File(file),
                    FileLookup::NotFound => Answer::NotFound,
                }),
            (Target::Other(entry), _) => ready
                .get_object_summary(entry.kind(), self.work.text(entry), departed)
                .await
                .map(|answer| match answer {
                    FileLookup::Found(object) => Answer::Object(object),
                    FileLookup::NotFound => Answer::NotFound,
                }),
        }
    }
}

/// How long a request in flight when the run stops may still take to answer: under a second
/// for a signal (the user is waiting), a few seconds for a stop from within (a quota spent,
/// an outage), where an answer on its way is worth the wait. Past it the request is
/// abandoned and its item `skipped` like the rest (a re-run looks it up again).
fn in_flight_grace(cause: Option<crate::decide::HaltCause>) -> std::time::Duration {
    match cause {
        Some(crate::decide::HaltCause::Interrupted) => std::time::Duration::from_millis(600),
        _ => std::time::Duration::from_secs(4),
    }
}
