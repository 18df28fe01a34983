//! Opening inputs: a file or stdin, decompressed by its magic bytes (gzip, zstd, bzip2, xz; a
//! zip archive member by member), decoded from UTF-16 when it is UTF-16, and guarded so that
//! damage ends one input instead of the run.
//!
//! Damage is the common case of a careless export: a `.gz` cut short by a full disk or an
//! interrupted copy. The decompressor's error is caught here ([`Guarded`]), kept with the
//! compressed offset it happened at, and turned into an end of input; the reader then writes
//! an `invalid` record naming the file and the offset, and the run goes on with the next
//! input. Everything read before the damage is kept.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a guard puts what went wrong, for the reader to report after the input ends.
#[derive(Clone, Debug, Default)]
pub struct DamageCell(Arc<Mutex<Option<String>>>);

impl DamageCell {
    fn set(&self, what: String) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(what);
    }

    /// The damage seen, if any (once).
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Counts the bytes read through it (the compressed offset of damage).
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Turns a read error into the end of the input, keeping what it was in a [`DamageCell`].
pub(crate) struct Guarded<R> {
    inner: R,
    damage: DamageCell,
    what: &'static str,
    /// Compressed bytes read so far, when the input is compressed.
    offset: Option<Arc<AtomicU64>>,
    /// Bytes delivered so far.
    delivered: u64,
    done: bool,
}

impl<R: Read> Guarded<R> {
    pub(crate) fn new(inner: R, damage: DamageCell, what: &'static str) -> Guarded<R> {
        Guarded {
            inner,
            damage,
            what,
            offset: None,
            delivered: 0,
            done: false,
        }
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.delivered += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    let at = match &self.offset {
                        Some(c) => format!(
                            "after {} compressed bytes ({} bytes of content read)",
                            c.load(Ordering::Relaxed),
                            self.delivered
                        ),
                        None => format!("after {} bytes", self.delivered),
                    };
                    let e = e.to_string();
                    let cause = if e.is_empty() { "unexpected end" } else { &e };
                    self.damage.set(format!(
                        "{} data damaged or cut short {at}: {cause}",
                        self.what
                    ));
                    return Ok(0);
                }
            }
        }
    }
}

/// One input to read: a file, stdin, or a member of an archive.
pub struct Part<'a> {
    /// The display name (`stdin`, `list.csv.gz`, `drop.zip:iocs/list.csv`).
    pub name: String,
    /// The content, decompressed; read errors are caught and kept in `damage`.
    pub reader: Box<dyn Read + Send + 'a>,
    /// Damage met while reading `reader`.
    pub damage: DamageCell,
    /// The compression undone.
    pub compression: Option<&'static str>,
}

impl std::fmt::Debug for Part<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("name", &self.name)
            .field("compression", &self.compression)
            .finish()
    }
}

/// An opened input: one stream, or a zip archive whose members are read one by one.
pub enum Opened {
    /// A stream (plain or compressed).
    Stream(Part<'static>),
    /// A zip archive.
    Zip {
        /// The archive's display name.
        name: String,
        /// The archive.
        archive: Box<zip::ZipArchive<File>>,
    },
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Opened::Stream(p) => f.debug_tuple("Stream").field(p).finish(),
            Opened::Zip { name, .. } => f.debug_struct("Zip").field("name", name).finish(),
        }
    }
}

