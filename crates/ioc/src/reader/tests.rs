use super::*;

const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
const SHA1: &str = "3395856ce81f2b7382dee72602f798b642f14140";
const SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
const OTHER: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An item as a test keeps it (the reader lends indicators to its callback).
#[derive(Debug)]
enum Got {
    Hash(Hash, Origin),
    Indicator(Indicator, Origin),
    Invalid { origin: Origin, reason: String },
}

fn keep(item: Item<'_>) -> Got {
    match item {
        Item::Hash(h, o) => Got::Hash(h, o),
        Item::Indicator(i, o) => Got::Indicator(i.clone(), o),
        Item::Invalid { origin, reason, .. } => Got::Invalid { origin, reason },
    }
}

fn read_with(name: &str, bytes: &[u8], options: &ReadOptions) -> (Vec<Got>, InputReport) {
    let mut items = Vec::new();
    let part = Part::from_bytes(name, bytes.to_vec());
    let report = read_input(part, 0, options, &mut |i| items.push(keep(i))).expect("reads");
    (items, report)
}

fn read_as(format: InputFormat, bytes: &[u8]) -> (Vec<Got>, InputReport) {
    read_with(
        "x",
        bytes,
        &ReadOptions {
            format,
            ..ReadOptions::default()
        },
    )
}

/// Reads `bytes` as `format` through a reader buffer of `capacity` bytes (so that lines,
/// tokens and their context straddle buffers).
fn in_pieces(
    format: InputFormat,
    bytes: &[u8],
    capacity: usize,
    keep_all_hex: bool,
) -> (Vec<Got>, InputReport) {
    let mut input = std::io::BufReader::with_capacity(capacity, bytes);
    let options = ReadOptions {
        keep_all_hex,
        ..ReadOptions::default()
    };
    let mut items = Vec::new();
    let report = read_plain(&mut input, 0, format, &options, &mut |i| {
        items.push(keep(i))
    })
    .expect("reads");
    (items, report)
}

fn hashes(items: &[Got]) -> Vec<(String, u64)> {
    items
        .iter()
        .filter_map(|i| match i {
            Got::Hash(h, o) => Some((h.to_string(), o.line)),
            _ => None,
        })
        .collect()
}

fn invalids(items: &[Got]) -> Vec<(u64, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            Got::Invalid { origin, reason, .. } => Some((origin.line, reason.clone())),
            _ => None,
        })
        .collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(h, l)| ((*h).to_owned(), *l)).collect()
}

#[test]
fn lines_take_the_first_token_skip_comments_and_report_bad_values_with_their_line() {
    let text = format!(
        "\u{feff}# header\r\n{MD5}\r\n\r\n  {}  \n{}\nnot-a-hash\n{SHA256};Sakula dropper\n{SHA1}  a.exe\n# {OTHER}\n",
        SHA1.to_uppercase(),
        &SHA256[..63]
    );
    let (items, report) = read_as(InputFormat::Lines, text.as_bytes());
    assert_eq!(
        hashes(&items),
        pairs(&[(MD5, 2), (SHA1, 4), (SHA256, 7), (SHA1, 8)])
    );
    let bad = invalids(&items);
    assert_eq!(
        bad[0],
        (5, "63 hex digits (a hash has 32, 40 or 64)".to_owned())
    );
    assert_eq!(bad[1].0, 6);
    assert!(
        bad[1]
            .1
            .starts_with("not a hash, URL, domain or IP address"),
        "{}",
        bad[1].1
    );
    assert_eq!(report.excluded_by_reason.get("commented"), Some(&1));
    assert_eq!(report.lines, 9);
    // With `--kinds file` the reason is the hash's own.
    let options = ReadOptions {
        format: InputFormat::Lines,
        kinds: Some(crate::Kinds::FILES),
        ..ReadOptions::default()
    };
    let (items, _) = read_with("x", text.as_bytes(), &options);
    assert!(invalids(&items)[1].1.starts_with("not hex"));
}

