//! The mock's world of known files: deterministic, seeded, as large as you like, and stateless.
//!
//! File `i` of the universe has an MD5, a SHA-1 and a SHA-256 derived from the seed and `i`.
//! The first 8 bytes of each digest are `i` run through a keyed 64-bit Feistel permutation, so
//! a lookup inverts the permutation to find `i` and regenerates the rest of the digest to check
//! it: O(1), no table, a universe of a billion files costs no memory. Any other digest is
//! unknown (404), as a random hash is on the real service.
//!
//! Attributes are made up from `i` too, realistically: ~70 engines whose verdicts add up to the
//! stats, a threat classification for detected files, names, tags, dates. Rendering must never
//! be the bottleneck of a benchmark, so the per-engine results (most of the body) are rendered
//! once per verdict pattern at start-up and pasted in.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::RawValue;
use vtbulk_ioc::{Hash, HashKind};

use crate::rng::{Rng, mix64, seed_of};

/// The three digests of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHashes {
    /// MD5.
    pub md5: Hash,
    /// SHA-1.
    pub sha1: Hash,
    /// SHA-256, the file's id.
    pub sha256: Hash,
}

impl FileHashes {
    /// The digest of the given kind.
    pub fn of_kind(&self, kind: HashKind) -> Hash {
        match kind {
            HashKind::Md5 => self.md5,
            HashKind::Sha1 => self.sha1,
            HashKind::Sha256 => self.sha256,
        }
    }
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// File `i` of the generated universe.
    Generated(u64),
    /// A fixture (by its position in the fixture list).
    Fixture(usize),
}

/// A fixture: a verbatim VirusTotal answer served for its three hashes.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// Its hashes, read from its attributes.
    pub hashes: FileHashes,
    /// The answer body, exactly as stored.
    pub body: Box<str>,
}

impl Fixture {
    /// Reads a `GET /files/{id}` answer (`{"data": {...}}`) and finds its hashes.
    pub fn from_json(body: &str) -> Result<Fixture, String> {
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
        let attrs = &value["data"]["attributes"];
        let get = |name: &str| {
            attrs[name]
                .as_str()
                .and_then(|s| Hash::parse(s).ok())
                .ok_or_else(|| format!("data.attributes.{name} is missing or not a hash"))
        };
        Ok(Fixture {
            hashes: FileHashes {
                md5: get("md5")?,
                sha1: get("sha1")?,
                sha256: get("sha256")?,
            },
            body: body.into(),
        })
    }
}

/// The real EICAR answer from VirusTotal (trimmed, values unchanged), always served.
pub const EICAR_JSON: &str = include_str!("../../../fixtures/vt/file_eicar.json");

/// The world of known files.
#[derive(Debug)]
pub struct Universe {
    seed: u64,
    size: u64,
    keys: [[u32; 4]; 3],
    patterns: Vec<Pattern>,
    by_family: [Vec<usize>; 3],
    fixtures: Vec<Fixture>,
    fixture_index: HashMap<Hash, usize>,
}

/// Default number of generated files.
pub const DEFAULT_SIZE: u64 = 1 << 32;

impl Universe {
    /// A universe of `size` generated files plus the EICAR fixture.
    pub fn new(seed: u64, size: u64) -> Universe {
        let keys = [0u64, 1, 2].map(|k| {
            let mut r = Rng::new(seed_of(&[seed, 0xfe15, k]));
            [0; 4].map(|_: u32| r.next_u64() as u32)
        });
        let patterns = build_patterns(seed);
        let mut by_family: [Vec<usize>; 3] = Default::default();
        for (i, p) in patterns.iter().enumerate() {
            by_family[p.family as usize].push(i);
        }
        let mut universe = Universe {
            seed,
            size,
            keys,
            patterns,
            by_family,
            fixtures: Vec::new(),
            fixture_index: HashMap::new(),
        };
        if let Ok(eicar) = Fixture::from_json(EICAR_JSON) {
            universe.add_fixture(eicar);
        }
        universe
    }

