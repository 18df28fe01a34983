//! File hashes as binary digests: parsing from hex (any case), display as lower-case hex.
//!
//! Parsing is on the hot path of every input line, so it works on bytes, 32 digits at a time
//! in a form the compiler turns into SSE2 (no `unsafe`, no intrinsics), and never allocates;
//! a lookup table only says where a value that is not a hash goes wrong. The error says why
//! a value is not a hash in words an analyst can act on ("39 hex digits", "not hex"),
//! because it ends up in an `invalid` output record.

use std::fmt;
use std::str::FromStr;

/// The three digests VirusTotal accepts as a file identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashKind {
    /// MD5, 16 bytes, 32 hex digits.
    Md5,
    /// SHA-1, 20 bytes, 40 hex digits.
    Sha1,
    /// SHA-256, 32 bytes, 64 hex digits. VirusTotal's canonical file id.
    Sha256,
}

impl HashKind {
    /// All kinds, shortest first.
    pub const ALL: [HashKind; 3] = [HashKind::Md5, HashKind::Sha1, HashKind::Sha256];

    /// The lower-case name used in output (`md5`, `sha1`, `sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            HashKind::Md5 => "md5",
            HashKind::Sha1 => "sha1",
            HashKind::Sha256 => "sha256",
        }
    }

    /// A small code for tables that keep a digest and its kind in plain bytes: 1 md5, 2 sha1,
    /// 3 sha256 (0 is left for "empty").
    pub fn code(self) -> u8 {
        match self {
            HashKind::Md5 => 1,
            HashKind::Sha1 => 2,
            HashKind::Sha256 => 3,
        }
    }

    /// Length of the binary digest in bytes.
    pub fn byte_len(self) -> usize {
        match self {
            HashKind::Md5 => 16,
            HashKind::Sha1 => 20,
            HashKind::Sha256 => 32,
        }
    }

    /// Length of the hex form in characters.
    pub fn hex_len(self) -> usize {
        self.byte_len() * 2
    }

    /// The kind whose hex form has `len` characters, if any.
    pub fn from_hex_len(len: usize) -> Option<HashKind> {
        match len {
            32 => Some(HashKind::Md5),
            40 => Some(HashKind::Sha1),
            64 => Some(HashKind::Sha256),
            _ => None,
        }
    }
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HashKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "md5" => Ok(HashKind::Md5),
            "sha1" | "sha-1" => Ok(HashKind::Sha1),
            "sha256" | "sha-256" => Ok(HashKind::Sha256),
            other => Err(format!(
                "unknown hash kind {other:?} (expected md5, sha1 or sha256)"
            )),
        }
    }
}

/// A file hash held as its binary digest. Equality is exact: two spellings of the same digest
/// (different case) are one value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hash {
    /// An MD5 digest.
    Md5([u8; 16]),
    /// A SHA-1 digest.
    Sha1([u8; 20]),
    /// A SHA-256 digest.
    Sha256([u8; 32]),
}

/// Why a value is not a file hash. The `Display` text is meant for an `invalid` output record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseHashError {
    /// Nothing to parse.
    #[error("empty")]
    Empty,
    /// All characters are hex digits but there are not 32, 40 or 64 of them.
    #[error("{0} hex digits (a hash has 32, 40 or 64)")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("not hex (character {position} of {len})")]
    NotHex {
        /// 1-based position of the first offending byte.
        position: usize,
        /// Length of the value in bytes.
        len: usize,
    },
}

const INVALID: u8 = 0xff;

