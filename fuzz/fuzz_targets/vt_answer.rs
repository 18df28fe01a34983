//! VirusTotal's answers as the client decodes them: file and object summaries, analyses,
//! users, and error bodies of any status. Any bytes are decoded or refused without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtbulk_vt::Error;
use vtbulk_vt::models::{Analysis, Envelope, FileSummary, ObjectSummary, UserObject};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Envelope<FileSummary>>(data);
    let _ = serde_json::from_slice::<Envelope<ObjectSummary>>(data);
    let _ = serde_json::from_slice::<Envelope<Analysis>>(data);
    let _ = serde_json::from_slice::<Envelope<UserObject>>(data);
    for status in [400, 401, 403, 404, 409, 429, 500, 503] {
        let e = Error::from_response(status, Some(data));
        let _ = (e.kind(), e.to_string());
    }
});