fn indicators(items: &[Got]) -> Vec<(String, u64)> {
    items
        .iter()
        .filter_map(|i| match i {
            Got::Indicator(found, o) => {
                Some((format!("{}:{}", found.kind(), found.canonical()), o.line))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_mixed_list_gives_hashes_urls_domains_and_addresses_defanged_or_not() {
    let text = format!(
        "{MD5}\nhxxps://evil[.]com/login.php?u=1,2  phishing kit\nEvil-CDN[.]NET\n\
         45.77.12[.]9\n2606:4700:4700::1111\nbücher-shop[.]de;C2\n10.1.2.3\nwww.example.com\n\
         setup.exe\nhttp://[2001:db8::1]/x\n"
    );
    let (items, report) = read_as(InputFormat::Lines, text.as_bytes());
    assert_eq!(hashes(&items), pairs(&[(MD5, 1)]));
    assert_eq!(
        indicators(&items),
        pairs(&[
            ("url:https://evil.com/login.php?u=1,2", 2),
            ("domain:evil-cdn.net", 3),
            ("ip:45.77.12.9", 4),
            ("ip:2606:4700:4700::1111", 5),
            ("domain:xn--bcher-shop-9db.de", 6),
        ])
    );
    let bad = invalids(&items);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, 9);
    assert!(bad[0].1.contains("no known public suffix"), "{}", bad[0].1);
    let by = &report.excluded_by_reason;
    assert_eq!(by.get("private_address"), Some(&1));
    assert_eq!(by.get("documentation_domain"), Some(&1));
    assert_eq!(by.get("documentation_address"), Some(&1));
    assert_eq!(report.indicators, 5);
    assert_eq!(report.indicators_by_kind.get("ip"), Some(&2));
    // `--kinds file,domain`: the URL and the addresses are counted, not taken.
    let options = ReadOptions {
        format: InputFormat::Lines,
        kinds: Some("file,domain".parse().expect("kinds")),
        ..ReadOptions::default()
    };
    let (items, report) = read_with("x", text.as_bytes(), &options);
    assert_eq!(indicators(&items).len(), 2);
    assert_eq!(report.excluded_by_reason.get("kind_not_chosen"), Some(&3));
}

#[test]
fn nul_bytes_and_invalid_utf8_are_invalid_values_not_panics() {
    let bytes = b"ab\x00cd\n\xff\xfe\xfd\n".to_vec();
    let (items, _) = read_as(InputFormat::Lines, &bytes);
    assert_eq!(invalids(&items).len(), 2);
    let (items, _) = read_as(InputFormat::Text, &bytes);
    assert!(items.is_empty());
}

#[test]
fn an_overlong_line_is_one_invalid_item_and_reading_goes_on() {
    let mut bytes = vec![b'a'; MAX_LINE + 10];
    bytes.push(b'\n');
    bytes.extend_from_slice(MD5.as_bytes());
    let (items, _) = read_as(InputFormat::Lines, &bytes);
    assert_eq!(hashes(&items), pairs(&[(MD5, 2)]));
    assert!(invalids(&items)[0].1.starts_with("line longer than"));
}

#[test]
fn text_finds_hashes_in_prose_but_not_inside_longer_hex_runs() {
    let text = format!(
        "Report: dropper {MD5} wrote ({SHA1}) and\n\"sha256\": \"{SHA256}\", not {SHA256}00 or x{MD5}y\n0x{}",
        &SHA256[..40]
    );
    let (items, _) = read_as(InputFormat::Text, text.as_bytes());
    assert_eq!(
        hashes(&items),
        pairs(&[
            (MD5, 1),
            (SHA1, 1),
            (SHA256, 2),
            (MD5, 2),
            (&SHA256[..40], 3)
        ])
    );
}

#[test]
fn text_leaves_out_what_its_label_says_is_not_a_file_and_counts_it() {
    let text = format!(
        "Hashes: SHA1={SHA1},MD5={MD5},SHA256={SHA256},IMPHASH={}\nImphash: {}\nCertificate thumbprint: {}\nuser UserPII_{} logged on\nja3: {}\n",
        &OTHER[..32],
        &OTHER[1..33],
        &OTHER[..40],
        &OTHER[2..42],
        &OTHER[3..35]
    );
    let (items, report) = read_as(InputFormat::Text, text.as_bytes());
    assert_eq!(hashes(&items), pairs(&[(SHA1, 1), (MD5, 1), (SHA256, 1)]));
    assert_eq!(report.excluded, 5);
    for reason in ["import_hash", "certificate", "pseudonym", "tls_fingerprint"] {
        assert!(report.excluded_by_reason.contains_key(reason), "{reason}");
    }
    let (items, report) = read_with(
        "x",
        text.as_bytes(),
        &ReadOptions {
            format: InputFormat::Text,
            keep_all_hex: true,
            ..ReadOptions::default()
        },
    );
    assert_eq!(hashes(&items).len(), 8);
    assert_eq!(report.excluded, 0);
}

#[test]
fn a_table_column_headed_like_another_digest_is_left_out() {
    let text = format!(
        "| File | SHA-256 | Imphash |\n|------|:---:|---|\n| a | {SHA256} | {} |\n| b | - | - |\n| c | {OTHER} | {} |\n\nLater: {MD5} and\n| {} |\n",
        &OTHER[..32],
        &OTHER[1..33],
        &OTHER[2..34]
    );
    let (items, report) = read_as(InputFormat::Text, text.as_bytes());
    assert_eq!(
        hashes(&items),
        pairs(&[(SHA256, 3), (OTHER, 5), (MD5, 7), (&OTHER[2..34], 8)])
    );
    assert_eq!(report.excluded_by_reason.get("import_hash"), Some(&2));
}

#[test]
fn a_table_whose_header_was_met_before_is_judged_as_the_first_time() {
    // Tables under five distinct headers (more than are kept), then the first ones again:
    // each table's second column is judged by its own header, whether its verdicts were
    // kept, evicted or never seen.
    let headers = ["Imphash", "SHA-256", "Notes", "Hash", "Import Hash"];
    let mut text = String::new();
    let mut want = Vec::new();
    let mut line = 0;
    for (n, name) in headers.iter().chain(&headers[..2]).enumerate() {
        let hex = format!("{:032x}", 0x5eed_0000 + n);
        text.push_str(&format!(
            "| File | {name} |\n|---|---|\n| s{n}.dll | {hex} |\n\nText.\n\n"
        ));
        if !name.contains("mp") {
            want.push((hex, line + 3));
        }
        line += 6;
    }
    let (items, report) = read_as(InputFormat::Text, text.as_bytes());
    assert_eq!(hashes(&items), want);
    assert_eq!(report.excluded_by_reason.get("import_hash"), Some(&3));
}

#[test]
fn a_row_start_met_again_is_judged_as_the_first_time() {
    // Rows whose first cell labels the hash after it, forty distinct starts (more than are
    // remembered, so some share a slot), three times over: each row by its own label.
    let mut text = String::new();
    let mut want = Vec::new();
    let mut line = 0;
    for round in 0..3 {
        for k in 0..40 {
            line += 1;
            let hex = format!("{:032x}", 0xab00_0000_u64 + round * 100 + k);
            let label = if k % 2 == 0 { "imphash" } else { "samples" };
            text.push_str(&format!("| {label}{k} | {hex} |\n"));
            if k % 2 == 1 {
                want.push((hex, line));
            }
        }
    }
    let (items, report) = read_as(InputFormat::Text, text.as_bytes());
    assert_eq!(hashes(&items), want);
    assert_eq!(report.excluded_by_reason.get("import_hash"), Some(&60));
}

#[test]
fn text_context_holds_across_reader_buffers() {
    let text = format!(
        "{}IMPHASH={}\nsha256: {SHA256}\n",
        " ".repeat(37),
        &OTHER[..32]
    );
    for capacity in [1, 5, 33, 64, 100] {
        let (items, report) = in_pieces(InputFormat::Text, text.as_bytes(), capacity, false);
        let lines = report.lines;
        assert_eq!(lines, 2, "capacity {capacity}");
        assert_eq!(hashes(&items), pairs(&[(SHA256, 2)]), "capacity {capacity}");
        assert_eq!(report.excluded, 1, "capacity {capacity}");
    }
}

/// `rows` rows of a table of hashes with an imphash column (`| File | SHA-256 | Imphash |`).
fn imphash_table(rows: u64) -> String {
    let mut text = String::from("| File | SHA-256 | Imphash |\n|---|---|---|\n");
    for k in 0..rows {
        text.push_str(&format!(
            "| s{k}.dll | {:064x} | {:032x} |\n",
            0x5eed_0000 + k,
            0xfeed_0000 + k
        ));
    }
    text
}

/// Reads `text` through buffers of each of `capacities` bytes: the same hashes as read whole,
/// `taken` of them, and `imphashes` import hashes left out, every time.
fn same_in_pieces(text: &str, capacities: &[usize], taken: usize, imphashes: u64) {
    let (whole, report) = read_as(InputFormat::Text, text.as_bytes());
    assert_eq!(hashes(&whole).len(), taken);
    assert_eq!(
        report.excluded_by_reason.get("import_hash"),
        Some(&imphashes)
    );
    for &capacity in capacities {
        let (items, report) = in_pieces(InputFormat::Text, text.as_bytes(), capacity, false);
        assert_eq!(hashes(&items), hashes(&whole), "capacity {capacity}");
        assert_eq!(
            report.excluded_by_reason.get("import_hash"),
            Some(&imphashes),
            "capacity {capacity}"
        );
    }
}

#[test]
fn a_table_read_in_pieces_keeps_its_header() {
    // A table of hashes with an imphash column, under prose, read whole and through buffers
    // of many sizes: a buffer may end inside the header, a separator, a row or a cell, and
    // the rows after it are still judged by their column's header (the imphash left out).
    let mut text = format!("Files seen.\n\n{}", imphash_table(12));
    text.push_str("\nAnd a key and value table:\n\n| Imphash | SHA-256 |\n|:-:|:-:|\n");
    for k in 0..3u64 {
        text.push_str(&format!(
            "| {:032x} | {:064x} |\n",
            0xbeef_0000 + k,
            0xcafe_0000 + k
        ));
    }
    same_in_pieces(&text, &[1, 7, 16, 33, 64, 100, 129, 257, 400, 1000], 15, 15);
}

#[test]
fn a_table_longer_than_the_rows_kept_keeps_its_header_across_buffers() {
    // 1,500 rows (about 170 KB, more than the 64 KiB of rows kept from one buffer for the
    // next): every imphash cell is left out, whatever the buffers.
    same_in_pieces(
        &imphash_table(1_500),
        &[4_096, 65_536, 100_000, 1 << 20],
        1_500,
        1_500,
    );
}

#[test]
fn lines_split_across_reader_buffers_are_reassembled() {
    let text = format!("{MD5}\r\n# c\n{SHA256}\nbad\n{SHA1}");
    for capacity in [1, 7, 33, 64] {
        let (items, report) = in_pieces(InputFormat::Lines, text.as_bytes(), capacity, false);
        let lines = report.lines;
        assert_eq!(lines, 5, "capacity {capacity}");
        assert_eq!(
            hashes(&items),
            pairs(&[(MD5, 1), (SHA256, 3), (SHA1, 5)]),
            "capacity {capacity}"
        );
        assert_eq!(invalids(&items).len(), 1);
    }
}

#[test]
fn text_scans_a_huge_line_in_constant_memory() {
    let mut bytes = vec![b' '; 3 * MAX_LINE];
    bytes.extend_from_slice(MD5.as_bytes());
    let (items, _) = read_as(InputFormat::Text, &bytes);
    assert_eq!(hashes(&items), pairs(&[(MD5, 1)]));
}

#[test]
fn csv_reads_every_hash_column_by_header_and_leaves_ids_out() {
    let text = format!(
        "Timestamp,DeviceId,SHA1,SHA256,MD5,InitiatingProcessSHA256,InitiatingProcessMD5,Note\n\
         t1,{},{SHA1},{SHA256},{MD5},{OTHER},{},x\n\
         t2,{},,\u{a0}{SHA256}\u{a0},-,{OTHER},,y\n",
        &OTHER[..40],
        &OTHER[..32],
        &OTHER[..40],
    );
    let (items, report) = read_as(InputFormat::Csv, text.as_bytes());
    assert_eq!(
        hashes(&items),
        pairs(&[
            (SHA1, 2),
            (SHA256, 2),
            (MD5, 2),
            (OTHER, 2),
            (&OTHER[..32], 2),
            (SHA256, 3),
            (OTHER, 3)
        ])
    );
    assert!(invalids(&items).is_empty(), "{:?}", invalids(&items));
    assert_eq!(report.excluded_by_reason.get("id"), Some(&2));
    assert_eq!(
        report.columns,
        [
            "SHA1",
            "SHA256",
            "MD5",
            "InitiatingProcessSHA256",
            "InitiatingProcessMD5"
        ]
    );
}

#[test]
fn csv_lines_are_physical_lines_across_crlf_blank_lines_comments_and_quoted_breaks() {
    let text = format!(
        "# exported 2026-11-29\r\n# by a tool\r\nname,sha256\r\n\r\na,{SHA256}\r\n\"multi\r\nline\",{OTHER}\r\n\r\n\r\nc,\"{MD5}\"\r\nd,oops\r\n"
    );
    let (items, report) = read_as(InputFormat::Csv, text.as_bytes());
    assert_eq!(hashes(&items), pairs(&[(SHA256, 5), (OTHER, 6), (MD5, 10)]));
    assert_eq!(
        invalids(&items),
        [(11, "not hex (character 1 of 4)".to_owned())]
    );
    assert_eq!(report.lines, 11);
}

#[test]
fn csv_mixed_indicator_columns_give_their_hashes_and_nothing_else() {
    let text = format!(
        "\u{feff}Indicator_type,Data,Note\nsha256,{SHA256},dropper\nurl,http://evil.example/a,c2\nip,1.2.3.4,\nmd5,{MD5},\n"
    );
    let (items, report) = read_with("feed.csv", text.as_bytes(), &ReadOptions::default());
    assert_eq!(report.format, "csv");
    assert_eq!(hashes(&items), pairs(&[(SHA256, 2), (MD5, 5)]));
    assert!(invalids(&items).is_empty());
}

#[test]
fn csv_columns_chosen_by_name_or_position_and_a_missing_one_is_an_error() {
    let text = format!("host;b;c\nh;{MD5};{SHA1}\n");
    let options = |columns: Vec<Column>| ReadOptions {
        format: InputFormat::Csv,
        columns,
        ..ReadOptions::default()
    };
    let (items, _) = read_with(
        "x",
        text.as_bytes(),
        &options(vec![Column::Name("B".into())]),
    );
    assert_eq!(hashes(&items), pairs(&[(MD5, 2)]));
    let (items, _) = read_with(
        "x",
        text.as_bytes(),
        &options(vec![Column::Index(3), Column::Index(2)]),
    );
    assert_eq!(hashes(&items), pairs(&[(SHA1, 2), (MD5, 2)]));
    let part = Part::from_bytes("x", text.into_bytes());
    let err = read_input(
        part,
        0,
        &options(vec![Column::Name("nope".into())]),
        &mut |_| {},
    )
    .expect_err("no such column");
    assert!(err.to_string().contains("host, b, c"), "{err}");
}

#[test]
fn an_overlong_csv_record_or_json_string_is_cut_and_reading_goes_on() {
    let huge = "x".repeat(3 * MAX_LINE);
    let text = format!("name,sha256\n\"{huge}\",{MD5}\nb,{SHA1}\n");
    let (items, _) = read_as(InputFormat::Csv, text.as_bytes());
    assert_eq!(hashes(&items), pairs(&[(SHA1, 3)]));
    assert!(invalids(&items)[0].1.starts_with("record longer than"));
    let json = format!("{{\"a\": \"{huge}\"}}\n{{\"sha256\": \"{SHA256}\"}}\n");
    let (items, _) = read_as(InputFormat::Json, json.as_bytes());
    assert_eq!(hashes(&items), pairs(&[(SHA256, 2)]));
}

#[test]
fn csv_without_a_header_uses_the_columns_holding_hashes() {
    let text = format!("h1,{MD5}\nh2,{SHA1}\n");
    let (items, _) = read_as(InputFormat::Csv, text.as_bytes());
    assert_eq!(hashes(&items), pairs(&[(MD5, 1), (SHA1, 2)]));
}

#[test]
fn auto_reads_a_csv_with_no_hash_column_as_text_and_says_so() {
    let text = format!("a,b\n1,2\n3,see {MD5} here\n");
    let (items, report) = read_with("x.csv", text.as_bytes(), &ReadOptions::default());
    assert_eq!(hashes(&items), pairs(&[(MD5, 3)]));
    assert_eq!(report.format, "text");
    assert!(
        report
            .fallback
            .as_deref()
            .is_some_and(|f| f.contains("no column"))
    );
    let part = Part::from_bytes("x", text.into_bytes());
    let asked = ReadOptions {
        format: InputFormat::Csv,
        ..ReadOptions::default()
    };
    assert!(read_input(part, 0, &asked, &mut |_| {}).is_err());
}

#[test]
fn auto_reads_a_markdown_report_as_text() {
    let text = format!(
        "Overview\n========\n\nIndicators\n----------\n\n| File | SHA-256 |\n|---|---|\n| a.exe | `{SHA256}` |\n\n```\n{MD5}\n```\n"
    );
    let (items, report) = read_with("r.md", text.as_bytes(), &ReadOptions::default());
    assert_eq!(report.format, "text");
    assert_eq!(hashes(&items), pairs(&[(SHA256, 9), (MD5, 12)]));
}

#[test]
fn json_reads_misp_attributes_by_type() {
    let text = format!(
        r#"{{"Event": {{"info": "campaign", "Attribute": [
  {{"type": "sha256", "category": "Payload delivery", "value": "{SHA256}", "to_ids": true}},
  {{"category": "Payload delivery", "value": "a.exe|{MD5}", "type": "filename|md5"}},
  {{"type": "imphash", "category": "Artifacts dropped", "value": "{}"}},
  {{"type": "authentihash", "category": "Artifacts dropped", "value": "{OTHER}"}},
  {{"type": "x509-fingerprint-sha1", "category": "Network activity", "value": "{}"}},
  {{"type": "domain", "category": "Network activity", "value": "{}.example"}},
  {{"type": "md5", "category": "Payload delivery", "value": "{}"}}
]}}}}"#,
        &OTHER[..32],
        &OTHER[..40],
        &OTHER[..32],
        &SHA1[..39],
    );
    let (items, report) = read_with("event.json", text.as_bytes(), &ReadOptions::default());
    assert_eq!(report.format, "json");
    assert_eq!(hashes(&items), pairs(&[(SHA256, 2), (MD5, 3)]));
    assert_eq!(invalids(&items).len(), 1);
    assert_eq!(invalids(&items)[0].0, 8);
    for reason in ["import_hash", "authentihash", "certificate", "not_a_file"] {
        assert_eq!(report.excluded_by_reason.get(reason), Some(&1), "{reason}");
    }
}

