//! Deduplication: one entry per distinct digest, with its occurrence count and first origin.
//!
//! Keyed by binary digest, so `ABC...` and `abc...` are one entry. Entries are kept in
//! first-seen order in one dense vector, and a hash table of 4-byte indices points into it:
//! the digests themselves are stored once. The table's hash is the digest's first 8 bytes
//! mixed, since digests are already uniformly random; a crafted input can at worst slow its
//! own run.

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
    /// Where it first appeared.
    pub first: Origin,
}

/// The set of distinct hashes seen so far.
#[derive(Debug, Default)]
pub struct Seen {
    entries: Vec<Unique>,
    index: HashTable<u32>,
    repeats: u64,
}

fn digest_hash(h: &Hash) -> u64 {
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
    z ^ (z >> 31)
}

impl Seen {
    /// An empty set.
    pub fn new() -> Seen {
        Seen::default()
    }

    /// Counts one occurrence; returns true when the hash is new.
    pub fn insert(&mut self, hash: Hash, origin: Origin) -> bool {
        let h = digest_hash(&hash);
        let entries = &mut self.entries;
        if let Some(&i) = self.index.find(h, |&i| entries[i as usize].hash == hash) {
            let e = &mut entries[i as usize];
            e.count = e.count.saturating_add(1);
            self.repeats += 1;
            return false;
        }
        let i = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        entries.push(Unique {
            hash,
            count: 1,
            first: origin,
        });
        self.index
            .insert_unique(h, i, |&j| digest_hash(&entries[j as usize].hash));
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
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
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
        assert!(seen.insert(lower, origin(3)));
        assert!(!seen.insert(upper, origin(9)));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen.entries()[0].count, 2);
        assert_eq!(seen.entries()[0].first, origin(3));
        assert_eq!(seen.repeats(), 1);
    }

    #[test]
    fn an_entry_stays_small() {
        assert!(
            std::mem::size_of::<Unique>() <= 56,
            "{}",
            std::mem::size_of::<Unique>()
        );
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
