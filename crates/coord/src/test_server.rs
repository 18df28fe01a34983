//! A real `redis-server` for tests: Debian's package (`.ci/run` installs it), started on a
//! free loopback port with no persistence and stopped when dropped. Tests wait for its own
//! "ready" line, not for time; a machine without `redis-server` fails loudly here.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

/// A running `redis-server` of a test's own.
#[derive(Debug)]
pub struct RedisServer {
    child: tokio::process::Child,
    port: u16,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` cannot be started: the tests need it.
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        RedisServer::start_on(port).await
    }

    /// Stops this server (its data gone: no persistence) and starts a new one on the same
    /// port, as a restarted Redis would come back.
    pub async fn restart(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        *self = RedisServer::start_on(self.port).await;
    }

    async fn start_on(port: u16) -> RedisServer {
        let mut child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
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
        RedisServer { child, port }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
