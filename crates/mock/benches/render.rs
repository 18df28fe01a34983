//! Rendering a file answer and looking a hash up: the mock's work per request, which must
//! stay far below the HTTP cost so that the mock is never what a benchmark measures.
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use vtbulk_mock::Universe;
use vtbulk_mock::universe::Known;

fn render(c: &mut Criterion) {
    let universe = Universe::new(1, 1 << 32);
    let hashes: Vec<_> = (0..1024).map(|i| universe.hashes(i).md5).collect();
    let mut i = 0usize;
    c.bench_function("lookup_md5", |b| {
        b.iter(|| {
            i = (i + 1) % hashes.len();
            black_box(universe.lookup(black_box(&hashes[i])))
        })
    });
    let mut n = 0u64;
    c.bench_function("render_chunks_70_engines", |b| {
        b.iter(|| {
            n += 1;
            black_box(universe.render_chunks(Known::Generated(n)))
        })
    });
}

criterion_group!(benches, render);
criterion_main!(benches);
