//! `vtbulk report`: one self-contained HTML page of a run's results, for the people an
//! incident responder forwards them to (a manager does not read 40 CSV columns).
//!
//! The page is built from the NDJSON records (and, when given, the run's summary): the
//! verdicts, a histogram of detections, the top threat labels and families, when the files
//! were first submitted, the inputs and how many records each gave, what the run spent, and
//! the flagged files. Charts are inline SVG drawn here; there is no script, no external
//! asset and no network at all, and a Content-Security-Policy that forbids them anyway.
//! Every value from the API (names, labels, tags) or from the input is escaped: a hostile
//! file name renders as its text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// What the page is made of, accumulated record by record.
#[derive(Debug, Default)]
pub struct HtmlReport {
    records: u64,
    statuses: BTreeMap<String, u64>,
    verdicts: BTreeMap<&'static str, u64>,
    detections: [u64; 6],
    labels: BTreeMap<String, u64>,
    families: BTreeMap<String, u64>,
    years: BTreeMap<String, u64>,
    inputs: BTreeMap<String, u64>,
    sources: BTreeMap<String, u64>,
    flagged: Vec<(u64, String, String, String)>,
}

/// Detection buckets (engines flagging a file as malicious).
const BUCKETS: [&str; 6] = ["0", "1-4", "5-9", "10-19", "20-39", "40+"];

/// HTML-escapes `s` for text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn text(v: &Value, key: &str) -> Option<String> {
    match &v[key] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: &Value, key: &str) -> Option<u64> {
    v[key].as_u64()
}

impl HtmlReport {
    /// Counts one NDJSON record.
    pub fn add(&mut self, v: &Value) {
        self.records += 1;
        let status = text(v, "status").unwrap_or_else(|| "unknown".into());
        *self.statuses.entry(status.clone()).or_default() += 1;
        if let Some(source) = text(v, "source") {
            *self.sources.entry(source).or_default() += 1;
        }
        if let Some(origin) = text(v, "first_origin") {
            // `file:line`: the input it came from.
            let file = origin.rsplit_once(':').map_or(origin.as_str(), |(f, _)| f);
            *self.inputs.entry(file.to_owned()).or_default() += 1;
        }
        if status != "ok" {
            let verdict = match status.as_str() {
                "not_found" => "unknown to VirusTotal",
                "invalid" => "invalid input",
                "error" => "lookup failed",
                _ => "skipped",
            };
            *self.verdicts.entry(verdict).or_default() += 1;
            return;
        }
        let malicious = number(v, "malicious").unwrap_or(0);
        let suspicious = number(v, "suspicious").unwrap_or(0);
        let verdict = match (malicious, suspicious) {
            (m, _) if m >= 5 => "malicious (5+ engines)",
            (m, _) if m >= 1 => "flagged (1-4 engines)",
            (_, s) if s >= 1 => "suspicious",
            _ => "clean",
        };
        *self.verdicts.entry(verdict).or_default() += 1;
        let bucket = match malicious {
            0 => 0,
            1..=4 => 1,
            5..=9 => 2,
            10..=19 => 3,
            20..=39 => 4,
            _ => 5,
        };
        self.detections[bucket] += 1;
        if let Some(label) = text(v, "threat_label") {
            *self.labels.entry(label).or_default() += 1;
        }
        if let Some(family) = text(v, "threat_name") {
            *self.families.entry(family).or_default() += 1;
        }
        if let Some(first) = text(v, "first_submission_date") {
            let year: String = first.chars().take(4).collect();
            if year.len() == 4 && year.chars().all(|c| c.is_ascii_digit()) {
                *self.years.entry(year).or_default() += 1;
            }
        }
        if malicious > 0 {
            self.flagged.push((
                malicious,
                text(v, "input").unwrap_or_default(),
                text(v, "threat_label").unwrap_or_default(),
                text(v, "meaningful_name").unwrap_or_default(),
            ));
        }
    }

