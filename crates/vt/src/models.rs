//! Serde models of VirusTotal v3 answers: file objects, users and their quotas, errors.
//!
//! Every field is optional or defaulted and unknown fields are ignored: VirusTotal adds
//! attributes over time, omits premium ones for public keys, and leaves out
//! `popular_threat_classification` for clean files. A missing field must never turn a good
//! answer into an error. Timestamps are kept as VirusTotal sends them, integer Unix seconds
//! (UTC); formatting is the output's business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `{"error": {"code", "message"}}`, the body of every VirusTotal error.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ErrorDetail {
    /// One of the codes of VirusTotal's error table, e.g. `NotFoundError`.
    pub code: String,
    /// A human-readable explanation.
    #[serde(default)]
    pub message: String,
}

/// `{"data": ...}`, the envelope of every object answer.
#[derive(Clone, Debug, Deserialize)]
pub struct Envelope<T> {
    /// The object.
    pub data: T,
}

/// `links` of an object.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Links {
    /// The object's own URL.
    #[serde(rename = "self")]
    pub self_: Option<String>,
}

/// A file object, `GET /files/{id}`.
#[derive(Debug, Deserialize)]
pub struct FileObject {
    /// The object id: always the SHA-256, whichever hash was asked for.
    pub id: String,
    /// Always `file`.
    #[serde(rename = "type", default)]
    pub object_type: String,
    /// The object's links.
    #[serde(default)]
    pub links: Links,
    /// What VirusTotal knows about the file.
    #[serde(default)]
    pub attributes: FileAttributes,
    /// The whole `data` object as VirusTotal sent it, when the client was built with
    /// `keep_raw` (for `--raw` output).
    #[serde(skip)]
    pub raw: Option<Box<RawValue>>,
}

/// A file object read lean: the id and only the attributes an output record uses. Decoding
/// into it skips everything else (per-engine results, names, sandbox verdicts, TrID...)
/// without allocating, which is most of the CPU of a bulk run's answer handling.
#[derive(Clone, Debug, Deserialize)]
pub struct FileSummary {
    /// The object id: always the SHA-256.
    pub id: String,
    /// The attributes a record needs.
    #[serde(default)]
    pub attributes: SummaryAttributes,
    /// The whole `data` object, when the client was built with `keep_raw`.
    #[serde(skip)]
    pub raw: Option<Box<RawValue>>,
    /// The whole answer (`{"data": ...}`) as received, when the client was built with
    /// `keep_body`: what the cache stores.
    #[serde(skip)]
    pub body: Option<Body>,
}

/// A URL, domain or IP address object (`/urls/{id}`, `/domains/{name}`,
/// `/ip_addresses/{ip}`) read lean, like [`FileSummary`]: the id, the type and only the
/// attributes a record uses.
#[derive(Clone, Debug, Deserialize)]
pub struct ObjectSummary {
    /// The object id: the URL's identifier, the domain, the address.
    pub id: String,
    /// `url`, `domain` or `ip_address`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The attributes a record needs.
    #[serde(default)]
    pub attributes: ObjectAttributes,
    /// The whole `data` object, when the client was built with `keep_raw`.
    #[serde(skip)]
    pub raw: Option<Box<RawValue>>,
    /// The whole answer as received, when the client was built with `keep_body`.
    #[serde(skip)]
    pub body: Option<Body>,
}

/// The attributes of URL, domain and IP address objects that a record uses: those all three
/// share, then each kind's own (absent on the others). Names as VirusTotal's.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ObjectAttributes {
    /// Verdict counts of the last analysis.
    pub last_analysis_stats: Option<AnalysisStats>,
    /// Last analysis, Unix seconds.
    pub last_analysis_date: Option<i64>,
    /// Community reputation; can be negative.
    pub reputation: Option<i64>,
    /// VirusTotal's tags.
    pub tags: Vec<String>,
    /// The crowd-sourced threat label, when there is one.
    pub popular_threat_classification: Option<ThreatClassification>,
    /// Categories by the service that gave them (URL and domain).
    pub categories: BTreeMap<String, String>,
    /// Threat names (URL).
    pub threat_names: Vec<String>,
    /// The URL as submitted (URL).
    pub url: Option<String>,
    /// Where the URL led after redirects (URL).
    pub last_final_url: Option<String>,
    /// The page's title (URL).
    pub title: Option<String>,
    /// The HTTP status of the last fetch (URL).
    pub last_http_response_code: Option<u32>,
    /// First submission, Unix seconds (URL).
    pub first_submission_date: Option<i64>,
    /// How many times it was submitted (URL).
    pub times_submitted: Option<u64>,
    /// The registrar (domain).
    pub registrar: Option<String>,
    /// Registration, Unix seconds (domain).
    pub creation_date: Option<i64>,
    /// Popularity ranks by list (domain).
    pub popularity_ranks: BTreeMap<String, PopularityRank>,
    /// Autonomous system number (IP).
    pub asn: Option<u32>,
    /// The autonomous system's owner (IP).
    pub as_owner: Option<String>,
    /// ISO 3166 country code (IP).
    pub country: Option<String>,
    /// The announced network, CIDR (IP).
    pub network: Option<String>,
}

