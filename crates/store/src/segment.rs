//! Answer segments: the journal and the body store, as plain append-only files.
//!
//! Keeping an answer must cost a few microseconds, or the cache holds the pipeline back
//! (measured: journaling through SQLite, a transaction per gathered batch, cost 40-50% of a
//! zero-latency run). So each writing process appends to its own segment, two files in the
//! `<cache>-answers/` directory:
//!
//! - `<name>.bodies`: VirusTotal's answers, still gzipped as they came off the wire (nothing
//!   to compress), or LZ4-compressed when the server sent plain JSON. Written once, read only
//!   when a run asks for the whole answer (`--raw`, `cache get`, `cache export`).
//! - `<name>.log`: one checksummed entry per answer (digests, time, the record's summary and
//!   where its body lies), which [`crate::Store::compact`] imports into SQLite's indexed
//!   tables in bulk and then deletes.
//!
//! A batch is two positioned writes (bodies first, then the entries that point at them):
//! once they return, the answers survive the process being killed. A torn entry (killed
//! mid-write) fails its checksum and ends the import of that log. The writer holds an
//! exclusive `flock` on its log for its whole life: a log another process can lock belongs to
//! a dead writer and, once imported, is sealed and removed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vtbulk_ioc::Hash;

use crate::answer::Put;

/// How a body is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Encoding {
    /// Gzip, as received.
    Gzip = 1,
    /// LZ4 (block, size prepended) of plain JSON.
    Lz4 = 2,
}

impl Encoding {
    pub(crate) fn from_i64(v: i64) -> Option<Encoding> {
        match v {
            1 => Some(Encoding::Gzip),
            2 => Some(Encoding::Lz4),
            _ => None,
        }
    }

    /// The JSON back from stored bytes; `None` if they do not decode.
    pub(crate) fn decode(self, stored: &[u8]) -> Option<Vec<u8>> {
        match self {
            Encoding::Gzip => {
                use std::io::Read;
                let mut out = Vec::new();
                flate2::bufread::MultiGzDecoder::new(stored)
                    .read_to_end(&mut out)
                    .ok()?;
                Some(out)
            }
            Encoding::Lz4 => lz4_flex::decompress_size_prepended(stored).ok(),
        }
    }
}

/// Where a body lies in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BodyRef {
    pub(crate) encoding: Encoding,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// A found file's log entry.
#[derive(Debug)]
pub(crate) struct FoundEntry {
    pub(crate) fetched_at: i64,
    pub(crate) sha256: [u8; 32],
    pub(crate) md5: Option<[u8; 16]>,
    pub(crate) sha1: Option<[u8; 20]>,
    /// Where the packed summary lies in its [`Log::data`] (not copied out: a 1M import
    /// would make a million small allocations).
    pub(crate) summary: std::ops::Range<usize>,
    pub(crate) body: Option<BodyRef>,
}

/// One imported log entry.
#[derive(Debug)]
pub(crate) enum Entry {
    Found(FoundEntry),
    NotFound { fetched_at: i64, digest: Hash },
}

const FOUND: u8 = 1;
const NOT_FOUND: u8 = 2;
const HAS_MD5: u8 = 1;
const HAS_SHA1: u8 = 2;
/// Entry header: payload length and its CRC-32.
const HEADER: usize = 8;

/// The directory of a cache file's segments: `<file>-answers`.
pub(crate) fn dir_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-answers");
    PathBuf::from(name)
}

pub(crate) fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

pub(crate) fn bodies_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.bodies"))
}

/// A name no other process makes: the time in nanoseconds and the pid (segments, claim
/// holders).
pub(crate) fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}

/// True while some process holds `path` locked (a live writer's log, a live claim holder's
/// owner file); a missing file is nobody's.
pub(crate) fn locked(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| f.try_lock().is_err())
}

