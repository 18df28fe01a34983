//! An output file written past the page cache (`O_DIRECT` on Linux), for outputs of
//! gigabytes.
//!
//! A nightly `--annotate` writes about 1.5 times its input (1.9 GB for a 4 M-row export) and a
//! fully cached NDJSON re-run of 2 M hashes 2.1 GB. Written the ordinary way, the kernel
//! copies every byte into the page cache, and on this project's VMs that copy cost as much
//! CPU as inflating the input (`dd` of 1.9 GB to ext4: 1.2 to 6.9 s of system time; with
//! `oflag=direct`: 0.25 to 0.4 s), on a core the run needs; it also evicts the cache's
//! database from memory for a file nobody reads back at once.
//!
//! So [`DirectFile`] gathers the output in an aligned block of 1 MiB and writes whole blocks
//! at aligned offsets, as `O_DIRECT` asks. A flush writes the partial block padded to the
//! alignment, cuts the file back to its true length and keeps the block: the next write of it
//! rewrites the padding with what follows. Where the system or the filesystem refuses
//! `O_DIRECT` (tmpfs before Linux 6.6, some FUSE and network filesystems, other systems;
//! `EINVAL` at open or at a write), the same blocks go
//! through the page cache: the bytes written are the same either way.
//!
//! A process killed between a flush's padded write and its cut leaves up to 4 KiB of zeros
//! at the end of the file; the CLI writes `FILE.partial` and renames it only after the last
//! flush has returned, so a finished output never ends so.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The alignment of buffers, lengths and offsets (the largest logical block size in use).
const ALIGN: usize = 4096;

/// Bytes gathered before a block is written.
const BLOCK: usize = 1 << 20;

/// Blocks waiting for the writing thread at most, besides the one it writes.
const DEPTH: usize = 2;

/// A file written in aligned blocks, past the page cache where it can be, by a thread of its
/// own: the caller (the run's writer task, on the runtime) only copies into the block.
#[derive(Debug)]
pub struct DirectFile {
    /// The block being filled, and how much of it is.
    block: Block,
    len: usize,
    /// Where in the file the block goes (a multiple of `ALIGN`).
    at: u64,
    jobs: Option<SyncSender<Job>>,
    /// Blocks the thread has written, to fill again.
    back: Receiver<Block>,
    /// The thread's first failure (kind and message), reported to every later call.
    failed: Arc<Mutex<Option<(io::ErrorKind, String)>>>,
    thread: Option<JoinHandle<()>>,
}

/// An aligned block of `BLOCK` bytes inside a vector of `BLOCK + ALIGN`.
#[derive(Debug)]
struct Block {
    buf: Vec<u8>,
    start: usize,
}

impl Block {
    fn new() -> Block {
        let buf = vec![0u8; BLOCK + ALIGN];
        let start = buf.as_ptr().addr().next_multiple_of(ALIGN) - buf.as_ptr().addr();
        Block { buf, start }
    }

    fn bytes(&self, n: usize) -> &[u8] {
        &self.buf[self.start..self.start + n]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let start = self.start;
        &mut self.buf[start..start + BLOCK]
    }
}

/// What the thread is asked, in order.
#[derive(Debug)]
enum Job {
    /// Write the block's first `len` bytes at `at`, then give the block back.
    Write { block: Block, len: usize, at: u64 },
    /// Cut the file to `len` bytes (the padding of a partial block), then say so.
    Cut { len: u64, done: SyncSender<()> },
}

/// The thread's side: the file, and whether it is still open past the page cache.
struct Writer {
    file: File,
    path: PathBuf,
    direct: bool,
}

impl Writer {
    /// Writes `bytes` at `at`, going through the page cache from then on if the filesystem
    /// refuses this write past it.
    fn put(&mut self, bytes: &[u8], at: u64) -> io::Result<()> {
        match self.file.write_all_at(bytes, at) {
            Err(e) if self.direct && e.raw_os_error() == Some(EINVAL) => {
                self.file = OpenOptions::new().write(true).open(&self.path)?;
                self.direct = false;
                self.file.write_all_at(bytes, at)
            }
            other => other,
        }
    }

