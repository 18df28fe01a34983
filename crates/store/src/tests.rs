//! The store's contract: aliases, freshness, refusal of foreign files, concurrent writers.

use super::*;

const DAY: i64 = 86_400;
const T0: i64 = 1_790_000_000;

fn digests(seed: u8) -> ([u8; 32], [u8; 16], [u8; 20]) {
    ([seed; 32], [seed ^ 0x55; 16], [seed ^ 0xaa; 20])
}

fn found(seed: u8) -> Put {
    let (sha256, md5, sha1) = digests(seed);
    Put::Found {
        sha256,
        md5: Some(md5),
        sha1: Some(sha1),
        summary: format!("{{\"seed\":{seed}}}").into_bytes(),
        data: Some(
            format!("{{\"id\":\"{seed}\",\"attributes\":{{}}}}")
                .into_bytes()
                .into(),
        ),
    }
}

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub").join("cache.sqlite3");
    (dir, path)
}

#[test]
fn a_found_file_is_found_by_each_of_its_three_hashes_with_its_data() {
    let (_dir, path) = temp();
    let mut store = SqliteStore::open(&path).expect("open");
    store.put_batch(&[found(7)], T0).expect("put");
    store.compact().expect("compact");
    let (sha256, md5, sha1) = digests(7);
    let hashes = [
        Hash::Sha256(sha256),
        Hash::Md5(md5),
        Hash::Sha1(sha1),
        Hash::Sha256([8; 32]),
    ];
    let hits = store.get_many(&hashes, true).expect("get");
    for hit in &hits[..3] {
        let Some(Hit::Found(f)) = hit else {
            panic!("expected found, got {hit:?}")
        };
        assert_eq!(f.sha256, sha256);
        assert_eq!(f.fetched_at, T0);
        assert_eq!(f.summary, b"{\"seed\":7}");
        assert_eq!(
            f.data.as_deref(),
            Some(&b"{\"id\":\"7\",\"attributes\":{}}"[..])
        );
    }
    assert_eq!(hits[3], None, "not stored yet");
    // A second body is compressed against the first (the dictionary) and reads back whole.
    store.put_batch(&[found(8)], T0).expect("put");
    store.compact().expect("compact");
    let Some(Hit::Found(eight)) = store.get(&Hash::Sha256([8; 32])).expect("get") else {
        panic!("expected found")
    };
    assert_eq!(
        eight.data.as_deref(),
        Some(&b"{\"id\":\"8\",\"attributes\":{}}"[..])
    );
    // Without data, the body is not read.
    let lean = store.get_many(&hashes[..1], false).expect("get");
    assert!(matches!(&lean[0], Some(Hit::Found(f)) if f.data.is_none()));
}

#[test]
fn journaled_answers_are_visible_after_compaction_or_on_the_next_open() {
    let (_dir, path) = temp();
    let mut store = SqliteStore::open(&path).expect("open");
    store.put_batch(&[found(5)], T0).expect("put");
    let hash = Hash::Sha256(digests(5).0);
    assert_eq!(
        store.get(&hash).expect("get"),
        None,
        "journaled, not yet compacted"
    );
    drop(store);
    // As after a kill: the next open moves the journal into the indexed tables.
    let mut reopened = SqliteStore::open(&path).expect("reopen");
    assert!(matches!(
        reopened.get(&hash).expect("get"),
        Some(Hit::Found(_))
    ));
    assert_eq!(
        reopened.compact().expect("compact"),
        0,
        "nothing left to move"
    );
}

#[test]
fn a_not_found_answer_is_kept_by_the_digest_asked_and_cleared_when_the_file_appears() {
    let (_dir, path) = temp();
    let mut store = SqliteStore::open(&path).expect("open");
    let (_, md5, _) = digests(3);
    store
        .put_batch(&[Put::NotFound(Hash::Md5(md5))], T0)
        .expect("put");
    store.compact().expect("compact");
    assert_eq!(
        store.get(&Hash::Md5(md5)).expect("get"),
        Some(Hit::NotFound { fetched_at: T0 })
    );
    store.put_batch(&[found(3)], T0 + 10).expect("put");
    store.compact().expect("compact");
    assert!(matches!(
        store.get(&Hash::Md5(md5)).expect("get"),
        Some(Hit::Found(_))
    ));
    assert_eq!(store.stats().expect("stats").not_found, 0);
}

