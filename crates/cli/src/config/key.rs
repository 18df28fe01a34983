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

/// Why the key could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// A message for stderr (exit 2).
    Failed(String),
    /// SIGINT or SIGTERM came while `--api-key-command` ran: it was killed (exit 130).
    Interrupted(String),
}

impl KeyError {
    /// The message, whichever it is.
    pub fn message(&self) -> &str {
        match self {
            KeyError::Failed(m) | KeyError::Interrupted(m) => m,
        }
    }
}

impl From<String> for KeyError {
    fn from(message: String) -> KeyError {
        KeyError::Failed(message)
    }
}

/// Runs `--api-key-command`: the command line split into words as a POSIX shell would (no
/// shell runs unless the command is one, `sh -c '...'`), stdin closed, stderr passed through;
/// its stdout, trimmed, is the key. It runs in a process group of its own, killed whole when
/// it outlives `timeout` or when SIGINT or SIGTERM comes meanwhile (a vault CLI's helpers go
/// with it). Errors name the program only (its arguments may say where a vault keeps the key)
/// and never the output.
pub fn key_from_command(
    command: &str,
    timeout: std::time::Duration,
) -> Result<(ApiKey, KeySource), KeyError> {
    let words = shlex::split(command)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| "--api-key-command: not a command line (unbalanced quotes?)".to_owned())?;
    let program = words[0].clone();
    let stdout = group::run(&words, timeout).map_err(|stop| match stop {
        group::Stop::Spawn(e) => {
            KeyError::Failed(format!("--api-key-command: failed to run {program}: {e}"))
        }
        group::Stop::Status(status) => KeyError::Failed(format!(
            "--api-key-command: {program} failed ({status}); no key"
        )),
        group::Stop::TimedOut => KeyError::Failed(format!(
            "--api-key-command: {program} gave no key within {} (api_key_command_timeout); \
             it was killed with its process group",
            humantime::format_duration(timeout)
        )),
        group::Stop::Signal => KeyError::Interrupted(format!(
            "interrupted while --api-key-command {program} ran; it was killed with its process \
             group"
        )),
    })?;
    let text = String::from_utf8(stdout)
        .map_err(|_| format!("--api-key-command: {program} printed something that is not text"))?;
    let key = ApiKey::new(text).map_err(|e| format!("{e} (from --api-key-command {program})"))?;
    Ok((key, KeySource::Command(program)))
}

/// A command in a process group of its own, waited for with a deadline and an ear for
/// SIGINT/SIGTERM.
mod group {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, ExitStatus, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Why the command gave no output.
    pub(super) enum Stop {
        Spawn(std::io::Error),
        Status(ExitStatus),
        TimedOut,
        Signal,
    }

    /// How often the wait looks at the child, the clock and the signals.
    const POLL: Duration = Duration::from_millis(10);

    /// Runs `words`, returning its stdout once it exits with success.
    pub(super) fn run(words: &[String], timeout: Duration) -> Result<Vec<u8>, Stop> {
        let signalled = Arc::new(AtomicBool::new(false));
        let hooks: Vec<_> = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
            .into_iter()
            .filter_map(|sig| signal_hook::flag::register(sig, signalled.clone()).ok())
            .collect();
        let result = wait(words, timeout, &signalled);
        for hook in hooks {
            signal_hook::low_level::unregister(hook);
        }
        result
    }

    fn wait(words: &[String], timeout: Duration, signalled: &AtomicBool) -> Result<Vec<u8>, Stop> {
        let child = Command::new(&words[0])
            .args(&words[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(Stop::Spawn)?;
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        // The child is waited for (its output read) on a thread; this one watches the clock
        // and the signals between the thread's reports.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let deadline = Instant::now() + timeout;
        let stop = loop {
            match rx.recv_timeout(POLL) {
                Ok(Ok(out)) if out.status.success() => return Ok(out.stdout),
                Ok(Ok(out)) => return Err(Stop::Status(out.status)),
                Ok(Err(e)) => return Err(Stop::Spawn(e)),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Stop::Spawn(std::io::Error::other("the wait failed")));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if signalled.load(Ordering::SeqCst) {
                break Stop::Signal;
            }
            if Instant::now() >= deadline {
                break Stop::TimedOut;
            }
        };
        // The whole group: a shell's or a vault agent's children too (their output pipe
        // closes with them, which ends the waiting thread; one that left the group and kept
        // the pipe open is not waited for).
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = rx.recv_timeout(Duration::from_secs(1));
        Err(stop)
    }
}

/// Reads the key: `--api-key-file` (`-` is stdin), else `--api-key-command`, else
/// `VT_API_KEY`, else `VTCLI_APIKEY`.
pub fn read_key(
    file: Option<&Path>,
    command: Option<&str>,
    command_timeout: std::time::Duration,
) -> Result<(Option<ApiKey>, KeySource), KeyError> {
    if file.is_some() && command.is_some() {
        return Err(KeyError::Failed(
            "give the key by --api-key-file or by --api-key-command, not both".into(),
        ));
    }
    if let Some(command) = command {
        let (key, source) = key_from_command(command, command_timeout)?;
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
