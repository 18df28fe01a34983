//! The configuration's contract: one declaration per setting, and everything that must agree
//! with it checked against it (the embedded defaults, the settings reference, the engine's
//! defaults, `vtbulk config`).

use super::*;
use vtbulk_engine::Concurrency;
use vtbulk_output::{Field, Format};
use vtbulk_vt::ApiKey;

fn defaults() -> Layer {
    Layer::from_toml(DEFAULT_TOML, "defaults").expect("valid")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn a_missing_or_unreachable_default_file_is_no_file_and_never_an_error() {
    let dir = std::env::temp_dir().join(format!("vtbulk-default-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // HOME inherited as a file (or another user's home): the path cannot be reached.
    let home_file = dir.join("home-is-a-file");
    std::fs::write(&home_file, "").expect("file");
    let under_file = home_file.join(".config/vtbulk/config.toml");
    assert_eq!(default_file(under_file), Ok(None));
    assert_eq!(default_file(dir.join("missing/config.toml")), Ok(None));
    // There and readable: read; there but not text: an error naming it.
    let good = dir.join("config.toml");
    std::fs::write(&good, "tier = \"public\"\n").expect("file");
    assert_eq!(
        default_file(good.clone()).map(|f| f.map(|(_, t)| t)),
        Ok(Some("tier = \"public\"\n".to_owned()))
    );
    std::fs::write(&good, [0xff, 0xfe, 0x00]).expect("file");
    let err = default_file(good).expect_err("not text");
    assert!(err.contains("config.toml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_embedded_defaults_resolve_to_the_public_tier() {
    let r = resolve(&defaults(), vec![]).expect("resolves");
    assert_eq!(
        r.settings.scheduler.rate.map(|r| r.to_string()).as_deref(),
        Some("4/min")
    );
    assert_eq!(r.settings.scheduler.caps.daily, Some(500));
    assert_eq!(r.settings.fields, Field::ALL.to_vec());
    assert_eq!(r.client.host, "https://www.virustotal.com");
}

#[test]
fn the_engine_defaults_are_the_embedded_defaults() {
    // `Settings::default()` (tests, library users) says what config/default.toml says.
    let r = resolve(&defaults(), vec![]).expect("resolves");
    let (file, engine) = (&r.settings, &vtbulk_engine::Settings::default());
    assert_eq!(file.input_format, engine.input_format);
    assert_eq!(file.keep_all_hex, engine.keep_all_hex);
    assert_eq!(file.columns_only, engine.columns_only);
    assert_eq!(file.kinds, engine.kinds);
    assert_eq!(file.submit_urls, engine.submit_urls);
    assert_eq!(file.only_new, engine.only_new);
    assert_eq!(file.format, engine.format);
    assert_eq!(file.fields, engine.fields);
    assert_eq!(file.raw, engine.raw);
    assert_eq!(file.concurrency, engine.concurrency);
    assert_eq!(file.backoff, engine.backoff);
    assert_eq!(file.max_rate_limited, engine.max_rate_limited);
    assert_eq!(file.quota, engine.quota);
    assert_eq!(file.coordinator_grace, engine.coordinator_grace);
    assert_eq!(file.scheduler.safety_margin, engine.scheduler.safety_margin);
    let cache = file.cache.as_ref().expect("on by default");
    assert_eq!(cache.freshness, vtbulk_engine::Freshness::default());
    assert!(!cache.refresh);
    // With URL submission on, its policy is the engine's default.
    let on = Layer {
        submit_unknown_urls: Some(true),
        ..Layer::default()
    };
    let r = resolve(&defaults().merged(on).expect("merge"), vec![]).expect("resolves");
    assert_eq!(
        r.settings.submit_urls,
        Some(vtbulk_engine::SubmitPolicy::default())
    );
}

#[test]
fn every_key_is_in_the_embedded_defaults_the_settings_reference_and_vtbulk_config() {
    let keys = keys();
    assert!(keys.len() >= 40, "{keys:?}");
    assert_eq!(keys.first(), Some(&"api_url"));
    let default_toml = std::fs::read_to_string(root().join("config/default.toml")).expect("file");
    let reference = std::fs::read_to_string(root().join("docs/settings.md")).expect("guide");
    let r = resolve(&defaults(), vec![]).expect("resolves");
    let shown = describe(&r);
    for key in keys {
        let in_file = default_toml.lines().any(|l| {
            let l = l.trim_start_matches("# ");
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("[{key}."))
        });
        assert!(
            in_file,
            "config/default.toml does not name {key} (set, or commented out)"
        );
        assert!(
            reference.contains(&format!("`{key}`")),
            "docs/settings.md does not document {key}"
        );
        assert!(
            shown.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "vtbulk config does not show {key}"
        );
    }
    // And nothing else: every key-like line of the file is a key.
    for line in default_toml.lines().map(|l| l.trim_start_matches("# ")) {
        if let Some((name, _)) = line.split_once(" = ")
            && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !["per_minute", "daily", "hourly", "monthly"].contains(&name)
        {
            assert!(
                keys.contains(&name),
                "config/default.toml names {name}, not a key"
            );
        }
    }
}

#[test]
fn later_layers_win_and_unknown_keys_are_errors() {
    let user =
        Layer::from_toml("rate = \"600/min\"\nformat = \"ndjson\"\n", "user").expect("valid");
    let flags = Layer {
        rate: Some("10/s".into()),
        column: Some(vec!["SHA256".into(), "MD5".into()]),
        ..Layer::default()
    };
    let merged = defaults()
        .merged(user)
        .and_then(|l| l.merged(flags))
        .expect("merge");
    let r = resolve(&merged, vec![]).expect("resolves");
    assert_eq!(
        r.settings.scheduler.rate.map(|r| r.to_string()).as_deref(),
        Some("10/s")
    );
    assert_eq!(r.settings.format, Format::Ndjson);
    assert_eq!(r.settings.columns.len(), 2);
    let err = Layer::from_toml("colour = \"blue\"\n", "user").expect_err("unknown key");
    assert!(err.contains("colour"), "{err}");
    // One column or a list of them, in a file.
    let one = Layer::from_toml("column = \"SHA256\"\n", "user").expect("one");
    assert_eq!(one.column, Some(vec!["SHA256".to_owned()]));
    let many = Layer::from_toml("column = [\"a\", \"b\"]\n", "user").expect("many");
    assert_eq!(many.column.map(|c| c.len()), Some(2));
}

#[test]
fn the_environment_sits_between_the_file_and_the_flags() {
    let env = |name: &str| match name {
        "VTBULK_REDIS_URL" => Some("redis://127.0.0.1:6379/0".to_owned()),
        "VTBULK_API_URL" => Some("http://127.0.0.1:9".to_owned()),
        _ => None,
    };
    let flags = Layer {
        api_url: Some("http://127.0.0.1:8".into()),
        ..Layer::default()
    };
    let layer = layered(Some(Path::new("/dev/null")), env, flags).expect("layers");
    assert_eq!(
        layer.coordinator.as_deref(),
        Some("redis://127.0.0.1:6379/0")
    );
    assert_eq!(
        layer.api_url.as_deref(),
        Some("http://127.0.0.1:8"),
        "the flag wins"
    );
    for (_, key) in ENV {
        assert!(keys().contains(key), "{key}");
    }
}

#[test]
fn user_tiers_extend_the_shipped_ones() {
    let user = Layer::from_toml(
        "tier = \"team\"\n[tiers.team]\nper_minute = 300\ndaily = 100000\n",
        "user",
    )
    .expect("valid");
    let r = resolve(&defaults().merged(user).expect("merge"), vec![]).expect("resolves");
    assert_eq!(
        r.settings.scheduler.rate.map(|r| r.to_string()).as_deref(),
        Some("300/min")
    );
    assert_eq!(r.settings.scheduler.caps.daily, Some(100_000));
    assert!(matches!(
        r.settings.concurrency,
        Concurrency::Auto { max: 256 }
    ));
}

#[test]
fn describe_never_shows_the_key_nor_a_password() {
    let secret = Layer {
        coordinator: Some("redis://:hunter2@127.0.0.1:6379/0".into()),
        proxy: Some("http://alice:hunter2@127.0.0.1:3128".into()),
        ..Layer::default()
    };
    let mut r = resolve(&defaults().merged(secret).expect("merge"), vec![]).expect("resolves");
    r.key = Some(ApiKey::new("CANARY-describe-key").expect("key"));
    r.key_source = KeySource::Env("VT_API_KEY");
    let text = describe(&r);
    assert!(text.contains("[redacted] (from VT_API_KEY)"));
    assert!(!text.contains("CANARY"));
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("coordinator = \"redis://[redacted]@127.0.0.1"),
        "{text}"
    );
}
