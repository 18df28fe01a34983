//! URL, domain and IP address objects (`/urls/{id}`, `/domains/{name}`,
//! `/ip_addresses/{ip}`): which exist and what they say, from the seed and the id alone.
//!
//! Like the file universe, stateless: an object's fate is a 64-bit mix of the seed, its kind
//! and its id, so two runs (and two clients) see the same answers, and nothing is stored.
//! About 60% of URLs are known, 85% of domains, and every public IP address (VirusTotal
//! answers any routable address). A URL id must decode (unpadded base64url) to a URL of a
//! scheme VirusTotal keeps (`vtbulk_ioc::indicator::SCHEMES`: `http`, `https`, `ftp`, `smb`,
//! `tcp`...); anything else is a 404. Attributes are shaped like
//! VirusTotal's: a URL's final URL, title, last HTTP code, categories and threat names; a
//! domain's registrar, creation date, categories and popularity ranks; an address's ASN, AS
//! owner, country and network.

use base64::Engine;
use bytes::Bytes;
use serde_json::json;

use vtbulk_rng::{Rng, seed_of};

/// The kinds of object served here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// `/urls/{id}`.
    Url,
    /// `/domains/{name}`.
    Domain,
    /// `/ip_addresses/{ip}`.
    Ip,
}

impl ObjectKind {
    /// The collection's name in paths.
    pub fn collection(self) -> &'static str {
        match self {
            ObjectKind::Url => "urls",
            ObjectKind::Domain => "domains",
            ObjectKind::Ip => "ip_addresses",
        }
    }

    /// The object's `type`.
    pub fn type_name(self) -> &'static str {
        match self {
            ObjectKind::Url => "url",
            ObjectKind::Domain => "domain",
            ObjectKind::Ip => "ip_address",
        }
    }

    /// The word VirusTotal's 404 message uses.
    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::Url => "URL",
            ObjectKind::Domain => "Domain",
            ObjectKind::Ip => "IP address",
        }
    }

    /// The kind and id of an API path's collection and id, if it is one of these.
    pub fn of_collection(name: &str) -> Option<ObjectKind> {
        match name {
            "urls" => Some(ObjectKind::Url),
            "domains" => Some(ObjectKind::Domain),
            "ip_addresses" => Some(ObjectKind::Ip),
            _ => None,
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const REGISTRARS: &[&str] = &[
    "NameCheap, Inc.",
    "GoDaddy.com, LLC",
    "Tucows Domains Inc.",
    "PDR Ltd. d/b/a PublicDomainRegistry.com",
    "Hostinger Operations, UAB",
    "REG.RU LLC",
];

const OWNERS: &[(u32, &str, &str)] = &[
    (14061, "DIGITALOCEAN-ASN", "US"),
    (16509, "AMAZON-02", "US"),
    (24940, "Hetzner Online GmbH", "DE"),
    (20473, "AS-CHOOPA", "US"),
    (9009, "M247 Europe SRL", "RO"),
    (200019, "AlexHost SRL", "MD"),
    (13335, "CLOUDFLARENET", "US"),
];

const TITLES: &[&str] = &[
    "Sign in to your account",
    "Microsoft 365 - Verify",
    "Index of /",
    "404 Not Found",
    "DHL Express - Track Shipment",
    "Welcome to nginx!",
];

/// The whole answer (`{"data": {...}}`) for `id` in `kind`'s collection, or `None` (404).
pub fn render(seed: u64, kind: ObjectKind, id: &str) -> Option<Bytes> {
    render_with(seed, kind, id, false)
}

/// [`render`], or with `known` the answer even for an id the seed leaves unknown (a URL
/// whose submitted analysis has completed).
pub fn render_with(seed: u64, kind: ObjectKind, id: &str, known: bool) -> Option<Bytes> {
    let h = seed_of(&[seed, kind as u64 + 0x0b1e, fnv(id.as_bytes())]);
    let mut rng = Rng::new(h);
    let known = known
        || match kind {
            ObjectKind::Url => h % 100 < 60,
            ObjectKind::Domain => h % 100 < 85,
            ObjectKind::Ip => true,
        };
    if !known {
        return None;
    }
    let malicious = rng.next_u64() % 10 < 3;
    let hits = if malicious {
        3 + rng.next_u64() % 15
    } else {
        0
    };
    let suspicious = rng.next_u64() % 3;
    let harmless = 55 + rng.next_u64() % 10;
    let undetected = 93 - hits - suspicious - harmless.min(90 - hits - suspicious);
    let stats = json!({
        "malicious": hits,
        "suspicious": suspicious,
        "undetected": undetected,
        "harmless": harmless,
        "timeout": 0,
    });
    let analysed = 1_700_000_000 + (rng.next_u64() % 60_000_000) as i64;
    let reputation = if malicious {
        -(hits as i64) * 3
    } else {
        (rng.next_u64() % 20) as i64
    };
    let category = if malicious {
        "phishing and other frauds"
    } else {
        "information technology"
    };
    let categories = json!({
        "Forcepoint ThreatSeeker": category,
        "Sophos": if malicious { "phishing" } else { "information technology" },
        "BitDefender": if malicious { "phishing" } else { "computersandsoftware" },
    });
    let mut attributes = json!({
        "last_analysis_stats": stats,
        "last_analysis_date": analysed,
        "reputation": reputation,
        "tags": if malicious { json!(["malware-distribution"]) } else { json!([]) },
        "total_votes": {"harmless": rng.next_u64() % 5, "malicious": if malicious { 2 } else { 0 }},
    });
    let extra = match kind {
        ObjectKind::Url => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(id)
                .ok()?;
            let url = String::from_utf8(raw).ok()?;
            let scheme = url.split_once("://")?.0.to_ascii_lowercase();
            if !vtbulk_ioc::indicator::SCHEMES.contains(&scheme.as_str()) {
                return None;
            }
            let redirected = rng.next_u64().is_multiple_of(4);
            let code = match rng.next_u64() % 10 {
                0 => 404,
                1 => 403,
                _ => 200,
            };
            let title = TITLES[(rng.next_u64() % TITLES.len() as u64) as usize];
            json!({
                "url": url,
                "last_final_url": if redirected {
                    format!("{}/login/index.php", url.trim_end_matches('/'))
                } else {
                    url.clone()
                },
                "title": title,
                "last_http_response_code": code,
                "categories": categories,
                "threat_names": if malicious { json!(["Mal/HTMLGen-A", "Phishing.HTML.Doc"]) } else { json!([]) },
                "first_submission_date": analysed - (rng.next_u64() % 5_000_000) as i64,
                "times_submitted": 1 + rng.next_u64() % 40,
                "last_submission_date": analysed,
                "html_meta": {"viewport": ["width=device-width, initial-scale=1"]},
            })
        }
        ObjectKind::Domain => {
            let popular = !malicious && rng.next_u64().is_multiple_of(3);
            let ranks = if popular {
                json!({
                    "Tranco": {"rank": 1 + rng.next_u64() % 900_000, "timestamp": analysed},
                    "Cisco Umbrella": {"rank": 1 + rng.next_u64() % 1_000_000, "timestamp": analysed},
                })
            } else {
                json!({})
            };
            json!({
                "registrar": REGISTRARS[(rng.next_u64() % REGISTRARS.len() as u64) as usize],
                "creation_date": analysed - 86_400 * (1 + rng.next_u64() % 4000) as i64,
                "categories": categories,
                "popularity_ranks": ranks,
                "tld": id.rsplit('.').next().unwrap_or(""),
                "last_dns_records": [{"type": "A", "ttl": 300, "value": "185.199.108.153"}],
                "whois": "Domain Name: redacted\nRegistrar: redacted\n",
            })
        }
        ObjectKind::Ip => {
            let ip: std::net::IpAddr = id.parse().ok()?;
            let (asn, owner, country) = OWNERS[(rng.next_u64() % OWNERS.len() as u64) as usize];
            let network = match ip {
                std::net::IpAddr::V4(v4) => {
                    let [a, b, c, _] = v4.octets();
                    format!("{a}.{b}.{c}.0/24")
                }
                std::net::IpAddr::V6(v6) => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
                }
            };
            json!({
                "asn": asn,
                "as_owner": owner,
                "country": country,
                "continent": if country == "US" { "NA" } else { "EU" },
                "network": network,
                "regional_internet_registry": if country == "US" { "ARIN" } else { "RIPE NCC" },
            })
        }
    };
    if let (Some(a), Some(e)) = (attributes.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    let body = json!({
        "data": {
            "id": id,
            "type": kind.type_name(),
            "links": {"self": format!("https://www.virustotal.com/api/v3/{}/{id}", kind.collection())},
            "attributes": attributes,
        }
    });
    serde_json::to_vec(&body).ok().map(Bytes::from)
}

/// URL submissions (`POST /urls`) and their analyses (`GET /analyses/{id}`): an analysis is
/// `queued` for its first third, `in-progress` until its delay has passed, then `completed`,
/// and from then on the URL is known (`GET /urls/{id}` answers it, whatever the seed said).
/// Each URL's delay is seeded: half to one and a half times the configured one.
#[derive(Debug, Default)]
pub struct Submissions {
    inner: std::sync::Mutex<SubmissionState>,
}

#[derive(Debug, Default)]
struct SubmissionState {
    /// Analysis id -> (URL, created, completed), Unix ms of the mock's clock.
    analyses: std::collections::HashMap<String, (String, i64, i64)>,
    /// URL id -> when its first analysis completes.
    urls: std::collections::HashMap<String, i64>,
}

impl Submissions {
    fn lock(&self) -> std::sync::MutexGuard<'_, SubmissionState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits `url` at `now_ms`; the analysis id (`u-<sha256 of the URL>-<unix seconds>`).
    pub fn submit(&self, seed: u64, url: &str, now_ms: i64, delay: std::time::Duration) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(url.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let id = format!("u-{hex}-{}", now_ms.div_euclid(1000));
        let unit = (seed_of(&[seed, 0x5b, fnv(url.as_bytes())]) >> 11) as f64 / (1u64 << 53) as f64;
        let done = now_ms + (delay.as_millis() as f64 * (0.5 + unit)) as i64;
        let url_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url);
        let mut state = self.lock();
        state
            .analyses
            .entry(id.clone())
            .or_insert((url.to_owned(), now_ms, done));
        let first = state.urls.entry(url_id).or_insert(done);
        *first = (*first).min(done);
        id
    }

    /// Whether the URL with this id has a completed analysis at `now_ms`.
    pub fn known(&self, url_id: &str, now_ms: i64) -> bool {
        self.lock()
            .urls
            .get(url_id)
            .is_some_and(|&done| now_ms >= done)
    }

    /// The answer of `GET /analyses/{id}` at `now_ms`, or `None` (404).
    pub fn analysis(&self, seed: u64, id: &str, now_ms: i64) -> Option<Bytes> {
        let (url, created, done) = self.lock().analyses.get(id).cloned()?;
        let status = if now_ms >= done {
            "completed"
        } else if now_ms >= created + (done - created) / 3 {
            "in-progress"
        } else {
            "queued"
        };
        let url_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&url);
        let stats = if status == "completed" {
            let object = render_with(seed, ObjectKind::Url, &url_id, true)?;
            let v: serde_json::Value = serde_json::from_slice(&object).ok()?;
            v["data"]["attributes"]["last_analysis_stats"].clone()
        } else {
            json!({"malicious": 0, "suspicious": 0, "undetected": 0, "harmless": 0, "timeout": 0})
        };
        let body = json!({
            "data": {
                "id": id,
                "type": "analysis",
                "links": {"self": format!("https://www.virustotal.com/api/v3/analyses/{id}")},
                "attributes": {
                    "status": status,
                    "date": created.div_euclid(1000),
                    "stats": stats,
                    "results": {},
                },
            },
            "meta": {"url_info": {"id": url_id, "url": url}},
        });
        serde_json::to_vec(&body).ok().map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_deterministic_and_shaped_like_virustotals() {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("http://a.com/x");
        let known: Vec<_> = (0..200)
            .filter_map(|i| render(7, ObjectKind::Domain, &format!("d{i}.example-mock.com")))
            .collect();
        assert!((150..=195).contains(&known.len()), "{}", known.len());
        assert_eq!(
            render(7, ObjectKind::Url, &id),
            render(7, ObjectKind::Url, &id)
        );
        let ip = render(7, ObjectKind::Ip, "45.77.12.9").expect("every IP is known");
        let v: serde_json::Value = serde_json::from_slice(&ip).expect("json");
        assert_eq!(v["data"]["type"], "ip_address");
        assert_eq!(v["data"]["attributes"]["network"], "45.77.12.0/24");
        assert!(v["data"]["attributes"]["asn"].is_u64());
        assert!(render(7, ObjectKind::Url, "not base64 !").is_none());
        assert!(render(7, ObjectKind::Ip, "not-an-ip").is_none());
    }
}
