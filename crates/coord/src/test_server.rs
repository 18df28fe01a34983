//! A real `redis-server` for tests: Debian's package (`.ci/run` installs it), started on a
//! free loopback port with no persistence and stopped when dropped. Tests wait for its own
//! "ready" line, not for time; a machine without `redis-server` fails loudly here. It may ask
//! for a password, or speak only TLS with a certificate for 127.0.0.1 signed by a CA of its
//! own, made with Debian's `openssl` command (`.ci/run` installs it too).

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

/// A running `redis-server` of a test's own.
#[derive(Debug)]
pub struct RedisServer {
    child: tokio::process::Child,
    port: u16,
    options: Options,
    /// Where its certificates are (TLS only); removed when dropped.
    dir: Option<PathBuf>,
}

/// How a test's Redis is set up.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Clients must give this password (`requirepass`).
    pub password: Option<String>,
    /// Speak only TLS (`rediss://`), with a certificate for 127.0.0.1 that only
    /// [`RedisServer::ca_file`] vouches for.
    pub tls: bool,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` cannot be started: the tests need it.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(Options::default()).await
    }

    /// Starts one set up as `options` say.
    ///
    /// # Panics
    /// When `redis-server` (or, for TLS, `openssl`) cannot be run.
    pub async fn start_with(options: Options) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = options.tls.then(|| certificates(port));
        RedisServer::start_on(port, options, dir).await
    }

    /// Stops this server (its data gone: no persistence) and starts a new one on the same
    /// port, as a restarted Redis would come back.
    pub async fn restart(&mut self) {
        self.stop().await;
        let dir = self.dir.take();
        *self = RedisServer::start_on(self.port, self.options.clone(), dir).await;
    }

    /// Stops this server for good (a Redis lost mid-run).
    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as with a
    /// hung host or a dead link; `stop` (or drop) still ends it.
    pub fn freeze(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status();
        }
    }

    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    async fn start_on(port: u16, options: Options, dir: Option<PathBuf>) -> RedisServer {
        let mut command = tokio::process::Command::new("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        match &dir {
            Some(dir) => {
                let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
                command
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cert-file", &file("server.pem")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.pem")])
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                command.args(["--port", &port.to_string()]);
            }
        }
        if let Some(password) = &options.password {
            command.args(["--requirepass", password]);
        }
        let mut child = command
            .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server not found: install Debian's redis-server (.ci/run does)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read redis-server's log")
                .expect("redis-server exited before it was ready");
            if line.contains("Ready to accept connections") {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        RedisServer {
            child,
            port,
            options,
            dir,
        }
    }

    /// `redis://127.0.0.1:<port>/0` (`rediss://` with TLS), without the password.
    pub fn url(&self) -> String {
        let scheme = if self.dir.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The CA certificate (PEM) that vouches for a TLS server's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("ca.pem"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it (P-256 keys, valid two days), in
/// a directory of their own.
fn certificates(port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vtbulk-redis-tls-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("certificate dir");
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions");
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [&[&str]; 3] = [
        &[
            &["req", "-x509"],
            &key[..],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
        &[
            &["req"],
            &key[..],
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ],
    ];
    let subjects = ["/CN=vtbulk test CA", "/CN=127.0.0.1", ""];
    for (args, subject) in steps.iter().zip(subjects) {
        let mut command = std::process::Command::new("openssl");
        command.args(*args).args(["-days", "2"]).current_dir(&dir);
        if !subject.is_empty() {
            command.args(["-subj", subject]);
        }
        let out = command
            .output()
            .expect("openssl not found: install Debian's openssl (.ci/run does)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}
