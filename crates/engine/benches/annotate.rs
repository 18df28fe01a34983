//! `--annotate`'s second pass on one core: an EDR export's rows (three hash columns, a quoted
//! command line, 10% unique hashes) read as CSV rows, joined against the loaded results and
//! written as annotated CSV into memory (MB/s of input). The inflate and the output's kernel
//! write are left out: they run on threads of their own (`benches/nightly.sh` has them).
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vtbulk_engine::annotate::{AnnotateSpec, Annotator, JoinTable};
use vtbulk_ioc::reader::{Part, ReadOptions, read_rows};

fn hex(seed: u64) -> String {
    let a = vtbulk_rng::mix64(seed);
    let b = vtbulk_rng::mix64(a);
    format!("{a:016x}{b:016x}{:016x}{:016x}", a ^ b, a.rotate_left(9))
}

/// `rows` rows of a Defender-shaped export over `unique` hashes, and the first pass's records
/// of those hashes (some labels need quoting).
fn export(rows: u64, unique: u64) -> (Vec<u8>, Vec<u8>) {
    let mut csv = String::from(
        "Timestamp,DeviceId,DeviceName,ActionType,FileName,SHA1,SHA256,ProcessCommandLine,InitiatingProcessSHA256\n",
    );
    let mut rng = vtbulk_rng::Rng::new(7);
    let mut pick = |len: usize| {
        let h = hex(rng.next_u64() % unique);
        h[..len].to_string()
    };
    for i in 0..rows {
        let (sha1, sha256, parent) = (pick(40), pick(64), pick(64));
        csv.push_str(&format!(
            "2026-12-0{}T0{}:1{}:00Z,{},host-{}.corp.example,ProcessCreated,tool{}.exe,{sha1},{sha256},\"\"\"C:\\Windows\\tool{}.exe\"\" /c \"\"echo a,b\"\"\",{parent}\n",
            i % 9 + 1,
            i % 10,
            i % 6,
            &hex(i ^ 0xd5)[..40],
            i % 500,
            i % 77,
            i % 77,
        ));
    }
    let mut records = String::new();
    for u in 0..unique {
        let h = hex(u);
        let label = if u % 5 == 0 {
            "trojan.agent/a,b"
        } else {
            "trojan.agent/x"
        };
        for len in [40, 64] {
            records.push_str(&format!(
                "{{\"input\":\"{}\",\"status\":\"ok\",\"malicious\":{},\"engines_total\":70,\"threat_label\":\"{label}\",\"first_submission_date\":\"2024-01-0{}T00:00:00Z\"}}\n",
                &h[..len],
                u % 60,
                u % 9 + 1
            ));
        }
    }
    (csv.into_bytes(), records.into_bytes())
}

fn second_pass(c: &mut Criterion) {
    let (input, records) = export(200_000, 20_000);
    let spec = AnnotateSpec {
        fields: AnnotateSpec::DEFAULT_FIELDS.to_vec(),
        prefix: "vt_".into(),
    };
    let table = JoinTable::load(&mut records.as_slice(), &spec.fields).expect("loads");
    let options = ReadOptions::default();
    let mut group = c.benchmark_group("annotate");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(input.len() as u64));
    let mut out = Vec::with_capacity(input.len() * 2);
    group.bench_function("csv_200k_rows_3_hash_columns", |b| {
        b.iter(|| {
            out.clear();
            let part = Part::from_bytes("export.csv", input.clone());
            read_rows(part, &options, &mut |rows| {
                Annotator::default().write(rows, &table, &spec, &mut out)
            })
            .expect("annotates");
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, second_pass);
criterion_main!(benches);
