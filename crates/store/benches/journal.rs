//! The store's hot paths: journaling answers (per batch, as the journal thread does) and
//! importing a run's journal into the indexed tables (`compact`, at the end of every run).
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vtbulk_ioc::Hash;
use vtbulk_store::{Body, Put, Store};

/// Answers per benchmark run, in batches of `BATCH` (what a 300 µs gather holds at ~30k/s).
const ANSWERS: u64 = 20_000;
const BATCH: usize = 16;

fn digest<const N: usize>(i: u64, salt: u64) -> [u8; N] {
    let mut out = [0u8; N];
    vtbulk_rng::Rng::new(vtbulk_rng::seed_of(&[i, salt])).fill(&mut out);
    out
}

/// Nine found answers (a 2.4 KB body, vt-mock's gzip size; a 130-byte summary, the packed
/// size) for every not-found one.
fn answers() -> Vec<Put> {
    let body = bytes::Bytes::from(vec![0x5a; 2400]);
    (0..ANSWERS)
        .map(|i| {
            if i % 10 == 9 {
                Put::NotFound(Hash::Md5(digest(i, 3)))
            } else {
                Put::Found {
                    sha256: digest(i, 0),
                    md5: Some(digest(i, 1)),
                    sha1: Some(digest(i, 2)),
                    summary: vec![0x42; 130],
                    body: Some(Body::Gzip(body.clone())),
                }
            }
        })
        .collect()
}

fn journal(c: &mut Criterion) {
    let items = answers();
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(ANSWERS));
    group.sample_size(10);
    // Time the phase named, over fresh stores, and nothing else.
    let phase = |iters: u64, import: bool| -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut store = Store::open(&dir.path().join("c.sqlite3")).expect("open");
            let started = Instant::now();
            for batch in items.chunks(BATCH) {
                store.put_batch(batch, 1_790_000_000).expect("put");
            }
            let appended = started.elapsed();
            let started = Instant::now();
            black_box(store.compact().expect("compact"));
            total += if import { started.elapsed() } else { appended };
        }
        total
    };
    group.bench_function("put_batch_20k", |b| b.iter_custom(|n| phase(n, false)));
    group.bench_function("compact_20k", |b| b.iter_custom(|n| phase(n, true)));
    group.finish();
}

criterion_group!(benches, journal);
criterion_main!(benches);
