//! The store's contract: aliases, freshness, refusal of foreign files, concurrent writers.

use super::*;
use std::path::Path;

use crate::open::SQLITE_MAGIC;
use crate::schema::MIGRATIONS;
use rusqlite::params;
use vtbulk_ioc::Hash;
use vtbulk_quota::LedgerWindow;

const DAY: i64 = 86_400;
const T0: i64 = 1_790_000_000;

fn digests(seed: u8) -> ([u8; 32], [u8; 16], [u8; 20]) {
    ([seed; 32], [seed ^ 0x55; 16], [seed ^ 0xaa; 20])
}

/// The answer stored for `seed`, as JSON.
fn answer(seed: u8) -> Vec<u8> {
    format!("{{\"id\":\"{seed}\",\"attributes\":{{}}}}").into_bytes()
}

/// A found file; even seeds came gzipped, odd ones plain.
fn found(seed: u8) -> Put {
    let (sha256, md5, sha1) = digests(seed);
    let json = answer(seed);
    Put::Found {
        sha256,
        md5: Some(md5),
        sha1: Some(sha1),
        summary: format!("{{\"seed\":{seed}}}").into_bytes(),
        body: Some(if seed.is_multiple_of(2) {
            Body::Gzip(segment::gzip(&json))
        } else {
            Body::Json(json.into())
        }),
    }
}

/// The files in the segment directory, by extension.
fn segment_files(path: &Path, ext: &str) -> usize {
    std::fs::read_dir(segment::dir_of(path)).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == ext))
        })
        .count()
    })
}

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub").join("cache.sqlite3");
    (dir, path)
}

#[test]
fn a_found_file_is_found_by_each_of_its_three_hashes_with_its_data() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).expect("open");
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
        assert_eq!((f.sha256, f.md5, f.sha1), (sha256, Some(md5), Some(sha1)));
        assert_eq!(f.fetched_at, T0);
        assert_eq!(f.summary, b"{\"seed\":7}");
        assert_eq!(f.data.as_deref(), Some(&answer(7)[..]));
    }
    assert_eq!(hits[3], None, "not stored yet");
    // A body that came gzipped is kept so and reads back inflated.
    store.put_batch(&[found(8)], T0).expect("put");
    store.compact().expect("compact");
    let Some(Hit::Found(eight)) = store.get(&Hash::Sha256([8; 32])).expect("get") else {
        panic!("expected found")
    };
    assert_eq!(eight.data.as_deref(), Some(&answer(8)[..]));
    // Without data, the body is not read.
    let lean = store.get_many(&hashes[..1], false).expect("get");
    assert!(matches!(&lean[0], Some(Hit::Found(f)) if f.data.is_none()));
}

#[test]
fn journaled_answers_are_visible_after_compaction_or_on_the_next_open() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).expect("open");
    store.put_batch(&[found(5)], T0).expect("put");
    let hash = Hash::Sha256(digests(5).0);
    assert_eq!(
        store.get(&hash).expect("get"),
        None,
        "journaled, not yet compacted"
    );
    drop(store);
    // As after a kill: the next open moves the journal into the indexed tables.
    let mut reopened = Store::open(&path).expect("reopen");
    assert!(matches!(
        reopened.get(&hash).expect("get"),
        Some(Hit::Found(_))
    ));
    assert_eq!(
        reopened.compact().expect("compact"),
        0,
        "nothing left to move"
    );
    assert_eq!(segment_files(&path, "log"), 0, "imported logs are removed");
    assert_eq!(segment_files(&path, "bodies"), 1, "bodies stay");
}

