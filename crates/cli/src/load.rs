//! From the command line to resolved settings, a client and a runtime: the configuration's
//! layers with the flags on top, the key from its source, and what the binary hooks into the
//! engine (stderr notes about inputs, re-reading a rotated key).

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use vtbulk_cli::config::{self, KeyError, KeySource, Layer, Resolved};
use vtbulk_vt::Client;

use crate::args::CommonArgs;
use crate::failure::Failure;

/// `vtbulk: message` on stderr.
pub fn eprint(message: &str) {
    let _ = writeln!(io::stderr(), "vtbulk: {message}");
}

/// Writes `text` to stdout (a closed pipe is [`Failure::BrokenPipe`]).
pub fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::write(e, "stdout"))
}

/// Embedded defaults, then the user file, then the environment, then flags; the key from its
/// own sources.
pub fn load(common: &CommonArgs, inputs: Vec<String>) -> Result<Resolved, Failure> {
    let mut resolved = load_settings(common, inputs).map_err(Failure::Usage)?;
    let (key, source) = config::read_key(
        common.api_key_file.as_deref(),
        common.api_key_command.as_deref(),
        resolved.key_command_timeout,
    )
    .map_err(|e| match e {
        KeyError::Interrupted(m) => Failure::Interrupted(m),
        KeyError::Failed(m) => Failure::Usage(m),
    })?;
    resolved.settings.key_reload = key_reload(
        &source,
        common.api_key_command.as_deref(),
        resolved.key_command_timeout,
    );
    resolved.key = key;
    resolved.key_source = source;
    Ok(resolved)
}

/// The settings without the key: the layers resolved, the input hook set.
fn load_settings(common: &CommonArgs, inputs: Vec<String>) -> Result<Resolved, String> {
    let flags = Layer {
        format: schema_format(common.schema.as_deref(), common.settings.format.clone())?,
        ..common.settings.clone()
    };
    for warning in passwords_in_flags(&flags) {
        eprint(&warning);
    }
    let layer = config::layered(common.config.as_deref(), |v| std::env::var(v).ok(), flags)?;
    let mut resolved = config::resolve(&layer, inputs)?;
    if let Some(cache) = resolved.settings.cache.as_mut() {
        read_only_fallback(cache);
    }
    resolved.settings.on_input = Some(vtbulk_engine::InputHook(Arc::new(|input| {
        let mut err = io::stderr().lock();
        if let Some(fallback) = &input.fallback {
            let _ = writeln!(err, "vtbulk: {}: {fallback}", input.name);
        }
        if let Some(skipped) = &input.skipped {
            let _ = writeln!(err, "vtbulk: {}: {skipped}", input.name);
        }
        if let Some(damage) = &input.damage {
            let _ = writeln!(
                err,
                "vtbulk: {}: {damage}; what was read before it is kept",
                input.name
            );
        }
    })));
    Ok(resolved)
}

/// A cache this user may not write is read read-only, with one warning (an intact cache is
/// never called damaged for its permissions).
pub fn read_only_fallback(cache: &mut vtbulk_engine::CacheSettings) {
    if cache.read_only {
        return;
    }
    if let Some(why) = vtbulk_store::not_writable(&cache.path) {
        eprint(&format!(
            "warning: the cache {} is read-only: {why}; answers come from it, and what is \
             looked up now is not kept (--cache-mode read-only says so without this warning)",
            cache.path.display()
        ));
        cache.read_only = true;
    }
}

/// A key from a file or a command can be rotated at its source during a long run: on a 401
/// it is read again (never stdin: it was read once).
fn key_reload(
    source: &KeySource,
    command: Option<&str>,
    timeout: std::time::Duration,
) -> Option<vtbulk_engine::KeyReload> {
    match (source, command) {
        (KeySource::Command(_), Some(command)) => {
            let command = command.to_owned();
            Some(vtbulk_engine::KeyReload(Arc::new(move || {
                config::key_from_command(&command, timeout)
                    .map(|(key, _)| key)
                    .map_err(|e| e.message().to_owned())
            })))
        }
        (KeySource::File(path), _) if path != Path::new("-") => {
            let path = path.clone();
            Some(vtbulk_engine::KeyReload(Arc::new(move || {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("failed to read the API key file again: {e}"))?;
                vtbulk_vt::ApiKey::new(text).map_err(|e| e.to_string())
            })))
        }
        _ => None,
    }
}

