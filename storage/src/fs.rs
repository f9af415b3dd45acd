//! Filesystem backend: objects are files under `<root>/objects/<key>`.
//!
//! Every write goes to a new file in `<root>/tmp/`, is fsynced and renamed into place, so a reader
//! sees the old object or the new one, never a part. Conditional writes and deletes hold an
//! exclusive `flock` on one of 256 lock files in `<root>/locks/` (chosen by a hash of the key), which
//! makes them atomic between threads and between processes sharing the directory. Because each
//! write creates a new inode, `inode-mtime-size` is a version that changes with every write.
//!
//! Staged uploads are files in `<root>/staging/`; committing renames them into `objects/`.

use std::io;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use sha2::Digest as _;

use crate::{
    validate_key, validate_prefix, BlobStore, BlobStoreError, ByteStream, ETag, ListPage, MetaPage,
    ObjectMeta, ObjectReader, PutCondition, Result, SmallObject,
};

/// Bytes of a request body collected before they are written: large enough that each blocking
/// write moves a useful amount of data, small enough to bound memory per upload.
const WRITE_BATCH: usize = crate::digest::BATCH;
/// Buffers per write at most, so that a body of tiny chunks cannot grow a batch's list unbounded.
const MAX_BATCH_CHUNKS: usize = 1024;
/// While a staged upload grows, every this many bytes an `fdatasync` from another thread starts
/// writing what has arrived to disk, so the fsync at commit finds little left instead of the
/// whole blob (for 1 GiB that was about as long as receiving and hashing it).
const WRITEBACK_STEP: u64 = 64 << 20;
/// Chunk size of streamed reads: each chunk is one trip to the blocking pool and one frame for
/// hyper, so larger chunks cost fewer wake-ups per byte, at 1 MiB of buffer per chunk in flight.
const READ_CHUNK: usize = 1 << 20;
/// Chunks read ahead of the one being sent.
const READ_AHEAD: usize = 2;

/// A [`BlobStore`] on a local directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
    /// Writebacks still running after the append that started them answered, by staging id. The
    /// next append or the commit of that upload waits for one and fails if it failed, so a chunked
    /// upload does not wait at the end of every chunk for a flush of what came before. (Another
    /// process sharing the directory does not see them: its commit's own fsync is then the check.)
    writebacks: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Task>>>,
}

/// A blocking write or flush in flight.
type Task = tokio::task::JoinHandle<io::Result<()>>;

impl FsBlobStore {
    /// Opens an existing store rooted at `root` without creating anything, for tools that only
    /// read; `NotFound` when there is no store there.
    pub async fn open_existing(root: impl Into<PathBuf>) -> Result<FsBlobStore> {
        let root = root.into();
        if !tokio::fs::metadata(root.join("objects")).await.is_ok_and(|meta| meta.is_dir()) {
            return Err(BlobStoreError::NotFound(format!("no store at {}", root.display())));
        }
        Ok(FsBlobStore { root, writebacks: Default::default() })
    }

    /// Opens (creating when needed) a store rooted at `root`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore> {
        let root = root.into();
        for dir in ["objects", "staging", "tmp", "locks"] {
            tokio::fs::create_dir_all(root.join(dir)).await?;
        }
        Ok(FsBlobStore { root, writebacks: Default::default() })
    }

    fn object_path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join("objects").join(key))
    }

    /// Opens the object's file with its metadata (one inode, so size and version agree with the
    /// bytes read); `None` when there is no object (absent, or a "directory").
    async fn open_object(&self, key: &str) -> Result<Option<(std::fs::File, std::fs::Metadata)>> {
        let path = self.object_path(key)?;
        tokio::task::spawn_blocking(move || Ok(open_object_at(&path)?))
            .await
            .map_err(|join| BlobStoreError::Io(io::Error::other(join)))?
    }

    fn stage_path(&self, id: &str) -> Result<PathBuf> {
        validate_key(id)?;
        if id.contains('/') {
            return Err(BlobStoreError::InvalidKey(id.to_owned()));
        }
        Ok(self.root.join("staging").join(id))
    }

    fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The writeback an earlier append of upload `id` left running, if any.
    fn take_writeback(&self, id: &str) -> Option<Task> {
        self.writebacks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id)
    }

    /// Runs `f` holding the exclusive lock that guards `key`.
    async fn locked<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let stripe = sha2::Sha256::digest(key.as_bytes())[0];
        let lock_path = self.root.join("locks").join(format!("{stripe:02x}"));
        tokio::task::spawn_blocking(move || {
            let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(lock_path)?;
            lock.lock()?;
            // The lock is released when `lock` is dropped, on every path out of `f`.
            f()
        })
        .await
        .map_err(|join| BlobStoreError::Io(io::Error::other(join)))?
    }
}