#[test]
fn json_reads_stix_patterns_and_file_hashes_not_certificates_or_technique_prose() {
    let text = format!(
        r#"{{"type": "bundle", "id": "bundle--1", "objects": [
 {{"type": "indicator", "id": "indicator--1", "pattern_type": "stix",
   "pattern": "[file:hashes.'SHA-256' = '{SHA256}'] OR [x509-certificate:hashes.'SHA-1' = '{}'] OR [file:hashes.SSDEEP = '{}']"}},
 {{"type": "file", "id": "file--2", "hashes": {{"MD5": "{MD5}", "SHA-1": "{SHA1}", "TLSH": "{}"}}}},
 {{"type": "x509-certificate", "id": "x509-certificate--3", "hashes": {{"SHA-1": "{}"}}}},
 {{"type": "attack-pattern", "id": "attack-pattern--4", "description": "signed with {}"}}
]}}"#,
        &OTHER[..40],
        &OTHER[..64],
        &OTHER[..32],
        &OTHER[1..41],
        &OTHER[2..42],
    );
    let (items, report) = read_with("bundle.json", text.as_bytes(), &ReadOptions::default());
    assert_eq!(hashes(&items), pairs(&[(SHA256, 3), (MD5, 4), (SHA1, 4)]));
    assert_eq!(report.excluded_by_reason.get("certificate"), Some(&2));
    assert_eq!(report.excluded_by_reason.get("other_digest"), Some(&2));
    assert_eq!(report.excluded_by_reason.get("not_a_file"), Some(&1));
}