    /// Adds a fixture, served for each of its hashes.
    pub fn add_fixture(&mut self, fixture: Fixture) {
        let at = self.fixtures.len();
        for h in [fixture.hashes.md5, fixture.hashes.sha1, fixture.hashes.sha256] {
            self.fixture_index.insert(h, at);
        }
        self.fixtures.push(fixture);
    }

    /// The fixtures.
    pub fn fixtures(&self) -> &[Fixture] {
        &self.fixtures
    }

    /// The number of generated files.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn kind_slot(kind: HashKind) -> usize {
        match kind {
            HashKind::Md5 => 0,
            HashKind::Sha1 => 1,
            HashKind::Sha256 => 2,
        }
    }

    fn digest(&self, kind: HashKind, index: u64) -> Hash {
        let slot = Self::kind_slot(kind);
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&feistel(&self.keys[slot], index).to_be_bytes());
        Rng::new(seed_of(&[self.seed, 0xd16e, slot as u64, index]))
            .fill(&mut bytes[8..kind.byte_len()]);
        Hash::from_digest(&bytes[..kind.byte_len()]).unwrap_or(Hash::Md5([0; 16]))
    }

    /// The hashes of generated file `index` (`index < size`).
    pub fn hashes(&self, index: u64) -> FileHashes {
        FileHashes {
            md5: self.digest(HashKind::Md5, index),
            sha1: self.digest(HashKind::Sha1, index),
            sha256: self.digest(HashKind::Sha256, index),
        }
    }

    /// Finds a file by any of its hashes.
    pub fn lookup(&self, hash: &Hash) -> Option<Known> {
        if let Some(&i) = self.fixture_index.get(hash) {
            return Some(Known::Fixture(i));
        }
        let bytes = hash.as_bytes();
        let head = u64::from_be_bytes(bytes[..8].try_into().ok()?);
        let index = feistel_inverse(&self.keys[Self::kind_slot(hash.kind())], head);
        (index < self.size && self.digest(hash.kind(), index) == *hash)
            .then_some(Known::Generated(index))
    }

    /// The sha256 of a known file.
    pub fn sha256_of(&self, known: Known) -> Hash {
        match known {
            Known::Generated(i) => self.digest(HashKind::Sha256, i),
            Known::Fixture(i) => self.fixtures[i].hashes.sha256,
        }
    }

    /// A hash of `kind` that is not in the universe, the `n`-th of a seeded sequence.
    pub fn unknown_hash(&self, kind: HashKind, n: u64) -> Hash {
        let mut rng = Rng::new(seed_of(&[self.seed, 0x404, n]));
        loop {
            let mut bytes = [0u8; 32];
            rng.fill(&mut bytes);
            let h = Hash::from_digest(&bytes[..kind.byte_len()]).unwrap_or(Hash::Md5([0; 16]));
            if self.lookup(&h).is_none() {
                return h;
            }
        }
    }

    /// Appends the `GET /files/{id}` answer for a known file to `out`.
    pub fn render(&self, known: Known, out: &mut Vec<u8>) {
        match known {
            Known::Fixture(i) => out.extend_from_slice(self.fixtures[i].body.as_bytes()),
            Known::Generated(i) => self.render_generated(i, out),
        }
    }

    fn render_generated(&self, index: u64, out: &mut Vec<u8>) {
        let hashes = self.hashes(index);
        let mut r = Rng::new(seed_of(&[self.seed, 0xa77, index]));
        let family = match r.next_f64() {
            x if x < 0.55 => Family::Clean,
            x if x < 0.65 => Family::Grey,
            _ => Family::Malicious,
        };
        let pattern = &self.patterns[*r.pick(&self.by_family[family as usize])];
        let file_type = r.pick(FILE_TYPES);
        let analysis_date = pattern.analysis_day + r.below(86_400) as i64;
        let first_submission = analysis_date - r.below(6 * 365 * 86_400) as i64;
        let last_submission = first_submission + r.below((analysis_date - first_submission) as u64 + 1) as i64;
        let mut sha256_buf = [0u8; 64];
        let (mut md5_buf, mut sha1_buf) = ([0u8; 64], [0u8; 64]);
        let sha256 = hashes.sha256.encode_hex(&mut sha256_buf);
        let stem = match family {
            Family::Malicious => *r.pick(&["invoice", "payment", "scan", "order", "update", "setup", "document"]),
            Family::Grey => *r.pick(&["setup", "installer", "free_converter", "toolbar", "crack"]),
            Family::Clean => *r.pick(&["report", "setup", "readme", "app", "library", "photo", "backup"]),
        };
        let meaningful_name = format!("{stem}_{}.{}", r.range(100, 99_999), file_type.extension);
        let mut names = vec![meaningful_name.clone()];
        for _ in 0..r.below(4) {
            names.push(format!("{:x}.{}", r.next_u64() >> 16, file_type.extension));
        }
        let mut tags: Vec<&str> = file_type.tags.to_vec();
        match family {
            Family::Malicious => tags.extend(["detect-debug-environment", "long-sleeps"].iter().take(r.below(3) as usize)),
            Family::Grey => tags.push("known-distributor"),
            Family::Clean => {
                if r.chance(0.3) {
                    tags.push("signed");
                }
            }
        }
        let reputation = match family {
            Family::Clean => r.below(20) as i64,
            Family::Grey => -(r.below(15) as i64),
            Family::Malicious => -5 - r.below(95) as i64,
        };
        let times_submitted = 1 + r.below(400);
        let attributes = Attributes {
            md5: hashes.md5.encode_hex(&mut md5_buf),
            sha1: hashes.sha1.encode_hex(&mut sha1_buf),
            sha256,
            size: r.range(file_type.size.0, file_type.size.1),
            type_description: file_type.description,
            type_tag: file_type.tag,
            type_tags: file_type.tags,
            type_extension: file_type.extension,
            magic: file_type.magic,
            magika: file_type.magika,
            ssdeep: format!("{}:{:x}{:x}:{:x}", 3 << r.below(12), r.next_u64(), r.next_u64(), r.next_u64()),
            tlsh: format!("T1{:016X}{:016X}{:016X}{:016X}{:04X}", r.next_u64(), r.next_u64(), r.next_u64(), r.next_u64(), r.below(1 << 16)),
            names,
            meaningful_name,
            tags,
            reputation,
            total_votes: Votes {
                harmless: if family == Family::Clean { r.below(5) } else { 0 },
                malicious: if family == Family::Malicious { r.below(10) } else { 0 },
            },
            times_submitted,
            unique_sources: 1 + r.below(times_submitted),
            first_submission_date: first_submission,
            last_submission_date: last_submission,
            last_analysis_date: analysis_date,
            last_modification_date: analysis_date + r.below(3600) as i64,
            first_seen_itw_date: (family != Family::Clean).then(|| first_submission - r.below(30 * 86_400) as i64),
            last_analysis_stats: pattern.stats,
            last_analysis_results: &pattern.results,
            popular_threat_classification: pattern.threat.map(|t| Classification {
                suggested_threat_label: t.label,
                popular_threat_category: [Counted { count: pattern.stats.malicious.max(1), value: t.category }],
                popular_threat_name: [Counted { count: (pattern.stats.malicious / 2).max(1), value: t.name }],
            }),
            threat_verdict: match family {
                Family::Clean => "VERDICT_UNDETECTED",
                Family::Grey => "VERDICT_SUSPICIOUS",
                Family::Malicious => "VERDICT_MALICIOUS",
            },
            trid: [Trid { file_type: file_type.trid, probability: 40.0 + r.below(600) as f64 / 10.0 }],
        };
        let doc = Document {
            data: Data {
                id: sha256,
                kind: "file",
                links: Links {
                    self_: format!("https://www.virustotal.com/api/v3/files/{sha256}"),
                },
                attributes,
            },
        };
        // Serializing plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(out, &doc);
    }
}

