//! The input hot path: hash parsing, a whole `lines` read with dedup, and extraction from free
//! text and JSON events (MB/s), on one core.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vtbulk_ioc::reader::{InputFormat, ReadOptions, read_plain};
use vtbulk_ioc::{Hash, Item, Seen};

/// `n` lines of mixed md5/sha1/sha256 in mixed case; each line repeats an earlier one with
/// probability `repeat` (0.1: nine in ten unique, the worst case; 0.9: a nightly EDR export).
fn mixed_lines(n: u64, repeat: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 48);
    let mut rng = vtbulk_rng::Rng::new(0x1234_5678);
    let mut next = || rng.next_u64();
    for i in 0..n {
        let roll = (next() % 1000) as f64 / 1000.0;
        let seed = if i > 0 && roll < repeat {
            next() % i + 1_000_000_000
        } else {
            i + 1_000_000_000
        };
        let hex = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            seed,
            seed ^ 0xdead,
            seed.rotate_left(7),
            !seed
        );
        let len = [32, 40, 64][(seed % 3) as usize];
        let line = &hex[..len];
        if seed % 4 == 0 {
            out.extend_from_slice(line.to_ascii_uppercase().as_bytes());
        } else {
            out.extend_from_slice(line.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

fn parse(c: &mut Criterion) {
    let lines: Vec<String> = (0..1000u64)
        .map(|i| {
            let h = format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(4);
            match i % 3 {
                0 => h[..32].to_owned(),
                1 => h[..40].to_ascii_uppercase(),
                _ => h,
            }
        })
        .collect();
    let mut group = c.benchmark_group("hash");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("parse_mixed_1000", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(Hash::parse(black_box(line)).ok());
            }
        })
    });
    group.finish();
}

/// Hashes per `Seen::insert_batch` call, as the engine does.
const BATCH: usize = 256;

fn read_and_dedup(c: &mut Criterion) {
    let n: u64 = std::env::var("VTBULK_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut group = c.benchmark_group("input");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    for (label, repeat) in [("90pct_unique", 0.1), ("10pct_unique", 0.9)] {
        let input = mixed_lines(n, repeat);
        group.bench_function(format!("read_lines_and_dedup_{n}_{label}"), |b| {
            b.iter(|| {
                let mut seen = Seen::new();
                let mut batch = Vec::with_capacity(BATCH);
                let mut reader: &[u8] = &input;
                let read = read_plain(
                    &mut reader,
                    0,
                    InputFormat::Lines,
                    &ReadOptions::default(),
                    &mut |item| {
                        if let Item::Hash(h, origin) = item {
                            batch.push((h, origin));
                            if batch.len() == BATCH {
                                seen.insert_batch(&batch);
                                batch.clear();
                            }
                        }
                    },
                );
                seen.insert_batch(&batch);
                black_box((read.ok(), seen.len()))
            })
        });
        group.bench_function(format!("read_lines_only_{n}_{label}"), |b| {
            b.iter(|| {
                let mut hashes = 0u64;
                let mut reader: &[u8] = &input;
                let read = read_plain(
                    &mut reader,
                    0,
                    InputFormat::Lines,
                    &ReadOptions::default(),
                    &mut |item| {
                        if let Item::Hash(h, _) = item {
                            hashes += u64::from(h.as_bytes()[0]);
                        }
                    },
                );
                black_box((read.ok(), hashes))
            })
        });
        let mut parsed = Vec::with_capacity(n as usize);
        let mut reader: &[u8] = &input;
        let _ = read_plain(
            &mut reader,
            0,
            InputFormat::Lines,
            &ReadOptions::default(),
            &mut |item| {
                if let Item::Hash(h, origin) = item {
                    parsed.push((h, origin));
                }
            },
        );
        group.bench_function(format!("dedup_only_{n}_{label}"), |b| {
            b.iter(|| {
                let mut seen = Seen::new();
                for chunk in parsed.chunks(BATCH) {
                    seen.insert_batch(chunk);
                }
                black_box(seen.len())
            })
        });
    }
    group.finish();
}

/// About `bytes` of incident-report prose with a hash every few lines, some of them labelled as
/// import hashes or thumbprints, and NDJSON endpoint events with `Hashes` fields.
fn corpus(bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let hex = |i: u64| {
        format!(
            "{:016x}{:016x}{:016x}{:016x}",
            i,
            i ^ 0xdead,
            i.rotate_left(7),
            !i
        )
    };
    let mut text = Vec::with_capacity(bytes + 4096);
    let mut json = Vec::with_capacity(bytes + 4096);
    let mut i = 0u64;
    while text.len() < bytes {
        let h = hex(i);
        text.extend_from_slice(
            format!(
                "On 2026-11-{:02} the loader (SHA256: {h}) was seen on host WS-{i:04} beaconing to\n\
                 cdn-update.example every 300 seconds; its import hash is {} and it dropped\n\
                 stage{i}.dll. See https://www.virustotal.com/gui/file/{} for details.\n\n",
                i % 28 + 1,
                &h[..32],
                &hex(i + 1)
            )
            .as_bytes(),
        );
        i += 2;
    }
    while json.len() < bytes {
        let h = hex(i);
        json.extend_from_slice(
            format!(
                "{{\"@timestamp\":\"2026-11-29T10:00:00Z\",\"host\":{{\"name\":\"ws-{i}\"}},\"winlog\":{{\"event_id\":1,\"event_data\":{{\"ProcessGuid\":\"{{6d6e8f2a-1c2b-4e5f-9a8b-0c1d2e3f4a5b}}\",\"Image\":\"C:\\\\Temp\\\\t{i}.exe\",\"Hashes\":\"SHA1={},MD5={},SHA256={h},IMPHASH={}\"}}}}}}\n",
                &h[..40],
                &h[..32],
                &hex(i + 1)[..32]
            )
            .as_bytes(),
        );
        i += 2;
    }
    (text, json)
}

fn extract(c: &mut Criterion) {
    let (text, json) = corpus(32 << 20);
    let mut group = c.benchmark_group("extract");
    group.sample_size(10);
    for (label, format, input) in [
        ("text_reports", InputFormat::Text, &text),
        ("json_events", InputFormat::Json, &json),
    ] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(format!("{label}_32mb"), |b| {
            b.iter(|| {
                let mut hashes = 0u64;
                let mut reader: &[u8] = input;
                let report = read_plain(
                    &mut reader,
                    0,
                    format,
                    &ReadOptions::default(),
                    &mut |item| {
                        if let Item::Hash(h, _) = item {
                            hashes += u64::from(h.as_bytes()[0]);
                        }
                    },
                );
                black_box((report.ok(), hashes))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, read_and_dedup, extract);
criterion_main!(benches);