#[test]
fn ndjson_events_give_their_hashes_by_key_and_context_with_their_lines() {
    let text = format!(
        "{{\"EventID\": 1, \"ProcessGuid\": \"{{{}}}\", \"Hashes\": \"SHA1={SHA1},MD5={MD5},SHA256={SHA256},IMPHASH={}\"}}\n\
         {{\"DeviceId\": \"{}\", \"SHA256\": \"{OTHER}\", \"parent\": {{\"md5\": \"{MD5}\", \"imphash\": \"{}\"}}}}\n",
        "6D6E8F2A-1C2B-4E5F-9A8B-0C1D2E3F4A5B",
        &OTHER[..32],
        &OTHER[..40],
        &OTHER[..32],
    );
    let (items, report) = read_as(InputFormat::Auto, text.as_bytes());
    assert_eq!(report.format, "json");
    assert_eq!(
        hashes(&items),
        pairs(&[(SHA1, 1), (MD5, 1), (SHA256, 1), (MD5, 2), (OTHER, 2)])
    );
    assert_eq!(report.excluded_by_reason.get("import_hash"), Some(&2));
    assert_eq!(report.excluded_by_reason.get("id"), Some(&1));
    assert_eq!(report.lines, 2);
}

#[test]
fn xml_reads_openioc_file_items_and_leaves_other_items_out() {
    let text = format!(
        r#"<?xml version="1.0" encoding="us-ascii"?>
<ioc xmlns="http://schemas.mandiant.com/2010/ioc">
  <definition>
    <Indicator operator="OR">
      <IndicatorItem condition="is">
        <Context document="FileItem" search="FileItem/Md5sum" type="mir" />
        <Content type="md5">{MD5}</Content>
      </IndicatorItem>
      <IndicatorItem condition="is">
        <Context document="FileItem" search="FileItem/PEInfo/ImportHash" type="mir" />
        <Content type="string">{}</Content>
      </IndicatorItem>
      <IndicatorItem condition="is">
        <Context document="FileItem" search="FileItem/Sha256sum" type="mir" />
        <Content type="sha256">
          {SHA256}
        </Content>
      </IndicatorItem>
    </Indicator>
  </definition>
  <!-- {OTHER} -->
</ioc>
"#,
        &OTHER[..32]
    );
    let (items, report) = read_with("x.ioc", text.as_bytes(), &ReadOptions::default());
    assert_eq!(report.format, "xml");
    assert_eq!(hashes(&items), pairs(&[(MD5, 7), (SHA256, 16)]));
    assert_eq!(report.excluded_by_reason.get("import_hash"), Some(&1));
    assert_eq!(report.lines, 22);
}