/// A keyed 4-round Feistel permutation of 64-bit values.
fn feistel(keys: &[u32; 4], x: u64) -> u64 {
    let (mut l, mut r) = ((x >> 32) as u32, x as u32);
    for &k in keys {
        (l, r) = (r, l ^ round(r, k));
    }
    (u64::from(l) << 32) | u64::from(r)
}

fn feistel_inverse(keys: &[u32; 4], y: u64) -> u64 {
    let (mut l, mut r) = ((y >> 32) as u32, y as u32);
    for &k in keys.iter().rev() {
        (l, r) = (r ^ round(l, k), l);
    }
    (u64::from(l) << 32) | u64::from(r)
}

fn round(half: u32, key: u32) -> u32 {
    mix64((u64::from(key) << 32) | u64::from(half)) as u32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Clean = 0,
    Grey = 1,
    Malicious = 2,
}

#[derive(Clone, Copy, Debug)]
struct Threat {
    label: &'static str,
    category: &'static str,
    name: &'static str,
    /// Name as engines spell it.
    display: &'static str,
}

const MALICIOUS: &[Threat] = &[
    Threat { label: "trojan.emotet/heodo", category: "trojan", name: "emotet", display: "Emotet" },
    Threat { label: "ransomware.wannacry/wanna", category: "ransomware", name: "wannacry", display: "WannaCry" },
    Threat { label: "trojan.agenttesla/agensla", category: "trojan", name: "agenttesla", display: "AgentTesla" },
    Threat { label: "downloader.guloader/cloudeye", category: "downloader", name: "guloader", display: "GuLoader" },
    Threat { label: "trojan.redline/stealer", category: "trojan", name: "redline", display: "RedLine" },
    Threat { label: "trojan.qakbot/qbot", category: "trojan", name: "qakbot", display: "Qakbot" },
    Threat { label: "trojan.formbook/noon", category: "trojan", name: "formbook", display: "Formbook" },
    Threat { label: "trojan.mirai/gafgyt", category: "trojan", name: "mirai", display: "Mirai" },
    Threat { label: "hacktool.cobaltstrike/cobalt", category: "hacktool", name: "cobaltstrike", display: "CobaltStrike" },
    Threat { label: "virus.sality/salpack", category: "virus", name: "sality", display: "Sality" },
];