/// Removes the files of segments never registered (a process killed between creating its
/// segment and registering it): not in `registered`, their log not locked by a live writer,
/// and untouched for a minute (a writer locks its log right after creating it). Claim
/// holders' lock files nobody holds go too, after the same minute.
pub(crate) fn remove_orphans(dir: &Path, registered: &std::collections::HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let old_enough = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= std::time::Duration::from_secs(60))
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // A claim holder's lock file left by a process killed before its first claim was
        // written: nobody holds it, and no claim names it.
        if path.extension().is_some_and(|x| x == "owner") {
            if !locked(&path) && old_enough(&path) {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log").or_else(|| n.strip_suffix(".bodies")))
        else {
            continue;
        };
        if registered.contains(name) || !old_enough(&path) {
            continue;
        }
        let log = log_path(dir, name);
        if !locked(&log) {
            let _ = std::fs::remove_file(&log);
            let _ = std::fs::remove_file(bodies_path(dir, name));
        }
    }
}

/// This process's open segment.
#[derive(Debug)]
pub(crate) struct Writer {
    /// Its id in the `segments` table.
    pub(crate) id: i64,
    /// Locked (exclusive) while this writer lives.
    log: File,
    bodies: File,
    log_len: u64,
    bodies_len: u64,
    log_buf: Vec<u8>,
    bodies_buf: Vec<u8>,
}

impl Writer {
    /// Creates (mode 0600) and locks a new segment's two files; `id` is given once the
    /// segment is registered.
    pub(crate) fn create(dir: &Path, name: &str) -> std::io::Result<Writer> {
        let log = crate::private::create_new_private(&log_path(dir, name))?;
        log.lock()?;
        let bodies = crate::private::create_new_private(&bodies_path(dir, name))?;
        Ok(Writer {
            id: 0,
            log,
            bodies,
            log_len: 0,
            bodies_len: 0,
            log_buf: Vec::with_capacity(1 << 16),
            bodies_buf: Vec::with_capacity(1 << 20),
        })
    }

    /// Appends `items`, fetched at `now`: the bodies, then the entries. Positioned writes at
    /// the lengths known to be good, so a failed batch is overwritten by the next.
    pub(crate) fn append(&mut self, items: &[Put], now: i64) -> std::io::Result<()> {
        self.log_buf.clear();
        self.bodies_buf.clear();
        for item in items {
            if matches!(item, Put::Object(_) | Put::Submission { .. }) {
                // Written to the index by `put_batch`.
                continue;
            }
            let start = self.log_buf.len();
            self.log_buf.extend_from_slice(&[0; HEADER]);
            match item {
                Put::Found {
                    sha256,
                    md5,
                    sha1,
                    summary,
                    body,
                } => {
                    let b = &mut self.log_buf;
                    b.push(FOUND);
                    b.extend_from_slice(&now.to_le_bytes());
                    b.extend_from_slice(sha256);
                    b.push(
                        if md5.is_some() { HAS_MD5 } else { 0 }
                            | if sha1.is_some() { HAS_SHA1 } else { 0 },
                    );
                    if let Some(d) = md5 {
                        b.extend_from_slice(d);
                    }
                    if let Some(d) = sha1 {
                        b.extend_from_slice(d);
                    }
                    b.extend_from_slice(&(summary.len() as u32).to_le_bytes());
                    b.extend_from_slice(summary);
                    let stored = body.as_ref().map(|body| {
                        let offset = self.bodies_len + self.bodies_buf.len() as u64;
                        let encoding = match body {
                            crate::Body::Gzip(z) => {
                                self.bodies_buf.extend_from_slice(z);
                                Encoding::Gzip
                            }
                            crate::Body::Json(json) => {
                                self.bodies_buf
                                    .extend_from_slice(&lz4_flex::compress_prepend_size(json));
                                Encoding::Lz4
                            }
                        };
                        let len = (self.bodies_len + self.bodies_buf.len() as u64 - offset) as u32;
                        BodyRef {
                            encoding,
                            offset,
                            len,
                        }
                    });
                    let b = &mut self.log_buf;
                    match stored {
                        Some(r) => {
                            b.push(r.encoding as u8);
                            b.extend_from_slice(&r.offset.to_le_bytes());
                            b.extend_from_slice(&r.len.to_le_bytes());
                        }
                        None => b.push(0),
                    }
                }
                Put::NotFound(hash) => {
                    let b = &mut self.log_buf;
                    b.push(NOT_FOUND);
                    b.extend_from_slice(&now.to_le_bytes());
                    let digest = hash.as_bytes();
                    b.push(digest.len() as u8);
                    b.extend_from_slice(digest);
                }
                Put::Object(_) | Put::Submission { .. } => {}
            }
            let payload = &self.log_buf[start + HEADER..];
            let len = (payload.len() as u32).to_le_bytes();
            let crc = crc32fast::hash(payload).to_le_bytes();
            self.log_buf[start..start + 4].copy_from_slice(&len);
            self.log_buf[start + 4..start + HEADER].copy_from_slice(&crc);
        }
        if !self.bodies_buf.is_empty() {
            self.bodies
                .write_all_at(&self.bodies_buf, self.bodies_len)?;
        }
        self.log.write_all_at(&self.log_buf, self.log_len)?;
        self.bodies_len += self.bodies_buf.len() as u64;
        self.log_len += self.log_buf.len() as u64;
        Ok(())
    }
}