#[test]
fn a_torn_log_entry_ends_the_import_and_everything_before_it_is_kept() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).expect("open");
    store.put_batch(&[found(1), found(2)], T0).expect("put");
    store.put_batch(&[found(3)], T0).expect("put");
    drop(store);
    // As if killed in the middle of writing the last entry.
    let log = std::fs::read_dir(segment::dir_of(&path))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a log");
    let len = std::fs::metadata(&log).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open log")
        .set_len(len - 5)
        .expect("truncate");
    let mut store = Store::open(&path).expect("reopen");
    let hits = store
        .get_many(&[1, 2, 3].map(|s| Hash::Sha256([s; 32])), true)
        .expect("get");
    assert!(matches!(&hits[0], Some(Hit::Found(f)) if f.data.as_deref() == Some(&answer(1)[..])));
    assert!(matches!(&hits[1], Some(Hit::Found(f)) if f.data.as_deref() == Some(&answer(2)[..])));
    assert_eq!(hits[2], None, "the torn answer is looked up again");
    // A damaged byte is the same as a torn one: the checksum catches it.
    store.put_batch(&[found(4), found(5)], T0).expect("put");
    drop(store);
    let log = std::fs::read_dir(segment::dir_of(&path))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("the second run's log");
    let mut bytes = std::fs::read(&log).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&log, bytes).expect("write");
    let mut store = Store::open(&path).expect("reopen");
    let hits = store
        .get_many(&[4, 5].map(|s| Hash::Sha256([s; 32])), false)
        .expect("get");
    assert!(matches!(&hits[0], Some(Hit::Found(_))));
    assert_eq!(hits[1], None);
}

#[test]
fn a_live_writers_log_is_imported_up_to_where_it_is_and_kept_open() {
    let (_dir, path) = temp();
    let mut writer = Store::open(&path).expect("open");
    writer.put_batch(&[found(1)], T0).expect("put");
    // Another process opens the file while the writer is still running.
    let mut reader = Store::open(&path).expect("open");
    assert!(matches!(
        reader.get(&Hash::Sha256([1; 32])).expect("get"),
        Some(Hit::Found(f)) if f.data.as_deref() == Some(&answer(1)[..])
    ));
    assert_eq!(segment_files(&path, "log"), 1, "the live log is kept");
    writer.put_batch(&[found(2)], T0).expect("put");
    assert_eq!(reader.compact().expect("compact"), 1, "only the new entry");
    assert!(reader.get(&Hash::Sha256([2; 32])).expect("get").is_some());
    // The writer's own compaction seals its segment.
    assert_eq!(
        writer.compact().expect("compact"),
        0,
        "all imported already"
    );
    assert_eq!(segment_files(&path, "log"), 0);
}

#[test]
fn a_version_1_cache_is_migrated_with_its_rows_and_journal() {
    let (_dir, path) = temp();
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("v1 schema");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .expect("id");
        let (sha256, md5, sha1) = digests(1);
        conn.execute(
            "INSERT INTO files (sha256, md5, sha1, fetched_at, summary) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&sha256[..], &md5[..], &sha1[..], T0, b"{}".as_slice()],
        )
        .expect("row");
        conn.execute(
            "INSERT INTO journal (found, digest, fetched_at, summary) VALUES (1, ?1, ?2, ?3)",
            params![&[2u8; 32][..], T0, b"{}".as_slice()],
        )
        .expect("journal");
        conn.execute(
            "INSERT INTO journal (found, digest, fetched_at) VALUES (0, ?1, ?2)",
            params![&[3u8; 16][..], T0],
        )
        .expect("journal");
    }
    let mut store = Store::open(&path).expect("migrates");
    assert!(matches!(
        store.get(&Hash::Md5(digests(1).1)).expect("get"),
        Some(Hit::Found(f)) if f.sha256 == [1; 32] && f.data.is_none()
    ));
    assert!(matches!(
        store.get(&Hash::Sha256([2; 32])).expect("get"),
        Some(Hit::Found(_))
    ));
    assert_eq!(
        store.get(&Hash::Md5([3; 16])).expect("get"),
        Some(Hit::NotFound { fetched_at: T0 })
    );
    store.put_batch(&[found(4)], T0).expect("put");
    store.compact().expect("compact");
    assert!(store.get(&Hash::Sha256([4; 32])).expect("get").is_some());
}

#[test]
fn a_not_found_answer_is_kept_by_the_digest_asked_and_cleared_when_the_file_appears() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).expect("open");
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
    // The superseded 404 is hidden until prune drops it, whatever its age.
    let (files, missing) = store.prune(T0 + 10, Freshness::default()).expect("prune");
    assert_eq!((files, missing), (0, 1));
    assert!(matches!(
        store.get(&Hash::Md5(md5)).expect("get"),
        Some(Hit::Found(_))
    ));
}