const GREY: &[Threat] = &[
    Threat { label: "adware.installcore/opencandy", category: "adware", name: "installcore", display: "InstallCore" },
    Threat { label: "pua.bundler/installmonster", category: "pua", name: "installmonster", display: "InstallMonster" },
    Threat { label: "riskware.coinminer/xmrig", category: "riskware", name: "xmrig", display: "XMRig" },
];

/// ~70 engine names as VirusTotal lists them, with a version style each.
const ENGINES: &[&str] = &[
    "Bkav", "Lionic", "Elastic", "MicroWorld-eScan", "ClamAV", "CMC", "CAT-QuickHeal", "Skyhigh",
    "ALYac", "Cylance", "Zillya", "Sangfor", "K7AntiVirus", "Alibaba", "K7GW", "CrowdStrike",
    "Baidu", "VirIT", "Symantec", "tehtris", "ESET-NOD32", "TrendMicro-HouseCall", "Avast",
    "Cynet", "Kaspersky", "BitDefender", "NANO-Antivirus", "SUPERAntiSpyware", "Tencent",
    "Emsisoft", "F-Secure", "DrWeb", "VIPRE", "TrendMicro", "McAfeeD", "Trapmine", "FireEye",
    "Sophos", "SentinelOne", "Jiangmin", "Webroot", "Varist", "Avira", "Antiy-AVL", "Kingsoft",
    "Gridinsoft", "Xcitium", "Arcabit", "ViRobot", "ZoneAlarm", "GData", "Google", "AhnLab-V3",
    "Acronis", "McAfee", "MAX", "VBA32", "Malwarebytes", "Zoner", "Rising", "Yandex", "Ikarus",
    "MaxSecure", "Fortinet", "AVG", "Panda", "Paloalto", "DeepInstinct", "Microsoft", "Cybereason",
];

#[derive(Debug)]
struct FileType {
    description: &'static str,
    tag: &'static str,
    tags: &'static [&'static str],
    extension: &'static str,
    magic: &'static str,
    magika: &'static str,
    trid: &'static str,
    size: (u64, u64),
}

