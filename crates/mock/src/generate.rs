//! `vt-mock hashes`: input lists drawn from the mock's own universe, with the truth attached.
//!
//! Tests and benchmarks need inputs whose answers they know in advance: which hashes exist,
//! how many lines are repeats, how many are junk. The counts are exact, not expected values:
//! each line's role is drawn with probability "roles left / lines left", so a list asked for
//! with 10% repeats has exactly that many.

use std::io::{self, Write};

use serde::Serialize;
use vtbulk_ioc::{Hash, HashKind};

use crate::universe::Universe;
use vtbulk_rng::{Rng, seed_of};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenSpec {
    /// Lines holding a hash (repeats included, junk not).
    pub count: u64,
    /// Share of the unique hashes that the universe does not know (404s).
    pub unknown: f64,
    /// Share of hash lines that repeat an earlier hash.
    pub dup: f64,
    /// Kinds to draw from, uniformly.
    pub mix: Vec<HashKind>,
    /// Junk lines, as a share of `count`, mixed in on top.
    pub junk: f64,
    /// Share of hash lines written in upper case.
    pub upper: f64,
    /// Seed of this list (independent of the universe's seed).
    pub seed: u64,
}

impl Default for GenSpec {
    fn default() -> Self {
        GenSpec {
            count: 1000,
            unknown: 0.0,
            dup: 0.0,
            mix: vec![HashKind::Sha256],
            junk: 0.0,
            upper: 0.0,
            seed: 1,
        }
    }
}

/// The truth about a generated list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GenMeta {
    /// All lines written.
    pub lines: u64,
    /// Lines holding a hash.
    pub hash_lines: u64,
    /// Distinct hashes.
    pub unique: u64,
    /// Distinct hashes the mock knows (200).
    pub known: u64,
    /// Distinct hashes it does not (404).
    pub unknown: u64,
    /// Hash lines repeating an earlier hash.
    pub duplicates: u64,
    /// Junk lines.
    pub junk: u64,
    /// Distinct MD5s.
    pub md5: u64,
    /// Distinct SHA-1s.
    pub sha1: u64,
    /// Distinct SHA-256s.
    pub sha256: u64,
}

/// Draws true with probability `left / total_left`, and counts it down.
fn take(rng: &mut Rng, left: &mut u64, total_left: u64) -> bool {
    if *left > 0 && rng.below(total_left.max(1)) < *left {
        *left -= 1;
        true
    } else {
        false
    }
}

fn junk_line(rng: &mut Rng) -> String {
    let hex = |rng: &mut Rng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[rng.below(16) as usize]))
            .collect()
    };
    match rng.below(5) {
        0 => hex(rng, 39),
        1 => format!("{}z", hex(rng, 63)),
        2 => "not-a-hash".to_owned(),
        3 => format!("{}{}", hex(rng, 31), "g"),
        _ => hex(rng, 33),
    }
}

/// Writes a list to `out`, one line each, and returns its truth.
pub fn generate(universe: &Universe, spec: &GenSpec, out: &mut impl Write) -> io::Result<GenMeta> {
    if spec.mix.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--mix names no kind",
        ));
    }
    let mut rng = Rng::new(seed_of(&[spec.seed, 0x9e4]));
    let unique = spec.count - (spec.count as f64 * spec.dup.clamp(0.0, 1.0)).round() as u64;
    let unique = unique.max(u64::from(spec.count > 0));
    let mut unknown_left = (unique as f64 * spec.unknown.clamp(0.0, 1.0)).round() as u64;
    if unique - unknown_left > universe.size() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} known hashes asked for, but the universe has only {} files (raise --universe)",
                unique - unknown_left,
                universe.size()
            ),
        ));
    }
    let mut dups_left = spec.count - unique;
    let mut junk_left = (spec.count as f64 * spec.junk.max(0.0)).round() as u64;
    let start = rng.below(universe.size().max(1));
    let mut meta = GenMeta::default();
    let mut written: Vec<Hash> = Vec::with_capacity(unique.min(1 << 24) as usize);
    let (mut known_n, mut unknown_n) = (0u64, 0u64);
    let mut buf = [0u8; 64];
    while meta.hash_lines < spec.count || junk_left > 0 {
        let lines_left = (spec.count - meta.hash_lines) + junk_left;
        if take(&mut rng, &mut junk_left, lines_left) {
            writeln!(out, "{}", junk_line(&mut rng))?;
            meta.junk += 1;
            meta.lines += 1;
            continue;
        }
        let hash_lines_left = spec.count - meta.hash_lines;
        let hash = if !written.is_empty() && take(&mut rng, &mut dups_left, hash_lines_left) {
            meta.duplicates += 1;
            written[rng.below(written.len() as u64) as usize]
        } else {
            let kind = *rng.pick(&spec.mix);
            let uniques_left = unique - meta.unique;
            let h = if take(&mut rng, &mut unknown_left, uniques_left) {
                unknown_n += 1;
                meta.unknown += 1;
                universe.unknown_hash(kind, seed_of(&[spec.seed, unknown_n]))
            } else {
                known_n += 1;
                meta.known += 1;
                let index = (start + known_n - 1) % universe.size().max(1);
                universe.hashes(index).of_kind(kind)
            };
            meta.unique += 1;
            match kind {
                HashKind::Md5 => meta.md5 += 1,
                HashKind::Sha1 => meta.sha1 += 1,
                HashKind::Sha256 => meta.sha256 += 1,
            }
            written.push(h);
            h
        };
        let text = hash.encode_hex(&mut buf);
        if rng.chance(spec.upper) {
            writeln!(out, "{}", text.to_ascii_uppercase())?;
        } else {
            writeln!(out, "{text}")?;
        }
        meta.hash_lines += 1;
        meta.lines += 1;
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn counts_are_exact_and_match_the_universe() {
        let universe = Universe::new(5, 1_000_000);
        let spec = GenSpec {
            count: 2_000,
            unknown: 0.1,
            dup: 0.2,
            mix: HashKind::ALL.to_vec(),
            junk: 0.05,
            upper: 0.3,
            seed: 11,
        };
        let mut out = Vec::new();
        let meta = generate(&universe, &spec, &mut out).expect("in memory");
        assert_eq!(meta.hash_lines, 2_000);
        assert_eq!(meta.unique, 1_600);
        assert_eq!(meta.duplicates, 400);
        assert_eq!(meta.unknown, 160);
        assert_eq!(meta.known, 1_440);
        assert_eq!(meta.junk, 100);
        assert_eq!(meta.md5 + meta.sha1 + meta.sha256, meta.unique);

        let text = String::from_utf8(out).expect("ascii");
        let mut seen = HashSet::new();
        let (mut known, mut unknown, mut junk) = (0, 0, 0);
        for line in text.lines() {
            match Hash::parse(line) {
                Ok(h) => {
                    if seen.insert(h) {
                        match universe.lookup(&h) {
                            Some(_) => known += 1,
                            None => unknown += 1,
                        }
                    }
                }
                Err(_) => junk += 1,
            }
        }
        assert_eq!((known, unknown, junk), (1_440, 160, 100));
        assert_eq!(text.lines().count() as u64, meta.lines);
    }

    #[test]
    fn same_seed_same_list() {
        let universe = Universe::new(5, 1_000);
        let spec = GenSpec {
            count: 50,
            dup: 0.1,
            ..GenSpec::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(&universe, &spec, &mut a).expect("in memory");
        generate(&universe, &spec, &mut b).expect("in memory");
        assert_eq!(a, b);
    }
}