/// An analysis (`GET /analyses/{id}`, after `POST /urls`): where it is, and its verdict
/// counts once completed.
#[derive(Clone, Debug, Deserialize)]
pub struct Analysis {
    /// The analysis id (`u-<sha256 of the URL>-<unix time>` for a URL).
    pub id: String,
    /// Status and counts.
    #[serde(default)]
    pub attributes: AnalysisAttributes,
}

/// What an analysis says.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct AnalysisAttributes {
    /// `queued`, `in-progress` or `completed`.
    pub status: String,
    /// The verdict counts (complete once `status` is `completed`).
    pub stats: Option<AnalysisStats>,
    /// When it was made, Unix seconds.
    pub date: Option<i64>,
}

impl Analysis {
    /// Whether the analysis is done.
    pub fn completed(&self) -> bool {
        self.attributes.status == "completed"
    }
}

/// The object `POST /urls` answers: the analysis to poll.
#[derive(Clone, Debug, Deserialize)]
pub struct AnalysisRef {
    /// The analysis id.
    pub id: String,
}

/// A domain's place in one popularity list.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct PopularityRank {
    /// 1 is the most popular.
    pub rank: u64,
    /// When the list was read, Unix seconds.
    pub timestamp: i64,
}

/// An answer's body as it came off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Gzip-compressed JSON, as VirusTotal sent it.
    Gzip(bytes::Bytes),
    /// Plain JSON (the server did not compress it).
    Json(bytes::Bytes),
}

/// The subset of [`FileAttributes`] that [`FileSummary`] keeps; same names and meanings.
/// It serialises to the same JSON shape, which is how the cache stores it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SummaryAttributes {
    /// MD5, lower-case hex.
    pub md5: Option<String>,
    /// SHA-1, lower-case hex.
    pub sha1: Option<String>,
    /// SHA-256, lower-case hex.
    pub sha256: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// e.g. "Win32 EXE".
    pub type_description: Option<String>,
    /// e.g. "peexe".
    pub type_tag: Option<String>,
    /// The most interesting submitted name.
    pub meaningful_name: Option<String>,
    /// VirusTotal's tags.
    pub tags: Vec<String>,
    /// Community reputation; can be negative.
    pub reputation: Option<i64>,
    /// How many times the file was submitted.
    pub times_submitted: Option<u64>,
    /// First submission, Unix seconds.
    pub first_submission_date: Option<i64>,
    /// Last analysis, Unix seconds.
    pub last_analysis_date: Option<i64>,
    /// Verdict counts of the last analysis.
    pub last_analysis_stats: Option<AnalysisStats>,
    /// The crowd-sourced threat label, absent for undetected files.
    pub popular_threat_classification: Option<ThreatClassification>,
}

