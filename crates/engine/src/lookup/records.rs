//! The final records of a lookup, each answer kept before its record is released: journaled
//! (the cache), told to the twins (the same file under another of the inputs' hashes) and to
//! the peers (a fleet); and the records of what made no answer (`not_found`, `error`,
//! `skipped`).

use std::time::Duration;

use vtbulk_ioc::{Named, Unique};
use vtbulk_output::{Record, Source, Status};
use vtbulk_store::Put;
use vtbulk_vt::models::{FileSummary, ObjectSummary};

use super::Lookup;
use crate::cache::{self, Digests};
use crate::convert;
use crate::counters::{bump, bump_by, bump_map};
use crate::decide::HaltCause;
use crate::entries::Target;
use crate::run::lock;

impl Lookup {
    /// Journals an answer (when the cache is on) and waits for the commit.
    pub(super) async fn journal(&self, put: impl FnOnce() -> Option<Put>) {
        if let Some(journal) = &self.keeper.journal {
            let committed = match put() {
                Some(put) => journal.commit(put).await,
                None => false,
            };
            if committed {
                bump(&self.counters.cache_writes);
            } else {
                bump(&self.counters.cache_write_errors);
            }
        }
    }

    /// The record of a found file, journaled first; its twins among the inputs learn it too.
    pub(super) async fn found(
        &self,
        index: usize,
        entry: &Unique,
        mut file: Box<FileSummary>,
    ) -> Record {
        lock(&self.sender.tracker).succeeded();
        let digests = Digests::of(&file);
        self.journal(|| cache::put_found(&file, digests)).await;
        self.keeper.peers.share_file(&file, digests);
        for hash in digests.hashes() {
            if let Some(j) = self.work.seen.position(&hash)
                && j != index
            {
                lock(&self.keeper.twins).insert(j, Box::new((*file).clone()));
            }
        }
        if !self.keeper.raw {
            file.raw = None;
        }
        bump(&self.counters.ok);
        convert::found(self.work.base(Target::File(index, entry)), file)
    }

    /// The record of a twin's answer (no request): a cache hit.
    pub(super) fn twin_record(&self, target: Target<'_>, mut file: Box<FileSummary>) -> Record {
        if !self.keeper.raw {
            file.raw = None;
        }
        bump(&self.counters.ok);
        bump(&self.counters.cache_hits);
        let mut record = convert::found(self.work.base(target), file);
        record.source = Some(Source::Cache);
        record
    }

    /// The record of a found URL, domain or IP address, journaled first.
    pub(super) async fn found_object(
        &self,
        entry: &Named,
        mut object: Box<ObjectSummary>,
    ) -> Record {
        lock(&self.sender.tracker).succeeded();
        let text = self.work.text(entry);
        self.journal(|| Some(cache::put_object(entry.kind(), text, Some(&object))))
            .await;
        let target = Target::Other(entry);
        self.keeper.peers.share_object(target, &object);
        object.body = None;
        if !self.keeper.raw {
            object.raw = None;
        }
        bump(&self.counters.ok);
        convert::object(self.work.base(target), object)
    }

    /// The record of a 404, journaled first.
    pub(super) async fn not_found(&self, target: Target<'_>) -> Record {
        lock(&self.sender.tracker).succeeded();
        self.journal(|| {
            Some(match target {
                Target::File(_, entry) => Put::NotFound(entry.hash()),
                Target::Other(entry) => {
                    cache::put_object(entry.kind(), self.work.text(entry), None)
                }
            })
        })
        .await;
        self.keeper.peers.share_not_found(target);
        bump(&self.counters.not_found);
        Record {
            status: Some(Status::NotFound),
            source: Some(Source::Api),
            ..self.work.base(target)
        }
    }

    /// The record of an entry not looked up because the run stopped.
    pub(crate) fn skipped(&self, target: Target<'_>, cause: HaltCause) -> Record {
        bump(&self.counters.skipped);
        bump_by(&self.counters.skipped_by_reason, cause);
        Record {
            status: Some(Status::Skipped),
            error_code: Some(cause.name().into_owned()),
            ..self.work.base(target)
        }
    }

    /// The record of a URL whose analysis had not completed within `--submit-wait`: an error
    /// with our code `AnalysisPending`; the next run polls the same analysis (kept in the
    /// cache).
    pub(super) fn pending_record(&self, target: Target<'_>, id: &str, waited: Duration) -> Record {
        bump(&self.counters.errors);
        bump_map(&self.counters.errors_by_code, "AnalysisPending");
        Record {
            status: Some(Status::Error),
            source: Some(Source::Api),
            error_code: Some("AnalysisPending".to_owned()),
            error_message: Some(format!(
                "submitted; analysis {id} not completed after {} s (a later run with the cache polls it again)",
                waited.as_secs()
            )),
            ..self.work.base(target)
        }
    }

    /// The record of a failed lookup, with VirusTotal's error code.
    pub(super) fn error_record(&self, target: Target<'_>, err: &vtbulk_vt::Error) -> Record {
        bump(&self.counters.errors);
        bump_map(&self.counters.errors_by_code, err.code());
        Record {
            status: Some(Status::Error),
            source: Some(Source::Api),
            error_code: Some(err.code().to_owned()),
            error_message: Some(err.message().to_owned()),
            ..self.work.base(target)
        }
    }
}
