//! The machine's own ceilings, measured in the same run as the servers, on the same bytes:
//! - sha256 on one core with the CPU's SHA instructions (`openssl dgst -sha256`, and the `sha2`
//!   crate that portcullis hashes uploads with), the bound of any upload that verifies its digest;
//! - page-cache write bandwidth for new data (a new file, no fsync), and the same with the fsync
//!   that makes a blob durable; on a small VM this is often the real bound for uploads;
//! - a plain loopback TCP copy, the bound for downloads.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use sha2::Digest as _;

use crate::results::Ceiling;

const MIB: f64 = (1 << 20) as f64;
const IO_CHUNK: usize = 1 << 20;

/// Measures every ceiling over `data`, using `scratch` for files.
pub(crate) fn measure(data: &Bytes, scratch: &Path) -> anyhow::Result<Vec<Ceiling>> {
    let size = data.len() as f64 / MIB;
    let mut ceilings = Vec::new();
    let mut push = |key: &str, label: &str, elapsed: Duration| {
        ceilings.push(Ceiling { key: key.to_owned(), label: label.to_owned(), mib_per_s: size / elapsed.as_secs_f64() });
    };

    // Twice, keeping the faster: the first write of a run may also pay for the kernel reclaiming
    // pages, which is the machine's state rather than its ceiling.
    let file = scratch.join("ceiling-write");
    let mut best = Duration::MAX;
    for _ in 0..2 {
        let _ = std::fs::remove_file(&file);
        let started = Instant::now();
        write_file(&file, data, false)?;
        best = best.min(started.elapsed());
    }
    push("page_cache_write", "page-cache write of new data (new file, no fsync; best of 2)", best);

    // The file just written is in the page cache: openssl reads it from memory.
    let started = Instant::now();
    let output = std::process::Command::new("openssl").arg("dgst").arg("-sha256").arg(&file).output().context("run openssl")?;
    anyhow::ensure!(output.status.success(), "openssl dgst failed: {}", String::from_utf8_lossy(&output.stderr));
    push("sha256_openssl", "sha256, one core (`openssl dgst -sha256`, SHA instructions)", started.elapsed());
    std::fs::remove_file(&file)?;

    let started = Instant::now();
    let digest = sha2::Sha256::digest(data);
    std::hint::black_box(digest);
    push("sha256_sha2", "sha256, one core (`sha2` crate, as portcullis hashes)", started.elapsed());

    let started = Instant::now();
    write_file(&file, data, true)?;
    push("durable_write", "write of new data + fsync (new file)", started.elapsed());
    std::fs::remove_file(&file)?;

    push("loopback", "loopback TCP copy (127.0.0.1, 1 MiB writes)", loopback_copy(data)?);
    Ok(ceilings)
}

fn write_file(path: &Path, data: &[u8], fsync: bool) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    for chunk in data.chunks(IO_CHUNK) {
        file.write_all(chunk)?;
    }
    if fsync {
        file.sync_all()?;
    }
    Ok(())
}

/// Time to send `data` through a loopback TCP connection to a reader that discards it.
fn loopback_copy(data: &[u8]) -> anyhow::Result<Duration> {
    loopback_copy_through(data, Ok, Ok)
}

/// Time to send `data` through a loopback TCP connection to a reader that discards it, the
/// reader's end of the connection wrapped by `server` and the writer's by `client` (in TLS, say),
/// each on a thread of its own; the writer is flushed before it is dropped.
pub(crate) fn loopback_copy_through<R: std::io::Read, W: std::io::Write>(
    data: &[u8],
    server: impl FnOnce(std::net::TcpStream) -> std::io::Result<R> + Send + 'static,
    client: impl FnOnce(std::net::TcpStream) -> std::io::Result<W>,
) -> anyhow::Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let expected = data.len();
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let mut stream = server(listener.accept()?.0)?;
        let mut buf = vec![0u8; IO_CHUNK];
        let mut total = 0;
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    });
    let started = Instant::now();
    let mut stream = client(std::net::TcpStream::connect(addr)?)?;
    for chunk in data.chunks(IO_CHUNK) {
        stream.write_all(chunk)?;
    }
    stream.flush()?;
    drop(stream);
    let received = reader.join().map_err(|_| anyhow::anyhow!("loopback reader panicked"))??;
    let elapsed = started.elapsed();
    anyhow::ensure!(received == expected, "loopback copy received {received} of {expected} bytes");
    Ok(elapsed)
}