    /// The page. `summary` is the run's `--summary-json`, when there is one.
    pub fn render(&self, title: &str, summary: Option<&Value>) -> String {
        let mut h = String::with_capacity(16 * 1024);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'\">\n<meta name=\"viewport\" \
             content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}</style>\n\
             </head>\n<body>\n<h1>{}</h1>\n",
            escape(title),
            escape(title)
        );
        let counts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{n} {}", escape(s)))
            .collect();
        let _ = writeln!(
            h,
            "<p class=\"lead\">{} records: {}.</p>",
            self.records,
            counts.join(", ")
        );
        section(
            &mut h,
            "Verdicts",
            &bars(self.verdicts.iter().map(|(k, v)| ((*k).to_owned(), *v))),
        );
        section(
            &mut h,
            "Engines flagging each found file as malicious",
            &bars(
                BUCKETS
                    .iter()
                    .zip(self.detections)
                    .map(|(b, n)| ((*b).to_owned(), n)),
            ),
        );
        section(&mut h, "Top threat labels", &bars(top(&self.labels, 10)));
        section(&mut h, "Top families", &bars(top(&self.families, 10)));
        section(
            &mut h,
            "First submitted to VirusTotal, by year",
            &bars(self.years.iter().map(|(k, v)| (k.clone(), *v))),
        );
        section(
            &mut h,
            "Inputs (records each gave)",
            &bars(top(&self.inputs, 20)),
        );
        h.push_str(&spent(summary, &self.sources));
        h.push_str(&self.flagged_table());
        h.push_str("<footer>Made by vtbulk from VirusTotal's answers; no script, no external asset.</footer>\n</body>\n</html>\n");
        h
    }

    fn flagged_table(&self) -> String {
        let mut rows = self.flagged.clone();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut h = String::from("<h2>Flagged files (most detections first, up to 100)</h2>\n");
        if rows.is_empty() {
            h.push_str("<p>None.</p>\n");
            return h;
        }
        h.push_str("<table>\n<thead><tr><th>detections</th><th>input</th><th>threat label</th><th>name</th></tr></thead>\n<tbody>\n");
        for (m, input, label, name) in rows.iter().take(100) {
            let _ = writeln!(
                h,
                "<tr><td class=\"n\">{m}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(input),
                escape(label),
                escape(name)
            );
        }
        h.push_str("</tbody>\n</table>\n");
        h
    }
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}\
h1{font-size:1.6em}h2{font-size:1.15em;margin-top:1.6em}.lead{color:#444}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.25em .5em;text-align:left}\
td.n{text-align:right}.mono{font-family:monospace;word-break:break-all}svg text{font:12px system-ui,sans-serif}\
footer{margin-top:2em;color:#777;font-size:.85em}";

fn top(map: &BTreeMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn section(h: &mut String, title: &str, body: &str) {
    let _ = writeln!(h, "<h2>{}</h2>\n{body}", escape(title));
}

/// Horizontal bars as inline SVG: a label, a bar scaled to the largest value, the count.
fn bars(items: impl IntoIterator<Item = (String, u64)>) -> String {
    let items: Vec<(String, u64)> = items.into_iter().collect();
    if items.iter().all(|(_, n)| *n == 0) {
        return "<p>None.</p>\n".into();
    }
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let (row, label_w, bar_w) = (22, 260, 360);
    let height = row * items.len() + 4;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\">\n",
        label_w + bar_w + 80
    );
    for (i, (label, n)) in items.iter().enumerate() {
        let y = i * row + 2;
        let w = if *n == 0 {
            0.0
        } else {
            ((*n as f64 / max as f64) * bar_w as f64).round().max(1.0)
        };
        let shown: String = label.chars().take(40).collect();
        let _ = writeln!(
            s,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"#4a78b5\"></rect><text x=\"{}\" y=\"{}\">{n}</text>",
            y + 15,
            escape(&shown),
            row - 6,
            label_w as f64 + w + 6.0,
            y + 15
        );
    }
    s.push_str("</svg>\n");
    s
}

/// What the run spent: the summary's figures when given, else the records' sources.
fn spent(summary: Option<&Value>, sources: &BTreeMap<String, u64>) -> String {
    let mut h = String::from("<h2>Quota spent</h2>\n");
    match summary {
        Some(s) => {
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            let _ = writeln!(
                h,
                "<p>{} requests ({} answered from the cache, {} lookups), {} refused with 429; \
                 quota {}; outcome {}.</p>",
                n("requests"),
                n("cache_hits"),
                n("lookups"),
                n("rate_limited"),
                escape(s["quota"]["source"].as_str().unwrap_or("not read")),
                escape(s["outcome"].as_str().unwrap_or("unknown"))
            );
            if let Some(inputs) = s["inputs"].as_array() {
                h.push_str("<table>\n<thead><tr><th>input</th><th>read as</th><th>lines</th><th>hashes</th><th>invalid</th></tr></thead>\n<tbody>\n");
                for i in inputs {
                    let _ = writeln!(
                        h,
                        "<tr><td class=\"mono\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                        escape(i["name"].as_str().unwrap_or("")),
                        escape(i["format"].as_str().unwrap_or("")),
                        i["lines"].as_u64().unwrap_or(0),
                        i["hashes"].as_u64().unwrap_or(0),
                        i["invalid"].as_u64().unwrap_or(0)
                    );
                }
                h.push_str("</tbody>\n</table>\n");
            }
        }
        None => {
            let api = sources.get("api").copied().unwrap_or(0);
            let cache = sources.get("cache").copied().unwrap_or(0);
            let _ = writeln!(
                h,
                "<p>{api} records looked up (each at least one request), {cache} answered from \
                 the cache. (Give <code>--summary</code> for the run's exact figures.)</p>"
            );
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_are_text_and_the_page_has_no_script_or_external_asset() {
        let mut r = HtmlReport::default();
        let hostile = r#"<img src=x onerror="document.title='pwned'">"#;
        r.add(&serde_json::json!({
            "input": "<script>alert(1)</script>",
            "status": "ok",
            "malicious": 12,
            "threat_label": hostile,
            "threat_name": "'\"><svg onload=alert(1)>",
            "meaningful_name": "a&b\u{0}c",
            "first_submission_date": "2019-05-01T00:00:00Z",
            "first_origin": "list.txt:3",
            "source": "api"
        }));
        let page = r.render("<b>run</b>", None);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<svg onload"), "{page}");
        assert!(
            page.contains("&lt;img src=x onerror=&quot;document.title=&#39;pwned&#39;&quot;&gt;")
        );
        assert!(page.contains("a&amp;b\u{FFFD}c"));
        assert!(page.contains("&lt;b&gt;run&lt;/b&gt;"));
        assert!(page.contains("default-src 'none'"));
        // Nothing to fetch: no element loads anything.
        assert!(
            !page.contains(" src=\"") && !page.contains(" href=\""),
            "{page}"
        );
        // The counts are there.
        assert!(page.contains(">12</td>"));
        assert!(page.contains(">2019</text>"));
    }
}
