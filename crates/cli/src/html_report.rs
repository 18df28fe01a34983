//! `vtbulk report` and `enrich --report`: the run's records read back (NDJSON or CSV, as
//! `enrich` wrote them) into `vtbulk_output::HtmlReport`, written as one self-contained page.

use std::io::BufRead;
use std::path::Path;

use serde_json::Value;
use vtbulk_output::HtmlReport;

use crate::failure::Failure;

/// The records of `path` (NDJSON, or CSV with a header when `csv`) into a report.
pub fn read(path: &Path, csv: bool) -> Result<HtmlReport, Failure> {
    let bad = |e: String| Failure::Usage(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut report = HtmlReport::default();
    if csv {
        let mut rows = ::csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(std::io::BufReader::new(file));
        let headers = rows.headers().map_err(|e| bad(e.to_string()))?.clone();
        for (n, row) in rows.records().enumerate() {
            let row = row.map_err(|e| bad(format!("row {}: {e}", n + 2)))?;
            let object: serde_json::Map<String, Value> = headers
                .iter()
                .zip(row.iter())
                .map(|(k, v)| {
                    let value = match v.parse::<u64>() {
                        Ok(n) => Value::from(n),
                        Err(_) if v.is_empty() => Value::Null,
                        Err(_) => Value::from(v),
                    };
                    (k.to_owned(), value)
                })
                .collect();
            report.add(&Value::Object(object));
        }
    } else {
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| bad(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line)
                .map_err(|e| bad(format!("line {}: not a JSON record ({e})", n + 1)))?;
            report.add(&value);
        }
    }
    Ok(report)
}

/// Writes `page` to `out` (atomically: a temporary file renamed into place).
pub fn write(out: &Path, page: &str) -> Result<(), Failure> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Failure::Usage(format!("failed to write {}: {e}", out.display())))?;
    std::io::Write::write_all(&mut tmp, page.as_bytes())
        .and_then(|()| tmp.persist(out).map(|_| ()).map_err(|e| e.error))
        .map_err(|e| Failure::Usage(format!("failed to write {}: {e}", out.display())))
}
