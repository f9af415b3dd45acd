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
    /// Inspect the configured policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