const FILE_TYPES: &[FileType] = &[
    FileType { description: "Win32 EXE", tag: "peexe", tags: &["executable", "windows", "win32", "pe", "peexe"], extension: "exe", magic: "PE32 executable (GUI) Intel 80386, for MS Windows", magika: "PEBIN", trid: "Win32 Executable (generic)", size: (20_000, 12_000_000) },
    FileType { description: "Win32 DLL", tag: "pedll", tags: &["executable", "windows", "win32", "pe", "pedll"], extension: "dll", magic: "PE32 executable (DLL) (GUI) Intel 80386, for MS Windows", magika: "PEBIN", trid: "Win32 Dynamic Link Library (generic)", size: (10_000, 5_000_000) },
    FileType { description: "Win64 EXE", tag: "peexe", tags: &["executable", "windows", "win64", "pe", "peexe"], extension: "exe", magic: "PE32+ executable (GUI) x86-64, for MS Windows", magika: "PEBIN", trid: "Win64 Executable (generic)", size: (50_000, 30_000_000) },
    FileType { description: "PDF", tag: "pdf", tags: &["pdf"], extension: "pdf", magic: "PDF document, version 1.7", magika: "PDF", trid: "Adobe Portable Document Format", size: (5_000, 4_000_000) },
    FileType { description: "MS Word Document", tag: "doc", tags: &["doc", "msoffice"], extension: "doc", magic: "Composite Document File V2 Document", magika: "DOC", trid: "Microsoft Word document", size: (20_000, 2_000_000) },
    FileType { description: "ZIP", tag: "zip", tags: &["zip", "compressed"], extension: "zip", magic: "Zip archive data, at least v2.0 to extract", magika: "ZIP", trid: "ZIP compressed archive", size: (1_000, 50_000_000) },
    FileType { description: "ELF", tag: "elf", tags: &["elf", "executable", "linux"], extension: "elf", magic: "ELF 32-bit LSB executable, ARM, EABI5 version 1 (SYSV)", magika: "ELF", trid: "ELF Executable and Linkable format (generic)", size: (30_000, 2_000_000) },
    FileType { description: "JavaScript", tag: "javascript", tags: &["javascript", "text"], extension: "js", magic: "ASCII text, with very long lines", magika: "JAVASCRIPT", trid: "JavaScript source", size: (500, 400_000) },
    FileType { description: "Android", tag: "android", tags: &["android", "apk", "zip"], extension: "apk", magic: "Zip archive data, at least v2.0 to extract", magika: "APK", trid: "Android Package", size: (500_000, 80_000_000) },
];

/// One verdict pattern: the rendered per-engine results and the stats they add up to.
#[derive(Debug)]
struct Pattern {
    family: Family,
    threat: Option<Threat>,
    stats: Stats,
    analysis_day: i64,
    results: Box<RawValue>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Stats {
    malicious: u32,
    suspicious: u32,
    undetected: u32,
    harmless: u32,
    timeout: u32,
    #[serde(rename = "confirmed-timeout")]
    confirmed_timeout: u32,
    failure: u32,
    #[serde(rename = "type-unsupported")]
    type_unsupported: u32,
}

#[derive(Serialize)]
struct EngineResult<'a> {
    method: &'static str,
    engine_name: &'static str,
    engine_version: &'a str,
    engine_update: &'a str,
    category: &'static str,
    result: Option<String>,
}

const VARIANTS: usize = 8;
/// 2024-01-01T00:00:00Z.
const DAY_ZERO: i64 = 1_704_067_200;

fn detection_name(engine: usize, threat: &Threat, r: &mut Rng) -> String {
    let d = threat.display;
    let cat = match threat.category {
        "trojan" => "Trojan",
        "ransomware" => "Ransom",
        "downloader" => "TrojanDownloader",
        "hacktool" => "HackTool",
        "virus" => "Virus",
        "adware" => "Adware",
        "pua" => "PUA",
        _ => "Riskware",
    };
    match engine % 6 {
        0 => format!("{cat}.{d}.Gen"),
        1 => format!("Win32/{d}.{}", ["A", "B", "AJ", "gen"][r.below(4) as usize]),
        2 => format!("{cat}:Win32/{d}!rfn"),
        3 => format!("HEUR:{cat}.Win32.{d}.gen"),
        4 => format!("Gen:Variant.{d}.{}", r.range(1, 9999)),
        _ => format!("{}/{d}-{:X}", cat, r.below(1 << 20)),
    }
}