/// The attributes of a file object that an analyst would put in a spreadsheet.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct FileAttributes {
    /// MD5, lower-case hex.
    pub md5: Option<String>,
    /// SHA-1, lower-case hex.
    pub sha1: Option<String>,
    /// SHA-256, lower-case hex.
    pub sha256: Option<String>,
    /// ssdeep fuzzy hash.
    pub ssdeep: Option<String>,
    /// TLSH fuzzy hash (`T1...`).
    pub tlsh: Option<String>,
    /// VirusTotal's similarity hash.
    pub vhash: Option<String>,
    /// Permissions hash (APKs).
    pub permhash: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// e.g. "Win32 EXE".
    pub type_description: Option<String>,
    /// e.g. "peexe".
    pub type_tag: Option<String>,
    /// All type tags.
    pub type_tags: Vec<String>,
    /// e.g. "exe".
    pub type_extension: Option<String>,
    /// `file(1)`-style description.
    pub magic: Option<String>,
    /// Google Magika's content type.
    pub magika: Option<String>,
    /// Names the file was submitted under.
    pub names: Vec<String>,
    /// The most interesting of `names`.
    pub meaningful_name: Option<String>,
    /// VirusTotal's tags.
    pub tags: Vec<String>,
    /// Community reputation; can be negative.
    pub reputation: Option<i64>,
    /// Community votes.
    pub total_votes: Option<Votes>,
    /// How many times the file was submitted.
    pub times_submitted: Option<u64>,
    /// How many distinct sources submitted it.
    pub unique_sources: Option<u64>,
    /// First submission, Unix seconds.
    pub first_submission_date: Option<i64>,
    /// Last submission, Unix seconds.
    pub last_submission_date: Option<i64>,
    /// Last analysis, Unix seconds.
    pub last_analysis_date: Option<i64>,
    /// Last change of the object, Unix seconds.
    pub last_modification_date: Option<i64>,
    /// Compile or creation time from the file itself (may be faked), Unix seconds.
    pub creation_date: Option<i64>,
    /// First time seen in the wild, Unix seconds.
    pub first_seen_itw_date: Option<i64>,
    /// Verdict counts of the last analysis.
    pub last_analysis_stats: Option<AnalysisStats>,
    /// Per-engine results of the last analysis, kept as raw JSON and parsed on demand with
    /// [`EngineResults::parse`]: 70-odd engines of 6 strings each are most of a file answer,
    /// and a bulk enrichment does not need them per engine.
    pub last_analysis_results: EngineResults,
    /// The crowd-sourced threat label, absent for undetected files.
    pub popular_threat_classification: Option<ThreatClassification>,
    /// `VERDICT_UNKNOWN`, `VERDICT_UNDETECTED`, `VERDICT_SUSPICIOUS` or `VERDICT_MALICIOUS`.
    pub threat_verdict: Option<String>,
    /// Google Threat Intelligence severity.
    pub threat_severity: Option<ThreatSeverity>,
    /// Sandbox verdicts keyed by sandbox name.
    pub sandbox_verdicts: BTreeMap<String, SandboxVerdict>,
    /// TrID file type guesses.
    pub trid: Vec<TridEntry>,
}

/// `last_analysis_stats` of a file: the 8 verdict counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct AnalysisStats {
    /// Engines that flagged the file.
    pub malicious: u32,
    /// Engines that found it suspicious.
    pub suspicious: u32,
    /// Engines that found nothing.
    pub undetected: u32,
    /// Engines that call it harmless.
    pub harmless: u32,
    /// Engines that timed out.
    pub timeout: u32,
    /// Engines whose timeout was confirmed.
    #[serde(rename = "confirmed-timeout")]
    pub confirmed_timeout: u32,
    /// Engines that failed.
    pub failure: u32,
    /// Engines that cannot scan this type of file.
    #[serde(rename = "type-unsupported")]
    pub type_unsupported: u32,
}

impl From<[u32; 8]> for AnalysisStats {
    /// From the eight counters in the order of [`AnalysisStats::counts`].
    fn from(v: [u32; 8]) -> Self {
        AnalysisStats {
            malicious: v[0],
            suspicious: v[1],
            undetected: v[2],
            harmless: v[3],
            timeout: v[4],
            confirmed_timeout: v[5],
            failure: v[6],
            type_unsupported: v[7],
        }
    }
}

impl AnalysisStats {
    /// The eight counters: malicious, suspicious, undetected, harmless, timeout,
    /// confirmed-timeout, failure, type-unsupported.
    pub fn counts(&self) -> [u32; 8] {
        [
            self.malicious,
            self.suspicious,
            self.undetected,
            self.harmless,
            self.timeout,
            self.confirmed_timeout,
            self.failure,
            self.type_unsupported,
        ]
    }

    /// The number of engines that took part (the sum of all counters).
    pub fn engines_total(&self) -> u32 {
        self.malicious
            + self.suspicious
            + self.undetected
            + self.harmless
            + self.timeout
            + self.confirmed_timeout
            + self.failure
            + self.type_unsupported
    }
}

/// `last_analysis_results`, unparsed.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct EngineResults(Option<Box<RawValue>>);

impl EngineResults {
    /// The results keyed by engine name (empty when absent).
    pub fn parse(&self) -> Result<BTreeMap<String, EngineResult>, serde_json::Error> {
        match &self.0 {
            Some(raw) => serde_json::from_str(raw.get()),
            None => Ok(BTreeMap::new()),
        }
    }
}

/// One engine's verdict in `last_analysis_results`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct EngineResult {
    /// One of malicious, suspicious, undetected, harmless, timeout, confirmed-timeout,
    /// failure, type-unsupported.
    pub category: Option<String>,
    /// The engine's name.
    pub engine_name: Option<String>,
    /// The engine's version (sometimes the string "None").
    pub engine_version: Option<String>,
    /// Signature date, `YYYYMMDD`.
    pub engine_update: Option<String>,
    /// Usually "blacklist".
    pub method: Option<String>,
    /// The detection name, `null` without a verdict.
    pub result: Option<String>,
}

