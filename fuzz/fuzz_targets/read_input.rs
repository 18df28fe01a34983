//! Every input reader (lines, CSV, free text, JSON, XML) behind the real entry point: the
//! first byte picks the file name (so the name-based guess and each forced format are all
//! reached), the rest is the file's bytes, decompressed and decoded as a file would be. Any
//! input must read without a panic, and every item must come from the input's own lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtbulk_ioc::reader::{Part, read_input};
use vtbulk_ioc::{InputFormat, Kinds, ReadOptions};

const NAMES: [&str; 8] = [
    "in.txt",
    "in.csv",
    "in.json",
    "in.xml",
    "in.md",
    "in.ndjson",
    "in.ioc",
    "in",
];
const FORMATS: [InputFormat; 6] = [
    InputFormat::Auto,
    InputFormat::Lines,
    InputFormat::Csv,
    InputFormat::Text,
    InputFormat::Json,
    InputFormat::Xml,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let options = ReadOptions {
        format: FORMATS[usize::from(pick / 8) % FORMATS.len()],
        kinds: (pick & 0x80 != 0).then_some(Kinds::ALL),
        ..ReadOptions::default()
    };
    let part = Part::from_bytes(name, bytes.to_vec());
    let mut items = 0u64;
    let _ = read_input(part, 0, &options, &mut |_item| items += 1);
});