/// Hex digit values by byte; `INVALID` for anything else.
static HEX: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// 32 hex digits (any case) to 16 bytes; `None` if any is not a hex digit. Every hash of
/// every input comes through here, so it is written for the compiler to vectorise (byte-wise
/// selects, no branch, no table): the digest comes out of one 16-byte register, so the
/// caller's 16-byte copies of it are forwarded from one store instead of stalling on four.
fn decode16(hex: &[u8; 32]) -> Option<[u8; 16]> {
    let mut values = [0u8; 32];
    let mut bad = 0u8;
    for (value, &x) in values.iter_mut().zip(hex) {
        // A digit when `x - '0'` (wrapping) is at most 9, a letter when `(x | 0x20) - 'a'`
        // is at most 5.
        let digit = x.wrapping_sub(b'0');
        let letter = (x | 0x20).wrapping_sub(b'a');
        let is_digit = digit <= 9;
        let is_letter = letter <= 5;
        *value = if is_digit {
            digit
        } else {
            letter.wrapping_add(10)
        };
        bad |= u8::from(!(is_digit || is_letter));
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(values.chunks_exact(2)) {
        *byte = pair[0] << 4 | pair[1];
    }
    (bad == 0).then_some(out)
}

/// Eight bytes as a little-endian word.
fn word(digits: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(digits);
    u64::from_le_bytes(word)
}

/// Decodes a hash's digits (32, 40 or 64 of them); `None` for another length or a byte that
/// is not a hex digit.
fn decode(hex: &[u8]) -> Option<Hash> {
    let sixteen = |digits: &[u8]| decode16(digits.try_into().ok()?);
    Some(match hex.len() {
        32 => Hash::Md5(sixteen(hex)?),
        40 => {
            let mut d = [0u8; 20];
            d[..16].copy_from_slice(&sixteen(&hex[..32])?);
            d[16..].copy_from_slice(&decode_word(word(&hex[32..]))?.to_le_bytes());
            Hash::Sha1(d)
        }
        64 => {
            let mut d = [0u8; 32];
            d[..16].copy_from_slice(&sixteen(&hex[..32])?);
            d[16..].copy_from_slice(&sixteen(&hex[32..])?);
            Hash::Sha256(d)
        }
        _ => return None,
    })
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` (all bytes below 0x80) set where `lo <= byte <= hi`.
/// Neither sum can carry into the next byte.
const fn bytes_in(x: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = x + ONES * (0x80 - lo as u64);
    let above_hi = x + ONES * (0x7f - hi as u64);
    at_least_lo & !above_hi & HIGH
}

/// Bit `i` set where `block[i]` is not a hex digit (any case): sixteen bytes classified in a
/// few vector instructions (`wide`: SSE2 on x86-64, without `unsafe` here), for the text
/// scanner's widening of a probe to its run.
pub(crate) fn not_hex_mask(block: [u8; 16]) -> u32 {
    use wide::u8x16;
    let x = u8x16::new(block);
    // A digit when `x - '0'` (wrapping) is at most 9, a letter when `(x | 0x20) - 'a'` is
    // at most 5: `min` leaves exactly those unchanged.
    let digit = x - u8x16::splat(b'0');
    let letter = (x | u8x16::splat(0x20)) - u8x16::splat(b'a');
    let hex = digit.min(u8x16::splat(9)).cmp_eq(digit) | letter.min(u8x16::splat(5)).cmp_eq(letter);
    !(hex.move_mask() as u32) & 0xffff
}

/// Eight hex digits (little-endian in `x`, any case) to four bytes in order; `None` if any
/// byte is not a hex digit.
const fn decode_word(x: u64) -> Option<u32> {
    if x & HIGH != 0 {
        return None;
    }
    let digit = bytes_in(x, b'0', b'9');
    let letter = bytes_in(x | (ONES * 0x20), b'a', b'f');
    if digit | letter != HIGH {
        return None;
    }
    // '0'..'9' -> low nibble; 'a'..'f' and 'A'..'F' -> low nibble (1..6) + 9.
    let v = (x & (ONES * 0x0f)) + (letter >> 7) * 9;
    // Byte i becomes digit i << 4 | digit i + 1; the even bytes are the results.
    let pairs = ((v << 4) | (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let pairs = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    Some((pairs | (pairs >> 16)) as u32)
}

impl Hash {
    /// Parses a hash from its hex form in any case. Surrounding whitespace is not trimmed:
    /// callers decide what a field is.
    pub fn parse(s: &str) -> Result<Hash, ParseHashError> {
        Hash::parse_bytes(s.as_bytes())
    }

    /// Parses a hash from hex bytes in any case (the input need not be UTF-8).
    pub fn parse_bytes(hex: &[u8]) -> Result<Hash, ParseHashError> {
        let not_hex = || {
            let i = hex.iter().position(|&b| HEX[b as usize] == INVALID);
            i.map(|i| ParseHashError::NotHex {
                position: i + 1,
                len: hex.len(),
            })
        };
        // The common case, a valid hash, decodes in one pass; errors are diagnosed after.
        decode(hex).ok_or_else(|| match hex.len() {
            0 => ParseHashError::Empty,
            n => not_hex().unwrap_or(ParseHashError::Length(n)),
        })
    }

    /// Builds a hash from a binary digest; `None` when the length is not 16, 20 or 32.
    pub fn from_digest(digest: &[u8]) -> Option<Hash> {
        Some(match digest.len() {
            16 => Hash::Md5(digest.try_into().ok()?),
            20 => Hash::Sha1(digest.try_into().ok()?),
            32 => Hash::Sha256(digest.try_into().ok()?),
            _ => return None,
        })
    }

    /// Which digest this is.
    pub fn kind(&self) -> HashKind {
        match self {
            Hash::Md5(_) => HashKind::Md5,
            Hash::Sha1(_) => HashKind::Sha1,
            Hash::Sha256(_) => HashKind::Sha256,
        }
    }

    /// The binary digest.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Hash::Md5(d) => d,
            Hash::Sha1(d) => d,
            Hash::Sha256(d) => d,
        }
    }

    /// Writes the lower-case hex form into `buf` and returns it as a `&str`.
    pub fn encode_hex<'b>(&self, buf: &'b mut [u8; 64]) -> &'b str {
        let bytes = self.as_bytes();
        for (pair, b) in buf.chunks_exact_mut(2).zip(bytes) {
            pair[0] = LOWER_HEX[(b >> 4) as usize];
            pair[1] = LOWER_HEX[(b & 0x0f) as usize];
        }
        let hex = &buf[..bytes.len() * 2];
        // Only ASCII hex digits were written.
        std::str::from_utf8(hex).unwrap_or_default()
    }

    /// The lower-case hex form as a new `String`.
    pub fn to_hex(&self) -> String {
        let mut buf = [0u8; 64];
        self.encode_hex(&mut buf).to_owned()
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        f.write_str(self.encode_hex(&mut buf))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self)
    }
}

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash::parse(s)
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        serializer.serialize_str(self.encode_hex(&mut buf))
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Hash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an md5, sha1 or sha256 in hex")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Hash, E> {
                Hash::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EICAR_MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
    const EICAR_SHA1: &str = "3395856ce81f2b7382dee72602f798b642f14140";
    const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

    #[test]
    fn word_decoder_agrees_with_the_table_for_every_byte_at_every_position() {
        for position in 0..8 {
            for byte in 0..=255u8 {
                let mut digits = *b"0f9A5c3E";
                digits[position] = byte;
                let expected: Option<Vec<u8>> = digits
                    .chunks(2)
                    .map(|p| {
                        let (hi, lo) = (HEX[p[0] as usize], HEX[p[1] as usize]);
                        (hi != INVALID && lo != INVALID).then_some(hi << 4 | lo)
                    })
                    .collect();
                let got = decode_word(u64::from_le_bytes(digits)).map(|v| v.to_le_bytes().to_vec());
                assert_eq!(got, expected, "byte {byte:#04x} at {position}");
            }
        }
    }

    #[test]
    fn parses_each_kind_by_length() {
        assert_eq!(Hash::parse(EICAR_MD5).map(|h| h.kind()), Ok(HashKind::Md5));
        assert_eq!(
            Hash::parse(EICAR_SHA1).map(|h| h.kind()),
            Ok(HashKind::Sha1)
        );
        assert_eq!(
            Hash::parse(EICAR_SHA256).map(|h| h.kind()),
            Ok(HashKind::Sha256)
        );
    }

    #[test]
    fn upper_and_lower_case_are_one_value_and_display_lower() {
        let upper = Hash::parse(&EICAR_SHA256.to_ascii_uppercase()).expect("valid");
        let lower = Hash::parse(EICAR_SHA256).expect("valid");
        assert_eq!(upper, lower);
        assert_eq!(upper.to_string(), EICAR_SHA256);
    }

    #[test]
    fn wrong_length_says_how_many_digits() {
        let err = Hash::parse(&EICAR_SHA1[..39]).expect_err("39 digits");
        assert_eq!(err, ParseHashError::Length(39));
        assert_eq!(err.to_string(), "39 hex digits (a hash has 32, 40 or 64)");
    }

    #[test]
    fn non_hex_says_where() {
        let mut s = EICAR_MD5.to_owned();
        s.replace_range(4..5, "g");
        let err = Hash::parse(&s).expect_err("not hex");
        assert_eq!(
            err,
            ParseHashError::NotHex {
                position: 5,
                len: 32
            }
        );
        assert!(err.to_string().starts_with("not hex"));
        assert_eq!(Hash::parse(""), Err(ParseHashError::Empty));
    }

    #[test]
    fn non_utf8_bytes_are_rejected_not_panicked_on() {
        let bytes = [0xff_u8; 32];
        assert!(matches!(
            Hash::parse_bytes(&bytes),
            Err(ParseHashError::NotHex { position: 1, .. })
        ));
    }

    #[test]
    fn serde_round_trip_is_lower_hex() {
        let h = Hash::parse(&EICAR_MD5.to_ascii_uppercase()).expect("valid");
        let json = serde_json::to_string(&h).expect("serialize");
        assert_eq!(json, format!("\"{EICAR_MD5}\""));
        let back: Hash = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, h);
    }

    proptest! {
        #[test]
        fn hex_round_trip(bytes in prop::collection::vec(any::<u8>(), 32..=32), kind in 0usize..3) {
            let len = HashKind::ALL[kind].byte_len();
            let h = Hash::from_digest(&bytes[..len]).expect("length is valid");
            let parsed = Hash::parse(&h.to_string()).expect("own output parses");
            prop_assert_eq!(parsed, h);
            prop_assert_eq!(parsed.as_bytes(), &bytes[..len]);
        }

        /// The vectorised decoder agrees with the digit table byte for byte: hex digits in
        /// either case with, now and then, any other byte (a letter past `f`, a byte that is
        /// a digit once `0x20` is set, a high byte) anywhere in the hash.
        #[test]
        fn decodes_as_the_digit_table_does(
            digits in prop::collection::vec(
                prop_oneof![
                    8 => prop::sample::select(b"0123456789abcdefABCDEF".to_vec()),
                    1 => any::<u8>(),
                ],
                64..=64,
            ),
            kind in 0usize..3,
        ) {
            let hex = &digits[..HashKind::ALL[kind].hex_len()];
            let table: Option<Vec<u8>> = hex
                .chunks_exact(2)
                .map(|p| (HEX[p[0] as usize] != INVALID && HEX[p[1] as usize] != INVALID)
                    .then(|| HEX[p[0] as usize] << 4 | HEX[p[1] as usize]))
                .collect();
            let parsed = Hash::parse_bytes(hex).ok();
            prop_assert_eq!(parsed.as_ref().map(|h| h.as_bytes().to_vec()), table);
        }

        /// The vector classification says what the digit table says, byte by byte.
        #[test]
        fn the_not_hex_mask_marks_what_the_digit_table_rejects(
            block in prop::array::uniform16(prop_oneof![
                3 => prop::sample::select(b"0123456789abcdefABCDEF".to_vec()),
                1 => any::<u8>(),
            ]),
        ) {
            let table = block
                .iter()
                .enumerate()
                .fold(0u32, |mask, (i, &b)| mask | u32::from(HEX[b as usize] == INVALID) << i);
            prop_assert_eq!(not_hex_mask(block), table);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = Hash::parse_bytes(&bytes);
        }
    }
}