#[test]
fn utf16_exports_with_and_without_bom_are_decoded() {
    let text = format!("name,sha256\r\na,{SHA256}\r\nb,{MD5}\r\n");
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    for (bytes, enc) in [
        ([&b"\xff\xfe"[..], &le].concat(), "utf-16le"),
        (le.clone(), "utf-16le"),
        ([&b"\xfe\xff"[..], &be].concat(), "utf-16be"),
        (be.clone(), "utf-16be"),
    ] {
        let (items, report) = read_with("export.csv", &bytes, &ReadOptions::default());
        assert_eq!(report.encoding, Some(enc));
        assert_eq!(hashes(&items), pairs(&[(SHA256, 2), (MD5, 3)]), "{enc}");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn compressed_inputs_are_read_by_their_magic() {
    let text = format!("{MD5}\n{SHA1}\n");
    let (items, report) = read_with("list", &gzip(text.as_bytes()), &ReadOptions::default());
    assert_eq!(report.compression, Some("gzip"));
    assert_eq!(hashes(&items).len(), 2);
    let bz = {
        use std::io::Write;
        let mut w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        w.write_all(text.as_bytes()).expect("bzip2");
        w.finish().expect("bzip2")
    };
    let (items, report) = read_with("list", &bz, &ReadOptions::default());
    assert_eq!(report.compression, Some("bzip2"));
    assert_eq!(hashes(&items).len(), 2);
}

#[test]
fn a_truncated_gzip_keeps_what_was_read_and_says_where_it_broke() {
    let lines: String = (0..20_000).map(|i| format!("{i:064x}\n")).collect();
    let whole = gzip(lines.as_bytes());
    let cut = &whole[..whole.len() / 2];
    let (items, report) = read_with("big.txt.gz", cut, &ReadOptions::default());
    let found = hashes(&items).len();
    assert!(found > 1000 && found < 20_000, "{found}");
    let damage = report.damage.expect("damage reported");
    assert!(
        damage.contains("gzip") && damage.contains("compressed bytes"),
        "{damage}"
    );
    assert!(invalids(&items).iter().any(|(_, r)| r.contains("gzip")));
}

#[test]
fn each_format_counts_the_lines_it_read() {
    let count = |f, b: &[u8]| read_as(f, b).1.lines;
    assert_eq!(count(InputFormat::Lines, b"a\nb\n\nc"), 4);
    assert_eq!(count(InputFormat::Text, b"a\nb\n"), 2);
    assert_eq!(count(InputFormat::Text, b"a\nb"), 2);
    let csv = format!("sha256\n{MD5}\n{MD5}\n");
    assert_eq!(count(InputFormat::Csv, csv.as_bytes()), 3);
    assert_eq!(count(InputFormat::Lines, b""), 0);
    assert_eq!(count(InputFormat::Json, b"{}\n{}\n"), 2);
}
#[test]
fn an_exports_command_line_is_read_as_text_unless_columns_only() {
    let csv = format!(
        "Timestamp,DeviceId,SHA256,ProcessCommandLine,InitiatingProcessAccountName\n\
         2026-11-30T01:00:00Z,{SHA1},{SHA256},\"powershell -c \"\"if ($h.Hash -eq '{OTHER}') {{ iwr https://bit.ly/3Xa9Qz7; \
         iwr https://raw.githubusercontent.com/x/y/main/p.ps1 }}\"\"\",UserPII_{SHA1}\n"
    );
    let all = ReadOptions {
        kinds: Some(Kinds::ALL),
        ..ReadOptions::default()
    };
    let (items, report) = read_with("e.csv", csv.as_bytes(), &all);
    let found: Vec<String> = hashes(&items).into_iter().map(|(h, _)| h).collect();
    assert_eq!(found, [SHA256, OTHER]);
    assert_eq!(
        // A URL on a reference site is what the command fetched, not a source.
        report.from_text_columns,
        3,
        "the hash and two URLs: {report:?}"
    );
    assert_eq!(
        report.text_columns,
        [
            "Timestamp",
            "ProcessCommandLine",
            "InitiatingProcessAccountName"
        ]
    );
    assert_eq!(report.excluded_by_reason.get("pseudonym"), Some(&1));
    assert_eq!(report.excluded_by_reason.get("id"), Some(&1));
    let only = ReadOptions {
        columns_only: true,
        ..all
    };
    let (items, report) = read_with("e.csv", csv.as_bytes(), &only);
    assert_eq!(hashes(&items), [(SHA256.to_owned(), 2)]);
    assert!(report.text_columns.is_empty());
    assert_eq!(report.indicators, 0);
}

#[test]
fn a_binary_input_is_skipped_unless_text_is_asked_for() {
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.extend_from_slice(&[0; 64]);
    elf.extend_from_slice(format!("\0.plt.got\0{MD5}\0").as_bytes());
    let (items, report) = read_with("a.out", &elf, &ReadOptions::default());
    assert_eq!(report.format, "binary");
    assert!(
        report
            .skipped
            .as_deref()
            .is_some_and(|s| s.contains("an ELF executable")),
        "{report:?}"
    );
    assert_eq!(invalids(&items).len(), 1);
    assert!(hashes(&items).is_empty());
    let (items, report) = read_as(InputFormat::Text, &elf);
    assert_eq!(report.skipped, None);
    assert_eq!(hashes(&items), [(MD5.to_owned(), 1)]);
    // A text file with a stray NUL is text.
    let (_, report) = read_with(
        "list.txt",
        format!("{MD5}\n{SHA1}\0\n").as_bytes(),
        &ReadOptions::default(),
    );
    assert_eq!(report.format, "lines");
}

#[test]
fn a_json_array_cut_short_keeps_what_it_held_and_says_so() {
    let json = format!("[{{\"sha256\": \"{SHA256}\"}}, {{\"md5\": \"{MD5}\"}}, {{\"sha1\": \"3395");
    let (items, report) = read_with("a.json", json.as_bytes(), &ReadOptions::default());
    assert_eq!(hashes(&items).len(), 2);
    assert!(
        report
            .damage
            .as_deref()
            .is_some_and(|d| d.contains("cut short")),
        "{report:?}"
    );
    let whole = format!("[{{\"sha256\": \"{SHA256}\"}}]");
    let (_, report) = read_with("a.json", whole.as_bytes(), &ReadOptions::default());
    assert_eq!(report.damage, None);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_format() -> impl Strategy<Value = InputFormat> {
        prop_oneof![
            Just(InputFormat::Auto),
            Just(InputFormat::Lines),
            Just(InputFormat::Csv),
            Just(InputFormat::Text),
            Just(InputFormat::Json),
            Just(InputFormat::Xml),
        ]
    }

    /// Bytes with the shapes that trip readers: quotes, brackets, line ends, hex runs, NULs.
    fn nasty_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\"".to_vec()),
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"[".to_vec()),
            Just(b"<".to_vec()),
            Just(b">".to_vec()),
            Just(b",".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\\".to_vec()),
            Just(b"\x00".to_vec()),
            Just(b"#".to_vec()),
            Just(MD5.as_bytes().to_vec()),
            Just(SHA256.as_bytes().to_vec()),
            Just(b"imphash=".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..64).prop_map(|p| p.concat())
    }

    /// Text of hex runs of every length around 32, 40 and 64, separators and line breaks.
    fn hexy_text() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            (1usize..70).prop_map(|n| SHA256.repeat(2).as_bytes()[..n].to_vec()),
            Just(MD5.as_bytes().to_vec()),
            Just(SHA1.as_bytes().to_vec()),
            Just(b" ".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"xyz ".to_vec()),
            Just(b"imphash: ".to_vec()),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    /// The plain definition: maximal hex runs of 32, 40 or 64 digits, with their lines.
    fn reference(bytes: &[u8]) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if !bytes[i].is_ascii_hexdigit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                i += 1;
            }
            if matches!(i - start, 32 | 40 | 64) {
                let line = 1 + bytes[..start].iter().filter(|&&b| b == b'\n').count() as u64;
                let hex = String::from_utf8_lossy(&bytes[start..i]).to_ascii_lowercase();
                out.push((hex, line));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn the_probing_text_scanner_finds_what_the_plain_definition_does(
            bytes in hexy_text(),
            capacity in 1usize..300,
        ) {
            let (items, report) = in_pieces(InputFormat::Text, bytes.as_slice(), capacity, true);
            let lines = report.lines;
            prop_assert_eq!(hashes(&items), reference(&bytes));
            let want_lines = match bytes.last() {
                None => 0,
                Some(b'\n') => bytes.iter().filter(|&&b| b == b'\n').count() as u64,
                Some(_) => bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1,
            };
            prop_assert_eq!(lines, want_lines);
        }

        #[test]
        fn the_probing_token_finder_finds_every_maximal_run_of_32_40_or_64(bytes in hexy_text()) {
            let mut want = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let len = bytes[at..].iter().take_while(|b| b.is_ascii_hexdigit()).count();
                if matches!(len, 32 | 40 | 64) {
                    want.push((at, len));
                }
                at += len.max(1);
            }
            let found: Vec<(usize, usize)> = text::tokens(&bytes).collect();
            prop_assert_eq!(found, want);
        }

        #[test]
        fn any_bytes_in_any_format_never_panic_and_every_hash_is_in_the_input(
            bytes in nasty_bytes(),
            format in any_format(),
            utf16 in any::<bool>(),
        ) {
            let input = if utf16 {
                let mut v = b"\xff\xfe".to_vec();
                v.extend(String::from_utf8_lossy(&bytes).encode_utf16().flat_map(u16::to_le_bytes));
                v
            } else {
                bytes.clone()
            };
            let options = ReadOptions { format, ..ReadOptions::default() };
            let part = Part::from_bytes("x", input);
            let mut found = Vec::new();
            let _ = read_input(part, 0, &options, &mut |i| {
                if let Item::Hash(h, _) = i {
                    found.push(h.to_string());
                }
            });
            let lower = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
            for h in found {
                prop_assert!(lower.contains(&h), "{} not in the input", h);
            }
        }
    }
}