    fn run(
        mut self,
        jobs: Receiver<Job>,
        back: std::sync::mpsc::Sender<Block>,
        failed: &Mutex<Option<(io::ErrorKind, String)>>,
    ) {
        let fail = |e: io::Error| {
            if let Ok(mut f) = failed.lock() {
                f.get_or_insert((e.kind(), e.to_string()));
            }
        };
        let mut broken = false;
        for job in jobs {
            match job {
                Job::Write { block, len, at } => {
                    if !broken && let Err(e) = self.put(block.bytes(len), at) {
                        broken = true;
                        fail(e);
                    }
                    let _ = back.send(block);
                }
                Job::Cut { len, done } => {
                    if !broken && let Err(e) = self.file.set_len(len) {
                        broken = true;
                        fail(e);
                    }
                    let _ = done.send(());
                }
            }
        }
    }
}

impl DirectFile {
    /// Creates (or truncates) `path`; past the page cache when the system allows it there.
    pub fn create(path: &Path) -> io::Result<DirectFile> {
        let (file, direct) = match open(path, true) {
            Ok(file) => (file, true),
            Err(e) if e.raw_os_error() == Some(EINVAL) => (open(path, false)?, false),
            Err(e) => return Err(e),
        };
        DirectFile::start(Writer {
            file,
            path: path.to_owned(),
            direct,
        })
    }

    fn start(writer: Writer) -> io::Result<DirectFile> {
        let (jobs, rx) = sync_channel(DEPTH);
        let (back_tx, back) = std::sync::mpsc::channel();
        let failed = Arc::new(Mutex::new(None));
        let shared = failed.clone();
        let thread = std::thread::Builder::new()
            .name("vtbulk-direct".into())
            .spawn(move || writer.run(rx, back_tx, &shared))?;
        Ok(DirectFile {
            block: Block::new(),
            len: 0,
            at: 0,
            jobs: Some(jobs),
            back,
            failed,
            thread: Some(thread),
        })
    }

    /// The thread's failure, if any.
    fn check(&self) -> io::Result<()> {
        match self.failed.lock().ok().and_then(|f| f.clone()) {
            Some((kind, message)) => Err(io::Error::new(kind, message)),
            None => Ok(()),
        }
    }