/// The complete entries of a log from some offset, and the bytes they were read from.
#[derive(Debug)]
pub(crate) struct Log {
    /// The log's bytes from the offset read from.
    pub(crate) data: Vec<u8>,
    /// Its entries, in order.
    pub(crate) entries: Vec<Entry>,
    /// The file offset just past the last good entry.
    pub(crate) end: u64,
}

/// Reads the complete entries of a log from byte `from` (a torn or damaged entry ends the
/// read).
pub(crate) fn read_log(file: &File, from: u64) -> std::io::Result<Log> {
    let len = file.metadata()?.len();
    let mut data = vec![0; len.saturating_sub(from) as usize];
    file.read_exact_at(&mut data, from)?;
    // Entries of found files are about 200 bytes.
    let mut entries = Vec::with_capacity(data.len() / 160);
    let mut at = 0usize;
    while let Some(header) = data.get(at..at + HEADER) {
        let size = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap_or_default());
        let Some(payload) = data.get(at + HEADER..at + HEADER + size) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(entry) = parse(payload, at + HEADER) else {
            break;
        };
        entries.push(entry);
        at += HEADER + size;
    }
    Ok(Log {
        data,
        entries,
        end: from + at as u64,
    })
}

/// A cursor over an entry's bytes.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
}

/// One entry's payload, found at `base` in its log's data.
fn parse(payload: &[u8], base: usize) -> Option<Entry> {
    let mut c = Cursor(payload);
    let tag = c.u8()?;
    let fetched_at = i64::from_le_bytes(c.array()?);
    match tag {
        FOUND => {
            let sha256 = c.array()?;
            let flags = c.u8()?;
            let md5 = if flags & HAS_MD5 != 0 {
                Some(c.array()?)
            } else {
                None
            };
            let sha1 = if flags & HAS_SHA1 != 0 {
                Some(c.array()?)
            } else {
                None
            };
            let n = u32::from_le_bytes(c.array()?) as usize;
            let start = base + payload.len() - c.0.len();
            c.take(n)?;
            let summary = start..start + n;
            let body = match c.u8()? {
                0 => None,
                e => Some(BodyRef {
                    encoding: Encoding::from_i64(i64::from(e))?,
                    offset: u64::from_le_bytes(c.array()?),
                    len: u32::from_le_bytes(c.array()?),
                }),
            };
            Some(Entry::Found(FoundEntry {
                fetched_at,
                sha256,
                md5,
                sha1,
                summary,
                body,
            }))
        }
        NOT_FOUND => {
            let n = c.u8()? as usize;
            let digest = Hash::from_digest(c.take(n)?)?;
            Some(Entry::NotFound { fetched_at, digest })
        }
        _ => None,
    }
}

/// Reads one body back (`None` if the segment or the bytes are gone or damaged).
pub(crate) fn read_body(file: &File, body: BodyRef) -> Option<Vec<u8>> {
    let mut stored = vec![0; body.len as usize];
    file.read_exact_at(&mut stored, body.offset).ok()?;
    body.encoding.decode(&stored)
}

/// Bytes for tests: what a body of `json` looks like gzipped.
#[cfg(test)]
pub(crate) fn gzip(json: &[u8]) -> bytes::Bytes {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(json).expect("in memory");
    bytes::Bytes::from(z.finish().expect("in memory"))
}
