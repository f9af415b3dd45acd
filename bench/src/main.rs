//! portcullis-bench: the load driver behind `scripts/bench`.
//!
//! `scripts/bench` installs the tools, builds release binaries, and for each run starts portcullis
//! and the CNCF Distribution registry on loopback with fresh temp dirs. This binary then drives the
//! same workloads against both (`measure`, one JSON file per run) and turns the runs into one
//! markdown table of medians (`report`). It starts and stops no server itself: it is handed their
//! URLs and process ids, and reads their memory from `/proc`. On S3 it also creates the buckets
//! of the runs (`create-bucket`) and measures the store itself with a plain S3 client (`s3.rs`).
//!
//! It measures, and asserts nothing about the numbers: a workload that gets a wrong answer (a 403,
//! a short download) fails the run, because a fast wrong answer is not a result.

mod admission;
mod ceilings;
mod collection;
mod conns;
mod console;
mod content;
mod cpu;
mod evidence;
mod gates;
mod images;
mod load;
mod memory;
mod proxy;
mod registry;
mod report;
mod results;
mod s3;
mod scale;
mod tls;
mod uploads;
mod workloads;

use std::path::PathBuf;

use clap::Parser as _;

#[derive(clap::Parser)]
#[command(name = "portcullis-bench", about = "Benchmarks portcullis side by side with the CNCF Distribution registry")]
enum Command {
    /// Writes a cosign-format key pair into DIR: `cosign.key` (PKCS#8 PEM) and `cosign.pub`.
    Keygen {
        /// Directory to write the key pair into.
        dir: PathBuf,
    },
    /// Creates BUCKET on the S3 store `PORTCULLIS_TEST_S3_*` names.
    CreateBucket {
        /// The bucket's name.
        bucket: String,
    },
    /// Runs every workload once against both servers and writes the measurements as JSON.
    Measure(Box<workloads::MeasureArgs>),
    /// Serves the upload flow as a reference for group `uploads` (see `uploads.rs`), keeping files
    /// below DIR; prints `listening on http://ADDR` first and runs until killed.
    ServeUploads {
        /// Directory for upload files and blobs.
        dir: PathBuf,
    },
    /// Writes a store of many repositories and tags directly in portcullis's filesystem layout,
    /// below DATA_DIR (a `storage.data_dir`, empty), for group `scale` (see `scale.rs`).
    ScaleFill {
        /// The data directory.
        data_dir: PathBuf,
        #[command(flatten)]
        shape: scale::Shape,
    },
    /// Prints the markdown tables (medians over the runs, targets) from the runs' JSON files.
    Report {
        /// JSON files written by `measure`, one per run.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Keygen { dir } => evidence::keygen(&dir),
        Command::CreateBucket { bucket } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async { s3::Store::from_env(&bucket, "")?.create_bucket().await })
        }
        Command::Measure(args) => {
            // One thread drives the load, so the driver takes at most one core from the servers,
            // the same for each of them.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(workloads::measure(*args))
        }
        Command::ServeUploads { dir } => {
            // Receiving, hashing and writing each on a thread of their own, as in portcullis.
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(uploads::serve(dir))
        }
        Command::ScaleFill { data_dir, shape } => scale::fill(&data_dir, &shape),
        Command::Report { files } => {
            let runs = files.iter().map(|path| results::RunResults::load(path)).collect::<anyhow::Result<Vec<_>>>()?;
            let text = report::render(&runs)?;
            use std::io::Write as _;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}
