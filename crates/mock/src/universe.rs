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

use bytes::Bytes;
use serde::Serialize;
use vtbulk_ioc::{Hash, HashKind};

use vtbulk_rng::{Rng, mix64, seed_of};

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
    pub body: Bytes,
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
            body: Bytes::copy_from_slice(body.as_bytes()),
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
    type_fragments: Vec<String>,
    type_tag_lists: Vec<String>,
    fixtures: Vec<Fixture>,
    fixture_index: HashMap<Hash, usize>,
}

/// Default number of generated files.
pub const DEFAULT_SIZE: u64 = 1 << 32;

impl Universe {
    /// A universe of `size` generated files, each analysed by [`ENGINE_COUNT`] engines, plus
    /// the EICAR fixture.
    pub fn new(seed: u64, size: u64) -> Universe {
        Universe::with_engines(seed, size, ENGINE_COUNT)
    }

    /// The same with only the first `engines` engines (1 to [`ENGINE_COUNT`]): smaller bodies,
    /// for comparing with mocks that send fewer.
    pub fn with_engines(seed: u64, size: u64, engines: usize) -> Universe {
        let keys = [0u64, 1, 2].map(|k| {
            let mut r = Rng::new(seed_of(&[seed, 0xfe15, k]));
            [0; 4].map(|_: u32| r.next_u64() as u32)
        });
        let patterns = build_patterns(seed, &ENGINES[..engines.clamp(1, ENGINE_COUNT)]);
        let mut by_family: [Vec<usize>; 3] = Default::default();
        for (i, p) in patterns.iter().enumerate() {
            by_family[p.family as usize].push(i);
        }
        let (type_fragments, type_tag_lists) = type_fragments();
        let mut universe = Universe {
            seed,
            size,
            keys,
            patterns,
            by_family,
            type_fragments,
            type_tag_lists,
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
        for h in [
            fixture.hashes.md5,
            fixture.hashes.sha1,
            fixture.hashes.sha256,
        ] {
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
        for chunk in self.render_chunks(known) {
            out.extend_from_slice(&chunk);
        }
    }

    /// The `GET /files/{id}` answer as consecutive pieces. The per-engine results, most of the
    /// body, are a shared buffer: the server writes them out without copying them.
    pub fn render_chunks(&self, known: Known) -> [Bytes; 3] {
        match known {
            Known::Fixture(i) => [self.fixtures[i].body.clone(), Bytes::new(), Bytes::new()],
            Known::Generated(i) => self.render_generated(i),
        }
    }

    fn render_generated(&self, index: u64) -> [Bytes; 3] {
        let hashes = self.hashes(index);
        let mut r = Rng::new(seed_of(&[self.seed, 0xa77, index]));
        let family = match r.next_f64() {
            x if x < 0.55 => Family::Clean,
            x if x < 0.65 => Family::Grey,
            _ => Family::Malicious,
        };
        let pattern = &self.patterns[*r.pick(&self.by_family[family as usize])];
        let type_index = r.below(FILE_TYPES.len() as u64) as usize;
        let file_type = &FILE_TYPES[type_index];
        let analysis_date = pattern.analysis_day + r.below(86_400) as i64;
        let first_submission = analysis_date - r.below(6 * 365 * 86_400) as i64;
        let last_submission =
            first_submission + r.below((analysis_date - first_submission) as u64 + 1) as i64;

        // Written by hand rather than through serde: every string here is ASCII without quotes,
        // backslashes or control characters (hex, fixed names), so nothing needs escaping, and
        // this is most of the mock's CPU per answer. `rendered_files_are_consistent` parses it.
        let mut o = Out(Vec::with_capacity(1536));
        o.raw("{\"data\":{\"id\":\"");
        o.hex(&hashes.sha256);
        o.raw(
            "\",\"type\":\"file\",\"links\":{\"self\":\"https://www.virustotal.com/api/v3/files/",
        );
        o.hex(&hashes.sha256);
        o.raw("\"},\"attributes\":{\"md5\":\"");
        o.hex(&hashes.md5);
        o.raw("\",\"sha1\":\"");
        o.hex(&hashes.sha1);
        o.raw("\",\"sha256\":\"");
        o.hex(&hashes.sha256);
        o.raw("\",\"size\":");
        o.int(r.range(file_type.size.0, file_type.size.1) as i64);
        o.raw(",");
        o.raw(&self.type_fragments[type_index]);
        o.raw(",\"ssdeep\":\"");
        o.int((3u64 << r.below(12)) as i64);
        o.raw(":");
        o.hex_u64(r.next_u64());
        o.hex_u64(r.next_u64());
        o.raw(":");
        o.hex_u64(r.next_u64());
        o.raw("\",\"tlsh\":\"T1");
        for _ in 0..4 {
            o.hex_u64(r.next_u64());
        }
        o.hex_u64(r.below(1 << 16) << 48);
        o.0.truncate(o.0.len() - 12);
        let stem = match family {
            Family::Malicious => *r.pick(&[
                "invoice", "payment", "scan", "order", "update", "setup", "document",
            ]),
            Family::Grey => *r.pick(&["setup", "installer", "free_converter", "toolbar", "crack"]),
            Family::Clean => *r.pick(&[
                "report", "setup", "readme", "app", "library", "photo", "backup",
            ]),
        };
        let number = r.range(100, 99_999) as i64;
        let meaningful = |o: &mut Out| {
            o.raw(stem);
            o.raw("_");
            o.int(number);
            o.raw(".");
            o.raw(file_type.extension);
        };
        o.raw("\",\"names\":[\"");
        meaningful(&mut o);
        for _ in 0..r.below(4) {
            o.raw("\",\"");
            o.hex_u64(r.next_u64());
            o.0.truncate(o.0.len() - 4);
            o.raw(".");
            o.raw(file_type.extension);
        }
        o.raw("\"],\"meaningful_name\":\"");
        meaningful(&mut o);
        o.raw("\",\"tags\":[");
        o.raw(&self.type_tag_lists[type_index]);
        let extra: &[&str] = match family {
            Family::Malicious => {
                &["detect-debug-environment", "long-sleeps"][..r.below(3) as usize]
            }
            Family::Grey => &["known-distributor"],
            Family::Clean if r.chance(0.3) => &["signed"],
            Family::Clean => &[],
        };
        for tag in extra {
            o.raw(",\"");
            o.raw(tag);
            o.raw("\"");
        }
        o.raw("],\"reputation\":");
        o.int(match family {
            Family::Clean => r.below(20) as i64,
            Family::Grey => -(r.below(15) as i64),
            Family::Malicious => -5 - r.below(95) as i64,
        });
        o.raw(",\"total_votes\":{\"harmless\":");
        o.int(if family == Family::Clean {
            r.below(5) as i64
        } else {
            0
        });
        o.raw(",\"malicious\":");
        o.int(if family == Family::Malicious {
            r.below(10) as i64
        } else {
            0
        });
        let times_submitted = 1 + r.below(400);
        o.raw("},\"times_submitted\":");
        o.int(times_submitted as i64);
        o.raw(",\"unique_sources\":");
        o.int(1 + r.below(times_submitted) as i64);
        o.raw(",\"first_submission_date\":");
        o.int(first_submission);
        o.raw(",\"last_submission_date\":");
        o.int(last_submission);
        o.raw(",\"last_analysis_date\":");
        o.int(analysis_date);
        o.raw(",\"last_modification_date\":");
        o.int(analysis_date + r.below(3600) as i64);
        if family != Family::Clean {
            o.raw(",\"first_seen_itw_date\":");
            o.int(first_submission - r.below(30 * 86_400) as i64);
        }
        o.raw(",");
        o.raw(&pattern.fragment);
        // The per-engine results come last, as a shared buffer: no copy per answer.
        o.raw(",\"last_analysis_results\":");
        [
            Bytes::from(o.0),
            pattern.results.clone(),
            Bytes::from_static(b"}}}"),
        ]
    }
}

/// A byte buffer with the few JSON writing helpers `render_generated` needs.
struct Out(Vec<u8>);

impl Out {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, n: i64) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn hex(&mut self, h: &Hash) {
        let mut buf = [0u8; 64];
        self.raw(h.encode_hex(&mut buf));
    }

    fn hex_u64(&mut self, n: u64) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for shift in (0..16).rev() {
            self.0.push(HEX[((n >> (shift * 4)) & 0xf) as usize]);
        }
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
    Threat {
        label: "trojan.emotet/heodo",
        category: "trojan",
        name: "emotet",
        display: "Emotet",
    },
    Threat {
        label: "ransomware.wannacry/wanna",
        category: "ransomware",
        name: "wannacry",
        display: "WannaCry",
    },
    Threat {
        label: "trojan.agenttesla/agensla",
        category: "trojan",
        name: "agenttesla",
        display: "AgentTesla",
    },
    Threat {
        label: "downloader.guloader/cloudeye",
        category: "downloader",
        name: "guloader",
        display: "GuLoader",
    },
    Threat {
        label: "trojan.redline/stealer",
        category: "trojan",
        name: "redline",
        display: "RedLine",
    },
    Threat {
        label: "trojan.qakbot/qbot",
        category: "trojan",
        name: "qakbot",
        display: "Qakbot",
    },
    Threat {
        label: "trojan.formbook/noon",
        category: "trojan",
        name: "formbook",
        display: "Formbook",
    },
    Threat {
        label: "trojan.mirai/gafgyt",
        category: "trojan",
        name: "mirai",
        display: "Mirai",
    },
    Threat {
        label: "hacktool.cobaltstrike/cobalt",
        category: "hacktool",
        name: "cobaltstrike",
        display: "CobaltStrike",
    },
    Threat {
        label: "virus.sality/salpack",
        category: "virus",
        name: "sality",
        display: "Sality",
    },
];

const GREY: &[Threat] = &[
    Threat {
        label: "adware.installcore/opencandy",
        category: "adware",
        name: "installcore",
        display: "InstallCore",
    },
    Threat {
        label: "pua.bundler/installmonster",
        category: "pua",
        name: "installmonster",
        display: "InstallMonster",
    },
    Threat {
        label: "riskware.coinminer/xmrig",
        category: "riskware",
        name: "xmrig",
        display: "XMRig",
    },
];

/// How many engines analyse each generated file by default.
pub const ENGINE_COUNT: usize = ENGINES.len();

/// 70 engine names as VirusTotal lists them.
const ENGINES: &[&str] = &[
    "Bkav",
    "Lionic",
    "Elastic",
    "MicroWorld-eScan",
    "ClamAV",
    "CMC",
    "CAT-QuickHeal",
    "Skyhigh",
    "ALYac",
    "Cylance",
    "Zillya",
    "Sangfor",
    "K7AntiVirus",
    "Alibaba",
    "K7GW",
    "CrowdStrike",
    "Baidu",
    "VirIT",
    "Symantec",
    "tehtris",
    "ESET-NOD32",
    "TrendMicro-HouseCall",
    "Avast",
    "Cynet",
    "Kaspersky",
    "BitDefender",
    "NANO-Antivirus",
    "SUPERAntiSpyware",
    "Tencent",
    "Emsisoft",
    "F-Secure",
    "DrWeb",
    "VIPRE",
    "TrendMicro",
    "McAfeeD",
    "Trapmine",
    "FireEye",
    "Sophos",
    "SentinelOne",
    "Jiangmin",
    "Webroot",
    "Varist",
    "Avira",
    "Antiy-AVL",
    "Kingsoft",
    "Gridinsoft",
    "Xcitium",
    "Arcabit",
    "ViRobot",
    "ZoneAlarm",
    "GData",
    "Google",
    "AhnLab-V3",
    "Acronis",
    "McAfee",
    "MAX",
    "VBA32",
    "Malwarebytes",
    "Zoner",
    "Rising",
    "Yandex",
    "Ikarus",
    "MaxSecure",
    "Fortinet",
    "AVG",
    "Panda",
    "Paloalto",
    "DeepInstinct",
    "Microsoft",
    "Cybereason",
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
    FileType {
        description: "Win32 EXE",
        tag: "peexe",
        tags: &["executable", "windows", "win32", "pe", "peexe"],
        extension: "exe",
        magic: "PE32 executable (GUI) Intel 80386, for MS Windows",
        magika: "PEBIN",
        trid: "Win32 Executable (generic)",
        size: (20_000, 12_000_000),
    },
    FileType {
        description: "Win32 DLL",
        tag: "pedll",
        tags: &["executable", "windows", "win32", "pe", "pedll"],
        extension: "dll",
        magic: "PE32 executable (DLL) (GUI) Intel 80386, for MS Windows",
        magika: "PEBIN",
        trid: "Win32 Dynamic Link Library (generic)",
        size: (10_000, 5_000_000),
    },
    FileType {
        description: "Win64 EXE",
        tag: "peexe",
        tags: &["executable", "windows", "win64", "pe", "peexe"],
        extension: "exe",
        magic: "PE32+ executable (GUI) x86-64, for MS Windows",
        magika: "PEBIN",
        trid: "Win64 Executable (generic)",
        size: (50_000, 30_000_000),
    },
    FileType {
        description: "PDF",
        tag: "pdf",
        tags: &["pdf"],
        extension: "pdf",
        magic: "PDF document, version 1.7",
        magika: "PDF",
        trid: "Adobe Portable Document Format",
        size: (5_000, 4_000_000),
    },
    FileType {
        description: "MS Word Document",
        tag: "doc",
        tags: &["doc", "msoffice"],
        extension: "doc",
        magic: "Composite Document File V2 Document",
        magika: "DOC",
        trid: "Microsoft Word document",
        size: (20_000, 2_000_000),
    },
    FileType {
        description: "ZIP",
        tag: "zip",
        tags: &["zip", "compressed"],
        extension: "zip",
        magic: "Zip archive data, at least v2.0 to extract",
        magika: "ZIP",
        trid: "ZIP compressed archive",
        size: (1_000, 50_000_000),
    },
    FileType {
        description: "ELF",
        tag: "elf",
        tags: &["elf", "executable", "linux"],
        extension: "elf",
        magic: "ELF 32-bit LSB executable, ARM, EABI5 version 1 (SYSV)",
        magika: "ELF",
        trid: "ELF Executable and Linkable format (generic)",
        size: (30_000, 2_000_000),
    },
    FileType {
        description: "JavaScript",
        tag: "javascript",
        tags: &["javascript", "text"],
        extension: "js",
        magic: "ASCII text, with very long lines",
        magika: "JAVASCRIPT",
        trid: "JavaScript source",
        size: (500, 400_000),
    },
    FileType {
        description: "Android",
        tag: "android",
        tags: &["android", "apk", "zip"],
        extension: "apk",
        magic: "Zip archive data, at least v2.0 to extract",
        magika: "APK",
        trid: "Android Package",
        size: (500_000, 80_000_000),
    },
];

/// The members of a JSON object without its braces, ready to paste into another object.
fn members(object: &serde_json::Value) -> String {
    let text = object.to_string();
    text[1..text.len() - 1].to_owned()
}

/// Pre-rendered attributes of each file type (and its tags, without brackets).
fn type_fragments() -> (Vec<String>, Vec<String>) {
    FILE_TYPES
        .iter()
        .map(|t| {
            let object = serde_json::json!({
                "type_description": t.description,
                "type_tag": t.tag,
                "type_tags": t.tags,
                "type_extension": t.extension,
                "magic": t.magic,
                "magika": t.magika,
                "trid": [{"file_type": t.trid, "probability": 100.0}],
            });
            let tags = serde_json::Value::from(t.tags).to_string();
            (members(&object), tags[1..tags.len() - 1].to_owned())
        })
        .unzip()
}

/// One verdict pattern: the rendered per-engine results and the stats they add up to.
#[derive(Debug)]
struct Pattern {
    family: Family,
    /// `"last_analysis_stats":{...},"popular_threat_classification":{...},"threat_verdict":".."`
    fragment: String,
    analysis_day: i64,
    /// `{"EngineA": {...}, ...}`, shared by every file of the pattern.
    results: Bytes,
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

fn build_patterns(seed: u64, engines: &[&'static str]) -> Vec<Pattern> {
    let mut r = Rng::new(seed_of(&[seed, 0x9a77]));
    let versions: Vec<String> = engines
        .iter()
        .map(|name| {
            if *name == "Fortinet" {
                "None".to_owned()
            } else {
                format!(
                    "{}.{}.{}.{}",
                    r.range(1, 24),
                    r.below(10),
                    r.below(100),
                    r.below(10_000)
                )
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
            for (i, name) in engines.iter().enumerate() {
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
                results.insert(
                    (*name).to_owned(),
                    serde_json::to_value(entry).unwrap_or_default(),
                );
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
            let mut fragment = serde_json::Map::new();
            fragment.insert(
                "last_analysis_stats".into(),
                serde_json::to_value(stats).unwrap_or_default(),
            );
            if let Some(t) = threat {
                fragment.insert(
                    "popular_threat_classification".into(),
                    serde_json::json!({
                        "suggested_threat_label": t.label,
                        "popular_threat_category": [{"count": stats.malicious.max(1), "value": t.category}],
                        "popular_threat_name": [{"count": (stats.malicious / 2).max(1), "value": t.name}],
                    }),
                );
            }
            let verdict = match family {
                Family::Clean => "VERDICT_UNDETECTED",
                Family::Grey => "VERDICT_SUSPICIOUS",
                Family::Malicious => "VERDICT_MALICIOUS",
            };
            fragment.insert("threat_verdict".into(), verdict.into());
            patterns.push(Pattern {
                family,
                fragment: members(&serde_json::Value::Object(fragment)),
                analysis_day: day,
                results: Bytes::from(raw),
            });
        }
    }
    patterns
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
        assert_ne!(
            Universe::new(1, 10).hashes(0),
            Universe::new(2, 10).hashes(0)
        );
        assert_eq!(
            Universe::new(1, 10).hashes(3),
            Universe::new(1, 10).hashes(3)
        );
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
            let malicious = results
                .values()
                .filter(|r| r["category"] == "malicious")
                .count();
            assert_eq!(stats["malicious"].as_u64(), Some(malicious as u64));
            let classified = a.get("popular_threat_classification").is_some();
            assert_eq!(
                classified,
                malicious + stats["suspicious"].as_u64().unwrap_or(0) as usize > 0
            );
            seen_malicious |= malicious > 30;
        }
        assert!(seen_malicious);
    }

    #[test]
    fn fewer_engines_make_smaller_consistent_bodies() {
        let (full, small) = (Universe::new(3, 100), Universe::with_engines(3, 100, 18));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        full.render(Known::Generated(5), &mut a);
        small.render(Known::Generated(5), &mut b);
        assert!(b.len() * 2 < a.len(), "{} vs {}", b.len(), a.len());
        let v: serde_json::Value = serde_json::from_slice(&b).expect("valid JSON");
        let results = v["data"]["attributes"]["last_analysis_results"]
            .as_object()
            .expect("object");
        assert_eq!(results.len(), 18);
        assert_eq!(
            small.hashes(5),
            full.hashes(5),
            "hashes do not depend on engines"
        );
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
