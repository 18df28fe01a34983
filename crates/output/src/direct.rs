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
//! `O_DIRECT` (tmpfs, other systems; `EINVAL` at open or at a write), the same blocks go
//! through the page cache: the bytes written are the same either way.
//!
//! A process killed between a flush's padded write and its cut leaves up to 4 KiB of zeros
//! at the end of the file; the CLI writes `FILE.partial` and renames it only after the last
//! flush has returned, so a finished output never ends so.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The alignment of buffers, lengths and offsets (the largest logical block size in use).
const ALIGN: usize = 4096;

/// Bytes gathered before a block is written.
const BLOCK: usize = 1 << 20;

/// A file written in aligned blocks, past the page cache where it can be.
#[derive(Debug)]
pub struct DirectFile {
    file: File,
    path: PathBuf,
    /// `BLOCK + ALIGN` bytes; the block starts at `start`, aligned in memory.
    buf: Vec<u8>,
    start: usize,
    /// Bytes of the block filled.
    len: usize,
    /// Where in the file the block goes (a multiple of `ALIGN`).
    at: u64,
    /// Whether the file is open with `O_DIRECT`.
    direct: bool,
}

impl DirectFile {
    /// Creates (or truncates) `path`; past the page cache when the system allows it there.
    pub fn create(path: &Path) -> io::Result<DirectFile> {
        match open(path, true) {
            Ok(file) => Ok(DirectFile::new(file, path, true)),
            Err(e) if e.raw_os_error() == Some(EINVAL) => {
                Ok(DirectFile::new(open(path, false)?, path, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn new(file: File, path: &Path, direct: bool) -> DirectFile {
        let buf = vec![0u8; BLOCK + ALIGN];
        let start = buf.as_ptr().addr().next_multiple_of(ALIGN) - buf.as_ptr().addr();
        DirectFile {
            file,
            path: path.to_owned(),
            buf,
            start,
            len: 0,
            at: 0,
            direct,
        }
    }

    /// Writes the block's first `bytes` at its offset, going through the page cache from
    /// then on if the filesystem refuses this write past it.
    fn put(&mut self, bytes: usize) -> io::Result<()> {
        let range = self.start..self.start + bytes;
        match self.file.write_all_at(&self.buf[range.clone()], self.at) {
            Err(e) if self.direct && e.raw_os_error() == Some(EINVAL) => {
                self.file = OpenOptions::new().write(true).open(&self.path)?;
                self.direct = false;
                self.file.write_all_at(&self.buf[range], self.at)
            }
            other => other,
        }
    }
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.len);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        if self.len == BLOCK {
            self.put(BLOCK)?;
            self.at += BLOCK as u64;
            self.len = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let padded = self.len.next_multiple_of(ALIGN);
        self.buf[self.start + self.len..self.start + padded].fill(0);
        self.put(padded)?;
        // The padding is not output: cut it off. The block stays gathered, so the next write
        // of it covers the padding with what follows.
        self.file.set_len(self.at + self.len as u64)
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        // As `BufWriter`: what is gathered is written; a failure here has no one to tell
        // (callers flush, and see it, before they let go).
        let _ = self.flush();
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
    fn write_pieces(out: &mut DirectFile) -> Vec<u8> {
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
                    std::fs::metadata(&out.path).expect("stat").len(),
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
        let want = write_pieces(&mut out);
        drop(out);
        assert!(std::fs::read(&path).expect("read") == want);
    }

    #[test]
    fn where_o_direct_is_refused_the_same_bytes_go_through_the_page_cache() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("out.csv");
        let file = open(&path, false).expect("open");
        let mut out = DirectFile::new(file, &path, false);
        let want = write_pieces(&mut out);
        drop(out);
        assert!(std::fs::read(&path).expect("read") == want);
        // tmpfs refuses O_DIRECT at open: the file is still created and written.
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            let path = shm.path().join("out.csv");
            let mut out = DirectFile::create(&path).expect("create on tmpfs");
            out.write_all(b"a,b\n")
                .and_then(|()| out.flush())
                .expect("write");
            drop(out);
            assert_eq!(std::fs::read(&path).expect("read"), b"a,b\n");
        }
    }

    #[test]
    fn a_file_that_cannot_be_created_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let err = DirectFile::create(&dir.path().join("missing").join("out.csv"))
            .expect_err("no such directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
