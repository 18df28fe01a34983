//! The cache's file checks: any bytes where the cache file should be are opened as a cache,
//! or refused as foreign or damaged, without a panic (and a refused file is left untouched).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtbulk_store::Store;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.sqlite3");
    std::fs::write(&path, data).expect("write");
    if Store::open(&path).is_err() {
        assert_eq!(
            std::fs::read(&path).expect("read"),
            data,
            "a refused file is untouched"
        );
    }
});
