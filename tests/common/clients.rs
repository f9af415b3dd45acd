//! skopeo and podman, sandboxed per test: their policy, auth file, registries configuration,
//! `HOME` and podman's storage all live in a temp dir, so a test neither reads nor writes the
//! machine's container configuration. Installed by `scripts/test`; a test that cannot find them
//! fails and says so.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// A sandbox for skopeo and podman: everything they would read or write under `/etc/containers`,
/// `$HOME` or `/var/lib/containers` lives in one temp dir instead (see the module doc).
///
/// Two files escape it, because skopeo 1.9 and podman 4.3 running as root have no flag to move
/// them: the blob-location cache `/var/lib/containers/cache/blob-info-cache-v1.boltdb` and the
/// lock `/var/cache/containers/short-name-aliases.conf.lock`. The cache only lets a client skip an
/// upload the registry already has; it holds no configuration.
pub struct Clients {
    dir: tempfile::TempDir,
}

/// A finished client run.
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Longest a single client command may take; a hung client fails the test instead of CI.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

impl Clients {
    pub fn new() -> Clients {
        for tool in ["skopeo", "podman"] {
            assert!(
                find_on_path(tool).is_some(),
                "{tool} is not installed (not found on PATH): run scripts/test, which installs skopeo, podman and umoci"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        for sub in ["home", "tmp", "xdg-runtime", "podman/root", "podman/runroot", "podman/tmp", "podman/networks", "podman/volumes"] {
            std::fs::create_dir_all(root.join(sub)).expect("create sandbox dir");
        }
        let write = |name: &str, text: &str| std::fs::write(root.join(name), text).expect("write sandbox file");
        write("policy.json", r#"{"default":[{"type":"insecureAcceptAnything"}]}"#);
        write("auth.json", "{}");
        // Empty: every name is fully qualified, and plain HTTP comes from --tls-verify=false.
        write("registries.conf", "");
        write("containers.conf", "");
        // With CONTAINERS_STORAGE_CONF set, podman insists on finding both roots in the file.
        write(
            "storage.conf",
            &format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.join("podman/root").display(),
                root.join("podman/runroot").display()
            ),
        );
        Clients { dir }
    }

    /// A path inside the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `skopeo --policy <sandbox> <subcommand> --authfile <sandbox> <args>`.
    pub async fn skopeo(&self, subcommand: &str, args: &[&str]) -> Run {
        let policy = self.path("policy.json");
        let authfile = self.path("auth.json");
        let mut command = self.command("skopeo");
        // skopeo 1.9 does not read CONTAINERS_REGISTRIES_CONF (podman does): the flag it reads.
        command.arg("--policy").arg(&policy).arg("--registries-conf").arg(self.path("registries.conf"));
        if debug_clients() {
            command.arg("--debug");
        }
        command.arg(subcommand).arg("--authfile").arg(&authfile).args(args);
        run(command, format!("skopeo {subcommand} {}", args.join(" "))).await
    }

    /// Runs `podman <isolation flags> <args>`; callers add per-command flags such as
    /// `--tls-verify=false` and `--signature-policy`.
    pub async fn podman(&self, args: &[&str]) -> Run {
        let podman = self.path("podman");
        let mut command = self.command("podman");
        command
            .arg("--root")
            .arg(podman.join("root"))
            .arg("--runroot")
            .arg(podman.join("runroot"))
            .arg("--tmpdir")
            .arg(podman.join("tmp"))
            .arg("--network-config-dir")
            .arg(podman.join("networks"))
            .arg("--volumepath")
            .arg(podman.join("volumes"))
            .args(["--storage-driver=vfs", "--cgroup-manager=cgroupfs", "--events-backend=file"]);
        if debug_clients() {
            command.arg("--log-level=debug");
        }
        command.args(args);
        run(command, format!("podman {}", args.join(" "))).await
    }

    /// A command run in the sandbox dir, with a clean environment that points every
    /// containers-* configuration file into the sandbox.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.path("tmp"))
            .env("XDG_RUNTIME_DIR", self.path("xdg-runtime"))
            .env("XDG_CONFIG_HOME", self.path("home/.config"))
            .env("XDG_DATA_HOME", self.path("home/.local/share"))
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

impl Run {
    /// The run, after asserting it exited 0.
    pub fn ok(self) -> Run {
        assert!(self.status.success(), "`{}` failed with {}\nstdout:\n{}\nstderr:\n{}", self.what, self.status, self.stdout, self.stderr);
        self
    }
}

pub async fn run(mut command: tokio::process::Command, what: String) -> Run {
    eprintln!("$ {what}");
    let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`{what}` did not finish within {CLIENT_TIMEOUT:?}"))
        .unwrap_or_else(|err| panic!("`{what}` could not start: {err}"));
    let run = Run {
        what,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    if debug_clients() {
        eprintln!("{}", run.stderr);
    }
    run
}

/// `PORTCULLIS_CLIENT_DEBUG=1` runs skopeo with `--debug` and podman with `--log-level=debug`,
/// and prints their stderr: every request and response status they see.
pub fn debug_clients() -> bool {
    std::env::var_os("PORTCULLIS_CLIENT_DEBUG").is_some_and(|value| !value.is_empty())
}

pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}
