//! Deduplication: one entry per distinct digest, with its occurrence count and first origin.
//!
//! Keyed by binary digest, so `ABC...` and `abc...` are one entry. The nightly run holds
//! millions of them, so bytes count:
//!
//! - entries live in first-seen order in one dense vector, 36 bytes each (the digest padded
//!   to 32 bytes, the count and the kind in one `u32`);
//! - first origins in a vector of 16-bit line deltas beside it, with an anchor (input, line)
//!   every 64 entries and wherever a delta does not fit (origins come in reading order, so
//!   deltas are small), and per 64 entries the number of its first anchor, so that an
//!   origin is found without a search (the cache check asks for them in hash order);
//! - an open-addressing table of 4-byte slots (linear probing, at most 13/16 full) points into
//!   the entries. A table of 2^k slots keeps `index + 1` in a slot's low k bits and the
//!   digest's fingerprint's low 32 - k bits above it (a 32-bit mixed hash of the digest whose
//!   top k bits are the home slot): so probing reads an entry only on a fingerprint match
//!   (1 in 2^13 false at 400 k, 1 in 2^10 at 2 M), and a slot needs no more than the index.
//!
//! That is 36 + 2 + 4 / load bytes per unique hash (about 43 to 48 as the table fills, the
//! vectors' growth slack on top: 44.5 at 400 k, 47.4 at 2 M); 8-byte slots (the fingerprint
//! and the index side by side, at most 3/4 full) cost 49 to 60 (60 at 400 k, 56 at 2 M).
//! Growing sweeps the entries in order (sequential reads,
//! their fingerprints recomputed from the digests) and writes the new slots a batch at a
//! time, each batch's homes touched first so that the misses overlap; an earlier index of
//! 5-byte slots re-read the entries at random to grow and ran the dedup bench 2.2 times
//! slower (`benches/RESULTS.md`, issue 28). Up to 2^32 slots: about 3.7 billion hashes.
//!
//! At ten million entries nothing fits a cache, and each lookup is a DRAM miss or two. So
//! [`Seen::insert_batch`] works on 256 hashes at a time in tight passes: fingerprints, then
//! every home slot, then (probing the now-cached runs) the entry of each fingerprint match,
//! both ends, since an entry may straddle two cache lines. Those loads are independent, so
//! the CPU overlaps their misses; the inserts that follow find every line cached. The big
//! vectors are [`Table`]s, in huge pages once large. Digests are uniformly random, so their
//! first 8 bytes, mixed, are the hash; a crafted input can at worst slow its own run.

use crate::Hash;
use crate::reader::Origin;
use crate::table::Table;

/// A distinct hash and how often it appeared: 36 bytes of plain data, so a table of them can
/// live in huge pages ([`crate::table`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Unique {
    /// The digest, zero-padded to 32 bytes.
    digest: [u8; 32],
    /// The kind (top two bits: 1 md5, 2 sha1, 3 sha256) and the count (the rest, saturating).
    count_kind: u32,
}

/// The largest count an entry holds (about a billion); more occurrences stay at it.
pub const MAX_COUNT: u32 = (1 << 30) - 1;

/// A hash as the entry stores it: padded digest and kind code.
fn key(hash: &Hash) -> ([u8; 32], u8) {
    let mut digest = [0u8; 32];
    let bytes = hash.as_bytes();
    digest[..bytes.len()].copy_from_slice(bytes);
    (digest, hash.kind().code())
}

impl Unique {
    fn kind(&self) -> u8 {
        (self.count_kind >> 30) as u8
    }

    /// The hash.
    pub fn hash(&self) -> Hash {
        let len = match self.kind() {
            1 => 16,
            2 => 20,
            _ => 32,
        };
        // Only `Seen` builds entries, always from a valid hash.
        Hash::from_digest(&self.digest[..len]).unwrap_or(Hash::Sha256(self.digest))
    }

    /// How many times it appeared (at most [`MAX_COUNT`]).
    pub fn count(&self) -> u32 {
        self.count_kind & MAX_COUNT
    }

