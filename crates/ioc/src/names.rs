//! Deduplication of URLs, domains and IP addresses: one entry per distinct canonical text.
//!
//! The counterpart of [`crate::Seen`] for the kinds that are strings. Their canonical texts
//! go one after another into one byte arena (no allocation per IOC); an entry is 24 bytes of
//! plain data (where its text lies, its kind, its count and first origin) in first-seen order,
//! and a `hashbrown` table of 4-byte indices (plus its control byte) finds an entry by text.
//! So memory per unique string IOC is its text plus about 30 bytes, measured and reported by
//! [`Names::memory`] (the mixed-list benchmark quotes bytes per unique URL and domain). The
//! kind is part of the key: `evil.com` the domain and a URL are different IOCs.

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use std::hash::BuildHasher;

use crate::indicator::{Indicator, Kind};
use crate::reader::Origin;

/// A distinct URL, domain or IP address and what is known about its occurrences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Named {
    /// Where its text starts in the arena (two halves: 4-byte alignment keeps it 24 bytes).
    start: [u32; 2],
    /// Its text's length, shifted left by 2, and the kind (1 url, 2 domain, 3 ip).
    len_kind: u32,
    /// How many times it appeared.
    pub count: u32,
    /// Input index (low 16 bits) and line (high 48 bits) of the first appearance.
    origin: [u32; 2],
}

impl Named {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        Kind::from_code((self.len_kind & 3) as u8).unwrap_or(Kind::Ip)
    }

    fn range(&self) -> std::ops::Range<usize> {
        let start = (u64::from(self.start[0]) | (u64::from(self.start[1]) << 32)) as usize;
        start..start + (self.len_kind >> 2) as usize
    }

    /// Where it first appeared.
    pub fn first(&self) -> Origin {
        let packed = u64::from(self.origin[0]) | (u64::from(self.origin[1]) << 32);
        Origin {
            input: (packed & 0xffff) as u32,
            line: packed >> 16,
        }
    }
}

/// The set of distinct URLs, domains and IP addresses seen so far.
#[derive(Default)]
pub struct Names {
    arena: Vec<u8>,
    entries: Vec<Named>,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Names {
    /// An empty set.
    pub fn new() -> Names {
        Names::default()
    }

    fn hash(&self, kind: u32, text: &[u8]) -> u64 {
        self.hasher.hash_one((kind, text))
    }

    /// Counts one occurrence; returns true when the indicator is new.
    pub fn insert(&mut self, found: &Indicator, origin: Origin) -> bool {
        let mut buf = [0u8; 48];
        let text = found.text_in(&mut buf);
        let kind = u32::from(found.kind_of().code());
        let h = self.hash(kind, text.as_bytes());
        let (arena, entries) = (&self.arena, &self.entries);
        let same = |&i: &u32| {
            let e = &entries[i as usize];
            e.len_kind & 3 == kind && arena[e.range()] == *text.as_bytes()
        };
        if let Some(&i) = self.table.find(h, same) {
            let e = &mut self.entries[i as usize];
            e.count = e.count.saturating_add(1);
            return false;
        }
        let start = self.arena.len() as u64;
        self.arena.extend_from_slice(text.as_bytes());
        let index = self.entries.len() as u32;
        let packed = u64::from(origin.input.min(0xffff)) | (origin.line.min((1 << 48) - 1) << 16);
        self.entries.push(Named {
            start: [start as u32, (start >> 32) as u32],
            len_kind: ((text.len() as u32) << 2) | kind,
            count: 1,
            origin: [packed as u32, (packed >> 32) as u32],
        });
        let (arena, entries, hasher) = (&self.arena, &self.entries, &self.hasher);
        self.table.insert_unique(h, index, |&i| {
            let e = &entries[i as usize];
            hasher.hash_one((e.len_kind & 3, &arena[e.range()]))
        });
        true
    }

    /// The entries, in first-seen order.
    pub fn entries(&self) -> &[Named] {
        &self.entries
    }

    /// How many distinct indicators.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none was seen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The canonical text of `entry`.
    pub fn text(&self, entry: &Named) -> &str {
        // Only whole canonical texts (valid UTF-8, ASCII in fact) go into the arena.
        std::str::from_utf8(&self.arena[entry.range()]).unwrap_or("")
    }

    /// Bytes held: the arena, the entries and the table (slots and control bytes).
    pub fn memory(&self) -> usize {
        self.arena.capacity()
            + self.entries.capacity() * std::mem::size_of::<Named>()
            + self.table.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// Bytes of canonical text held (the part of [`Names::memory`] that is the IOCs' own).
    pub fn text_bytes(&self) -> usize {
        self.arena.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::parse;

    fn at(line: u64) -> Origin {
        Origin { input: 1, line }
    }

    #[test]
    fn one_entry_per_canonical_text_and_kind_with_counts_and_first_origin() {
        let mut names = Names::new();
        assert!(names.insert(&parse("evil[.]com").expect("domain"), at(3)));
        assert!(!names.insert(&parse("EVIL.com.").expect("domain"), at(9)));
        assert!(names.insert(&parse("http://evil.com").expect("url"), at(4)));
        assert!(names.insert(&parse("8.8.8.8").expect("ip"), at(5)));
        assert!(!names.insert(&parse("8.8.8[.]8").expect("ip"), at(6)));
        assert_eq!(names.len(), 3);
        let e = names.entries();
        assert_eq!(
            (names.text(&e[0]), e[0].kind(), e[0].count),
            ("evil.com", Kind::Domain, 2)
        );
        assert_eq!(e[0].first(), at(3));
        assert_eq!(
            (names.text(&e[1]), e[1].kind()),
            ("http://evil.com", Kind::Url)
        );
        assert_eq!((names.text(&e[2]), e[2].count), ("8.8.8.8", 2));
        assert_eq!(std::mem::size_of::<Named>(), 24);
    }

    #[test]
    fn memory_per_unique_stays_near_its_text_plus_thirty_bytes() {
        let mut names = Names::new();
        for i in 0..100_000u32 {
            let url = parse(&format!("http://host{i}.example-{}.com/p/{i}", i % 97)).expect("url");
            names.insert(&url, at(u64::from(i)));
        }
        let per = (names.memory() - names.text_bytes()) as f64 / names.len() as f64;
        // Entries 24 bytes, table 5 bytes a slot at up to 7/8 full, vectors grown by doubling.
        assert!(per < 80.0, "{per} bytes per entry beyond its text");
    }
}
