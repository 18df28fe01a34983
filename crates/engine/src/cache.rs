//! Between VirusTotal's answers and the store: what the store keeps of an answer (`put_*`),
//! and the record a kept answer makes (`hit_record`, `object_hit_record`).
//!
//! Before any lookup, the unique hashes are checked against the store in batches (`prepare`);
//! fresh hits become `source=cache` records at once and never reach the scheduler. Answers
//! are kept through the journal thread (`journal`) before their record is released.

use serde_json::value::RawValue;
use vtbulk_ioc::Hash;
use vtbulk_output::{Record, Source, Status};
use vtbulk_store::{Body, FoundFile, Hit, ObjectHit, ObjectPut, Put, Store, StoreError};
use vtbulk_vt::models::{self, FileSummary, ObjectAttributes, ObjectSummary, SummaryAttributes};

use crate::settings::CacheSettings;
use crate::{convert, packed};

/// Hashes checked against the store per read transaction.
pub(crate) const CHECK_BATCH: usize = 2048;

/// Opens the store (an error here stops the run before anything is spent), for reading only
/// when the settings say so.
pub(crate) fn open(settings: &CacheSettings) -> Result<Store, StoreError> {
    match settings.read_only {
        true => Store::open_read_only(&settings.path),
        false => Store::open(&settings.path),
    }
}

/// A stored file's attributes (digests included), as the record of a lookup would have
/// them; `None` if the stored summary does not decode.
pub fn stored_attributes(file: &FoundFile) -> Option<SummaryAttributes> {
    let hex = |h: Hash| h.to_string();
    packed::unpack(
        &file.summary,
        file.md5.map(Hash::Md5).map(hex),
        file.sha1.map(Hash::Sha1).map(hex),
        hex(Hash::Sha256(file.sha256)),
    )
}

/// The record of a cache hit, built on `base` (input, kind, occurrences, origin).
pub(crate) fn hit_record(base: Record, hit: Hit, raw: bool) -> Option<Record> {
    match hit {
        Hit::Found(file) => {
            let attributes = stored_attributes(&file)?;
            let raw = if raw {
                // The stored answer is the body as received: `{"data": {...}}`.
                let envelope: Envelope = serde_json::from_slice(&file.data?).ok()?;
                Some(envelope.data)
            } else {
                None
            };
            let id = Hash::Sha256(file.sha256).to_string();
            let mut record = convert::stored_file(base, id, attributes, raw);
            record.source = Some(Source::Cache);
            Some(record)
        }
        Hit::NotFound { .. } => Some(Record {
            status: Some(Status::NotFound),
            source: Some(Source::Cache),
            ..base
        }),
    }
}

/// What the store keeps of a URL, domain or IP address answer (`None`: a 404): the
/// record's attributes as JSON and the answer as it came.
pub(crate) fn put_object(
    kind: vtbulk_ioc::Kind,
    canonical: &str,
    object: Option<&ObjectSummary>,
) -> Put {
    Put::Object(ObjectPut {
        kind: kind.code(),
        id: canonical.to_owned(),
        summary: object.and_then(|o| serde_json::to_vec(&o.attributes).ok()),
        body: object.and_then(|o| o.body.as_ref()).map(|body| match body {
            models::Body::Gzip(z) => Body::Gzip(z.clone()),
            models::Body::Json(json) => Body::Json(json.clone()),
        }),
    })
}

/// The record of a stored URL, domain or IP address answer, built on `base`; `None` when
/// the stored attributes do not decode (looked up again).
pub(crate) fn object_hit_record(base: Record, hit: ObjectHit, raw: bool) -> Option<Record> {
    let Some(summary) = &hit.summary else {
        return Some(Record {
            status: Some(Status::NotFound),
            source: Some(Source::Cache),
            ..base
        });
    };
    let attributes: ObjectAttributes = serde_json::from_slice(summary).ok()?;
    let raw = match (&hit.gzip, raw) {
        (Some(z), true) => {
            let mut json = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z[..]), &mut json)
                .ok()?;
            let envelope: Envelope = serde_json::from_slice(&json).ok()?;
            Some(envelope.data)
        }
        _ => None,
    };
    let mut record = convert::stored_object(base, attributes, raw);
    record.source = Some(Source::Cache);
    Some(record)
}

#[derive(serde::Deserialize)]
struct Envelope {
    data: Box<RawValue>,
}

/// A found file's three digests, parsed once per answer from its attributes (the id stands
/// in for a missing SHA-256): both the journal and the twin search need them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Digests {
    pub(crate) sha256: Option<[u8; 32]>,
    pub(crate) md5: Option<[u8; 16]>,
    pub(crate) sha1: Option<[u8; 20]>,
}

fn digest<const N: usize>(hex: Option<&str>) -> Option<[u8; N]> {
    let hash = Hash::parse(hex?).ok()?;
    hash.as_bytes().try_into().ok()
}

impl Digests {
    pub(crate) fn of(file: &FileSummary) -> Digests {
        let a = &file.attributes;
        Digests {
            sha256: digest(a.sha256.as_deref().or(Some(&file.id))),
            md5: digest(a.md5.as_deref()),
            sha1: digest(a.sha1.as_deref()),
        }
    }

    /// The digests as hashes.
    pub(crate) fn hashes(self) -> impl Iterator<Item = Hash> {
        [
            self.md5.map(Hash::Md5),
            self.sha1.map(Hash::Sha1),
            self.sha256.map(Hash::Sha256),
        ]
        .into_iter()
        .flatten()
    }
}

/// What the store keeps of a found answer: the three digests, the summary and `data`.
pub(crate) fn put_found(file: &FileSummary, digests: Digests) -> Option<Put> {
    Some(Put::Found {
        sha256: digests.sha256?,
        md5: digests.md5,
        sha1: digests.sha1,
        summary: {
            let mut summary = Vec::with_capacity(160);
            packed::pack(&file.attributes, &mut summary);
            summary
        },
        body: file.body.as_ref().map(|body| match body {
            models::Body::Gzip(z) => Body::Gzip(z.clone()),
            models::Body::Json(json) => Body::Json(json.clone()),
        }),
    })
}