/// [`FsBlobStore::open_object`] on the calling (blocking) thread.
fn open_object_at(path: &Path) -> io::Result<Option<(std::fs::File, std::fs::Metadata)>> {
    let Some(file) = absent_is_none(std::fs::File::open(path))? else {
        return Ok(None);
    };
    let meta = file.metadata()?;
    Ok(meta.is_file().then_some((file, meta)))
}

fn etag_of(meta: &std::fs::Metadata) -> ETag {
    ETag(format!("{:x}-{:x}-{:x}", meta.ino(), meta.mtime_nsec() as u64 ^ ((meta.mtime() as u64) << 30), meta.size()))
}

fn meta_of(meta: &std::fs::Metadata) -> ObjectMeta {
    // From the inode's own fields, so a time before the epoch or one the platform cannot
    // represent is never an error.
    let since_epoch = Duration::new(meta.mtime().max(0) as u64, meta.mtime_nsec().clamp(0, 999_999_999) as u32);
    ObjectMeta { size: meta.size(), etag: etag_of(meta), modified: SystemTime::UNIX_EPOCH + since_epoch }
}

fn absent_is_none<T>(res: io::Result<T>) -> io::Result<Option<T>> {
    match res {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        // A path through a file ("a" exists, "a/b" asked) is an absent key too.
        Err(err) if err.raw_os_error() == Some(20) => Ok(None),
        Err(err) => Err(err),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Renames `from` to `to`, creating `to`'s parents. A concurrent delete may remove an emptied
/// parent at any step: between the two (the rename finds no directory), or inside
/// `create_dir_all`, which answers `AlreadyExists` when a directory its `mkdir` found is gone by
/// the time it looks again. Both are retried; each retry means another writer's delete won.
fn rename_into_place(from: &Path, to: &Path) -> io::Result<()> {
    const ATTEMPTS: usize = 16;
    let parent = to.parent().expect("object paths always have a parent");
    let lost_a_race = |err: &io::Error| matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists);
    for attempt in 1..=ATTEMPTS {
        let res = std::fs::create_dir_all(parent).and_then(|()| std::fs::rename(from, to));
        match res {
            Ok(()) => return sync_dir(parent),
            Err(err) if lost_a_race(&err) && attempt < ATTEMPTS => continue,
            Err(err) => return Err(err),
        }
    }
    unreachable!("the loop returns on its last attempt")
}

fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    if bytes.is_empty() {
        // Links are empty objects: there is no data to flush, and the directory fsync after the
        // rename makes the new inode and its name durable together (one journal commit, not two).
        return Ok(());
    }
    file.write_all(bytes)?;
    file.sync_all()
}

/// Removes empty directories from `dir` up to (not including) `stop`.
fn remove_empty_parents(mut dir: &Path, stop: &Path) {
    while dir != stop && dir.starts_with(stop) {
        if std::fs::remove_dir(dir).is_err() {
            return;
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return,
        }
    }
}

/// Read buffers sent and dropped by the HTTP layer go back to this pool instead of the allocator:
/// a fresh buffer costs zeroing it (safe Rust cannot read into uninitialised memory) and often
/// page faults, about a tenth of a download's CPU.
static READ_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Buffers the pool keeps at most (the rest are freed): a download has about four in flight.
const POOLED_READ_BUFFERS: usize = 8;

