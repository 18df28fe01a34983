//! Hash parsing, the first step of every input line.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vtbulk_ioc::Hash;

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

criterion_group!(benches, parse);
criterion_main!(benches);
