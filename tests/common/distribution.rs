//! CNCF Distribution (Debian's `docker-registry`, 2.8) as a child process: an upstream for the
//! proxy's tests, with htpasswd and TLS when asked, or in its own proxy mode. It listens on a unix
//! socket in its temp dir and a [`FaultProxy`] gives it a loopback port, so no port is picked
//! and raced for, and the upstream can be cut while its process keeps its data. Its access log
//! (one line per request) is how tests count what reached it. Stopped by PID on drop.
//! Installed by `scripts/test`; a test that cannot find it fails and says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::fault_proxy::{FaultProxy, Target};

/// How to run it.
#[derive(Default)]
pub struct Options {
    /// Users (name, password) of an htpasswd file (bcrypt), the registry then requiring Basic.
    pub htpasswd: Vec<(String, String)>,
    /// Certificate and key for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Distribution's own pull-through mode (`proxy: remoteurl:`), for the benchmark's side by side.
    pub proxy_remote: Option<String>,
}

pub struct Distribution {
    /// `http(s)://127.0.0.1:PORT`
    pub base_url: String,
    /// The cuttable proxy in front of its socket.
    pub front: FaultProxy,
    process: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Distribution {
    pub async fn start(options: Options) -> Distribution {
        assert!(
            super::clients::find_on_path("docker-registry").is_some(),
            "docker-registry (CNCF Distribution) is not installed: run scripts/test, which installs it"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("sock");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  net: unix\n  addr: {}\n",
            dir.path().join("data").display(),
            socket.display()
        );
        if let Some((cert, key)) = &options.tls {
            config += &format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
        }
        if !options.htpasswd.is_empty() {
            let lines: String = options.htpasswd.iter().map(|(user, password)| format!("{user}:{}\n", bcrypt::hash(password, 4).expect("bcrypt"))).collect();
            std::fs::write(dir.path().join("htpasswd"), lines).expect("write htpasswd");
            config += &format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", dir.path().join("htpasswd").display());
        }
        if let Some(remote) = &options.proxy_remote {
            config += &format!("proxy:\n  remoteurl: {remote}\n");
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("write config.yml");
        let log = dir.path().join("log");
        let process = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            // Distribution 2.8 panics at start when AWS_CA_BUNDLE is set (REAL-CLIENTS.md).
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .expect("start docker-registry");
        let front = FaultProxy::to(Target::Unix(socket.clone())).await;
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        let mut distribution = Distribution { base_url: format!("{scheme}://{}", front.addr), front, process, log, _dir: dir };
        distribution.wait_until_listening(&socket).await;
        distribution
    }

    async fn wait_until_listening(&mut self, socket: &Path) {
        for _ in 0..200 {
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                panic!("docker-registry exited with {status}: {}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("docker-registry does not listen on {}: {}", socket.display(), self.stderr());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr")).unwrap_or_default()
    }

    /// Its access log so far (combined log format, one request a line) and its other output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default() + &self.stderr()
    }

    /// Access log lines of requests whose method and path start with `request` (`GET /v2/...`).
    pub fn requests(&self, request: &str) -> usize {
        self.log().lines().filter(|line| line.contains(&format!("\"{request}"))).count()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