/// A [`READ_CHUNK`] buffer of which the first `len` bytes are used; returns to the pool on drop.
struct ReadBuffer {
    buf: Vec<u8>,
    len: usize,
}

impl ReadBuffer {
    fn take(len: usize) -> ReadBuffer {
        let pooled = READ_BUFFERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let buf = pooled.unwrap_or_else(|| vec![0u8; READ_CHUNK]);
        ReadBuffer { buf, len: len.min(READ_CHUNK) }
    }
}

impl AsMut<[u8]> for ReadBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl AsRef<[u8]> for ReadBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        let mut pool = READ_BUFFERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if pool.len() < POOLED_READ_BUFFERS {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Streams `len` bytes of `file` from `start`. Each chunk is one positioned read on the blocking
/// pool straight into the buffer that is sent (tokio's `File` would read into its own buffer and
/// copy), and the next chunk is read while the previous one is being sent.
fn file_stream(file: std::fs::File, start: u64, len: u64) -> ByteStream {
    use std::os::unix::fs::FileExt;
    let file = std::sync::Arc::new(file);
    let chunk = READ_CHUNK as u64;
    let chunks = (0..len.div_ceil(chunk)).map(move |index| {
        let offset = start + index * chunk;
        (offset, chunk.min(start + len - offset) as usize)
    });
    let reads = futures::stream::iter(chunks).map(move |(offset, n)| {
        let file = file.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut buf = ReadBuffer::take(n);
                // A file shorter than its metadata said is an error, not a short stream.
                file.read_exact_at(buf.as_mut(), offset)?;
                Ok(Bytes::from_owner(buf))
            })
            .await
            .map_err(io::Error::other)?
        }
    });
    Box::pin(reads.buffered(READ_AHEAD))
}

/// Appends a request body to a staged file. The received buffers are collected into batches and
/// each batch is written as it is (one vectored write on the blocking pool, no copy into a buffer
/// of our own) while the next one arrives. Every [`WRITEBACK_STEP`] bytes an `fdatasync` on the
/// same file starts writing what has arrived to disk, so the fsync at commit finds little left.
struct Appender {
    file: std::sync::Arc<std::fs::File>,
    /// Offset after the last byte handed to a write.
    end: u64,
    next_writeback: u64,
    writing: Option<Task>,
    writeback: Option<Task>,
}

impl Appender {
    /// An appender at `offset`, taking over the writeback an earlier append left running.
    fn new(file: std::fs::File, offset: u64, writeback: Option<Task>) -> Appender {
        Appender {
            file: std::sync::Arc::new(file),
            end: offset,
            next_writeback: (offset / WRITEBACK_STEP + 1) * WRITEBACK_STEP,
            writing: None,
            writeback,
        }
    }

    async fn append(&mut self, mut body: ByteStream) -> io::Result<()> {
        let mut batch = Vec::new();
        let mut batch_len = 0;
        loop {
            let next = body.next().await.transpose()?;
            let done = next.is_none();
            if let Some(chunk) = next {
                batch_len += chunk.len();
                batch.push(chunk);
            }
            if batch_len >= WRITE_BATCH || batch.len() >= MAX_BATCH_CHUNKS || (done && batch_len > 0) {
                self.write(std::mem::take(&mut batch), batch_len).await?;
                batch_len = 0;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Hands a batch to the blocking pool once the previous write is done.
    async fn write(&mut self, batch: Vec<Bytes>, len: usize) -> io::Result<()> {
        join(self.writing.take()).await?;
        let file = self.file.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || write_all_vectored(&file, &batch)));
        self.end += len as u64;
        if self.end >= self.next_writeback && self.writeback.as_ref().is_none_or(|task| task.is_finished()) {
            join(self.writeback.take()).await?;
            self.next_writeback = self.end / WRITEBACK_STEP * WRITEBACK_STEP + WRITEBACK_STEP;
            let file = self.file.clone();
            self.writeback = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        Ok(())
    }
}

/// Waits for a blocking write or flush, if there is one.
async fn join(task: Option<Task>) -> io::Result<()> {
    match task {
        Some(task) => task.await.map_err(io::Error::other)?,
        None => Ok(()),
    }
}

/// Writes every buffer of `chunks` at the file's position.
fn write_all_vectored(mut file: &std::fs::File, chunks: &[Bytes]) -> io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|chunk| IoSlice::new(chunk)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        match file.write_vectored(remaining) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut remaining, n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.object_path(key)?;
        let meta = absent_is_none(tokio::fs::metadata(&path).await)?;
        Ok(meta.filter(|m| m.is_file()).map(|m| meta_of(&m)))
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        let Some((file, meta)) = self.open_object(key).await? else {
            return Ok(None);
        };
        let size = meta.size();
        let range = range.unwrap_or(0..size);
        if range.start > range.end || range.end > size {
            return Err(BlobStoreError::RangeNotSatisfiable { start: range.start, end: range.end, size });
        }
        Ok(Some(ObjectReader { meta: meta_of(&meta), body: file_stream(file, range.start, range.end - range.start) }))
    }