fn build_patterns(seed: u64) -> Vec<Pattern> {
    let mut r = Rng::new(seed_of(&[seed, 0x9a77]));
    let versions: Vec<String> = ENGINES
        .iter()
        .map(|name| {
            if *name == "Fortinet" {
                "None".to_owned()
            } else {
                format!("{}.{}.{}.{}", r.range(1, 24), r.below(10), r.below(100), r.below(10_000))
            }
        })
        .collect();
    let mut patterns = Vec::new();
    let mut groups: Vec<(Family, Option<Threat>)> = vec![(Family::Clean, None); 2];
    groups.extend(GREY.iter().map(|t| (Family::Grey, Some(*t))));
    groups.extend(MALICIOUS.iter().map(|t| (Family::Malicious, Some(*t))));
    for (family, threat) in groups {
        for _ in 0..VARIANTS {
            let day = DAY_ZERO + (r.below(1000) as i64) * 86_400;
            let update = jiff::Timestamp::from_second(day)
                .map(|t| t.strftime("%Y%m%d").to_string())
                .unwrap_or_default();
            let (p_mal, p_susp) = match family {
                Family::Clean => (0.0, 0.0),
                Family::Grey => (0.04, 0.02),
                Family::Malicious => (0.6 + r.next_f64() * 0.3, 0.0),
            };
            let mut stats = Stats::default();
            let mut results = serde_json::Map::new();
            for (i, name) in ENGINES.iter().enumerate() {
                let x = r.next_f64();
                let (category, result) = if x < p_mal {
                    stats.malicious += 1;
                    let t = threat.as_ref().unwrap_or(&GREY[0]);
                    ("malicious", Some(detection_name(i, t, &mut r)))
                } else if x < p_mal + p_susp {
                    stats.suspicious += 1;
                    ("suspicious", Some("Suspicious".to_owned()))
                } else if x < p_mal + p_susp + 0.07 {
                    stats.type_unsupported += 1;
                    ("type-unsupported", None)
                } else if x < p_mal + p_susp + 0.075 {
                    stats.timeout += 1;
                    ("timeout", None)
                } else {
                    stats.undetected += 1;
                    ("undetected", None)
                };
                let entry = EngineResult {
                    method: "blacklist",
                    engine_name: name,
                    engine_version: &versions[i],
                    engine_update: &update,
                    category,
                    result,
                };
                results.insert((*name).to_owned(), serde_json::to_value(entry).unwrap_or_default());
            }
            if family == Family::Grey && stats.malicious + stats.suspicious == 0 {
                // A grey file is flagged by someone, by definition.
                stats.suspicious += 1;
                stats.undetected = stats.undetected.saturating_sub(1);
                if let Some(v) = results.values_mut().find(|v| v["category"] == "undetected") {
                    v["category"] = "suspicious".into();
                    v["result"] = "Suspicious".into();
                }
            }
            let raw = serde_json::to_string(&results).unwrap_or_else(|_| "{}".into());
            patterns.push(Pattern {
                family,
                threat,
                stats,
                analysis_day: day,
                results: RawValue::from_string(raw).unwrap_or_else(|_| empty_object()),
            });
        }
    }
    patterns
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

#[derive(Serialize)]
struct Document<'a> {
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    links: Links,
    attributes: Attributes<'a>,
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    self_: String,
}

#[derive(Serialize)]
struct Votes {
    harmless: u64,
    malicious: u64,
}

#[derive(Serialize)]
struct Counted {
    count: u32,
    value: &'static str,
}

#[derive(Serialize)]
struct Classification {
    suggested_threat_label: &'static str,
    popular_threat_category: [Counted; 1],
    popular_threat_name: [Counted; 1],
}

