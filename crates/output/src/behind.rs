//! Writing on a thread of its own: the kernel's side of a large output beside the work that
//! produces it.
//!
//! Copying an output into the page cache is not free: on an ext4 volume it costs about as much
//! CPU as inflating the gzip the rows came from (measured in `benches/RESULTS.md`, issue 28).
//! [`write_behind`] runs a body that writes into a buffer; full chunks of [`CHUNK`] bytes go
//! through a bounded channel to a scoped thread that writes them to the real output, so on two
//! cores the two costs overlap. Memory is bounded ([`DEPTH`] chunks in flight, recycled);
//! the bytes and their order are the body's; the first write error (a full disk, a closed
//! pipe) ends the body's next write with that error's kind, and is what `write_behind`
//! returns.

use std::io::{self, Write};
use std::sync::mpsc;

/// Bytes per chunk handed to the writing thread.
pub const CHUNK: usize = 256 * 1024;

/// Chunks in flight at most.
pub const DEPTH: usize = 4;

/// The body's side: a buffer whose full chunks go to the writing thread.
#[derive(Debug)]
pub struct Behind {
    full: mpsc::SyncSender<Vec<u8>>,
    empty: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl Behind {
    fn hand_over(&mut self) -> io::Result<()> {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        self.full
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the output failed"))
    }
}

impl Write for Behind {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while self.buf.len() + data.len() >= CHUNK {
            let room = CHUNK - self.buf.len();
            self.buf.extend_from_slice(&data[..room]);
            data = &data[room..];
            self.hand_over()?;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Hands over what is buffered; the writing thread flushes `out` at the end.
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hand_over()
    }
}

/// Why [`write_behind`] failed.
#[derive(Debug)]
pub enum BehindError {
    /// The body failed (reading its input, say) while the output was fine.
    Body(io::Error),
    /// Writing or flushing the output failed (the body saw its writes fail after it).
    Output(io::Error),
}

/// Runs `body` with a writer whose bytes reach `out` from another thread, then flushes `out`.
pub fn write_behind<T>(
    out: &mut (dyn Write + Send),
    body: impl FnOnce(&mut Behind) -> io::Result<T>,
) -> Result<T, BehindError> {
    let (full, full_rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH);
    let (empty_tx, empty) = mpsc::sync_channel::<Vec<u8>>(DEPTH + 1);
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("vtbulk-write".into())
            .spawn_scoped(scope, move || -> io::Result<()> {
                for mut chunk in full_rx {
                    out.write_all(&chunk)?;
                    chunk.clear();
                    let _ = empty_tx.try_send(chunk);
                }
                out.flush()
            })
            .map_err(BehindError::Body)?;
        let mut behind = Behind {
            full,
            empty,
            buf: Vec::with_capacity(CHUNK),
        };
        let result = body(&mut behind).and_then(|done| behind.flush().map(|()| done));
        // Closing the channel ends the thread's loop; its error, if any, is the real one.
        drop(behind);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writing thread stopped")));
        match (result, written) {
            (_, Err(e)) => Err(BehindError::Output(e)),
            (Err(e), Ok(())) => Err(BehindError::Body(e)),
            (Ok(done), Ok(())) => Ok(done),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that takes `room` bytes and then fails like a full disk.
    struct Full {
        got: Vec<u8>,
        room: usize,
        flushed: bool,
    }

    impl Write for Full {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.got.len() + data.len() > self.room {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left"));
            }
            self.got.extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flushed = true;
            Ok(())
        }
    }

    #[test]
    fn every_byte_arrives_in_order_and_the_output_is_flushed() {
        let mut out = Full {
            got: Vec::new(),
            room: usize::MAX,
            flushed: false,
        };
        let mut want = Vec::new();
        let n = write_behind(&mut out, |w| {
            // Writes of many sizes, some larger than a chunk, so chunks split them.
            for i in 0..400usize {
                let piece: Vec<u8> = (0..(i * 37 % 3001) + (i % 5) * CHUNK / 3)
                    .map(|j| (i + j) as u8)
                    .collect();
                w.write_all(&piece)?;
                want.extend_from_slice(&piece);
            }
            Ok(7)
        })
        .expect("writes");
        assert_eq!(n, 7);
        assert_eq!(out.got.len(), want.len());
        assert!(out.got == want);
        assert!(out.flushed);
    }

    #[test]
    fn a_failing_output_stops_the_body_with_its_error() {
        let mut out = Full {
            got: Vec::new(),
            room: CHUNK * 3,
            flushed: false,
        };
        let mut written = 0usize;
        let err = write_behind(&mut out, |w| -> io::Result<()> {
            loop {
                w.write_all(&[b'x'; 1000])?;
                written += 1000;
                // The body is stopped by the failed output, not by running out of data.
                assert!(written < CHUNK * 100, "the body never saw the output fail");
            }
        })
        .expect_err("the output is full");
        let BehindError::Output(err) = err else {
            panic!("not the output's error: {err:?}")
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(out.got.len(), CHUNK * 3);
    }
}
