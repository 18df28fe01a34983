//! URL, domain and IP parsing and refanging: any text parses or is refused without a panic,
//! and what parses has a canonical form that parses again to the same form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtbulk_ioc::indicator::{parse, refang, url_id};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let refanged = refang(text);
    if let Ok(indicator) = parse(&refanged) {
        let canonical = indicator.canonical();
        let again = parse(&canonical).expect("a canonical form parses again");
        assert_eq!(
            again.canonical(),
            canonical,
            "canonical forms are fixed points"
        );
        let _ = url_id(&canonical);
        let _ = indicator.exclusion();
    }
});