#[test]
fn freshness_has_separate_ttls_for_found_and_not_found_and_max_age_tightens_both() {
    let f = Freshness::default();
    let found = Hit::Found(FoundFile {
        sha256: [0; 32],
        md5: None,
        sha1: None,
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
    let mut store = Store::open(&path).expect("open");
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
    let mut store = Store::open(&path).expect("open");
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
    assert!(matches!(&exported[..], [Exported::Found(f)]
        if f.sha256 == [2; 32] && f.data.as_deref() == Some(&answer(2)[..])));
    assert_eq!(
        segment_files(&path, "bodies"),
        1,
        "the segment of the pruned answer is gone"
    );
}

#[test]
fn the_file_is_created_private_and_reopens_with_its_data() {
    let (_dir, path) = temp();
    {
        let mut store = Store::open(&path).expect("open");
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
    let store = Store::open(&path).expect("reopen");
    let stats = store.stats().expect("stats");
    assert_eq!(stats.found, 1);
    assert_eq!(stats.last_run.map(|r| (r.hits, r.lookups)), Some((4, 6)));
}

fn assert_refused_untouched(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
    let err = Store::open(path).expect_err("refused");
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
    // Found by fuzzing: a cache cut short after its header (107 bytes, 16 KiB pages) looked
    // like a database with no tables, and SQLite rewrote its first page before the refusal.
    let cut: &[u8] = include_bytes!("../../../fuzz/seeds/store_file/regression-cut-after-header");
    assert_refused_untouched(&dir.path().join("cut.sqlite3"), cut);
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
    let err = Store::open(&path).expect_err("refused");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn two_writers_on_one_file_at_once_neither_fails_and_all_answers_are_kept() {
    let (_dir, path) = temp();
    Store::open(&path).expect("create");
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).expect("open");
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
    let store = Store::open(&path).expect("open");
    let expected: std::collections::BTreeSet<u8> = (0..40u8)
        .flat_map(|b| (0..2u8).flat_map(move |w| (0..5u8).map(move |i| b * 3 + i + w)))
        .collect();
    assert_eq!(store.stats().expect("stats").found, expected.len() as u64);
}

#[test]
fn the_ledger_adds_up_per_key_and_window_and_forgets_old_seconds() {
    let (_dir, path) = temp();
    let now = 1_800_000_000;
    let day = now / 86_400;
    {
        let mut store = Store::open(&path).expect("open");
        store
            .add_spend(
                "k1",
                &[(LedgerWindow::Day, day, 3), (LedgerWindow::Second, now, 2)],
                now,
            )
            .expect("add");
        store
            .add_spend(
                "k1",
                &[
                    (LedgerWindow::Day, day, 4),
                    (LedgerWindow::Second, now - 500, 9),
                ],
                now,
            )
            .expect("add");
        store
            .add_spend("k2", &[(LedgerWindow::Day, day, 100)], now)
            .expect("add");
    }
    // Another process (a new connection) sees what was spent.
    let mut store = Store::open(&path).expect("reopen");
    assert_eq!(
        store
            .spent("k1", LedgerWindow::Day, day..=day)
            .expect("read"),
        (7, Some(day))
    );
    assert_eq!(
        store
            .spent("k2", LedgerWindow::Day, day..=day)
            .expect("read")
            .0,
        100
    );
    assert_eq!(
        store
            .spent("k1", LedgerWindow::Day, day + 1..=day + 2)
            .expect("read"),
        (0, None)
    );
    store.add_spend("k1", &[], now).expect("prune");
    assert_eq!(
        store
            .spent("k1", LedgerWindow::Second, now - 1000..=now)
            .expect("read"),
        (2, Some(now)),
        "seconds older than two minutes are gone"
    );
}

#[test]
fn prune_removes_segment_files_nobody_registered_once_their_writer_is_gone() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).expect("open");
    store.put_batch(&[found(1)], T0).expect("put");
    store.compact().expect("compact");
    let dir = segment::dir_of(&path);
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let make = |name: &str, age: std::time::SystemTime| {
        for ext in ["log", "bodies"] {
            let file = std::fs::File::create(dir.join(format!("{name}.{ext}"))).expect("create");
            file.set_modified(age).expect("mtime");
        }
    };
    // Killed before registering its segment, an hour ago: an orphan.
    make("orphan", old);
    // Just created by a process still registering it: kept.
    make("fresh", std::time::SystemTime::now());
    // Old, but its writer holds the lock: kept.
    make("locked", old);
    let held = std::fs::File::open(dir.join("locked.log")).expect("open");
    held.lock().expect("lock");
    // Claim holders' lock files: a dead one's (an hour old, unheld) goes, a live one's stays.
    for name in ["dead", "live"] {
        let file = std::fs::File::create(dir.join(format!("{name}.owner"))).expect("owner");
        file.set_modified(old).expect("mtime");
    }
    let live = std::fs::File::open(dir.join("live.owner")).expect("open");
    live.lock().expect("lock");
    let (logs, bodies) = (segment_files(&path, "log"), segment_files(&path, "bodies"));
    store.prune(T0, Freshness::default()).expect("prune");
    assert!(!dir.join("dead.owner").exists() && dir.join("live.owner").exists());
    assert!(!dir.join("orphan.log").exists() && !dir.join("orphan.bodies").exists());
    assert!(dir.join("fresh.log").exists() && dir.join("locked.bodies").exists());
    assert_eq!(segment_files(&path, "log"), logs - 1);
    assert_eq!(segment_files(&path, "bodies"), bodies - 1);
    // The registered segment's answers are untouched.
    assert!(
        store
            .get(&Hash::Sha256(digests(1).0))
            .expect("get")
            .is_some()
    );
}

#[test]
fn urls_domains_and_ips_are_kept_by_kind_and_text_with_their_freshness() {
    use crate::{ObjectHit, ObjectPut};
    let (_dir, path) = temp();
    let mut store = Store::open(&path).expect("open");
    let found = |kind: u8, id: &str| {
        Put::Object(ObjectPut {
            kind,
            id: id.into(),
            summary: Some(b"{\"reputation\":-3}".to_vec()),
            body: Some(Body::Gzip(bytes::Bytes::from_static(b"\x1f\x8bgz"))),
        })
    };
    let missing = Put::Object(ObjectPut {
        kind: 1,
        id: "http://gone.example.net/".into(),
        summary: None,
        body: None,
    });
    // Mixed with a file answer in one batch: the file goes to the journal, the rest to the
    // index.
    store
        .put_batch(
            &[
                found(2, "evil.com"),
                found(1, "http://evil.com/"),
                missing,
                Put::NotFound(Hash::Md5([7; 16])),
            ],
            T0,
        )
        .expect("put");
    let keys = [
        (2, "evil.com"),
        (1, "http://evil.com/"),
        (1, "http://gone.example.net/"),
        (3, "evil.com"),
    ];
    let hits = store.get_objects(&keys, true).expect("get");
    let Some(ObjectHit {
        fetched_at,
        summary: Some(summary),
        gzip: Some(gzip),
    }) = &hits[0]
    else {
        panic!("{hits:?}");
    };
    assert_eq!(
        (*fetched_at, summary.as_slice()),
        (T0, &b"{\"reputation\":-3}"[..])
    );
    assert_eq!(gzip.as_slice(), b"\x1f\x8bgz");
    assert!(hits[1].is_some());
    assert_eq!(hits[2].as_ref().map(|h| h.summary.is_none()), Some(true));
    assert!(hits[3].is_none(), "the kind is part of the key");
    // Without bodies, and fresh by the TTLs of their answer.
    let lean = store.get_objects(&keys[..1], false).expect("get");
    assert_eq!(lean[0].as_ref().and_then(|h| h.gzip.as_ref()), None);
    let f = Freshness::default();
    let not_found = hits[2].clone().expect("stored");
    assert!(f.is_fresh_object(&not_found, T0 + DAY));
    assert!(!f.is_fresh_object(&not_found, T0 + DAY + 1));
    assert!(f.is_fresh_object(hits[0].as_ref().expect("stored"), T0 + 7 * DAY));
    // The file answer went through the journal as before.
    store.compact().expect("compact");
    assert!(matches!(
        store.get(&Hash::Md5([7; 16])).expect("get"),
        Some(Hit::NotFound { .. })
    ));
    // A second process sees them; a later answer replaces an earlier one.
    let mut other = Store::open(&path).expect("open");
    other
        .put_batch(&[found(2, "evil.com")], T0 + 5)
        .expect("put");
    let again = store.get_objects(&keys[..1], false).expect("get");
    assert_eq!(again[0].as_ref().map(|h| h.fetched_at), Some(T0 + 5));
    assert_eq!(
        store.object_counts().expect("counts"),
        vec![(1, 1, 1), (2, 1, 0)]
    );
}

fn rules(now: i64) -> ClaimRules {
    ClaimRules {
        freshness: Freshness::default(),
        now,
        since: None,
        with_data: false,
    }
}

fn file_key(seed: u8) -> ClaimKey {
    ClaimKey::File(Hash::Sha256(digests(seed).0))
}

#[test]
fn a_claim_held_by_a_live_process_is_busy_and_its_journaled_answer_reaches_the_other_at_once() {
    let (_dir, path) = temp();
    let mut a = Store::open(&path).expect("open a");
    let mut b = Store::open(&path).expect("open b");
    let (x, y) = (file_key(1), file_key(2));
    assert_eq!(
        a.claim(std::slice::from_ref(&x), &[], &rules(T0))
            .expect("a"),
        [Claim::Mine]
    );
    assert_eq!(
        b.claim(&[x.clone(), y.clone()], &[], &rules(T0))
            .expect("b"),
        [Claim::Busy, Claim::Mine]
    );
    // A journals its answer (its segment only: no compaction, A is still running). B's next
    // claim finds it by any of the file's digests, though A never released the claim.
    a.put_batch(&[found(1)], T0).expect("put");
    let md5 = ClaimKey::File(Hash::Md5(digests(1).1));
    let got = b
        .claim(&[x.clone(), md5], &[], &rules(T0 + 5))
        .expect("b again");
    for claim in &got {
        let Claim::File(Hit::Found(f)) = claim else {
            panic!("expected the answer, got {claim:?}")
        };
        assert_eq!(f.sha256, digests(1).0);
        assert_eq!(f.data, None, "no body asked for");
    }
    // B's import left A's segment in place: its writer is alive, so it is not sealed.
    assert_eq!(segment_files(&path, "log"), 1);
    // Y is B's: A is told so.
    assert_eq!(
        a.claim(std::slice::from_ref(&y), &[], &rules(T0))
            .expect("a"),
        [Claim::Busy]
    );
}

#[test]
fn a_released_claim_and_a_dead_holders_claim_are_taken_and_compaction_releases_the_rest() {
    let (_dir, path) = temp();
    let mut a = Store::open(&path).expect("open a");
    let mut b = Store::open(&path).expect("open b");
    let keys = [file_key(1), file_key(2), file_key(3)];
    assert_eq!(a.claim(&keys, &[], &rules(T0)).expect("a").len(), 3);
    // Released (its lookup failed): the other takes it.
    a.claim(&[], &keys[..1], &rules(T0)).expect("release");
    assert_eq!(
        b.claim(&keys, &[], &rules(T0)).expect("b"),
        [Claim::Mine, Claim::Busy, Claim::Busy]
    );
    // A compacts at its end: its claims go with it.
    a.compact().expect("compact");
    assert_eq!(
        b.claim(&keys[1..2], &[], &rules(T0)).expect("b"),
        [Claim::Mine]
    );
    // A process killed while it holds a claim (its owner file unlocked: the lock died with
    // it) is not waited for, whatever the claim's age.
    let mut c = Store::open(&path).expect("open c");
    assert_eq!(
        c.claim(&[file_key(9)], &[], &rules(T0)).expect("c"),
        [Claim::Mine]
    );
    let owner = c.owner.take().expect("owner");
    let name = owner.name.clone();
    drop(owner);
    std::mem::forget(c);
    assert!(!claims_alive(&path, &name));
    assert_eq!(
        b.claim(&[file_key(9)], &[], &rules(T0)).expect("b"),
        [Claim::Mine]
    );
}

fn claims_alive(path: &Path, name: &str) -> bool {
    let file = segment::dir_of(path).join(format!("{name}.owner"));
    std::fs::File::open(file).is_ok_and(|f| f.try_lock().is_err())
}

#[test]
fn only_a_fresh_answer_counts_and_raw_needs_the_whole_answer() {
    let (_dir, path) = temp();
    let mut a = Store::open(&path).expect("open a");
    let mut b = Store::open(&path).expect("open b");
    let (sha256, md5, sha1) = digests(4);
    let bare = Put::Found {
        sha256,
        md5: Some(md5),
        sha1: Some(sha1),
        summary: b"{}".to_vec(),
        body: None,
    };
    a.put_batch(&[bare, found(5), Put::NotFound(Hash::Sha256([6; 32]))], T0)
        .expect("put");
    let keys = [
        file_key(4),
        file_key(5),
        ClaimKey::File(Hash::Sha256([6; 32])),
    ];
    // Eight days on, the found answers are stale and the 404 too: all three claimed.
    let late = b.claim(&keys, &[], &rules(T0 + 8 * DAY)).expect("late");
    assert_eq!(late, [Claim::Mine, Claim::Mine, Claim::Mine]);
    b.claim(&[], &keys, &rules(T0)).expect("release");
    // `--raw`: the answer kept without its body is no answer; the other comes with its data.
    let raw = ClaimRules {
        with_data: true,
        ..rules(T0 + 60)
    };
    let got = b.claim(&keys, &[], &raw).expect("raw");
    assert_eq!(got[0], Claim::Mine);
    let Claim::File(Hit::Found(f)) = &got[1] else {
        panic!("{:?}", got[1])
    };
    assert_eq!(f.data.as_deref(), Some(&answer(5)[..]));
    assert!(matches!(
        got[2],
        Claim::File(Hit::NotFound { fetched_at: T0 })
    ));
    // A refreshing run takes only what was fetched since it started.
    b.claim(&[], &keys, &rules(T0)).expect("release");
    let since = ClaimRules {
        since: Some(T0 + 1),
        ..rules(T0 + 60)
    };
    assert_eq!(
        b.claim(&keys[1..], &[], &since).expect("since"),
        [Claim::Mine, Claim::Mine]
    );
}

#[test]
fn urls_domains_and_ips_are_claimed_by_kind_and_text() {
    let (_dir, path) = temp();
    let mut a = Store::open(&path).expect("open a");
    let mut b = Store::open(&path).expect("open b");
    let domain = ClaimKey::Object {
        kind: 2,
        id: "example.net".into(),
    };
    let ip = ClaimKey::Object {
        kind: 3,
        id: "example.net".into(),
    };
    assert_eq!(
        a.claim(std::slice::from_ref(&domain), &[], &rules(T0))
            .expect("a"),
        [Claim::Mine]
    );
    assert_eq!(
        b.claim(&[domain.clone(), ip], &[], &rules(T0)).expect("b"),
        [Claim::Busy, Claim::Mine],
        "the same text of another kind is another claim"
    );
    a.put_batch(
        &[Put::Object(ObjectPut {
            kind: 2,
            id: "example.net".into(),
            summary: Some(b"{}".to_vec()),
            body: None,
        })],
        T0,
    )
    .expect("put");
    let got = b.claim(&[domain], &[], &rules(T0)).expect("b");
    assert!(matches!(&got[0], Claim::Object(hit) if hit.summary.as_deref() == Some(&b"{}"[..])));
}

#[test]
fn a_cache_opened_read_only_answers_refuses_writes_and_is_left_as_it_was() {
    let (_dir, path) = temp();
    {
        let mut store = Store::open(&path).expect("open");
        store.put_batch(&[found(7), found(8)], T0).expect("put");
        store.compact().expect("compact");
    }
    let before = std::fs::read(&path).expect("read");
    let mut store = Store::open_read_only(&path).expect("read-only");
    for seed in [7, 8] {
        let Some(Hit::Found(f)) = store.get(&Hash::Sha256([seed; 32])).expect("get") else {
            panic!("expected found")
        };
        assert_eq!(f.data.as_deref(), Some(&answer(seed)[..]));
    }
    assert!(store.put_batch(&[found(9)], T0).is_err() || store.compact().is_err());
    drop(store);
    assert_eq!(std::fs::read(&path).expect("read"), before);
    // A missing file is not created.
    let missing = path.with_file_name("never.sqlite3");
    assert!(Store::open_read_only(&missing).is_err());
    assert!(!missing.exists());
    // The probe for writability changes nothing, and says a writable cache is writable.
    assert_eq!(not_writable(&path), None);
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn lookups_find_exactly_the_stored_files_whether_they_lie_dense_sparse_or_repeated() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).expect("open");
    // 600 files with spread-out digests (every third of 1,800 candidates), and a 404 for one
    // candidate that is not stored (asked by its SHA-256).
    let digest = |i: u64| {
        let mut d = [0u8; 32];
        for (k, chunk) in d.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&vtbulk_rng::mix64(i * 4 + k as u64).to_be_bytes());
        }
        d
    };
    let stored = |i: u64| i.is_multiple_of(3);
    let md5 = |i: u64| <[u8; 16]>::try_from(&digest(i + 100_000)[..16]).expect("16 bytes");
    let sha1 = |i: u64| <[u8; 20]>::try_from(&digest(i + 200_000)[..20]).expect("20 bytes");
    // Each candidate is asked by one of its hashes: SHA-256, MD5 or SHA-1 in turn.
    let ask = |i: u64| match (i / 3) % 3 {
        0 => Hash::Sha256(digest(i)),
        1 => Hash::Md5(md5(i)),
        _ => Hash::Sha1(sha1(i)),
    };
    let puts: Vec<Put> = (0..1800u64)
        .filter(|&i| stored(i))
        .map(|i| Put::Found {
            sha256: digest(i),
            md5: Some(md5(i)),
            sha1: Some(sha1(i)),
            summary: i.to_string().into_bytes(),
            body: None,
        })
        .collect();
    store.put_batch(&puts, T0).expect("put");
    store
        .put_batch(&[Put::NotFound(Hash::Sha256(digest(1)))], T0)
        .expect("put");
    store.compact().expect("compact");
    // Every pattern of wanted keys: all of them, the stored ones only (rows dense), every
    // 40th candidate (wide gaps), repeats, and digests past the last row.
    let all: Vec<u64> = (0..1800).collect();
    let dense: Vec<u64> = (0..1800).filter(|&i| stored(i)).collect();
    let sparse: Vec<u64> = (0..1800).step_by(40).collect();
    let repeats: Vec<u64> = (0..300).map(|i| (i * 7) % 50).collect();
    for (name, picks) in [
        ("all", all),
        ("dense", dense),
        ("sparse", sparse),
        ("repeats", repeats),
    ] {
        let mut hashes: Vec<Hash> = picks.iter().map(|&i| ask(i)).collect();
        hashes.extend([Hash::Sha256([0xff; 32]), Hash::Sha1([0xff; 20])]);
        let hits = store.get_many(&hashes, false).expect("get");
        assert_eq!(hits.len(), hashes.len());
        for (&i, hit) in picks.iter().zip(&hits) {
            match hit {
                Some(Hit::Found(f)) => {
                    assert!(stored(i), "{name}: {i} found but never stored");
                    assert_eq!(f.sha256, digest(i), "{name}: {i}");
                    assert_eq!(
                        (f.md5, f.sha1),
                        (Some(md5(i)), Some(sha1(i))),
                        "{name}: {i}"
                    );
                    assert_eq!(f.summary, i.to_string().into_bytes(), "{name}: {i}");
                }
                Some(Hit::NotFound { .. }) => assert_eq!(i, 1, "{name}: only 1 has a 404"),
                None => assert!(!stored(i) && i != 1, "{name}: {i} stored but not found"),
            }
        }
        assert_eq!(
            hits[picks.len()..],
            [None, None],
            "{name}: past the last rows"
        );
    }
}
