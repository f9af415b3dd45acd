//! containerd and dockerd as child processes for tests of pulls through the proxy: each with its
//! own root, state and socket in a temp dir (nothing under /var/lib or /run is used, nothing the
//! machine runs is touched), and stopped by PID when dropped (dockerd with SIGTERM first, so it
//! stops the containerd it started). Installed by `scripts/test` (Debian's `containerd` and
//! `docker.io`); a test that cannot find them fails and says so. See REAL-CLIENTS.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::clients::{find_on_path, run, Run};

/// A containerd of its own.
pub struct Containerd {
    pub socket: PathBuf,
    process: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub async fn start() -> Containerd {
        for tool in ["containerd", "ctr"] {
            assert!(find_on_path(tool).is_some(), "{tool} is not installed: run scripts/test, which installs Debian's containerd");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        // Without the CRI plugin it starts at once and opens no streaming port.
        std::fs::write(dir.path().join("config.toml"), "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n").expect("config");
        let socket = dir.path().join("sock");
        let process = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--address")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(dir.path()))
            .spawn()
            .expect("start containerd");
        let mut containerd = Containerd { socket, process, dir };
        let socket = containerd.socket.clone();
        wait_for(&mut containerd.process, &socket, containerd.dir.path(), "containerd").await;
        containerd
    }

    /// Runs `ctr -a <socket> <args>`.
    pub async fn ctr(&self, args: &[&str]) -> Run {
        let mut command = tokio::process::Command::new("ctr");
        command.arg("-a").arg(&self.socket).args(args).stdin(Stdio::null()).kill_on_drop(true);
        run(command, format!("ctr {}", args.join(" "))).await
    }

    /// A path in its temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        stop(&mut self.process);
    }
}

/// A dockerd of its own, with `--registry-mirror`.
pub struct Dockerd {
    pub socket: PathBuf,
    process: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    pub async fn start(registry_mirror: &str) -> Dockerd {
        for tool in ["dockerd", "docker"] {
            assert!(find_on_path(tool).is_some(), "{tool} is not installed: run scripts/test, which installs Debian's docker.io");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("daemon.json"), "{}").expect("daemon.json");
        let socket = dir.path().join("sock");
        let process = Command::new("dockerd")
            .args(["--storage-driver", "vfs", "--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--config-file")
            .arg(dir.path().join("daemon.json"))
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--registry-mirror")
            .arg(registry_mirror)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(dir.path()))
            .spawn()
            .expect("start dockerd");
        let mut dockerd = Dockerd { socket, process, dir };
        let socket = dockerd.socket.clone();
        wait_for(&mut dockerd.process, &socket, dockerd.dir.path(), "dockerd").await;
        // The socket exists before the API answers.
        for _ in 0..200 {
            if dockerd.docker(&["version"]).await.status.success() {
                return dockerd;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dockerd does not answer: {}", std::fs::read_to_string(dockerd.dir.path().join("log")).unwrap_or_default());
    }

    /// Runs `docker <args>` against this daemon, with a client configuration of its own.
    pub async fn docker(&self, args: &[&str]) -> Run {
        let mut command = tokio::process::Command::new("docker");
        command
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        run(command, format!("docker {}", args.join(" "))).await
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        stop(&mut self.process);
    }
}

fn log_file(dir: &Path) -> std::fs::File {
    std::fs::File::create(dir.join("log")).expect("log file")
}

/// Waits until `socket` exists, or fails with the daemon's log when it exits first.
async fn wait_for(process: &mut Child, socket: &Path, dir: &Path, what: &str) {
    for _ in 0..400 {
        if socket.exists() {
            return;
        }
        if let Ok(Some(status)) = process.try_wait() {
            panic!("{what} exited with {status}: {}", std::fs::read_to_string(dir.join("log")).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} made no socket: {}", std::fs::read_to_string(dir.join("log")).unwrap_or_default());
}

/// SIGTERM, a few seconds to exit (stopping what it started), then SIGKILL.
fn stop(process: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(process.id().to_string()).status();
    for _ in 0..100 {
        if let Ok(Some(_)) = process.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = process.kill();
    let _ = process.wait();
}