#[derive(Serialize)]
struct Trid {
    file_type: &'static str,
    probability: f64,
}

#[derive(Serialize)]
struct Attributes<'a> {
    md5: &'a str,
    sha1: &'a str,
    sha256: &'a str,
    size: u64,
    type_description: &'static str,
    type_tag: &'static str,
    type_tags: &'static [&'static str],
    type_extension: &'static str,
    magic: &'static str,
    magika: &'static str,
    ssdeep: String,
    tlsh: String,
    names: Vec<String>,
    meaningful_name: String,
    tags: Vec<&'static str>,
    reputation: i64,
    total_votes: Votes,
    times_submitted: u64,
    unique_sources: u64,
    first_submission_date: i64,
    last_submission_date: i64,
    last_analysis_date: i64,
    last_modification_date: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seen_itw_date: Option<i64>,
    last_analysis_stats: Stats,
    last_analysis_results: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    popular_threat_classification: Option<Classification>,
    threat_verdict: &'static str,
    trid: [Trid; 1],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feistel_is_a_permutation() {
        let keys = [1, 2, 3, 4];
        for x in [0, 1, 42, u64::MAX, 1 << 40] {
            assert_eq!(feistel_inverse(&keys, feistel(&keys, x)), x);
        }
    }

    #[test]
    fn every_hash_of_a_file_finds_it_and_random_hashes_do_not() {
        let u = Universe::new(1, 1_000);
        for i in [0, 1, 500, 999] {
            let h = u.hashes(i);
            for kind in HashKind::ALL {
                assert_eq!(u.lookup(&h.of_kind(kind)), Some(Known::Generated(i)));
            }
        }
        for n in 0..100 {
            assert_eq!(u.lookup(&u.unknown_hash(HashKind::Sha256, n)), None);
        }
        // Index 1000 is outside a universe of 1000.
        let outside = Universe::new(1, 2_000).hashes(1_000).sha256;
        assert_eq!(u.lookup(&outside), None);
    }

    #[test]
    fn seeds_make_different_universes() {
        assert_ne!(Universe::new(1, 10).hashes(0), Universe::new(2, 10).hashes(0));
        assert_eq!(Universe::new(1, 10).hashes(3), Universe::new(1, 10).hashes(3));
    }

    #[test]
    fn rendered_files_are_consistent() {
        let u = Universe::new(7, 10_000);
        let mut seen_malicious = false;
        for i in 0..200 {
            let mut out = Vec::new();
            u.render(Known::Generated(i), &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            let a = &v["data"]["attributes"];
            let h = u.hashes(i);
            assert_eq!(v["data"]["id"], h.sha256.to_string());
            assert_eq!(a["md5"], h.md5.to_string());
            assert_eq!(a["sha1"], h.sha1.to_string());
            let results = a["last_analysis_results"].as_object().expect("object");
            assert_eq!(results.len(), ENGINES.len());
            let stats = a["last_analysis_stats"].as_object().expect("object");
            assert_eq!(stats.len(), 8);
            let total: u64 = stats.values().filter_map(|n| n.as_u64()).sum();
            assert_eq!(total as usize, results.len(), "stats add up to the engines");
            let malicious = results.values().filter(|r| r["category"] == "malicious").count();
            assert_eq!(stats["malicious"].as_u64(), Some(malicious as u64));
            let classified = a.get("popular_threat_classification").is_some();
            assert_eq!(classified, malicious + stats["suspicious"].as_u64().unwrap_or(0) as usize > 0);
            seen_malicious |= malicious > 30;
        }
        assert!(seen_malicious);
    }

    #[test]
    fn eicar_fixture_is_served_by_each_hash() {
        let u = Universe::new(1, 10);
        for h in [
            "44d88612fea8a8f36de82e1278abb02f",
            "3395856CE81F2B7382DEE72602F798B642F14140",
            "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
        ] {
            let known = u.lookup(&Hash::parse(h).expect("hash")).expect("known");
            let mut out = Vec::new();
            u.render(known, &mut out);
            assert_eq!(out, EICAR_JSON.as_bytes());
        }
    }
}