/// A warning for each URL flag that carries a password: the command line is visible to every
/// user of the host (`ps`, `/proc/PID/cmdline`), as curl's and psql's users know.
fn passwords_in_flags(flags: &Layer) -> Vec<String> {
    let mut warnings = Vec::new();
    if flags.proxy.as_deref().is_some_and(url_has_password) {
        warnings.push(
            "warning: the --proxy URL holds a password, which `ps` shows to every user of this \
             host: put it in HTTPS_PROXY or in the config file's `proxy` instead"
                .to_owned(),
        );
    }
    if flags.coordinator.as_deref().is_some_and(url_has_password) {
        warnings.push(
            "warning: the --coordinator URL holds a password, which `ps` shows to every user of \
             this host: use --coordinator-password-file, VTBULK_REDIS_PASSWORD or \
             VTBULK_REDIS_URL, or the config file's `coordinator` instead"
                .to_owned(),
        );
    }
    warnings
}

/// Whether `url` carries a password (`scheme://user:password@host`, `redis://:password@host`),
/// read by the same URL parser the client and the coordinator use.
fn url_has_password(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.password().is_some_and(|p| !p.is_empty()))
}

/// The output format `--schema` asks for, checked against `--format`.
fn schema_format(schema: Option<&str>, format: Option<String>) -> Result<Option<String>, String> {
    match (schema, format.as_deref()) {
        (None, _) => Ok(format),
        (Some("ecs"), None | Some("ndjson") | Some("ecs")) => Ok(Some("ecs".into())),
        (Some("ecs"), Some(other)) => Err(format!(
            "--schema ecs writes NDJSON; it cannot be --format {other}"
        )),
        (Some(other), _) => Err(format!("unknown schema {other:?} (ecs)")),
    }
}

/// Loads the configuration and builds a client, for the commands that call VirusTotal.
pub fn load_with_client(
    common: &CommonArgs,
    inputs: Vec<String>,
) -> Result<(Resolved, Client), Failure> {
    let resolved = load(common, inputs)?;
    let Some(key) = resolved.key.clone() else {
        return Err(Failure::Usage(
            "no API key: set VT_API_KEY (or VTCLI_APIKEY), or pass --api-key-file PATH".into(),
        ));
    };
    let client = Client::new(key, &resolved.client).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok((resolved, client))
}

/// A runtime for `threads` (1: a current-thread runtime, measured fastest on 2 cores).
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, Failure> {
    let built = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    built.map_err(|e| Failure::Usage(format!("failed to start the runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_seen_in_a_urls_userinfo_only() {
        for url in [
            "http://alice:s3cret@proxy:3128",
            "redis://:s3cret@127.0.0.1:6379/0",
            "rediss://user:p%40ss@redis.example:6380",
        ] {
            assert!(url_has_password(url), "{url}");
        }
        for url in [
            "http://proxy:3128",
            "http://alice@proxy:3128",
            "redis://127.0.0.1:6379/0",
            "http://proxy:3128/path@x:y",
            "off",
            "redis://:@host",
        ] {
            assert!(!url_has_password(url), "{url}");
        }
    }

    #[test]
    fn each_url_flag_with_a_password_draws_one_warning_naming_a_safer_place() {
        let flags = Layer {
            proxy: Some("http://alice:s3cret@proxy:3128".into()),
            coordinator: Some("redis://:s3cret@127.0.0.1:6379/0".into()),
            ..Layer::default()
        };
        let warnings = passwords_in_flags(&flags);
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("HTTPS_PROXY") && warnings[0].contains("config file"));
        assert!(warnings[1].contains("--coordinator-password-file"));
        assert!(warnings.iter().all(|w| !w.contains("s3cret")));
        assert!(passwords_in_flags(&Layer::default()).is_empty());
    }
}
