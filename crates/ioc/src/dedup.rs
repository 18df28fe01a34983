//! Deduplication: one entry per distinct digest, with its occurrence count and first origin.
//!
//! Keyed by binary digest, so `ABC...` and `abc...` are one entry. Entries live in first-seen
//! order in one dense vector (48 bytes each); a hash table of `(index, fingerprint)` pairs
//! (8 bytes each) points into it. The fingerprint is 32 bits of the digest's mixed hash, kept
//! in the table so that probing and rehashing never touch the entries: on a 10-million-entry
//! set every avoided random access into the vector is a cache miss saved. Digests are
//! already uniformly random, so their first 8 bytes, mixed, are the hash; a crafted input can
//! at worst slow its own run.

use hashbrown::HashTable;

use crate::reader::Origin;
use crate::{Hash, HashKind};

/// A distinct hash and what is known about its occurrences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unique {
    /// The digest.
    pub hash: Hash,
    /// How many times it appeared.
    pub count: u32,
    /// Input index (low 16 bits) and line (high 48 bits) of the first appearance, as two
    /// `u32`s so the entry stays 4-aligned (48 bytes instead of 56).
    origin: [u32; 2],
}

impl Unique {
    /// Where it first appeared.
    pub fn first(&self) -> Origin {
        let packed = u64::from(self.origin[0]) | (u64::from(self.origin[1]) << 32);
        Origin {
            input: (packed & 0xffff) as u32,
            line: packed >> 16,
        }
    }
}

fn pack(origin: Origin) -> [u32; 2] {
    let packed = u64::from(origin.input.min(0xffff)) | (origin.line.min((1 << 48) - 1) << 16);
    [packed as u32, (packed >> 32) as u32]
}

/// The set of distinct hashes seen so far.
#[derive(Debug, Default)]
pub struct Seen {
    entries: Vec<Unique>,
    index: HashTable<(u32, u32)>,
    repeats: u64,
}

fn fingerprint(h: &Hash) -> u32 {
    let b = h.as_bytes();
    let mut head = [0u8; 8];
    head.copy_from_slice(&b[..8]);
    let kind = match h.kind() {
        HashKind::Md5 => 1,
        HashKind::Sha1 => 2,
        HashKind::Sha256 => 3,
    };
    let mut z = u64::from_le_bytes(head) ^ kind;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

/// The table's hash, derived from the stored fingerprint alone (rehashing reads no entry).
fn table_hash(fp: u32) -> u64 {
    u64::from(fp).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Seen {
    /// An empty set.
    pub fn new() -> Seen {
        Seen::default()
    }

    /// Counts one occurrence; returns true when the hash is new.
    pub fn insert(&mut self, hash: Hash, origin: Origin) -> bool {
        let fp = fingerprint(&hash);
        let entries = &mut self.entries;
        let found = self.index.find(table_hash(fp), |&(i, f)| {
            f == fp && entries[i as usize].hash == hash
        });
        if let Some(&(i, _)) = found {
            let e = &mut entries[i as usize];
            e.count = e.count.saturating_add(1);
            self.repeats += 1;
            return false;
        }
        if entries.len() == entries.capacity() {
            // Grow by half rather than double: the vector is most of the memory.
            entries.reserve_exact((entries.len() / 2).max(1024));
        }
        let i = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        entries.push(Unique {
            hash,
            count: 1,
            origin: pack(origin),
        });
        self.index
            .insert_unique(table_hash(fp), (i, fp), |&(_, f)| table_hash(f));
        true
    }

    /// Number of distinct hashes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Occurrences beyond the first, summed over all hashes.
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// The distinct hashes in first-seen order.
    pub fn entries(&self) -> &[Unique] {
        &self.entries
    }

    /// Takes the entries out, in first-seen order.
    pub fn into_entries(self) -> Vec<Unique> {
        self.entries
    }

    /// Bytes held (entries plus index), for the memory figures.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Unique>()
            + self.index.capacity() * (std::mem::size_of::<(u32, u32)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin(line: u64) -> Origin {
        Origin { input: 0, line }
    }

    #[test]
    fn case_variants_are_one_entry_with_count_and_first_origin() {
        let lower = Hash::parse("44d88612fea8a8f36de82e1278abb02f").expect("hash");
        let upper = Hash::parse("44D88612FEA8A8F36DE82E1278ABB02F").expect("hash");
        let mut seen = Seen::new();
        assert!(seen.insert(
            lower,
            Origin {
                input: 3,
                line: 7_000_000_000
            }
        ));
        assert!(!seen.insert(upper, origin(9)));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen.entries()[0].count, 2);
        assert_eq!(
            seen.entries()[0].first(),
            Origin {
                input: 3,
                line: 7_000_000_000
            }
        );
        assert_eq!(seen.repeats(), 1);
    }

    #[test]
    fn an_entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Unique>(), 48);
    }

    #[test]
    fn memory_per_unique_hash_stays_near_64_bytes() {
        let mut seen = Seen::new();
        let n = 300_000u64;
        for i in 0..n {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            seen.insert(Hash::from_digest(&d).expect("digest"), origin(i));
        }
        let per = seen.heap_bytes() as f64 / n as f64;
        // 48 bytes of entry plus 9 bytes per table slot; the vector grows by half and the
        // table doubles, so the figure moves between about 57 and 90 as the set grows.
        assert!(per < 90.0, "{per:.1} bytes per unique hash");
    }

    proptest! {
        #[test]
        fn dedup_keeps_each_distinct_digest_once_in_first_seen_order(
            picks in prop::collection::vec((0usize..40, 0usize..3), 0..300)
        ) {
            let pool: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i.wrapping_mul(37) ^ 0x5a; 32]).collect();
            let mut seen = Seen::new();
            let mut expected: Vec<Hash> = Vec::new();
            let mut counts = std::collections::HashMap::new();
            for (line, (p, k)) in picks.iter().enumerate() {
                let len = HashKind::ALL[*k].byte_len();
                let h = Hash::from_digest(&pool[*p][..len]).expect("digest");
                let new = seen.insert(h, origin(line as u64 + 1));
                prop_assert_eq!(new, !expected.contains(&h));
                if new { expected.push(h); }
                *counts.entry(h).or_insert(0u32) += 1;
            }
            let got: Vec<Hash> = seen.entries().iter().map(|e| e.hash).collect();
            prop_assert_eq!(&got, &expected);
            for e in seen.entries() {
                prop_assert_eq!(e.count, counts[&e.hash]);
            }
            prop_assert_eq!(seen.repeats() as usize, picks.len() - expected.len());
        }
    }
}
