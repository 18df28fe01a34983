//! The API key: from a file (`--api-key-file`, `-` for stdin), a command's output
//! (`--api-key-command`, for a vault), or the environment (`VT_API_KEY`, `VTCLI_APIKEY`);
//! never from a configuration file or a flag's value (it would show in `ps`). Errors name
//! where the key was to come from, never the key, nor a command's arguments.

use std::path::{Path, PathBuf};

use vtbulk_vt::ApiKey;

/// Where the key came from (for `vtbulk config`; never the key).
#[derive(Clone, Debug)]
pub enum KeySource {
    /// `--api-key-file`.
    File(PathBuf),
    /// `--api-key-command`: the program it ran (its arguments are not shown).
    Command(String),
    /// An environment variable.
    Env(&'static str),
    /// Nowhere.
    Missing,
}

/// Runs `--api-key-command`: the command line split into words as a POSIX shell would (no
/// shell runs unless the command is one, `sh -c '...'`), stdin closed, stderr passed through;
/// its stdout, trimmed, is the key. Errors name the program only (its arguments may say where
/// a vault keeps the key) and never the output.
pub fn key_from_command(command: &str) -> Result<(ApiKey, KeySource), String> {
    let words = shlex::split(command)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| "--api-key-command: not a command line (unbalanced quotes?)".to_owned())?;
    let program = words[0].clone();
    let out = std::process::Command::new(&program)
        .args(&words[1..])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("--api-key-command: failed to run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "--api-key-command: {program} failed ({}); no key",
            out.status
        ));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| format!("--api-key-command: {program} printed something that is not text"))?;
    let key = ApiKey::new(text).map_err(|e| format!("{e} (from --api-key-command {program})"))?;
    Ok((key, KeySource::Command(program)))
}

/// Reads the key: `--api-key-file` (`-` is stdin), else `--api-key-command`, else
/// `VT_API_KEY`, else `VTCLI_APIKEY`.
pub fn read_key(
    file: Option<&Path>,
    command: Option<&str>,
) -> Result<(Option<ApiKey>, KeySource), String> {
    if file.is_some() && command.is_some() {
        return Err("give the key by --api-key-file or by --api-key-command, not both".into());
    }
    if let Some(command) = command {
        let (key, source) = key_from_command(command)?;
        return Ok((Some(key), source));
    }
    if let Some(path) = file {
        let text = if path == Path::new("-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| format!("failed to read the API key from stdin: {e}"))?;
            s
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| format!("failed to read the API key file {}: {e}", path.display()))?
        };
        let key = ApiKey::new(text).map_err(|e| format!("{e} (in {})", path.display()))?;
        return Ok((Some(key), KeySource::File(path.to_owned())));
    }
    for var in ["VT_API_KEY", "VTCLI_APIKEY"] {
        if let Ok(value) = std::env::var(var)
            && !value.trim().is_empty()
        {
            let key = ApiKey::new(value).map_err(|e| format!("{e} (in {var})"))?;
            return Ok((Some(key), KeySource::Env(var)));
        }
    }
    Ok((None, KeySource::Missing))
}