    /// 32 bits that sort entries nearly as their [`Unique::hash`]es sort (by kind, then by
    /// the digest's first 30 bits): enough to sweep a store in key order, in 4 bytes.
    pub fn sort_key(&self) -> u32 {
        let prefix = u32::from_be_bytes([
            self.digest[0],
            self.digest[1],
            self.digest[2],
            self.digest[3],
        ]);
        (u32::from(self.kind()) << 30) | (prefix >> 2)
    }

    fn is(&self, digest: &[u8; 32], kind: u8) -> bool {
        self.digest == *digest && self.kind() == kind
    }
}

/// Where first origins start again from a full value: an entry number and its origin.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    at: u32,
    input: u32,
    line: u64,
}

/// Entries between two anchors at most (bounds the deltas summed to find an origin).
const ANCHOR_EVERY: usize = 64;

/// The set of distinct hashes seen so far.
#[derive(Debug, Default)]
pub struct Seen {
    entries: Table<Unique>,
    /// Per entry, its first line minus the entry before's (0 at an anchor).
    deltas: Table<u16>,
    anchors: Vec<Anchor>,
    /// Per 64 entries, the index in `anchors` of the anchor at its first entry (there is
    /// always one): finding an entry's anchor is then a look among a few, not a search.
    blocks: Vec<u32>,
    /// The last origin kept, for the next delta.
    last: Option<Origin>,
    /// Empty is 0; otherwise a fingerprint's tag and `index + 1` ([`Layout`]). Length a power
    /// of two.
    slots: Table<u32>,
    repeats: u64,
}

/// Hashes whose memory is touched together by [`Seen::insert_batch`].
const BATCH: usize = 256;

/// 32 bits of a digest's mixed hash (its first 8 bytes with the kind): the slot's
/// fingerprint here and in `--annotate`'s join table. Digests are uniformly random, so their
/// first bytes, mixed, are hash enough.
pub fn fingerprint(h: &Hash) -> u32 {
    fingerprint_of(h.as_bytes(), h.kind().code())
}

/// [`fingerprint`] of a digest (at least 8 bytes) and its kind code.
fn fingerprint_of(digest: &[u8], kind: u8) -> u32 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    vtbulk_rng::mix64(u64::from_le_bytes(head) ^ u64::from(kind)) as u32
}

/// The most slots the table has: homes are a 32-bit fingerprint's top bits.
const MAX_SLOTS: usize = 1 << 32;

/// How a slot of a table of 2^k slots is laid out: `index + 1` in the low k bits (the table
/// is never full, so it fits), the fingerprint's low 32 - k bits (its tag) above. The home
/// is the fingerprint's top k bits, so home and tag together are the whole fingerprint.
#[derive(Clone, Copy)]
struct Layout {
    bits: u32,
    index_mask: u32,
}

impl Layout {
    fn of(len: usize) -> Layout {
        let bits = len.trailing_zeros();
        let index_mask = 1u32.checked_shl(bits).map_or(u32::MAX, |b| b - 1);
        Layout { bits, index_mask }
    }

    fn tag(self, fp: u32) -> u32 {
        fp.checked_shl(self.bits).unwrap_or(0)
    }

    fn slot(self, fp: u32, index: usize) -> u32 {
        // `index` is below the table's length, so `index + 1` fits the low bits.
        self.tag(fp) | (index as u32).wrapping_add(1)
    }

    /// The entry a non-empty slot points to, if its tag is `tag`.
    fn index_if(self, slot: u32, tag: u32) -> Option<usize> {
        (slot & !self.index_mask == tag).then(|| ((slot & self.index_mask) - 1) as usize)
    }
}

/// Grows when entries reach 13/16 of the slots: fuller, linear probing's runs of a new hash
/// grow long (15 slots on average at 13/16, 32 at 7/8); emptier, 400 k hashes need twice the
/// slots.
fn too_full(entries: usize, slots: usize) -> bool {
    entries * 16 >= slots * 13 && slots < MAX_SLOTS
}

/// The home slot of a fingerprint in a table of `len` (a power of two, at most 2^32) slots:
/// its top bits, so that homes keep their order when the table doubles (slot `i` goes to `2i`
/// or `2i + 1`) and growing is a sequential sweep rather than millions of random writes.
pub fn home(fp: u32, len: usize) -> usize {
    let bits = len.trailing_zeros();
    (u64::from(fp) << bits >> 32) as usize
}