    fn send(&self, job: Job) -> io::Result<()> {
        let gone = || io::Error::other("the output's writing thread has ended");
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())
    }

    /// A block to fill: one the thread has written, or a new one.
    fn spare(&self) -> Block {
        self.back.try_recv().unwrap_or_else(|_| Block::new())
    }
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        let n = data.len().min(BLOCK - self.len);
        self.block.bytes_mut()[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        if self.len == BLOCK {
            let next = self.spare();
            let full = std::mem::replace(&mut self.block, next);
            self.send(Job::Write {
                block: full,
                len: BLOCK,
                at: self.at,
            })?;
            self.at += BLOCK as u64;
            self.len = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        if self.len > 0 {
            // A copy of the partial block, padded, goes out; the block stays gathered, so its
            // next write covers the padding with what follows.
            let padded = self.len.next_multiple_of(ALIGN);
            let mut copy = self.spare();
            copy.bytes_mut()[..self.len].copy_from_slice(self.block.bytes(self.len));
            copy.bytes_mut()[self.len..padded].fill(0);
            self.send(Job::Write {
                block: copy,
                len: padded,
                at: self.at,
            })?;
        }
        // The padding is not output: cut it off. Waiting for that waits for every write.
        let (done, wait) = sync_channel(1);
        self.send(Job::Cut {
            len: self.at + self.len as u64,
            done,
        })?;
        wait.recv()
            .map_err(|_| io::Error::other("the output's writing thread has ended"))?;
        self.check()
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        // As `BufWriter`: what is gathered is written; a failure here has no one to tell
        // (callers flush, and see it, before they let go).
        let _ = self.flush();
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `EINVAL`: what Linux answers to `O_DIRECT` where a filesystem does not support it.
#[cfg(target_os = "linux")]
const EINVAL: i32 = libc::EINVAL;
/// Elsewhere `open` answers it itself.
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = 22;

#[cfg(target_os = "linux")]
fn open(path: &Path, direct: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path)
}

#[cfg(not(target_os = "linux"))]
fn open(path: &Path, direct: bool) -> io::Result<File> {
    if direct {
        return Err(io::Error::from_raw_os_error(EINVAL));
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of every size (none, one byte, across blocks), flushes between some, the last
    /// write unflushed until the drop.
    fn write_pieces(out: &mut DirectFile, path: &Path) -> Vec<u8> {
        let mut want = Vec::new();
        let mut rng = vtbulk_rng::Rng::new(11);
        for i in 0..60u64 {
            let len = match i % 6 {
                0 => 0,
                1 => 1,
                2 => (rng.next_u64() % 5000) as usize,
                3 => ALIGN,
                4 => (rng.next_u64() % (3 * BLOCK as u64)) as usize,
                _ => BLOCK - 1,
            };
            let piece: Vec<u8> = (0..len).map(|k| (k as u64 ^ i) as u8).collect();
            out.write_all(&piece).expect("write");
            want.extend_from_slice(&piece);
            if i % 4 == 1 {
                out.flush().expect("flush");
                assert_eq!(
                    std::fs::metadata(path).expect("stat").len(),
                    want.len() as u64,
                    "after a flush the file is exactly what was written"
                );
            }
        }
        want
    }

    #[test]
    fn the_file_holds_exactly_the_bytes_written_with_flushes_anywhere() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("out.csv");
        let mut out = DirectFile::create(&path).expect("create");
        let want = write_pieces(&mut out, &path);
        drop(out);
        assert!(std::fs::read(&path).expect("read") == want);
    }

    #[test]
    fn where_o_direct_is_refused_the_same_bytes_go_through_the_page_cache() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("out.csv");
        let file = open(&path, false).expect("open");
        let writer = Writer {
            file,
            path: path.clone(),
            direct: false,
        };
        let mut out = DirectFile::start(writer).expect("start");
        let want = write_pieces(&mut out, &path);
        drop(out);
        assert!(std::fs::read(&path).expect("read") == want);
    }

    #[test]
    fn a_write_refused_past_the_page_cache_goes_through_it_from_then_on() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("out.csv");
        let (file, direct) = match open(&path, true) {
            Ok(file) => (file, true),
            Err(_) => (open(&path, false).expect("open"), false),
        };
        let mut writer = Writer {
            file,
            path: path.clone(),
            direct,
        };
        // A buffer one byte off the alignment: `O_DIRECT` answers EINVAL, the page cache not.
        let block = Block::new();
        let bytes = &block.buf[block.start + 1..block.start + 1 + ALIGN];
        writer.put(bytes, 0).expect("written after all");
        assert!(!writer.direct, "the file is reopened without O_DIRECT");
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
    }

    #[test]
    fn a_file_that_cannot_be_created_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let err = DirectFile::create(&dir.path().join("missing").join("out.csv"))
            .expect_err("no such directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_failed_write_on_the_thread_is_reported_to_the_writes_and_flushes_after_it() {
        if !Path::new("/dev/full").exists() {
            return;
        }
        let mut out = DirectFile::create(Path::new("/dev/full")).expect("open /dev/full");
        let block = vec![b'x'; BLOCK];
        let mut first = None;
        for _ in 0..(DEPTH + 4) {
            if let Err(e) = out.write_all(&block) {
                first = Some(e);
                break;
            }
        }
        let flushed = out.flush().expect_err("the flush reports it too");
        let first = first.unwrap_or(flushed);
        assert_eq!(first.kind(), io::ErrorKind::StorageFull, "{first}");
        assert!(out.write_all(b"more").is_err(), "and every write after it");
    }
}
