//! `vtbulk-output`: the output record, its documented fields, and the CSV and NDJSON sinks.
//!
//! One [`Record`] per unique IOC (or per invalid value), whatever happened to it. The field
//! list ([`Field::ALL`]) is the schema: its order is the default CSV header, its names are the
//! NDJSON keys and the `--fields` vocabulary. Changing it is a breaking change for people's
//! spreadsheets and SIEM parsers; the golden files in `fixtures/golden/` pin it.
//!
//! Spreadsheet safety: a CSV cell of text that starts with `=`, `+`, `-`, `@`, a tab or a
//! carriage return is prefixed with `'`, so Excel, LibreOffice and Google Sheets show it as
//! text instead of running it as a formula (OWASP "CSV injection"). Numbers are never
//! touched (a reputation of -5 stays -5); NDJSON is never altered.
#![deny(missing_docs)]

pub mod behind;
pub mod direct;
mod record;
mod sink;

mod condition;
mod ecs;
mod html;
pub use condition::{FailOn, FailOnError};
pub use ecs::{EcsSink, document as ecs_document};
pub use html::{HtmlReport, escape as html_escape};
pub use record::{
    CUT_MARK, FIELD_CAP, Field, FieldsError, Record, Source, Stats, Status, Val, parse_fields,
    rfc3339,
};
pub use sink::{CsvSink, Format, LookupSink, NdjsonSink, Sink, neutralise};
