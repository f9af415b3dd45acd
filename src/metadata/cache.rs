//! The read cache of the manifest path: small objects (tags, manifest links, manifest bytes) and
//! first pages of delimited listings (a subject's referrer links), kept for [`TTL`] at most, so a
//! pull, gated or not, costs no store request while what it reads is cached.
//!
//! Two rules keep it correct. Every write and delete made through this process passes through
//! [`Forgetting`], which forgets the object and every listing above it once the store answered,
//! so a change takes effect at once on the replica that made it; a read that was in flight while
//! anything was forgotten is not cached, so it cannot put back what a write replaced. A change
//! made by another replica sharing the store is seen when the entry expires: within [`TTL`].
//!
//! Only reads that ask for it are cached (`Metadata::cached`): writers that decide from what they
//! read (tag rules, collection, scrub) read the store itself. Bounded by [`MAX_ENTRIES`] and
//! [`MAX_BYTES`], least recently used out first.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use storage::{BlobStore, BlobStoreError, ByteStream, ETag, ListPage, MetaPage, ObjectMeta, ObjectReader, PutCondition, SmallObject};

/// How long an entry is served: the bound on seeing another replica's change.
pub const TTL: Duration = Duration::from_secs(1);
/// The most entries held.
pub const MAX_ENTRIES: usize = 16_384;
/// The most bytes held (keys, objects and listed names).
pub const MAX_BYTES: usize = 64 << 20;
/// The largest entry kept; a larger one is read from the store every time.
const MAX_ENTRY_BYTES: usize = MAX_BYTES / 16;
/// What an entry costs beyond its bytes (map node, `Instant`, lengths).
const ENTRY_OVERHEAD: usize = 96;

/// The cache shared by a [`Forgetting`] store and the reads that use it.
pub struct ReadCache {
    state: Mutex<State>,
}

/// A store whose writes and deletes make `cache` forget what they change.
pub struct Forgetting {
    inner: Arc<dyn BlobStore>,
    cache: Arc<ReadCache>,
}

struct State {
    entries: lru::LruCache<Slot, Entry>,
    bytes: usize,
    /// Counts what was forgotten: a read that saw it change while it was in flight keeps its
    /// answer to itself.
    generation: u64,
}

#[derive(Hash, PartialEq, Eq)]
enum Slot {
    Object(String),
    /// The first page of the delimited listing of a prefix.
    Listing(String),
}

struct Entry {
    value: Value,
    read_at: Instant,
    bytes: usize,
}

#[derive(Clone)]
enum Value {
    Object(Option<SmallObject>),
    Listing { limit: usize, page: ListPage },
}

impl Default for ReadCache {
    fn default() -> ReadCache {
        let capacity = NonZeroUsize::new(MAX_ENTRIES).expect("MAX_ENTRIES is not zero");
        ReadCache { state: Mutex::new(State { entries: lru::LruCache::new(capacity), bytes: 0, generation: 0 }) }
    }
}

impl ReadCache {
    /// `store.get_small(key, limit)`, answered from the cache when an entry is fresh.
    pub async fn get_small(&self, store: &dyn BlobStore, key: &str, limit: usize) -> storage::Result<Option<SmallObject>> {
        let slot = Slot::Object(key.to_owned());
        let object = match self.lookup(&slot) {
            Ok(Value::Object(object)) => object,
            Ok(Value::Listing { .. }) => unreachable!("object slots hold objects"),
            Err(generation) => {
                let asked = Instant::now();
                // What is kept is the whole object (or its absence), so it serves callers with
                // other limits too; one over this caller's limit is its error, not kept.
                let object = store.get_small(key, limit).await?;
                let bytes = key.len() + object.as_ref().map_or(0, |object| object.bytes.len() + object.etag.0.len());
                self.insert(slot, Value::Object(object.clone()), bytes, generation, asked);
                object
            }
        };
        match object {
            Some(object) if object.bytes.len() > limit => Err(BlobStoreError::TooLarge { key: key.to_owned(), limit }),
            object => Ok(object),
        }
    }

    /// The first page of `store.list(prefix, None, limit, true)`, answered from the cache when an
    /// entry for the same `limit` is fresh.
    pub async fn list_first(&self, store: &dyn BlobStore, prefix: &str, limit: usize) -> storage::Result<ListPage> {
        let slot = Slot::Listing(prefix.to_owned());
        let generation = match self.lookup(&slot) {
            Ok(Value::Listing { limit: cached_limit, page }) if cached_limit == limit => return Ok(page),
            Ok(_) => self.generation(),
            Err(generation) => generation,
        };
        let asked = Instant::now();
        let page = store.list(prefix, None, limit, true).await?;
        let bytes = prefix.len() + page.entries.iter().map(String::len).sum::<usize>();
        self.insert(slot, Value::Listing { limit, page: page.clone() }, bytes, generation, asked);
        Ok(page)
    }

