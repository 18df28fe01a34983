//! The run's unique IOCs, as the stages after reading see them: one numbering for hashes and
//! for URLs, domains and IP addresses ([`Work::target`]), and the record every outcome of an
//! entry starts from ([`Work::base`]).
//!
//! Built once by `prepare` and shared read-only (an `Arc`) by every stage after it: the
//! workers, the peers, the lookups and the skipped tail.

use std::sync::Arc;

use vtbulk_ioc::{Named, Names, Origin, Seen, Unique};
use vtbulk_output::Record;

/// The unique entries of a run, and the names of the inputs they came from.
pub(crate) struct Work {
    /// Every unique hash, in first-seen order.
    pub(crate) seen: Arc<Seen>,
    /// Every unique URL, domain and IP address, in first-seen order.
    pub(crate) others: Arc<Names>,
    /// The inputs' display names (`stdin` for `-`), indexed like the items' origins.
    pub(crate) names: Vec<String>,
}

/// What one entry of the work list is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    /// A hash: its index in the dedup set, and its entry.
    File(usize, &'a Unique),
    /// A URL, domain or IP address.
    Other(&'a Named),
}

impl Work {
    /// How many entries there are (hashes and the rest).
    pub(crate) fn len(&self) -> usize {
        self.seen.len() + self.others.len()
    }

    /// The entry at `index` of the work list's numbering (hashes first, then the rest).
    pub(crate) fn target(&self, index: usize) -> Target<'_> {
        let files = self.seen.entries();
        match files.get(index) {
            Some(entry) => Target::File(index, entry),
            None => Target::Other(&self.others.entries()[index - files.len()]),
        }
    }

    /// The canonical text of a URL, domain or IP address.
    pub(crate) fn text(&self, entry: &Named) -> &str {
        self.others.text(entry)
    }

    /// The record every outcome of `target` starts from.
    pub(crate) fn base(&self, target: Target<'_>) -> Record {
        match target {
            Target::File(index, entry) => file_base(&self.names, &self.seen, index, entry),
            Target::Other(entry) => other_base(&self.names, &self.others, entry),
        }
    }
}

/// `name:line` of an origin.
pub(crate) fn origin_text(names: &[String], origin: Origin) -> String {
    let name = names.get(origin.input as usize).map_or("?", String::as_str);
    format!("{name}:{}", origin.line)
}

/// The record every outcome of a URL, domain or IP address starts from.
pub(crate) fn other_base(names: &[String], others: &Names, entry: &Named) -> Record {
    Record {
        input: others.text(entry).to_owned(),
        ioc_kind: Some(entry.kind()),
        occurrences: entry.count,
        first_origin: origin_text(names, entry.first()),
        ..Record::default()
    }
}

/// The record every outcome of a hash starts from: entry `index` of `seen`.
pub(crate) fn file_base(names: &[String], seen: &Seen, index: usize, entry: &Unique) -> Record {
    let hash = entry.hash();
    Record {
        input: hash.to_string(),
        kind: Some(hash.kind()),
        occurrences: entry.count(),
        first_origin: origin_text(names, seen.first(index)),
        ..Record::default()
    }
}