impl Opened {
    /// Calls `read` for every part: the stream, or each file member of the archive in order
    /// (directories skipped; a member compressed again is decompressed). A member that cannot
    /// be opened becomes a part whose damage says why.
    pub fn for_each_part(self, read: &mut dyn FnMut(Part<'_>) -> io::Result<()>) -> io::Result<()> {
        match self {
            Opened::Stream(part) => read(part),
            Opened::Zip { name, mut archive } => {
                for i in 0..archive.len() {
                    let damage = DamageCell::default();
                    let member = archive.by_index(i);
                    match member {
                        Ok(member) if member.is_dir() => continue,
                        Ok(member) => {
                            let member_name =
                                format!("{name}:{}", String::from_utf8_lossy(member.name_raw()));
                            let guarded = Guarded::new(member, damage.clone(), "zip member");
                            let (reader, compression) = decompress(guarded, damage.clone())?;
                            read(Part {
                                name: member_name,
                                reader,
                                damage,
                                compression: Some(compression.unwrap_or("zip")),
                            })?;
                        }
                        Err(e) => {
                            damage.set(format!("zip member {} unreadable: {e}", i + 1));
                            read(Part {
                                name: format!("{name}:#{}", i + 1),
                                reader: Box::new(io::empty()),
                                damage,
                                compression: Some("zip"),
                            })?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

const GZIP: &[u8] = &[0x1f, 0x8b];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2: &[u8] = b"BZh";
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const ZIP: &[u8] = b"PK\x03\x04";
const ZIP_EMPTY: &[u8] = b"PK\x05\x06";

/// Whether `head` starts like a compressed stream or archive this module undoes.
pub fn compressed(head: &[u8]) -> bool {
    [GZIP, ZSTD, BZIP2, XZ, ZIP, ZIP_EMPTY]
        .iter()
        .any(|m| head.starts_with(m))
}

/// Opens `path` (`-` is stdin) and undoes its compression, recognised by content, not name.
/// A zip archive on stdin is spooled to a temporary file first (its directory is at the end).
pub fn open(path: &str) -> io::Result<Opened> {
    let name = if path == "-" { "stdin" } else { path }.to_owned();
    let mut raw: Box<dyn Read + Send> = if path == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(Path::new(path))?)
    };
    let magic = peek_magic(&mut raw)?;
    let is_zip = magic.get_ref().starts_with(ZIP) || magic.get_ref().starts_with(ZIP_EMPTY);
    let mut raw = magic.chain(raw);
    if is_zip {
        let file = if path == "-" {
            let mut spool = tempfile::tempfile()?;
            io::copy(&mut raw, &mut spool)?;
            io::Seek::rewind(&mut spool)?;
            spool
        } else {
            File::open(Path::new(path))?
        };
        let archive = zip::ZipArchive::new(file).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a readable zip archive: {e}"),
            )
        })?;
        return Ok(Opened::Zip {
            name,
            archive: Box::new(archive),
        });
    }
    let damage = DamageCell::default();
    let (mut reader, compression) = decompress(raw, damage.clone())?;
    if compression.is_some() {
        // Inflating on a second core overlaps the readers' own work (see `ahead`).
        reader = Box::new(super::ahead::ReadAhead::spawn(reader)?);
    }
    Ok(Opened::Stream(Part {
        name,
        reader,
        damage,
        compression,
    }))
}

impl Part<'static> {
    /// A part over bytes in memory (tests, benchmarks), decompressed like a file.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Part<'static> {
        let damage = DamageCell::default();
        // Reading from memory cannot fail; should it, the part reads as empty, damaged.
        let (reader, compression) = decompress(io::Cursor::new(bytes), damage.clone())
            .unwrap_or_else(|e| {
                damage.set(format!("unreadable: {e}"));
                (Box::new(io::empty()), None)
            });
        Part {
            name: name.to_owned(),
            reader,
            damage,
            compression,
        }
    }
}

/// Wraps `raw` in the decompressor its first bytes call for, guarded: a damaged stream ends
/// with its damage kept in `damage`.
fn decompress<'a, R: Read + Send + 'a>(
    raw: R,
    damage: DamageCell,
) -> io::Result<(Box<dyn Read + Send + 'a>, Option<&'static str>)> {
    let mut raw = raw;
    let magic = peek_magic(&mut raw)?;
    let mut head = [0u8; 6];
    head[..magic.get_ref().len()].copy_from_slice(magic.get_ref());
    let head = &head[..magic.get_ref().len()];
    let count = Arc::new(AtomicU64::new(0));
    let counted = Counted {
        inner: magic.chain(raw),
        count: count.clone(),
    };
    let (reader, kind): (Box<dyn Read + Send + 'a>, Option<&'static str>) =
        if head.starts_with(GZIP) {
            (
                Box::new(flate2::read::MultiGzDecoder::new(counted)),
                Some("gzip"),
            )
        } else if head.starts_with(ZSTD) {
            (Box::new(ZstdFrames::new(counted)), Some("zstd"))
        } else if head.starts_with(BZIP2) && head.len() >= 4 && head[3].is_ascii_digit() {
            (
                Box::new(bzip2::read::MultiBzDecoder::new(counted)),
                Some("bzip2"),
            )
        } else if head.starts_with(XZ) {
            (
                Box::new(lzma_rust2::XzReader::new(counted, true)),
                Some("xz"),
            )
        } else {
            (Box::new(counted), None)
        };
    let what = kind.unwrap_or("input");
    let mut guarded = Guarded::new(reader, damage, what);
    if kind.is_some() {
        guarded.offset = Some(count);
    }
    Ok((Box::new(guarded), kind))
}

/// Reads up to 6 bytes from the front of `r` (fewer at the end of input) and returns them as
/// a cursor to put back in front.
fn peek_magic<R: Read>(r: &mut R) -> io::Result<io::Cursor<Vec<u8>>> {
    let mut magic = Vec::with_capacity(6);
    let mut buf = [0u8; 6];
    while magic.len() < 6 {
        match r.read(&mut buf[..6 - magic.len()]) {
            Ok(0) => break,
            Ok(n) => magic.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(io::Cursor::new(magic))
}

/// Every zstd frame of a stream, one after the other (`zstd` writes one frame, `pzstd` and
/// concatenated files several).
struct ZstdFrames<R: Read> {
    decoder: Option<
        ruzstd::decoding::StreamingDecoder<io::BufReader<R>, ruzstd::decoding::FrameDecoder>,
    >,
    source: Option<io::BufReader<R>>,
}

impl<R: Read> ZstdFrames<R> {
    fn new(source: R) -> ZstdFrames<R> {
        ZstdFrames {
            decoder: None,
            source: Some(io::BufReader::with_capacity(64 * 1024, source)),
        }
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(decoder) = &mut self.decoder {
                let n = decoder.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                // The frame is done: the next one, if the stream goes on.
                if let Some(decoder) = self.decoder.take() {
                    self.source = Some(decoder.into_inner());
                }
            }
            let Some(mut source) = self.source.take() else {
                return Ok(0);
            };
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let decoder = ruzstd::decoding::StreamingDecoder::new(source)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.decoder = Some(decoder);
        }
    }
}

/// Decodes UTF-16 (by its BOM, or by the pattern of zero bytes in ASCII text without one) to
/// UTF-8, and drops a UTF-8 BOM. Anything else passes through: byte-oriented readers take
/// stray Windows-1252 bytes as they come (hashes are ASCII).
pub(crate) fn decode<'a>(
    input: &'a mut dyn Read,
) -> io::Result<(Box<dyn Read + 'a>, Option<&'static str>)> {
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    let encoding = utf16(&head);
    if head.starts_with(b"\xef\xbb\xbf") {
        head.drain(..3);
    }
    let front = io::Cursor::new(head).chain(input);
    Ok(match encoding {
        Some(enc) => {
            let name = if enc == encoding_rs::UTF_16LE {
                "utf-16le"
            } else {
                "utf-16be"
            };
            (Box::new(Utf16::new(front, enc)), Some(name))
        }
        None => (Box::new(front), None),
    })
}

/// UTF-16 by BOM, or by zero bytes: ASCII text in UTF-16 has a zero in every other byte.
fn utf16(head: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    if head.starts_with(b"\xff\xfe") {
        return Some(encoding_rs::UTF_16LE);
    }
    if head.starts_with(b"\xfe\xff") {
        return Some(encoding_rs::UTF_16BE);
    }
    let pairs = head.len() / 2;
    if pairs < 4 {
        return None;
    }
    let even = head.iter().step_by(2).filter(|&&b| b == 0).count();
    let odd = head.iter().skip(1).step_by(2).filter(|&&b| b == 0).count();
    if odd * 10 >= pairs * 7 && even * 10 <= pairs {
        Some(encoding_rs::UTF_16LE)
    } else if even * 10 >= pairs * 7 && odd * 10 <= pairs {
        Some(encoding_rs::UTF_16BE)
    } else {
        None
    }
}

/// A streaming UTF-16 to UTF-8 decoder (BOM removed; unpaired surrogates become U+FFFD).
struct Utf16<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    eof: bool,
    /// The decoder was told the input ended: it must not be called again.
    finished: bool,
    output: Vec<u8>,
    out_start: usize,
    out_end: usize,
}