#[test]
fn freshness_has_separate_ttls_for_found_and_not_found_and_max_age_tightens_both() {
    let f = Freshness::default();
    let found = Hit::Found(FoundFile {
        sha256: [0; 32],
        fetched_at: T0,
        summary: vec![],
        data: None,
    });
    let missing = Hit::NotFound { fetched_at: T0 };
    assert!(f.is_fresh(&found, T0 + 7 * DAY));
    assert!(!f.is_fresh(&found, T0 + 7 * DAY + 1));
    assert!(f.is_fresh(&missing, T0 + DAY));
    assert!(!f.is_fresh(&missing, T0 + DAY + 1));
    let strict = Freshness {
        max_age: Some(3600),
        ..f
    };
    assert!(strict.is_fresh(&found, T0 + 3600));
    assert!(!strict.is_fresh(&found, T0 + 3601));
}

#[test]
fn refreshing_a_file_replaces_its_answer_and_time() {
    let (_dir, path) = temp();
    let mut store = SqliteStore::open(&path).expect("open");
    store.put_batch(&[found(1)], T0).expect("put");
    store.compact().expect("compact");
    store.put_batch(&[found(1)], T0 + DAY).expect("put");
    store.compact().expect("compact");
    let stats = store.stats().expect("stats");
    assert_eq!(stats.found, 1);
    assert_eq!(
        (stats.oldest, stats.newest),
        (Some(T0 + DAY), Some(T0 + DAY))
    );
}

#[test]
fn prune_drops_only_what_is_stale_at_now() {
    let (_dir, path) = temp();
    let mut store = SqliteStore::open(&path).expect("open");
    store.put_batch(&[found(1)], T0).expect("put");
    store.compact().expect("compact");
    store.put_batch(&[found(2)], T0 + 5 * DAY).expect("put");
    store.compact().expect("compact");
    store
        .put_batch(&[Put::NotFound(Hash::Md5([9; 16]))], T0 + 5 * DAY)
        .expect("put");
    store.compact().expect("compact");
    let (files, missing) = store
        .prune(T0 + 7 * DAY + 1, Freshness::default())
        .expect("prune");
    assert_eq!((files, missing), (1, 1));
    let stats = store.stats().expect("stats");
    assert_eq!((stats.found, stats.not_found), (1, 0));
    let mut exported = vec![];
    store
        .export(&mut |e| {
            exported.push(e);
            Ok(())
        })
        .expect("export");
    assert!(matches!(&exported[..], [Exported::Found { sha256, .. }] if *sha256 == [2; 32]));
}

#[test]
fn the_file_is_created_private_and_reopens_with_its_data() {
    let (_dir, path) = temp();
    {
        let mut store = SqliteStore::open(&path).expect("open");
        store.put_batch(&[found(4)], T0).expect("put");
        store.compact().expect("compact");
        store
            .record_run(RunRecord {
                started_at: T0,
                finished_at: T0 + 5,
                unique_hashes: 10,
                hits: 4,
                lookups: 6,
            })
            .expect("run");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let store = SqliteStore::open(&path).expect("reopen");
    let stats = store.stats().expect("stats");
    assert_eq!(stats.found, 1);
    assert_eq!(stats.last_run.map(|r| (r.hits, r.lookups)), Some((4, 6)));
}

fn assert_refused_untouched(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
    let err = SqliteStore::open(path).expect_err("refused");
    assert!(
        matches!(err, StoreError::Foreign { .. } | StoreError::Corrupt { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(
        std::fs::read(path).expect("read"),
        bytes,
        "the file was modified"
    );
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "a WAL file was created");
}

#[test]
fn a_text_file_or_a_damaged_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_refused_untouched(&dir.path().join("notes.txt"), b"my precious notes\n");
    let mut damaged = SQLITE_MAGIC.to_vec();
    damaged.extend(std::iter::repeat_n(0xa5u8, 8192));
    assert_refused_untouched(&dir.path().join("damaged.sqlite3"), &damaged);
}

#[test]
fn another_programs_sqlite_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("create");
    }
    let before = std::fs::read(&path).expect("read");
    let err = SqliteStore::open(&path).expect_err("refused");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn two_writers_on_one_file_at_once_neither_fails_and_all_answers_are_kept() {
    let (_dir, path) = temp();
    SqliteStore::open(&path).expect("create");
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = SqliteStore::open(&path).expect("open");
                for batch in 0..40u8 {
                    // Overlapping seeds: both write some of the same files.
                    let items: Vec<Put> = (0..5u8).map(|i| found(batch * 3 + i + w)).collect();
                    store.put_batch(&items, T0).expect("put");
                    if batch % 4 == 0 {
                        store.compact().expect("compact");
                    }
                    store
                        .get_many(&[Hash::Sha256([batch; 32])], true)
                        .expect("read");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let store = SqliteStore::open(&path).expect("open");
    let expected: std::collections::BTreeSet<u8> = (0..40u8)
        .flat_map(|b| (0..2u8).flat_map(move |w| (0..5u8).map(move |i| b * 3 + i + w)))
        .collect();
    assert_eq!(store.stats().expect("stats").found, expected.len() as u64);
}