    async fn get_small(&self, key: &str, limit: usize) -> Result<Option<SmallObject>> {
        let path = self.object_path(key)?;
        let key = key.to_owned();
        // One trip to the blocking pool for open, stat and read: small objects (tags, links,
        // manifests) are read on every manifest request, and each tokio::fs call is a trip of its own.
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let Some((file, meta)) = open_object_at(&path)? else {
                return Ok(None);
            };
            if meta.size() > limit as u64 {
                return Err(BlobStoreError::TooLarge { key, limit });
            }
            let mut bytes = Vec::with_capacity(meta.size() as usize);
            file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
            if bytes.len() > limit {
                return Err(BlobStoreError::TooLarge { key, limit });
            }
            Ok(Some(SmallObject { bytes: Bytes::from(bytes), etag: etag_of(&meta) }))
        })
        .await
        .map_err(|join| BlobStoreError::Io(io::Error::other(join)))?
    }

    async fn put_small(&self, key: &str, bytes: Bytes, condition: PutCondition) -> Result<ETag> {
        let path = self.object_path(key)?;
        let temp = self.temp_path();
        let write = {
            let (path, temp, key) = (path.clone(), temp.clone(), key.to_owned());
            move || -> Result<ETag> {
                let current = absent_is_none(std::fs::metadata(&path))?;
                let allowed = match (&condition, &current) {
                    (PutCondition::Always, _) | (PutCondition::IfAbsent, None) => true,
                    (PutCondition::IfMatch(expected), Some(meta)) => etag_of(meta) == *expected,
                    (PutCondition::IfAbsent, Some(_)) | (PutCondition::IfMatch(_), None) => false,
                };
                if !allowed {
                    return Err(BlobStoreError::PreconditionFailed(key));
                }
                write_new_file(&temp, &bytes)?;
                rename_into_place(&temp, &path)?;
                Ok(etag_of(&std::fs::metadata(&path)?))
            }
        };
        let res = self.locked(key, write).await;
        if res.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        res
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.object_path(key)?;
        let objects = self.root.join("objects");
        self.locked(key, move || {
            match std::fs::remove_file(&path) {
                // A name with keys below it is a directory here, not an object: nothing to delete.
                Err(_) if path.is_dir() => return Ok(()),
                res => absent_is_none(res)?,
            };
            if let Some(parent) = path.parent() {
                remove_empty_parents(parent, &objects);
            }
            Ok(())
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        delimited: bool,
    ) -> Result<ListPage> {
        validate_prefix(prefix)?;
        let dir = self.root.join("objects").join(prefix);
        let start_after = start_after.unwrap_or("").to_owned();
        tokio::task::spawn_blocking(move || {
            let mut entries = Vec::new();
            if delimited {
                list_dir(&dir, &start_after, limit + 1, &mut entries)?;
            } else {
                walk(&dir, "", &start_after, limit + 1, &mut entries)?;
            }
            let truncated = entries.len() > limit;
            entries.truncate(limit);
            Ok(ListPage { entries, truncated })
        })
        .await
        .map_err(|join| BlobStoreError::Io(io::Error::other(join)))?
    }

    async fn list_meta(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<MetaPage> {
        validate_prefix(prefix)?;
        let dir = self.root.join("objects").join(prefix);
        let start_after = start_after.unwrap_or("").to_owned();
        // The walk and every stat in one trip to the blocking pool.
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            walk(&dir, "", &start_after, limit + 1, &mut keys)?;
            let truncated = keys.len() > limit;
            keys.truncate(limit);
            let mut entries = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(meta) = absent_is_none(std::fs::metadata(dir.join(&key)))? {
                    entries.push((key, meta_of(&meta)));
                }
            }
            Ok(MetaPage { entries, truncated })
        })
        .await
        .map_err(|join| BlobStoreError::Io(io::Error::other(join)))?
    }

    async fn stage_create(&self, id: &str) -> Result<()> {
        let path = self.stage_path(id)?;
        tokio::fs::OpenOptions::new().write(true).create_new(true).open(path).await?;
        Ok(())
    }

    async fn stage_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64> {
        let path = self.stage_path(id)?;
        let opened = tokio::task::spawn_blocking(move || -> io::Result<Option<(std::fs::File, u64)>> {
            let Some(file) = absent_is_none(std::fs::OpenOptions::new().write(true).open(&path))? else {
                return Ok(None);
            };
            let size = file.metadata()?.len();
            Ok(Some((file, size)))
        })
        .await
        .map_err(io::Error::other)??;
        let Some((mut file, size)) = opened else {
            return Err(BlobStoreError::NotFound(id.to_owned()));
        };
        if size != offset {
            return Err(BlobStoreError::PreconditionFailed(format!("{id} holds {size} bytes, not {offset}")));
        }
        io::Seek::seek(&mut file, io::SeekFrom::Start(offset))?;
        let mut appender = Appender::new(file, offset, self.take_writeback(id));
        let appended = appender.append(body).await;
        let written = join(appender.writing.take()).await;
        // The writeback goes on past this request either way: it may cover bytes of earlier
        // appends, so its failure must still reach the next append or the commit.
        if let Some(task) = appender.writeback.take() {
            self.writebacks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id.to_owned(), task);
        }
        match appended.and(written) {
            Ok(()) => Ok(appender.end),
            Err(err) => {
                // Undo the partial append so the upload can be resumed from `offset`.
                let file = appender.file;
                tokio::task::spawn_blocking(move || file.set_len(offset)).await.map_err(io::Error::other)??;
                Err(BlobStoreError::Io(err))
            }
        }
    }

    async fn stage_read(&self, id: &str) -> Result<ByteStream> {
        let path = self.stage_path(id)?;
        let Some(file) = absent_is_none(tokio::fs::File::open(&path).await)? else {
            return Err(BlobStoreError::NotFound(id.to_owned()));
        };
        let len = file.metadata().await?.len();
        Ok(file_stream(file.into_std().await, 0, len))
    }

    async fn stage_size(&self, id: &str) -> Result<Option<u64>> {
        let path = self.stage_path(id)?;
        Ok(absent_is_none(tokio::fs::metadata(&path).await)?.map(|m| m.len()))
    }

    async fn stage_commit(&self, id: &str, key: &str) -> Result<()> {
        let from = self.stage_path(id)?;
        let to = self.object_path(key)?;
        join(self.take_writeback(id)).await?;
        tokio::task::spawn_blocking(move || {
            let Some(file) = absent_is_none(std::fs::File::open(&from))? else {
                return Err(BlobStoreError::NotFound(from.display().to_string()));
            };
            file.sync_all()?;
            rename_into_place(&from, &to)?;
            Ok(())
        })
        .await
        .map_err(|join| BlobStoreError::Io(io::Error::other(join)))?
    }

    async fn stage_abort(&self, id: &str) -> Result<()> {
        let path = self.stage_path(id)?;
        // A writeback still running finishes on its own; nobody needs its answer.
        drop(self.take_writeback(id));
        absent_is_none(tokio::fs::remove_file(&path).await)?;
        Ok(())
    }

    async fn stale_stages(&self, older_than: Duration) -> Result<Vec<String>> {
        let dir = self.root.join("staging");
        tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            let mut stale = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let modified = entry.metadata()?.modified()?;
                if now.duration_since(modified).unwrap_or_default() > older_than {
                    stale.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            Ok(stale)
        })
        .await
        .map_err(|join| BlobStoreError::Io(io::Error::other(join)))?
    }
}