impl Seen {
    /// An empty set.
    pub fn new() -> Seen {
        Seen::default()
    }

    /// Counts one occurrence; returns true when the hash is new.
    pub fn insert(&mut self, hash: Hash, origin: Origin) -> bool {
        if too_full(self.entries.len() + 1, self.slots.len()) {
            self.grow_for(self.entries.len() + 1);
        }
        self.insert_fp(hash, fingerprint(&hash), origin)
    }

    /// [`Seen::insert`] with the fingerprint already computed and room in the table.
    fn insert_fp(&mut self, hash: Hash, fp: u32, origin: Origin) -> bool {
        let (digest, kind) = key(&hash);
        let layout = Layout::of(self.slots.len());
        let tag = layout.tag(fp);
        let mask = self.slots.len() - 1;
        let mut i = home(fp, self.slots.len());
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                break;
            }
            if let Some(index) = layout.index_if(slot, tag) {
                let e = &mut self.entries[index];
                if e.is(&digest, kind) {
                    if e.count() < MAX_COUNT {
                        e.count_kind += 1;
                    }
                    self.repeats += 1;
                    return false;
                }
            }
            i = (i + 1) & mask;
        }
        let index = self.entries.len();
        self.entries.push(Unique {
            digest,
            count_kind: (u32::from(kind) << 30) | 1,
        });
        self.keep_origin(index, origin);
        self.slots[i] = layout.slot(fp, index);
        true
    }

    /// Keeps entry `index`'s first origin: a delta from the one before, or an anchor.
    fn keep_origin(&mut self, index: usize, origin: Origin) {
        let delta = match self.last {
            Some(last) if !index.is_multiple_of(ANCHOR_EVERY) && last.input == origin.input => {
                origin
                    .line
                    .checked_sub(last.line)
                    .and_then(|d| u16::try_from(d).ok())
            }
            _ => None,
        };
        match delta {
            Some(d) => self.deltas.push(d),
            None => {
                self.deltas.push(0);
                if index.is_multiple_of(ANCHOR_EVERY) {
                    self.blocks
                        .push(u32::try_from(self.anchors.len()).unwrap_or(u32::MAX));
                }
                self.anchors.push(Anchor {
                    at: u32::try_from(index).unwrap_or(u32::MAX),
                    input: origin.input,
                    line: origin.line,
                });
            }
        }
        self.last = Some(origin);
    }

    /// Where entry `index` (in first-seen order) first appeared.
    pub fn first(&self, index: usize) -> Origin {
        let block = index / ANCHOR_EVERY;
        let Some(&lo) = self.blocks.get(block) else {
            return Origin { input: 0, line: 0 };
        };
        let hi = self
            .blocks
            .get(block + 1)
            .map_or(self.anchors.len(), |&h| h as usize);
        let within = self.anchors.get(lo as usize..hi).unwrap_or_default();
        let after = within.partition_point(|a| a.at as usize <= index);
        let Some(anchor) = after.checked_sub(1).and_then(|a| within.get(a)) else {
            return Origin { input: 0, line: 0 };
        };
        let from = anchor.at as usize + 1;
        let to = (index + 1).min(self.deltas.len()).max(from);
        let line = self.deltas[from..to]
            .iter()
            .fold(anchor.line, |l, &d| l + u64::from(d));
        Origin {
            input: anchor.input,
            line,
        }
    }

    /// Inserts a batch in order; returns how many were new. Same result as inserting one by
    /// one, faster on large sets (see the module docs).
    pub fn insert_batch(&mut self, batch: &[(Hash, Origin)]) -> usize {
        if too_full(self.entries.len() + batch.len(), self.slots.len()) {
            self.grow_for(self.entries.len() + batch.len());
        }
        let len = self.slots.len();
        let layout = Layout::of(len);
        let mut new = 0;
        for chunk in batch.chunks(BATCH) {
            // Three tight passes, so that the out-of-order window holds many independent
            // loads at once: fingerprints (no memory), then every home slot, then the entries
            // of fingerprint matches. Only then insert, finding every line already cached.
            let mut fps = [0u32; BATCH];
            for (fp, (hash, _)) in fps.iter_mut().zip(chunk) {
                *fp = fingerprint(hash);
            }
            let fps = &fps[..chunk.len()];
            let mut touched = 0u64;
            for &fp in fps {
                touched ^= u64::from(self.slots[home(fp, len)]);
            }
            // Probe runs are short (3 slots on average at 13/16 full, 16 to a cache line) and
            // now cached; touch the entry of the first fingerprint match in each.
            let mask = len - 1;
            for &fp in fps {
                let (mut i, tag) = (home(fp, len), layout.tag(fp));
                for _ in 0..16 {
                    let slot = self.slots[i];
                    if slot == 0 {
                        break;
                    }
                    if let Some(index) = layout.index_if(slot, tag) {
                        // Entries are 36 bytes, so some straddle two cache lines: touch both
                        // ends.
                        touched ^= self
                            .entries
                            .get(index)
                            .map_or(0, |e| u64::from(e.digest[0]) ^ u64::from(e.count_kind));
                        break;
                    }
                    i = (i + 1) & mask;
                }
            }
            std::hint::black_box(touched);
            for ((hash, origin), &fp) in chunk.iter().zip(fps) {
                new += usize::from(self.insert_fp(*hash, fp, *origin));
            }
        }
        new
    }

    /// Rebuilds the table big enough for `n` entries at most 13/16 full: a sweep of the entries
    /// in order, each batch's home slots touched before they are written.
    fn grow_for(&mut self, n: usize) {
        let mut len = self.slots.len().max(1024);
        while too_full(n, len) {
            len *= 2;
        }
        if len == self.slots.len() {
            return;
        }
        self.slots = Table::zeroed(len);
        let (layout, mask) = (Layout::of(len), len - 1);
        for (c, chunk) in self.entries.chunks(BATCH).enumerate() {
            let mut fps = [0u32; BATCH];
            for (fp, e) in fps.iter_mut().zip(chunk) {
                *fp = fingerprint_of(&e.digest, e.kind());
            }
            let fps = &fps[..chunk.len()];
            let touched = fps
                .iter()
                .fold(0u32, |t, &fp| t ^ self.slots[home(fp, len)]);
            std::hint::black_box(touched);
            for (j, &fp) in fps.iter().enumerate() {
                let mut i = home(fp, len);
                while self.slots[i] != 0 {
                    i = (i + 1) & mask;
                }
                self.slots[i] = layout.slot(fp, c * BATCH + j);
            }
        }
    }

    /// The index (in first-seen order) of `hash`, if it was inserted.
    pub fn position(&self, hash: &Hash) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let fp = fingerprint(hash);
        let (digest, kind) = key(hash);
        let layout = Layout::of(self.slots.len());
        let tag = layout.tag(fp);
        let mask = self.slots.len() - 1;
        let mut i = home(fp, self.slots.len());
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if let Some(index) = layout.index_if(slot, tag)
                && self.entries[index].is(&digest, kind)
            {
                return Some(index);
            }
            i = (i + 1) & mask;
        }
    }

    /// Number of distinct hashes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of memory the set occupies: entries, origins and index, as allocated (growth
    /// slack included).
    pub fn memory(&self) -> usize {
        self.entries.resident_bytes()
            + self.deltas.resident_bytes()
            + self.anchors.capacity() * std::mem::size_of::<Anchor>()
            + self.blocks.capacity() * 4
            + self.slots.resident_bytes()
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HashKind;
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
        assert_eq!(seen.entries()[0].count(), 2);
        assert_eq!(
            seen.first(0),
            Origin {
                input: 3,
                line: 7_000_000_000
            }
        );
        assert_eq!(seen.repeats(), 1);
    }

    #[test]
    fn an_entry_is_36_bytes() {
        assert_eq!(std::mem::size_of::<Unique>(), 36);
    }

    #[test]
    fn memory_per_unique_hash_stays_within_the_layouts_bounds() {
        let mut seen = Seen::new();
        let (mut worst, mut at_400k): (f64, f64) = (0.0, 0.0);
        for i in 0..2_000_000u64 {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            seen.insert(Hash::from_digest(&d).expect("digest"), origin(i * 3));
            if i >= 20_000 && i % 1000 == 0 {
                worst = worst.max(seen.memory() as f64 / (i + 1) as f64);
            }
            if i + 1 == 400_000 {
                at_400k = seen.memory() as f64 / 400_000.0;
            }
        }
        // 36 bytes of entry, 2 of origin delta, 4 per slot at 13/32 to 13/16 full (4.9 to 9.8),
        // and the vectors' growth: by half on the heap, in 2 MiB huge pages once mapped.
        // Issue 28 asks for at most 48 at 400 k and 2 M; 8-byte slots measured 60 and 56.
        // Small tables on the heap carry more slack (65 at 20 k).
        let at_2m = seen.memory() as f64 / 2_000_000.0;
        assert!(
            at_400k <= 48.0,
            "{at_400k:.1} bytes per unique hash at 400 k"
        );
        assert!(at_2m <= 48.0, "{at_2m:.1} bytes per unique hash at 2 M");
        assert!(worst <= 80.0, "{worst:.1} bytes per unique hash on the way");
    }

    #[test]
    fn a_slot_gives_back_its_index_only_for_its_own_tag_at_every_table_size() {
        for bits in [10u32, 19, 22, 31, 32] {
            let layout = Layout::of(1usize << bits);
            let top = (1usize << bits) - 2;
            for (fp, index) in [(0u32, 0usize), (u32::MAX, top), (0x9e37_79b9, top / 3)] {
                let slot = layout.slot(fp, index);
                assert_ne!(slot, 0, "a used slot is never empty ({bits} bits)");
                assert_eq!(layout.index_if(slot, layout.tag(fp)), Some(index));
                // Another fingerprint's tag differs unless the table leaves no bits for it.
                let other = layout.tag(fp ^ 1);
                let expected = if bits == 32 { Some(index) } else { None };
                assert_eq!(layout.index_if(slot, other), expected, "{bits} bits");
            }
        }
    }

    #[test]
    fn first_origins_survive_big_jumps_new_inputs_and_lines_going_back() {
        let mut seen = Seen::new();
        let mut want = Vec::new();
        let mut line = 1u64;
        for i in 0..5000u64 {
            // Steps of every size: small, past u16, back to the start of a new input, and
            // back within the same input (a zip's members share an input index).
            line = match i % 11 {
                3 => line + 70_000 + i,
                5 => 1,
                7 => line.saturating_sub(500),
                _ => line + (i % 4),
            };
            let input = (i / 97) as u32 % 5;
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(i + 1).wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
            let o = Origin { input, line };
            assert!(seen.insert(Hash::from_digest(&d).expect("digest"), o));
            want.push(o);
        }
        for (i, o) in want.iter().enumerate() {
            assert_eq!(seen.first(i), *o, "entry {i}");
        }
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
            let got: Vec<Hash> = seen.entries().iter().map(|e| e.hash()).collect();
            prop_assert_eq!(&got, &expected);
            for (i, h) in expected.iter().enumerate() {
                prop_assert_eq!(seen.position(h), Some(i));
            }
            let absent = Hash::from_digest(&[0xee; 20]).expect("digest");
            prop_assert_eq!(seen.position(&absent), None);
            // The batched path gives the same set, counts and origins.
            let items: Vec<(Hash, Origin)> = picks.iter().enumerate().map(|(line, (p, k))| {
                let len = HashKind::ALL[*k].byte_len();
                (Hash::from_digest(&pool[*p][..len]).expect("digest"), origin(line as u64 + 1))
            }).collect();
            let mut batched = Seen::new();
            let mut new = 0;
            for chunk in items.chunks(7) {
                new += batched.insert_batch(chunk);
            }
            prop_assert_eq!(new, expected.len());
            prop_assert_eq!(batched.entries(), seen.entries());
            for (i, want) in expected.iter().enumerate() {
                prop_assert_eq!(batched.first(i), seen.first(i));
                let line = picks.iter().position(|(p, k)| {
                    Hash::from_digest(&pool[*p][..HashKind::ALL[*k].byte_len()]) == Some(*want)
                });
                prop_assert_eq!(seen.first(i).line, line.map_or(0, |l| l as u64 + 1));
            }
            for e in seen.entries() {
                prop_assert_eq!(e.count(), counts[&e.hash()]);
            }
            prop_assert_eq!(seen.repeats() as usize, picks.len() - expected.len());
        }
    }
}