mod table_shortcut {
    use super::*;
    use proptest::prelude::*;

    fn cell() -> impl Strategy<Value = String> {
        let hex = (0usize..4, 0u8..16).prop_map(|(k, d)| {
            let len = [32usize, 40, 64, 20][k];
            let digit = char::from(b"0123456789abcdef"[usize::from(d)]);
            std::iter::repeat_n(digit, len - 1)
                .chain(['e'])
                .collect::<String>()
        });
        let word = prop_oneof![
            Just("Imphash"),
            Just("x_"),
            Just("SHA1:"),
            Just(" | "),
            Just("|"),
            Just("\n"),
            Just("\r\n"),
            Just("\n- "),
            Just("\r"),
            Just("-"),
            Just("stage.dll"),
            Just("UserPII_"),
        ]
        .prop_map(str::to_owned);
        prop_oneof![hex, word]
    }

    proptest! {
        /// Rows and lists of hex runs, labels and separators, read whole and through small
        /// buffers: the shortcut for a token right after a hex cell (`| <md5> | <sha1>`) or
        /// the hex line above (`<md5>\n- <sha1>`) is checked
        /// against the label rule by a debug assertion in the reader, and the reads agree.
        #[test]
        fn a_token_after_a_hex_cell_is_judged_as_the_label_rule_judges_it(
            cells in proptest::collection::vec(cell(), 1..24)
        ) {
            let text = cells.concat();
            let (whole, report) = read_as(InputFormat::Text, text.as_bytes());
            let (pieces, _) = in_pieces(InputFormat::Text, text.as_bytes(), 7, false);
            prop_assert_eq!(hashes(&whole), hashes(&pieces));
            // Every hash emitted is counted once as a hash; nothing else is.
            prop_assert_eq!(report.hashes, hashes(&whole).len() as u64);
        }
    }
}