    /// Forgets `key` and the listings of every prefix above it.
    fn forget(&self, key: &str) {
        let mut state = self.state.lock().expect("cache lock is never poisoned");
        state.generation += 1;
        state.remove(&Slot::Object(key.to_owned()));
        for (end, _) in key.match_indices('/') {
            state.remove(&Slot::Listing(key[..=end].to_owned()));
        }
    }

    /// The fresh value in `slot`, or the generation to insert a new one under.
    fn lookup(&self, slot: &Slot) -> Result<Value, u64> {
        let mut state = self.state.lock().expect("cache lock is never poisoned");
        match state.entries.get(slot) {
            Some(entry) if entry.read_at.elapsed() < TTL => Ok(entry.value.clone()),
            Some(_) => {
                state.remove(slot);
                Err(state.generation)
            }
            None => Err(state.generation),
        }
    }

    fn generation(&self) -> u64 {
        self.state.lock().expect("cache lock is never poisoned").generation
    }

    /// Keeps what was read at `generation`, unless something was forgotten since. Its age counts
    /// from when the store was `asked`, so a slow read does not stretch the TTL.
    fn insert(&self, slot: Slot, value: Value, bytes: usize, generation: u64, asked: Instant) {
        let bytes = bytes + ENTRY_OVERHEAD;
        let mut state = self.state.lock().expect("cache lock is never poisoned");
        if state.generation != generation || bytes > MAX_ENTRY_BYTES {
            return;
        }
        state.remove(&slot);
        if let Some((_, evicted)) = state.entries.push(slot, Entry { value, read_at: asked, bytes }) {
            state.bytes -= evicted.bytes;
        }
        state.bytes += bytes;
        while state.bytes > MAX_BYTES {
            let Some((_, evicted)) = state.entries.pop_lru() else { break };
            state.bytes -= evicted.bytes;
        }
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let state = self.state.lock().expect("cache lock is never poisoned");
        (state.entries.len(), state.bytes)
    }
}

impl State {
    fn remove(&mut self, slot: &Slot) {
        if let Some(entry) = self.entries.pop(slot) {
            self.bytes -= entry.bytes;
        }
    }
}

impl Forgetting {
    /// `inner`, forgetting in `cache` what each write changes.
    pub fn new(inner: Arc<dyn BlobStore>, cache: Arc<ReadCache>) -> Forgetting {
        Forgetting { inner, cache }
    }
}

