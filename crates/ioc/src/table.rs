//! Flat tables of plain-old-data records that may grow to hundreds of megabytes.
//!
//! Deduplicating ten million hashes means random reads over about 600 MB. With 4 KiB pages
//! every one of those reads also misses the TLB and walks the page tables; with 2 MiB pages
//! the walk mostly disappears (measured: +15% on the whole read-and-dedup path). So a table
//! that outgrows [`MAPPED`] bytes moves to an anonymous mapping advised to use transparent
//! huge pages (`MADV_HUGEPAGE`; a hint the kernel may ignore, and on kernels where huge pages
//! are off this is just a mapping). Small tables stay plain vectors. The element type is
//! `bytemuck::Pod`, so viewing the mapping as `[T]` needs no `unsafe` here.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;

/// Tables at least this large (in bytes) live in a huge-page-advised mapping.
pub const MAPPED: usize = 4 << 20;

/// A growable table of `T` (a vector with a different allocator for big sizes).
pub struct Table<T: Pod> {
    mem: Mem<T>,
}

enum Mem<T: Pod> {
    Heap(Vec<T>),
    Mapped {
        map: memmap2::MmapMut,
        len: usize,
        _t: PhantomData<T>,
    },
}

impl<T: Pod> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("mapped", &matches!(self.mem, Mem::Mapped { .. }))
            .finish()
    }
}

impl<T: Pod> Default for Table<T> {
    fn default() -> Self {
        Table {
            mem: Mem::Heap(Vec::new()),
        }
    }
}

/// Address space a growing table reserves when it moves to a mapping, so that it then grows
/// in place (pages are only backed when first touched) instead of being copied. Reserved
/// with `MAP_NORESERVE`; where that is refused (strict overcommit, `ulimit -v`), tables are
/// mapped at their size and copied when they grow.
const RESERVE: usize = 16 << 30;

/// An anonymous mapping of `bytes` (zeroed), advised to use huge pages.
fn map(bytes: usize) -> Option<memmap2::MmapMut> {
    let map = memmap2::MmapOptions::new()
        .len(bytes)
        .no_reserve_swap()
        .map_anon()
        .ok()?;
    // Only a hint: without transparent huge pages the table works the same, slower.
    let _ = map.advise(memmap2::Advice::HugePage);
    Some(map)
}

impl<T: Pod> Table<T> {
    /// An empty table.
    pub fn new() -> Table<T> {
        Table::default()
    }

    /// A table of `len` zeroed elements.
    pub fn zeroed(len: usize) -> Table<T> {
        let bytes = len.saturating_mul(size_of::<T>());
        if bytes >= MAPPED
            && let Some(map) = map(bytes)
        {
            return Table {
                mem: Mem::Mapped {
                    map,
                    len,
                    _t: PhantomData,
                },
            };
        }
        Table {
            mem: Mem::Heap(vec![T::zeroed(); len]),
        }
    }

    /// Elements the table holds without growing.
    pub fn capacity(&self) -> usize {
        match &self.mem {
            Mem::Heap(v) => v.capacity(),
            Mem::Mapped { map, .. } => map.len() / size_of::<T>(),
        }
    }

    /// Bytes of memory the table occupies: its capacity while on the heap; once mapped, the
    /// part in use (the rest of the reservation is address space the kernel has not backed).
    pub fn resident_bytes(&self) -> usize {
        match &self.mem {
            Mem::Heap(v) => v.capacity() * size_of::<T>(),
            Mem::Mapped { map, len, .. } => {
                // A table made by `zeroed` is all in use; a growing one up to `len`.
                let used = *len * size_of::<T>();
                if used == map.len() {
                    used
                } else {
                    used.next_multiple_of(2 << 20).min(map.len())
                }
            }
        }
    }

    /// Appends `value`; grows by half when full (the table is most of a big run's memory).
    #[inline]
    pub fn push(&mut self, value: T) {
        if self.len() == self.capacity() {
            self.grow();
        }
        match &mut self.mem {
            Mem::Heap(v) => v.push(value),
            Mem::Mapped { map, len, .. } => {
                let at = *len * size_of::<T>();
                map[at..at + size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&value));
                *len += 1;
            }
        }
    }

    fn grow(&mut self) {
        let len = self.len();
        let want = (len + len / 2).max(1024);
        let bytes = want.saturating_mul(size_of::<T>());
        if bytes >= MAPPED
            && let Some(mut map) = map(bytes.max(RESERVE)).or_else(|| map(bytes))
        {
            let used = len * size_of::<T>();
            map[..used].copy_from_slice(bytemuck::cast_slice(&self[..]));
            self.mem = Mem::Mapped {
                map,
                len,
                _t: PhantomData,
            };
            return;
        }
        if let Mem::Heap(v) = &mut self.mem {
            v.reserve_exact(want - len);
        }
    }
}

impl<T: Pod> Deref for Table<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.mem {
            Mem::Heap(v) => v,
            Mem::Mapped { map, len, .. } => bytemuck::cast_slice(&map[..*len * size_of::<T>()]),
        }
    }
}

impl<T: Pod> DerefMut for Table<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.mem {
            Mem::Heap(v) => v,
            Mem::Mapped { map, len, .. } => {
                bytemuck::cast_slice_mut(&mut map[..*len * size_of::<T>()])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_past_the_mapping_threshold_keep_every_value_in_order() {
        let mut t: Table<[u32; 4]> = Table::new();
        let n = MAPPED / 16 * 2 + 7;
        for i in 0..n as u32 {
            t.push([i, !i, i.rotate_left(9), 5]);
        }
        assert!(format!("{t:?}").contains("mapped: true"));
        assert_eq!(t.len(), n);
        assert!(
            t.iter()
                .enumerate()
                .all(|(i, v)| *v == [i as u32, !(i as u32), (i as u32).rotate_left(9), 5])
        );
    }

    #[test]
    fn zeroed_tables_are_zero_and_writable_small_and_large() {
        for len in [10, MAPPED / 8 + 1] {
            let mut t: Table<u64> = Table::zeroed(len);
            assert_eq!(t.len(), len);
            assert!(t.iter().all(|&v| v == 0));
            t[len - 1] = 42;
            assert_eq!(t[len - 1], 42);
        }
    }
}
