//! The check just before a lookup, for processes sharing one cache file: what another
//! process answered during this run is taken from the cache, and what it is looking up now
//! is waited for, not paid twice.
//!
//! A run checks the cache once for its whole list before the first lookup; a second run
//! started on an overlapping list a minute later would otherwise pay again for every IOC the
//! first had not yet reached or answered. So each lookup first asks the store (through the
//! journal thread, batched with its commits; see `vtbulk_store::claims` for the steps): a
//! fresh answer makes the record (`source=cache`, counted as `shared_answers` and as a cache
//! hit); a lookup claimed by another live process sends the entry back to the queue
//! ([`Before::Busy`]: the worker takes other work and comes back to it); otherwise the lookup
//! is this process's until it is over. A fleet (`--coordinator`) has Redis's claims instead.

use vtbulk_store::{Claim, ClaimKey};

use crate::cache;
use crate::counters::bump;
use crate::lookup::{Shared, Target};

/// What the store said before this process's own request.
pub(crate) enum Before {
    /// Another process's answer: the record, no request.
    Answered(Box<vtbulk_output::Record>),
    /// Another process's answer, and `--only-new` leaves what the cache knows out.
    Known,
    /// Another process is looking it up now.
    Busy,
    /// This process's to look up (and to give up once looked up, [`release`]).
    Claimed(ClaimKey),
    /// No cache, a fleet, or the store could not say: look it up.
    Alone,
}

/// The claim's name for `target`.
fn key(shared: &Shared, target: Target<'_>) -> ClaimKey {
    match target {
        Target::File(_, entry) => ClaimKey::File(entry.hash()),
        Target::Other(entry) => ClaimKey::Object {
            kind: entry.kind().code(),
            id: shared.others.text(entry).to_owned(),
        },
    }
}

/// Asks the cache for each of `targets` once more (one message, one transaction), claiming
/// the lookups nobody has answered.
pub(crate) async fn before(shared: &Shared, targets: &[Target<'_>]) -> Vec<Before> {
    let alone = || targets.iter().map(|_| Before::Alone).collect();
    let (Some(journal), None, None) = (&shared.journal, &shared.fleet, shared.halt.get()) else {
        return alone();
    };
    let keys: Vec<ClaimKey> = targets.iter().map(|&t| key(shared, t)).collect();
    let Some(answers) = cache::claim(journal, keys.clone()).await else {
        return alone();
    };
    keys.into_iter()
        .zip(answers)
        .zip(targets)
        .map(|((key, claim), &target)| decide(shared, target, key, claim))
        .collect()
}

fn decide(shared: &Shared, target: Target<'_>, key: ClaimKey, claim: Claim) -> Before {
    let record = match claim {
        Claim::Mine => return Before::Claimed(key),
        Claim::Busy => return Before::Busy,
        _ if shared.only_new => {
            bump(&shared.counters.already_seen);
            return Before::Known;
        }
        Claim::File(hit) => cache::hit_record(shared.base(target), hit, shared.raw),
        Claim::Object(hit) => cache::object_hit_record(shared.base(target), hit, shared.raw),
    };
    // Undecodable (another version's summary): looked up, unclaimed.
    let Some(record) = record else {
        return Before::Alone;
    };
    shared.counters.cache_answered(record.status);
    bump(&shared.counters.shared_answers);
    Before::Answered(Box::new(record))
}

/// Gives the claim up: the lookup is over (its answer, if any, journaled first).
pub(crate) fn release(shared: &Shared, key: ClaimKey) {
    if let Some(journal) = &shared.journal {
        cache::release(journal, key);
    }
}