impl<R: Read> Utf16<R> {
    fn new(inner: R, encoding: &'static encoding_rs::Encoding) -> Utf16<R> {
        Utf16 {
            inner,
            decoder: encoding.new_decoder_with_bom_removal(),
            input: vec![0; 32 * 1024],
            in_start: 0,
            in_end: 0,
            eof: false,
            finished: false,
            output: vec![0; 64 * 1024],
            out_start: 0,
            out_end: 0,
        }
    }
}

impl<R: Read> Read for Utf16<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_start == self.out_end {
            if self.eof && self.in_start == self.in_end {
                if self.finished {
                    return Ok(0);
                }
                self.finished = true;
                // Flush what the decoder holds (a lone trailing byte becomes U+FFFD).
                let (_, _, written, _) = self.decoder.decode_to_utf8(&[], &mut self.output, true);
                if written == 0 {
                    return Ok(0);
                }
                self.out_start = 0;
                self.out_end = written;
                break;
            }
            if self.in_start == self.in_end && !self.eof {
                match self.inner.read(&mut self.input) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.in_start = 0;
                        self.in_end = n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let (_, read, written, _) = self.decoder.decode_to_utf8(
                &self.input[self.in_start..self.in_end],
                &mut self.output,
                false,
            );
            self.in_start += read;
            self.out_start = 0;
            self.out_end = written;
        }
        let n = buf.len().min(self.out_end - self.out_start);
        buf[..n].copy_from_slice(&self.output[self.out_start..self.out_start + n]);
        self.out_start += n;
        Ok(n)
    }
}

/// Reads up to `n` bytes from the front of `input` (fewer at its end), into one allocation
/// (only the part read is touched).
pub(crate) fn peek(input: &mut dyn Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    input.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}
