//! The settings a user's file or flags feed: any text as a configuration file (parsed, merged
//! over the defaults and resolved as a run would resolve it), and each line as a duration,
//! rate, reserve, field list, `--fail-on` condition, format and tier table. Refused or taken,
//! never a panic; what resolves is described (`vtbulk config`) without one either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtbulk_cli::config::{self, Layer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut layer) = Layer::from_toml(text, "fuzz") {
        // Files a run would read (a password) are not the parser's business here.
        layer.coordinator_password_file = None;
        let defaults = Layer::from_toml(config::DEFAULT_TOML, "defaults").expect("defaults");
        if let Ok(merged) = defaults.merged(layer)
            && let Ok(resolved) = config::resolve(&merged, vec!["-".into()])
        {
            let _ = config::describe(&resolved);
        }
    }
    for line in text.lines().take(16) {
        let _ = humantime::parse_duration(line);
        let _ = line.parse::<vtbulk_quota::Rate>();
        let _ = line.parse::<vtbulk_quota::Reserve>();
        let _ = vtbulk_output::parse_fields(line);
        let _ = line.parse::<vtbulk_output::FailOn>();
        let _ = line.parse::<vtbulk_output::Format>();
    }
    let _ = vtbulk_quota::parse_tiers(text);
});