#[test]
fn a_token_met_again_gives_what_it_gave_the_first_time() {
    // The prose memo: each line's tokens are judged once and counted at every line.
    let line = "C2 evil-host[.]top and 45.77.12[.]9, see https://attack.mitre.org/T1059 and \
                Trojan.Win32.Agent.ac; req.open( and x.dll\n";
    let options = ReadOptions {
        format: InputFormat::Text,
        kinds: Some(crate::indicator::Kinds::ALL),
        ..ReadOptions::default()
    };
    let (once, one) = read_with("x", line.as_bytes(), &options);
    let (thrice, three) = read_with("x", line.repeat(3).as_bytes(), &options);
    assert_eq!(
        indicators(&once),
        pairs(&[("domain:evil-host.top", 1), ("ip:45.77.12.9", 1)])
    );
    let again: Vec<_> = (1..=3)
        .flat_map(|line| indicators(&once).into_iter().map(move |(f, _)| (f, line)))
        .collect();
    assert_eq!(indicators(&thrice), again);
    assert_eq!(three.indicators, 3 * one.indicators);
    for (reason, n) in &one.excluded_by_reason {
        assert_eq!(
            three.excluded_by_reason.get(reason),
            Some(&(3 * n)),
            "{reason}"
        );
    }
    // The reference link, the detection name and the member call (`x.dll` names no TLD).
    assert_eq!(
        one.excluded_by_reason.len(),
        3,
        "{:?}",
        one.excluded_by_reason
    );
}

#[test]
fn tokens_evicted_from_the_memo_and_met_again_give_the_same_items() {
    // More distinct tokens than the memo holds, each met four times in varied order: every
    // line gives its own domain, whether judged afresh, found in either slot of its set, or
    // judged again after eviction.
    let n = 6000usize;
    let text: String = (0..4 * n)
        .map(|i| format!("C2 host-{}[.]top seen\n", (i * 7919) % n))
        .collect();
    let options = ReadOptions {
        format: InputFormat::Text,
        kinds: Some(crate::indicator::Kinds::ALL),
        ..ReadOptions::default()
    };
    let (items, report) = read_with("x", text.as_bytes(), &options);
    let want: Vec<(String, u64)> = (0..4 * n)
        .map(|i| (format!("domain:host-{}.top", (i * 7919) % n), i as u64 + 1))
        .collect();
    assert_eq!(indicators(&items), want);
    assert_eq!(report.indicators, 4 * n as u64);
}
