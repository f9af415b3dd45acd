//! Command-line interface: clap definitions of the subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::Overrides;

/// portcullis: a private OCI registry with tag rules and promotion gates.
#[derive(Debug, clap::Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the registry.
    Serve(ConfigArgs),
    /// Rebuild the node-local index from the object store (with the server stopped).
    Reindex(ConfigArgs),
    /// Check the store's metadata, read-only: name every object that does not parse or points
    /// to nothing (exit 0 clean, 1 problems found, 2 error). Safe beside a running server.
    Fsck(ConfigArgs),
    /// Run one garbage-collection pass and print what it removed and the bytes reclaimed. Safe
    /// beside running servers (one pass at a time across replicas, through a lease in the store;
    /// this one waits for a pass in progress). Uses an index of its own, so the server's stays
    /// locked by the server.
    Gc {
        #[command(flatten)]
        config: ConfigArgs,
        /// List what a pass would remove now; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every stored blob and manifest once (at `[scrub] bytes_per_second`), quarantine
    /// what does not match its digest, and say what is corrupt (exit 0 nothing is, 1 something
    /// is quarantined, 2 error). Safe beside running servers (one pass at a time across replicas,
    /// through a lease in the store). Uses an index of its own, like `gc`.
    Scrub {
        #[command(flatten)]
        config: ConfigArgs,
        /// List each corrupt, healed and quarantined object, not only the totals.
        #[arg(long)]
        report: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the configured policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Ask a registry whether an image would pass its namespace's gate (exit 0 pass, 1 fail, 2 error).
    Check {
        /// Registry base URL, e.g. http://127.0.0.1:5000.
        #[arg(long, env = "PORTCULLIS_REGISTRY")]
        registry: String,
        /// The image: REPO[:TAG] or REPO@DIGEST.
        image: String,
        /// Judge by the gate of this repository instead (would promoting IMAGE there pass?).
        #[arg(long)]
        target: Option<String>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        access: ClientArgs,
    },
    /// Promote SOURCE into TARGET through the registry's promotion API
    /// (exit 0 promoted, 1 denied or conflicting tag, 2 error).
    Promote {
        /// Registry base URL, e.g. http://127.0.0.1:5000.
        #[arg(long, env = "PORTCULLIS_REGISTRY")]
        registry: String,
        /// The artifact: REPO[:TAG] or REPO@DIGEST, e.g. build/app@sha256:...
        source: String,
        /// The target repository, e.g. prod/app.
        target: String,
        /// A tag to bind in the target (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Evaluate and report without writing.
        #[arg(long)]
        dry_run: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        access: ClientArgs,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List a registry's upstreams (pull-through proxy) with their health, cache size and last
    /// error (exit 0 all answered last, 1 one is down, 2 error).
    Upstreams {
        /// Registry base URL, e.g. http://127.0.0.1:5000.
        #[arg(long, env = "PORTCULLIS_REGISTRY")]
        registry: String,
        /// Print the listing as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        access: ClientArgs,
    },
    /// Kubernetes admission.
    #[command(subcommand)]
    Admission(AdmissionCommand),
}

/// `portcullis admission ...`
#[derive(Debug, clap::Subcommand)]
pub enum AdmissionCommand {
    /// Print the Kubernetes objects that switch admission on, as one JSON List for
    /// `kubectl apply -f -`: the mutating and validating webhook configurations (the registry's
    /// namespace and the configured exempt namespaces and labels left out) and a Deployment and
    /// Service running portcullis.
    Manifests {
        /// Name of the Service (and Deployment, and webhook configurations).
        #[arg(long)]
        service: String,
        /// Namespace portcullis runs in; never sent to the webhooks.
        #[arg(long)]
        namespace: String,
        /// PEM file of the CA that signed portcullis's serving certificate (the caBundle).
        #[arg(long)]
        ca_bundle: PathBuf,
        /// Container image of portcullis for the Deployment.
        #[arg(long, default_value = concat!("portcullis:", env!("CARGO_PKG_VERSION")))]
        image: String,
        /// Seconds the API server waits for an answer (1 to 30).
        #[arg(long, default_value_t = 5)]
        timeout_seconds: u32,
        /// Configuration file whose [admission] exemptions go into the namespace selectors.
        #[arg(long, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// How `check`, `promote` and `upstreams` reach a registry with TLS and access control. The password (or a
/// CI's OIDC token, which the registry accepts as a password) comes from `PORTCULLIS_PASSWORD`
/// only, never from the command line, where other users could read it.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// User name, sent with PORTCULLIS_PASSWORD as Basic credentials.
    #[arg(long, env = "PORTCULLIS_USER")]
    pub user: Option<String>,
    /// PEM file of the CA that signed the registry's certificate (for a private CA).
    #[arg(long, env = "PORTCULLIS_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// `portcullis audit ...`
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of the audit log in the store; name the first broken record.
    Verify(ConfigArgs),
}

/// `portcullis policy ...`
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Print which namespace and tag rule apply to REPO[:TAG], and why.
    Explain {
        /// Repository, optionally with a tag: `prod/app:v1`.
        image: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Where the configuration comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML); without it, the embedded default (config/default.toml).
    #[arg(long, env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, overriding the file.
    #[arg(long, env = "PORTCULLIS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory (store and index), overriding the file.
    #[arg(long, env = "PORTCULLIS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// The flag and environment values that take precedence over the file.
    pub fn overrides(&self) -> Overrides {
        Overrides { listen: self.listen, data_dir: self.data_dir.clone() }
    }
}