/// `popular_threat_classification`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ThreatClassification {
    /// e.g. "trojan.emotet/heodo".
    pub suggested_threat_label: Option<String>,
    /// Categories by decreasing count.
    pub popular_threat_category: Vec<CountedValue>,
    /// Family names by decreasing count.
    pub popular_threat_name: Vec<CountedValue>,
}

impl ThreatClassification {
    /// The most voted category.
    pub fn top_category(&self) -> Option<&str> {
        top(&self.popular_threat_category)
    }

    /// The most voted family name.
    pub fn top_name(&self) -> Option<&str> {
        top(&self.popular_threat_name)
    }
}

fn top(values: &[CountedValue]) -> Option<&str> {
    // VirusTotal sorts by decreasing count, but do not rely on it; the first wins ties.
    values
        .iter()
        .enumerate()
        .max_by_key(|(i, v)| (v.count, std::cmp::Reverse(*i)))
        .map(|(_, v)| v.value.as_str())
}

/// `{"count", "value"}` in a threat classification.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct CountedValue {
    /// How many engines said it.
    pub count: u64,
    /// What they said.
    pub value: String,
}

/// `total_votes`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Votes {
    /// Harmless votes.
    pub harmless: u64,
    /// Malicious votes.
    pub malicious: u64,
}

/// `threat_severity`, reduced to what fits in a cell.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ThreatSeverity {
    /// `SEVERITY_NONE`, `SEVERITY_LOW`, `SEVERITY_MEDIUM`, `SEVERITY_HIGH` or `SEVERITY_UNKNOWN`.
    pub threat_severity_level: Option<String>,
    /// Why.
    pub level_description: Option<String>,
}

/// One entry of `sandbox_verdicts`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SandboxVerdict {
    /// suspicious, malicious, harmless or undetected.
    pub category: Option<String>,
    /// 0 to 100; often missing.
    pub confidence: Option<u32>,
    /// e.g. ["MALWARE", "TROJAN"].
    pub malware_classification: Vec<String>,
    /// Family names; often missing.
    pub malware_names: Vec<String>,
    /// The sandbox.
    pub sandbox_name: Option<String>,
}

/// One TrID guess.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TridEntry {
    /// The type.
    pub file_type: String,
    /// Percent.
    pub probability: f64,
}

/// A user object, `GET /users/{id or key}`.
#[derive(Clone, Debug, Deserialize)]
pub struct UserObject {
    /// The user id.
    pub id: String,
    /// Always `user`.
    #[serde(rename = "type", default)]
    pub object_type: String,
    /// The user's attributes.
    #[serde(default)]
    pub attributes: UserAttributes,
}

/// The attributes of a user that matter to a bulk client.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct UserAttributes {
    /// e.g. "active".
    pub status: Option<String>,
    /// Unix seconds.
    pub user_since: Option<i64>,
    /// Reputation.
    pub reputation: Option<i64>,
    /// Quotas by name (`api_requests_hourly`, `api_requests_daily`, `api_requests_monthly`,
    /// and many more); only visible to the owner.
    pub quotas: BTreeMap<String, Quota>,
}

/// Names of the API request quotas in [`UserAttributes::quotas`].
pub mod quota_names {
    /// Requests this UTC hour.
    pub const HOURLY: &str = "api_requests_hourly";
    /// Requests this UTC day.
    pub const DAILY: &str = "api_requests_daily";
    /// Requests this UTC month.
    pub const MONTHLY: &str = "api_requests_monthly";
}

/// `{"allowed", "used"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Quota {
    /// The allowance.
    pub allowed: u64,
    /// What was spent.
    pub used: u64,
}

impl Quota {
    /// What is left (never negative: `used` can exceed `allowed`).
    pub fn remaining(&self) -> u64 {
        self.allowed.saturating_sub(self.used)
    }
}

/// `GET /users/{id}/overall_quotas`: each quota for the user and, when one applies, the group.
pub type OverallQuotas = BTreeMap<String, OverallQuota>;

/// One entry of [`OverallQuotas`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct OverallQuota {
    /// The user's own allowance.
    pub user: Option<Quota>,
    /// The group's allowance the user draws from.
    pub group: Option<GroupQuota>,
}

/// A group's part of an [`OverallQuota`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupQuota {
    /// The allowance.
    pub allowed: u64,
    /// What the whole group spent.
    pub used: u64,
    /// The group's id.
    pub inherited_from: Option<String>,
}

impl GroupQuota {
    /// The group's allowance as a plain [`Quota`].
    pub fn quota(&self) -> Quota {
        Quota {
            allowed: self.allowed,
            used: self.used,
        }
    }
}