#[async_trait::async_trait]
impl BlobStore for Forgetting {
    async fn stat(&self, key: &str) -> storage::Result<Option<ObjectMeta>> {
        self.inner.stat(key).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> storage::Result<Option<ObjectReader>> {
        self.inner.get(key, range).await
    }

    async fn get_small(&self, key: &str, limit: usize) -> storage::Result<Option<SmallObject>> {
        self.inner.get_small(key, limit).await
    }

    // A failed write may still have written (a timeout), so what it touched is forgotten either way.
    async fn put_small(&self, key: &str, bytes: Bytes, condition: PutCondition) -> storage::Result<ETag> {
        let written = self.inner.put_small(key, bytes, condition).await;
        self.cache.forget(key);
        written
    }

    async fn delete(&self, key: &str) -> storage::Result<()> {
        let deleted = self.inner.delete(key).await;
        self.cache.forget(key);
        deleted
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize, delimited: bool) -> storage::Result<ListPage> {
        self.inner.list(prefix, start_after, limit, delimited).await
    }

    async fn list_meta(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> storage::Result<MetaPage> {
        self.inner.list_meta(prefix, start_after, limit).await
    }

    async fn stage_create(&self, id: &str) -> storage::Result<()> {
        self.inner.stage_create(id).await
    }

    async fn stage_append(&self, id: &str, offset: u64, body: ByteStream) -> storage::Result<u64> {
        self.inner.stage_append(id, offset, body).await
    }

    async fn stage_read(&self, id: &str) -> storage::Result<ByteStream> {
        self.inner.stage_read(id).await
    }

    async fn stage_size(&self, id: &str) -> storage::Result<Option<u64>> {
        self.inner.stage_size(id).await
    }

    async fn stage_commit(&self, id: &str, key: &str) -> storage::Result<()> {
        let committed = self.inner.stage_commit(id, key).await;
        self.cache.forget(key);
        committed
    }

    async fn stage_abort(&self, id: &str) -> storage::Result<()> {
        self.inner.stage_abort(id).await
    }

    async fn stale_stages(&self, older_than: Duration) -> storage::Result<Vec<String>> {
        self.inner.stale_stages(older_than).await
    }

    async fn abort_stale_uploads(&self, older_than: Duration) -> storage::Result<usize> {
        self.inner.abort_stale_uploads(older_than).await
    }

    async fn presigned_get(&self, key: &str, expires: Duration) -> storage::Result<Option<String>> {
        self.inner.presigned_get(key, expires).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn setup() -> (tempfile::TempDir, Arc<dyn BlobStore>, Arc<ReadCache>, Forgetting) {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn BlobStore> = Arc::new(storage::FsBlobStore::open(dir.path()).await.unwrap());
        let cache = Arc::new(ReadCache::default());
        let store = Forgetting::new(inner.clone(), cache.clone());
        (dir, inner, cache, store)
    }

    async fn read(cache: &ReadCache, store: &dyn BlobStore, key: &str) -> Option<Bytes> {
        cache.get_small(store, key, 1024).await.unwrap().map(|object| object.bytes)
    }

    #[tokio::test]
    async fn a_write_here_is_seen_at_once_one_elsewhere_within_the_ttl() {
        let (_dir, inner, cache, store) = setup().await;
        store.put_small("r/_tags/v1", Bytes::from("a"), PutCondition::Always).await.unwrap();
        assert_eq!(read(&cache, &store, "r/_tags/v1").await, Some(Bytes::from("a")));
        store.put_small("r/_tags/v1", Bytes::from("b"), PutCondition::Always).await.unwrap();
        assert_eq!(read(&cache, &store, "r/_tags/v1").await, Some(Bytes::from("b")), "a write here is seen at once");
        // Another replica writes to the store itself.
        inner.put_small("r/_tags/v1", Bytes::from("c"), PutCondition::Always).await.unwrap();
        assert_eq!(read(&cache, &store, "r/_tags/v1").await, Some(Bytes::from("b")), "cached");
        tokio::time::sleep(TTL).await;
        assert_eq!(read(&cache, &store, "r/_tags/v1").await, Some(Bytes::from("c")), "expired");
        store.delete("r/_tags/v1").await.unwrap();
        assert_eq!(read(&cache, &store, "r/_tags/v1").await, None, "a delete here is seen at once");
        assert!(cache.get_small(&store, "big", 0).await.unwrap().is_none(), "absence is cached too");
        store.put_small("big", Bytes::from("xy"), PutCondition::Always).await.unwrap();
        assert!(matches!(cache.get_small(&store, "big", 1).await, Err(BlobStoreError::TooLarge { .. })));
        assert_eq!(read(&cache, &store, "big").await, Some(Bytes::from("xy")), "the limit is the caller's");
    }

    #[tokio::test]
    async fn writes_below_a_prefix_forget_its_listing() {
        let (_dir, inner, cache, store) = setup().await;
        let names = |page: ListPage| page.entries;
        store.put_small("r/_referrers/s/a", Bytes::new(), PutCondition::Always).await.unwrap();
        assert_eq!(names(cache.list_first(&store, "r/_referrers/s/", 10).await.unwrap()), ["a"]);
        store.put_small("r/_referrers/s/b", Bytes::new(), PutCondition::Always).await.unwrap();
        assert_eq!(names(cache.list_first(&store, "r/_referrers/s/", 10).await.unwrap()), ["a", "b"]);
        inner.delete("r/_referrers/s/a").await.unwrap();
        assert_eq!(names(cache.list_first(&store, "r/_referrers/s/", 10).await.unwrap()), ["a", "b"], "cached");
        assert_eq!(names(cache.list_first(&store, "r/_referrers/s/", 1).await.unwrap()), ["b"], "another limit reads again");
        store.stage_create("u").await.unwrap();
        store.stage_commit("u", "r/_referrers/s/c").await.unwrap();
        assert_eq!(names(cache.list_first(&store, "r/_referrers/s/", 10).await.unwrap()), ["b", "c"]);
    }

    #[tokio::test]
    async fn held_within_bounds() {
        let (_dir, _inner, cache, store) = setup().await;
        let big = Bytes::from(vec![b'x'; MAX_ENTRY_BYTES - 1024]);
        for n in 0..20 {
            store.put_small(&format!("big/{n}"), big.clone(), PutCondition::Always).await.unwrap();
            cache.get_small(&store, &format!("big/{n}"), MAX_ENTRY_BYTES).await.unwrap();
        }
        let (_, bytes) = cache.held();
        assert!(bytes <= MAX_BYTES && bytes > MAX_BYTES - MAX_ENTRY_BYTES, "{bytes}");
        for n in 0..MAX_ENTRIES + 10 {
            cache.get_small(&store, &format!("absent/{n}"), 1).await.unwrap();
        }
        let (entries, bytes) = cache.held();
        assert_eq!(entries, MAX_ENTRIES);
        assert!(bytes <= MAX_BYTES, "{bytes}");
    }
}
