//! The `portcullis` binary: parse the command line, set up logging, run one subcommand.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use portcullis::cli::{AdmissionCommand, AuditCommand, Cli, Command, ConfigArgs, PolicyCommand};
use portcullis::config::Config;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(&args)),
        Command::Reindex(args) => runtime.block_on(reindex(&args)),
        Command::Fsck(args) => std::process::exit(runtime.block_on(fsck(&args))),
        Command::Gc { config, dry_run, json } => runtime.block_on(gc(&config, dry_run, json)),
        Command::Scrub { config, report, json } => match runtime.block_on(scrub(&config, report, json)) {
            Ok(corrupt) => std::process::exit(i32::from(corrupt)),
            Err(err) => {
                let _ = writeln!(std::io::stderr(), "error: {err:#}");
                std::process::exit(2)
            }
        },
        Command::Policy(PolicyCommand::Explain { image, config }) => explain(&image, &config),
        Command::Check { registry, image, target, json, access } => {
            let access = client_access(access);
            std::process::exit(runtime.block_on(portcullis::client::check(&registry, &access, &image, target.as_deref(), json)))
        }
        Command::Promote { registry, source, target, tags, dry_run, json, access } => {
            let access = client_access(access);
            std::process::exit(runtime.block_on(portcullis::client::promote(&registry, &access, &source, &target, &tags, dry_run, json)))
        }
        Command::Audit(AuditCommand::Verify(args)) => runtime.block_on(audit_verify(&args)),
        Command::Upstreams { registry, json, access } => {
            let access = client_access(access);
            std::process::exit(runtime.block_on(portcullis::client::upstreams(&registry, &access, json)))
        }
        Command::Admission(AdmissionCommand::Manifests { service, namespace, ca_bundle, image, timeout_seconds, config }) => {
            let ca_bundle_pem = std::fs::read_to_string(&ca_bundle).with_context(|| format!("--ca-bundle: cannot read {}", ca_bundle.display()))?;
            let options = portcullis::admission::manifests::Options { service, namespace, ca_bundle_pem, image, timeout_seconds };
            admission_manifests(&options, config.as_deref())
        }
    }
}

/// Prints the objects that switch admission on, with the exemptions of `config`'s [admission].
fn admission_manifests(options: &portcullis::admission::manifests::Options, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = config.map(|path| Config::load(Some(path), &Default::default())).transpose()?;
    let admission = config.as_ref().and_then(|config| config.admission.as_ref());
    let list = portcullis::admission::manifests::render(options, admission)?;
    writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&list)?)?;
    Ok(())
}

/// The client's credentials: flags, and the password from the environment only.
fn client_access(args: portcullis::cli::ClientArgs) -> portcullis::client::Access {
    portcullis::client::Access::new(args.user, args.ca_cert, |name| std::env::var(name).ok())
}

fn load(args: &ConfigArgs) -> anyhow::Result<Config> {
    let config = Config::load(args.config.as_deref(), &args.overrides())?;
    portcullis::logging::init(config.log_format);
    Ok(config)
}

