//! Decompression on a thread of its own, a few chunks ahead of the reader.
//!
//! A gzipped export is inflated at a few hundred MB/s on one core, about as fast as the
//! readers parse what comes out; on one thread the two costs add up. [`ReadAhead`] runs the
//! decompressor on its own thread and hands its output over in chunks through a bounded
//! channel, so on two cores the costs overlap (the nightly run reads its export twice, once
//! per pass, and both passes gain). Memory is bounded: [`DEPTH`] chunks of [`CHUNK`] bytes in
//! flight, recycled rather than reallocated.
//!
//! What the reader sees is unchanged: the same bytes in the same order, and the end of the
//! input where the decompressor ended (damage is caught below, by [`super::source`]'s guard,
//! so errors rarely cross; one that does is handed over in order). Dropping the reader ends
//! the thread at its next chunk.

use std::io::{self, Read};
use std::sync::mpsc;

/// Bytes per chunk handed over: large enough that the hand-over is rare, small enough to
/// stay in the second-level cache between the two threads.
pub const CHUNK: usize = 256 * 1024;

/// Chunks in flight (decompressed and not yet read) at most.
pub const DEPTH: usize = 8;

/// A reader whose source is read on another thread, [`DEPTH`] chunks ahead.
#[derive(Debug)]
pub struct ReadAhead {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    spent: mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    done: bool,
}

impl ReadAhead {
    /// Starts reading `source` on a thread of its own (an error only when no thread can be
    /// started).
    pub fn spawn<R: Read + Send + 'static>(mut source: R) -> io::Result<ReadAhead> {
        let (chunk_tx, chunks) = mpsc::sync_channel(DEPTH);
        let (spent, spent_rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH + 1);
        std::thread::Builder::new()
            .name("vtbulk-inflate".into())
            .spawn(move || pump(&mut source, &chunk_tx, &spent_rx))?;
        Ok(ReadAhead {
            chunks,
            spent,
            current: Vec::new(),
            at: 0,
            done: false,
        })
    }
}

/// The thread's loop: fill a chunk (a recycled one when the reader gave one back), send it;
/// the end of input is an empty chunk. Returns when the input ends or the reader is gone.
fn pump<R: Read>(
    source: &mut R,
    chunks: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    spent: &mpsc::Receiver<Vec<u8>>,
) {
    loop {
        let mut chunk = spent.try_recv().unwrap_or_default();
        chunk.clear();
        chunk.resize(CHUNK, 0);
        let mut filled = 0;
        let mut failed = None;
        while filled < CHUNK {
            match source.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        chunk.truncate(filled);
        let last = filled < CHUNK;
        if filled > 0 && chunks.send(Ok(chunk)).is_err() {
            return;
        }
        if let Some(e) = failed {
            let _ = chunks.send(Err(e));
            return;
        }
        if last {
            let _ = chunks.send(Ok(Vec::new()));
            return;
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            let spent = std::mem::take(&mut self.current);
            if spent.capacity() > 0 {
                let _ = self.spent.try_send(spent);
            }
            self.at = 0;
            match self.chunks.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => self.done = true,
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The thread is gone without saying the input ended: it panicked.
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("the decompressing thread stopped"));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out `data` in reads of awkward sizes, then maybe an error.
    struct Dribble {
        data: Vec<u8>,
        at: usize,
        step: usize,
        fail_at_end: bool,
    }

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                if self.fail_at_end {
                    self.fail_at_end = false;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "cut short"));
                }
                return Ok(0);
            }
            self.step = self.step * 7 % 5003 + 1;
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn hands_over_every_byte_in_order_across_many_chunks() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK * (DEPTH + 3) + 17] {
            let want = data(len);
            let source = Dribble {
                data: want.clone(),
                at: 0,
                step: 1,
                fail_at_end: false,
            };
            let mut ahead = ReadAhead::spawn(source).expect("a thread");
            let mut got = Vec::new();
            // Small reads, so that chunks are recycled many times.
            let mut buf = [0u8; 4099];
            loop {
                let n = ahead.read(&mut buf).expect("reads");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got.len(), want.len(), "length {len}");
            assert!(got == want, "bytes differ at length {len}");
            assert_eq!(ahead.read(&mut buf).expect("stays ended"), 0);
        }
    }

    #[test]
    fn an_error_arrives_after_the_bytes_before_it() {
        let want = data(CHUNK + 100);
        let source = Dribble {
            data: want.clone(),
            at: 0,
            step: 1,
            fail_at_end: true,
        };
        let mut ahead = ReadAhead::spawn(source).expect("a thread");
        let mut got = Vec::new();
        let err = loop {
            let mut buf = vec![0u8; 65536];
            match ahead.read(&mut buf) {
                Ok(0) => panic!("ended without the error"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert!(got == want);
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn dropping_the_reader_early_ends_the_thread() {
        // An endless source: the thread must notice the reader is gone and stop.
        struct Endless(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(b'x');
                Ok(buf.len())
            }
        }
        impl Drop for Endless {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut ahead = ReadAhead::spawn(Endless(dropped.clone())).expect("a thread");
        let mut buf = [0u8; 10];
        assert_eq!(ahead.read(&mut buf).expect("reads"), 10);
        drop(ahead);
        // The thread's next send fails and it returns, dropping the source; wait for that
        // without sleeping: spin on the flag (bounded by the thread's one chunk of work).
        let start = std::time::Instant::now();
        while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "the thread never ended"
            );
            std::thread::yield_now();
        }
    }
}