/// Sorted names of a directory, each directory name followed by `/` for ordering, so that the
/// order of names is the byte order of the full keys below them.
fn sorted_entries(dir: &Path) -> io::Result<Vec<(String, bool)>> {
    let Some(read) = absent_is_none(std::fs::read_dir(dir))? else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for entry in read {
        let entry = entry?;
        let is_dir = entry.file_type()?.is_dir();
        let name = entry.file_name().to_string_lossy().into_owned();
        names.push((if is_dir { format!("{name}/") } else { name }, is_dir));
    }
    names.sort();
    Ok(names)
}

/// Names directly below `dir` that sort after `start_after`, in byte order of the names themselves
/// (not of `name/`: a directory `a` comes before a file `a-x`, as `start_after` compares them).
fn list_dir(dir: &Path, start_after: &str, want: usize, out: &mut Vec<String>) -> io::Result<()> {
    let mut names: Vec<String> = sorted_entries(dir)?
        .into_iter()
        .map(|(name, is_dir)| if is_dir { name.trim_end_matches('/').to_owned() } else { name })
        .filter(|name| name.as_str() > start_after)
        .collect();
    names.sort();
    out.extend(names.into_iter().take(want.saturating_sub(out.len())));
    Ok(())
}

/// Depth-first walk in key order, skipping subtrees that sort entirely before `start_after`.
fn walk(dir: &Path, rel: &str, start_after: &str, want: usize, out: &mut Vec<String>) -> io::Result<()> {
    for (name, is_dir) in sorted_entries(dir)? {
        if out.len() >= want {
            return Ok(());
        }
        let key = format!("{rel}{name}");
        if is_dir {
            if key.as_str() < start_after && !start_after.starts_with(&key) {
                continue;
            }
            walk(&dir.join(name.trim_end_matches('/')), &key, start_after, want, out)?;
        } else if key.as_str() > start_after {
            out.push(key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(bytes: Vec<u8>) -> ByteStream {
        Box::pin(futures::stream::iter(bytes.chunks(300_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect::<Vec<_>>()))
    }

    /// Appends crossing writeback steps leave their flush running for the next append or the
    /// commit, which wait for it; the bytes come out whole and in order.
    #[tokio::test]
    async fn writeback_outlives_the_append_until_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        store.stage_create("up").await.unwrap();
        let step = WRITEBACK_STEP as usize;
        let parts: Vec<Vec<u8>> = [step + 5, step, 17].iter().enumerate().map(|(i, n)| vec![i as u8 + 1; *n]).collect();
        let mut offset = 0;
        for part in &parts {
            offset = store.stage_append("up", offset, body_of(part.clone())).await.unwrap();
        }
        assert_eq!(offset as usize, parts.iter().map(Vec::len).sum::<usize>());
        assert!(store.writebacks.lock().unwrap().contains_key("up"), "the last flush was left running");
        store.stage_commit("up", "blob").await.unwrap();
        assert!(store.writebacks.lock().unwrap().is_empty(), "the commit waited for it");
        let stored = std::fs::read(dir.path().join("objects/blob")).unwrap();
        assert_eq!(stored, parts.concat());
    }

    /// Writers and deleters of neighbouring keys: each delete removes the parents it empties while
    /// the others create them again. No write may fail for it (`create_dir_all` once answered
    /// `File exists` when the directory it had just seen was removed before it looked again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writes_beside_deletes_that_empty_their_directory_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FsBlobStore::open(dir.path()).await.unwrap());
        let tasks: Vec<_> = (0..4)
            .map(|worker| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = format!("a/b/c/{worker}");
                    for _ in 0..2_000 {
                        store.put_small(&key, Bytes::new(), PutCondition::Always).await.unwrap();
                        store.delete(&key).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(!dir.path().join("objects/a").exists(), "the last delete removed the emptied parents");
    }
}