async fn serve(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = load(args)?;
    let listen = config.listen;
    let where_stored = match &config.storage {
        portcullis::config::StorageConfig::Fs { root } => format!("filesystem {}", root.display()),
        portcullis::config::StorageConfig::S3(s3) => {
            format!("s3://{}/{} at {}", s3.store.bucket, s3.store.prefix, s3.store.endpoint.as_deref().unwrap_or("AWS"))
        }
    };
    let source = config.source.clone();
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let registry = portcullis::server::open(config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let running = portcullis::server::start(registry, listener).await?;
    // Handlers are installed before the listen line, so a signal sent as soon as it appears is
    // handled, not fatal.
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    let hangups = signal(SignalKind::hangup()).context("cannot install a SIGHUP handler")?;
    // One plain line on stdout, for people and for scripts that start the server on port 0.
    writeln!(
        std::io::stdout(),
        "portcullis listening on {scheme}://{} storing in {where_stored} (config: {source})",
        running.local_addr
    )?;
    std::io::stdout().flush()?;
    tokio::spawn(reload_on_hangup(hangups, running.reloader.clone(), args.clone()));
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// SIGHUP reloads policy, trust, access rules and the TLS certificate from the same sources; an
/// invalid configuration is refused and the one in force stays. Connections are not touched.
async fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, reloader: portcullis::server::Reloader, args: ConfigArgs) {
    while hangups.recv().await.is_some() {
        match reloader.reload_from(Config::load(args.config.as_deref(), &args.overrides())) {
            Ok(revision) => tracing::info!(revision = %revision, "configuration reloaded"),
            Err(err) => tracing::error!(error = %err, "configuration reload refused; the previous one stays in force"),
        }
    }
}

async fn reindex(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = load(args)?;
    let registry = portcullis::server::open(config).await?;
    let n_manifests = registry.reindex().await?;
    writeln!(std::io::stdout(), "reindexed {n_manifests} manifests")?;
    Ok(())
}

/// Opens the registry of `args` over an index of its own in a temporary directory (sled locks the
/// server's; manifests are summarised again from their bytes when needed), runs `work` on it, and
/// removes the index.
async fn with_own_index<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    args: &ConfigArgs,
    work: impl FnOnce(std::sync::Arc<portcullis::registry::Registry>) -> F,
) -> anyhow::Result<T> {
    let mut config = load(args)?;
    let index = std::env::temp_dir().join(format!("portcullis-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    config.index_dir = index.clone();
    let outcome = async { work(portcullis::server::open(config).await?).await }.await;
    let _ = std::fs::remove_dir_all(&index);
    outcome
}

/// One garbage-collection pass beside running servers.
async fn gc(args: &ConfigArgs, dry_run: bool, json: bool) -> anyhow::Result<()> {
    // Failpoints from `FAILPOINTS` (builds with the `failpoints` feature; tests kill a pass).
    let _failpoints = fail::FailScenario::setup();
    let options = portcullis::gc::Options { dry_run };
    let report = with_own_index(args, |registry| async move { Ok(portcullis::gc::run(&registry, &options).await?) }).await?;
    let mut stdout = std::io::stdout().lock();
    match json {
        true => writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?,
        false => write!(stdout, "{}", portcullis::gc::render(&report))?,
    }
    Ok(())
}

/// One scrub pass beside running servers; returns whether anything is corrupt.
async fn scrub(args: &ConfigArgs, listed: bool, json: bool) -> anyhow::Result<bool> {
    let report = with_own_index(args, |registry| async move { Ok(portcullis::scrub::run(&registry).await?) }).await?;
    let mut stdout = std::io::stdout().lock();
    match json {
        true => writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?,
        false => write!(stdout, "{}", portcullis::scrub::render(&report, listed))?,
    }
    Ok(report.anything_corrupt())
}

fn explain(image: &str, args: &ConfigArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), &args.overrides())?;
    let (repo, tag) = match image.rsplit_once(':') {
        Some((repo, tag)) => (repo, Some(tag)),
        None => (image, None),
    };
    let repo: portcullis::names::RepoName = repo.parse()?;
    if let Some(tag) = tag {
        tag.parse::<portcullis::names::Tag>()?;
    }
    let rule = portcullis::policy::tags::rule_for(&config.namespaces, repo.as_str(), tag);
    write!(std::io::stdout(), "{}", rule.explain(repo.as_str(), tag))?;
    Ok(())
}

/// Exit 0 when the metadata is sound, 1 when something is damaged, 2 when the walk failed.
async fn fsck(args: &ConfigArgs) -> i32 {
    match fsck_walk(args).await {
        Ok(0) => 0,
        Ok(_) => 1,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            2
        }
    }
}

/// Prints each damaged object as `<key>: <problem>` as it is found, then a summary; returns the
/// number of problems.
async fn fsck_walk(args: &ConfigArgs) -> anyhow::Result<u64> {
    let config = Config::load(args.config.as_deref(), &args.overrides())?;
    // The store alone and read-only: this runs beside a live server (no index is opened).
    let store = portcullis::server::open_store_read_only(&config).await?;
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let summary = portcullis::fsck::run(store, |finding| {
        if let Err(err) = writeln!(stdout, "{}: {}", finding.key, finding.problem) {
            write_error.get_or_insert(err);
        }
    })
    .await?;
    if let Some(err) = write_error {
        return Err(err.into());
    }
    let problems = match summary.problems {
        0 => "no problems".to_owned(),
        n => format!("{n} damaged"),
    };
    writeln!(stdout, "fsck: {} objects checked, {problems}", summary.checked)?;
    Ok(summary.problems)
}

async fn audit_verify(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), &args.overrides())?;
    // The store alone and read-only: this runs beside a live server (no index is opened).
    let store = portcullis::server::open_store_read_only(&config).await?;
    match portcullis::metadata::audit::AuditLog::new(store).verify().await? {
        Ok(n_records) => {
            writeln!(std::io::stdout(), "audit log intact: {n_records} records, chain verified")?;
            Ok(())
        }
        Err(broken) => {
            writeln!(std::io::stdout(), "audit log BROKEN at record {}: {}", broken.seq, broken.reason)?;
            std::process::exit(1)
        }
    }
}
