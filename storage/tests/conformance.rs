//! The conformance suite of the `BlobStore` contract, run against every backend.
//!
//! Each check is a plain `async fn(Arc<dyn BlobStore>)` that knows nothing about the backend under
//! test. The `conformance!` macro turns the list of checks into one `#[tokio::test]` per check and
//! backend (`fs::put_if_match`, later `s3::put_if_match`), each on a fresh, empty store, so a
//! failure names the broken promise and the backend that broke it.
//!
//! To add a backend, write a function returning a fresh, empty store and whatever keeps it alive
//! (for S3, a bucket of its own per test), or `None` when the backend is not available here, and
//! invoke the macro once more, as for `s3`. The suite deliberately checks only what the crate doc of
//! `portcullis-storage` promises; it does not look at a backend's files or requests.
//!
//! The S3 checks run against the server named by `PORTCULLIS_TEST_S3_ENDPOINT` (see
//! `tests/common/mod.rs`); without one they return early, or fail when `CI` or
//! `PORTCULLIS_REQUIRE_S3` is set.
//!
//! Known gap of the fs backend, not checked here: a key cannot also be a "directory" of other keys
//! (`a` and `a/b`), because both would be the same path on disk.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use portcullis_storage as storage;
use storage::{BlobStore, BlobStoreError, ByteStream, ListPage, PutCondition};

/// Generates one `#[tokio::test]` per check for one backend, inside `mod $backend`.
/// `$make` is an async fn returning `Some((Arc<dyn BlobStore>, guard))`, or `None` to skip the
/// check; the guard lives until the check ends (for fs, the temp dir).
macro_rules! conformance {
    ($(#[$attr:meta])* $backend:ident, $make:ident) => {
        conformance!(@backend [$(#[$attr])*] $backend, $make;
            small_round_trip,
            put_if_absent,
            put_if_match,
            etags_of_versions_differ,
            race_if_absent,
            race_compare_and_swap,
            delete,
            list_order,
            list_start_after,
            list_pagination,
            list_delimited,
            list_missing_prefix,
            list_meta,
            get_range,
            get_large_object,
            staged_upload,
            stage_append_wrong_offset,
            stage_append_failure_keeps_size,
            stage_abort,
            stale_stages,
            invalid_keys,
        );
    };
    (@backend [$(#[$attr:meta])*] $backend:ident, $make:ident; $($check:ident),* $(,)?) => {
        $(#[$attr])*
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let Some((store, _guard)) = super::$make().await else { return };
                    super::$check(store).await;
                }
            )*
        }
    };
}

conformance!(fs, fs_store);
conformance!(#[cfg(feature = "s3")] s3, s3_store);

#[cfg(feature = "s3")]
mod common;

/// A filesystem store in a fresh temp dir, removed when the guard drops.
async fn fs_store() -> Option<(Arc<dyn BlobStore>, tempfile::TempDir)> {
    let dir = tempfile::TempDir::new().expect("the system temp dir is writable");
    let store = storage::FsBlobStore::open(dir.path()).await.expect("a fresh temp dir opens as a store");
    Some((Arc::new(store), dir))
}

/// An S3 store on a fresh bucket of the test server, with 5 MiB parts; `None` without a server.
#[cfg(feature = "s3")]
async fn s3_store() -> Option<(Arc<dyn BlobStore>, ())> {
    let s3 = common::TestS3::from_env()?;
    let (store, _config) = s3.fresh_store().await;
    Some((Arc::new(store), ()))
}

/// Asserts that `$res` is an `Err` matching `$pattern`, printing what it was otherwise.
macro_rules! assert_err {
    ($res:expr, $pattern:pat $(if $guard:expr)?) => {
        match $res {
            Err($pattern) $(if $guard)? => {}
            other => panic!("expected Err({}), got {:?}", stringify!($pattern), other),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Small objects

async fn small_round_trip(store: Arc<dyn BlobStore>) {
    let etag = store.put_small("meta/a", Bytes::from_static(b"hello"), PutCondition::Always).await.unwrap();
    let small = store.get_small("meta/a", 1024).await.unwrap().expect("just written");
    assert_eq!(small.bytes, Bytes::from_static(b"hello"));
    assert_eq!(small.etag, etag, "get_small reports the version put_small returned");

    let meta = store.stat("meta/a").await.unwrap().expect("just written");
    assert_eq!(meta.size, 5);
    assert_eq!(meta.etag, small.etag, "stat and get_small agree on the version");
    let reader = store.get("meta/a", None).await.unwrap().expect("just written");
    assert_eq!(reader.meta, meta, "get and stat agree on size and version");
    assert_eq!(collect(reader.body).await, b"hello");

    // The limit is inclusive: an object of exactly `limit` bytes is small enough.
    assert_eq!(store.get_small("meta/a", 5).await.unwrap().expect("just written").bytes, &b"hello"[..]);
    assert_err!(
        store.get_small("meta/a", 4).await,
        BlobStoreError::TooLarge { key, limit } if key == "meta/a" && limit == 4
    );

    // An empty object is an object, not an absence.
    store.put_small("meta/empty", Bytes::new(), PutCondition::Always).await.unwrap();
    assert_eq!(store.get_small("meta/empty", 0).await.unwrap().expect("empty object exists").bytes.len(), 0);
    assert_eq!(store.stat("meta/empty").await.unwrap().expect("empty object exists").size, 0);

    // `Always` replaces.
    let replaced =
        store.put_small("meta/a", Bytes::from_static(b"world!"), PutCondition::Always).await.unwrap();
    let small = store.get_small("meta/a", 1024).await.unwrap().expect("just written");
    assert_eq!(small.bytes, &b"world!"[..]);
    assert_eq!(small.etag, replaced);
    assert_ne!(replaced, etag, "a new content has a new version");

    assert!(store.get_small("meta/absent", 1024).await.unwrap().is_none());
    assert!(store.stat("meta/absent").await.unwrap().is_none());
    assert!(store.get("meta/absent", None).await.unwrap().is_none());
    // A key below an object is absent too, not an error.
    assert!(store.stat("meta/a/below").await.unwrap().is_none());
    assert!(store.get_small("meta/a/below", 1024).await.unwrap().is_none());
    // A "directory" (a prefix of other keys) is not an object.
    assert!(store.stat("meta").await.unwrap().is_none());
    assert!(store.get_small("meta", 1024).await.unwrap().is_none());
    assert!(store.get("meta", None).await.unwrap().is_none());
}

async fn put_if_absent(store: Arc<dyn BlobStore>) {
    let etag =
        store.put_small("tags/v1", Bytes::from_static(b"first"), PutCondition::IfAbsent).await.unwrap();
    assert_err!(
        store.put_small("tags/v1", Bytes::from_static(b"second"), PutCondition::IfAbsent).await,
        BlobStoreError::PreconditionFailed(_)
    );
    let small = store.get_small("tags/v1", 1024).await.unwrap().expect("the first write stays");
    assert_eq!(small.bytes, &b"first"[..]);
    assert_eq!(small.etag, etag, "a refused write leaves the version alone");
}

async fn put_if_match(store: Arc<dyn BlobStore>) {
    // Same-length contents, so that a version cannot be told apart by size alone.
    let first = store.put_small("link", Bytes::from_static(b"v1"), PutCondition::Always).await.unwrap();
    let second = store
        .put_small("link", Bytes::from_static(b"v2"), PutCondition::IfMatch(first.clone()))
        .await
        .unwrap();
    assert_ne!(second, first);
    let small = store.get_small("link", 1024).await.unwrap().expect("just written");
    assert_eq!(small.bytes, &b"v2"[..]);
    assert_eq!(small.etag, second);

    assert_err!(
        store.put_small("link", Bytes::from_static(b"v3"), PutCondition::IfMatch(first)).await,
        BlobStoreError::PreconditionFailed(_)
    );
    let small = store.get_small("link", 1024).await.unwrap().expect("still there");
    assert_eq!(small.bytes, &b"v2"[..], "a stale version does not overwrite");
    assert_eq!(small.etag, second);

    assert_err!(
        store.put_small("absent", Bytes::from_static(b"v1"), PutCondition::IfMatch(second.clone())).await,
        BlobStoreError::PreconditionFailed(_)
    );
    assert!(store.stat("absent").await.unwrap().is_none(), "a refused IfMatch creates nothing");

    // A deleted object is absent for IfMatch too.
    store.delete("link").await.unwrap();
    assert_err!(
        store.put_small("link", Bytes::from_static(b"v4"), PutCondition::IfMatch(second)).await,
        BlobStoreError::PreconditionFailed(_)
    );
    assert!(store.stat("link").await.unwrap().is_none());
}

/// Compare-and-swap is only safe if no two versions with different contents share an etag: a
/// writer holding an old etag must never match a later version (the ABA problem).
async fn etags_of_versions_differ(store: Arc<dyn BlobStore>) {
    let mut etags =
        vec![store.put_small("cas", Bytes::from_static(b"v00"), PutCondition::Always).await.unwrap()];
    for version in 1..40 {
        let current = etags.last().expect("starts non-empty").clone();
        let content = Bytes::from(format!("v{version:02}"));
        let etag = store.put_small("cas", content, PutCondition::IfMatch(current)).await.unwrap();
        assert!(!etags.contains(&etag), "version {version} reuses the etag {etag:?} of an earlier version");
        etags.push(etag);
    }
    for stale in &etags[..etags.len() - 1] {
        assert_err!(
            store.put_small("cas", Bytes::from_static(b"xxx"), PutCondition::IfMatch(stale.clone())).await,
            BlobStoreError::PreconditionFailed(_)
        );
    }
    assert_eq!(store.get_small("cas", 16).await.unwrap().expect("written").bytes, &b"v39"[..]);
}

async fn race_if_absent(store: Arc<dyn BlobStore>) {
    const WRITERS: usize = 32;
    // The barrier releases every writer at once, so that their checks and writes interleave.
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let content = Bytes::from(format!("written by writer {writer:02}"));
                barrier.wait().await;
                let res = store.put_small("race/key", content.clone(), PutCondition::IfAbsent).await;
                (content, res)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (content, res) = task.await.expect("writer task does not panic");
        match res {
            Ok(etag) => winners.push((content, etag)),
            Err(BlobStoreError::PreconditionFailed(_)) => {}
            Err(err) => panic!("a losing IfAbsent write must fail its precondition, got {err:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one IfAbsent write wins: {winners:?}");
    let (content, etag) = winners.pop().expect("checked above");
    let stored = store.get_small("race/key", 1024).await.unwrap().expect("the winner wrote it");
    assert_eq!(stored.bytes, content, "the stored bytes are the winner's");
    assert_eq!(stored.etag, etag);
}

async fn race_compare_and_swap(store: Arc<dyn BlobStore>) {
    const INCREMENTS: u64 = 16;
    store.put_small("counter", Bytes::from_static(b"0"), PutCondition::IfAbsent).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(INCREMENTS as usize));
    let tasks: Vec<_> = (0..INCREMENTS)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // Every failed attempt means another increment succeeded, so 16 tasks cannot fail
                // more than 16 times each; the bound only turns a livelock into a failure.
                for _attempt in 0..10 * INCREMENTS {
                    let current = store.get_small("counter", 64).await.unwrap().expect("initialised above");
                    let value: u64 = std::str::from_utf8(&current.bytes).unwrap().parse().unwrap();
                    let next = Bytes::from((value + 1).to_string());
                    match store.put_small("counter", next, PutCondition::IfMatch(current.etag)).await {
                        Ok(_) => return value + 1,
                        Err(BlobStoreError::PreconditionFailed(_)) => continue,
                        Err(err) => panic!("compare-and-swap failed with {err:?}"),
                    }
                }
                panic!("no increment succeeded after {} attempts", 10 * INCREMENTS);
            })
        })
        .collect();
    let mut written = Vec::new();
    for task in tasks {
        written.push(task.await.expect("increment task does not panic"));
    }
    // Each successful swap replaced a distinct predecessor, so the values written are 1..=16.
    written.sort_unstable();
    assert_eq!(written, (1..=INCREMENTS).collect::<Vec<_>>(), "an increment was lost or duplicated");
    let stored = store.get_small("counter", 64).await.unwrap().expect("still there");
    assert_eq!(stored.bytes, INCREMENTS.to_string().as_bytes());
}

async fn delete(store: Arc<dyn BlobStore>) {
    put(&store, "d/x/y", b"y").await;
    put(&store, "d/z", b"z").await;
    put(&store, "d/w/deep/er", b"er").await;
    assert_eq!(names(&store, "d/").await, ["w", "x", "z"]);

    store.delete("d/x/y").await.unwrap();
    store.delete("d/x/y").await.expect("deleting an absent object succeeds");
    store.delete("never/was").await.expect("deleting a never-written key succeeds");
    assert!(store.get_small("d/x/y", 1024).await.unwrap().is_none());
    assert!(store.get("d/x/y", None).await.unwrap().is_none());
    assert!(store.stat("d/x/y").await.unwrap().is_none());
    assert_eq!(names(&store, "d/").await, ["w", "z"], "the emptied directory is gone from the listing");

    // A name that is only a "directory" holds no object: deleting it succeeds and leaves the keys
    // below it alone.
    store.delete("d/w").await.expect("deleting a directory-only name succeeds");
    store.delete("d/w/deep").await.expect("deleting a directory-only name succeeds");
    assert_eq!(read(&store, "d/w/deep/er").await.as_deref(), Some(&b"er"[..]));

    store.delete("d/w/deep/er").await.unwrap();
    assert_eq!(names(&store, "d/").await, ["z"], "emptied nested directories are gone too");
    store.delete("d/z").await.unwrap();
    assert_eq!(names(&store, "").await, Vec::<String>::new(), "the last delete empties the parent");
    assert_eq!(store.list("d/", None, 10, false).await.unwrap(), ListPage::default());
}

// ---------------------------------------------------------------------------------------------
// Listing

/// Keys whose names differ by characters sorting just before and after `/` (`-` 0x2d, `.` 0x2e,
/// `/` 0x2f, `0` 0x30, `_` 0x5f), so that listing in byte order of full keys differs from
/// listing in order of directory names.
const NESTED_KEYS: [&str; 12] =
    ["a-x", "a.b", "a/b", "a/b-c", "a/b.c", "a/b_c", "a/c/d", "a/c/d-e", "a0", "a_b", "b/c/d/e", "c"];

/// A key that is a prefix of others without a `/` after it.
const FLAT_KEYS: [&str; 5] = ["a", "a-x", "a.b", "a0", "a_b"];

/// Writes `NESTED_KEYS` under `nested/` and `FLAT_KEYS` under `flat/`, in reverse byte order so
/// that no backend can pass by remembering insertion order.
async fn put_list_fixture(store: &Arc<dyn BlobStore>) {
    for key in NESTED_KEYS.iter().rev() {
        put(store, &format!("nested/{key}"), key.as_bytes()).await;
    }
    for key in FLAT_KEYS.iter().rev() {
        put(store, &format!("flat/{key}"), key.as_bytes()).await;
    }
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    keys.sort();
    keys
}

async fn list_order(store: Arc<dyn BlobStore>) {
    put_list_fixture(&store).await;
    let page = store.list("nested/", None, 1000, false).await.unwrap();
    assert_eq!(page.entries, sorted(&NESTED_KEYS), "keys in byte order, prefix removed");
    assert!(!page.truncated);
    let page = store.list("flat/", None, 1000, false).await.unwrap();
    assert_eq!(page.entries, sorted(&FLAT_KEYS));
    assert!(!page.truncated);

    let page = store.list("nested/a/", None, 1000, false).await.unwrap();
    assert_eq!(page.entries, ["b", "b-c", "b.c", "b_c", "c/d", "c/d-e"]);

    let mut everything: Vec<String> = NESTED_KEYS.iter().map(|k| format!("nested/{k}")).collect();
    everything.extend(FLAT_KEYS.iter().map(|k| format!("flat/{k}")));
    everything.sort();
    assert_eq!(store.list("", None, 1000, false).await.unwrap().entries, everything);
}

async fn list_start_after(store: Arc<dyn BlobStore>) {
    put_list_fixture(&store).await;
    // `start_after` need not be a key: any string cuts the listing there.
    let cuts = [
        "", "0", "a", "a-", "a-x", "a.b", "a/", "a/b", "a/b-", "a/b.c", "a/c", "a/c/d", "a/c/d-e", "a0",
        "a_", "b", "b/c/d/e", "c", "z",
    ];
    for cut in cuts {
        let expected: Vec<String> = sorted(&NESTED_KEYS).into_iter().filter(|k| k.as_str() > cut).collect();
        let page = store.list("nested/", Some(cut), 1000, false).await.unwrap();
        assert_eq!(page.entries, expected, "keys after {cut:?}");
        assert!(!page.truncated);
    }
}

async fn list_pagination(store: Arc<dyn BlobStore>) {
    put_list_fixture(&store).await;
    for (prefix, keys) in [("nested/", &NESTED_KEYS[..]), ("flat/", &FLAT_KEYS[..])] {
        let expected = sorted(keys);
        for limit in 1..=expected.len() + 1 {
            let pages = list_all_pages(&store, prefix, limit, false).await;
            check_pages(&pages, &expected, limit, &format!("{prefix} by {limit}"));
        }
    }
}

async fn list_delimited(store: Arc<dyn BlobStore>) {
    put_list_fixture(&store).await;
    // Names directly below the prefix, each once, objects and "directories" alike, in byte order.
    let nested_names = ["a", "a-x", "a.b", "a0", "a_b", "b", "c"];
    assert_eq!(names(&store, "nested/").await, nested_names);
    assert_eq!(names(&store, "nested/a/").await, ["b", "b-c", "b.c", "b_c", "c"]);
    assert_eq!(names(&store, "nested/b/c/").await, ["d"]);
    assert_eq!(names(&store, "flat/").await, sorted(&FLAT_KEYS));
    assert_eq!(names(&store, "").await, ["flat", "nested"]);

    for cut in ["", "a", "a-x", "a.b", "a/", "a0", "b", "c"] {
        let expected: Vec<&str> = nested_names.iter().copied().filter(|name| *name > cut).collect();
        let page = store.list("nested/", Some(cut), 1000, true).await.unwrap();
        assert_eq!(page.entries, expected, "names after {cut:?}");
    }

    let expected = sorted(&nested_names);
    for limit in 1..=expected.len() + 1 {
        let pages = list_all_pages(&store, "nested/", limit, true).await;
        check_pages(&pages, &expected, limit, &format!("names by {limit}"));
    }
}

async fn list_missing_prefix(store: Arc<dyn BlobStore>) {
    put(&store, "some/object", b"x").await;
    for delimited in [false, true] {
        for prefix in ["missing/", "some/missing/", "some/object/", "some/obj/"] {
            let page = store.list(prefix, None, 10, delimited).await.unwrap();
            assert_eq!(page, ListPage::default(), "{prefix} (delimited: {delimited})");
        }
    }
    store.delete("some/object").await.unwrap();
    assert_eq!(
        store.list("", None, 10, false).await.unwrap(),
        ListPage::default(),
        "an empty store lists nothing"
    );
    assert_eq!(store.list("", None, 10, true).await.unwrap(), ListPage::default());
}

async fn list_meta(store: Arc<dyn BlobStore>) {
    // S3 heads times in whole seconds.
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    put_list_fixture(&store).await;
    let expected = sorted(&NESTED_KEYS);
    // Pages as the plain listing's, each key with what stat says of it.
    for limit in [1, 3, expected.len(), expected.len() + 1] {
        let mut listed = Vec::new();
        let mut start_after: Option<String> = None;
        loop {
            let page = store.list_meta("nested/", start_after.as_deref(), limit).await.unwrap();
            assert!(page.entries.len() <= limit);
            start_after = page.entries.last().map(|(key, _)| key.clone());
            listed.extend(page.entries);
            if !page.truncated {
                break;
            }
        }
        let keys: Vec<String> = listed.iter().map(|(key, _)| key.clone()).collect();
        assert_eq!(keys, expected, "list_meta by {limit}");
        for (key, meta) in &listed {
            let stat = store.stat(&format!("nested/{key}")).await.unwrap().expect("listed");
            assert_eq!((meta.size, &meta.etag), (key.len() as u64, &stat.etag), "{key}: size and version as stored");
            // S3 lists times in milliseconds and heads them in seconds: they agree to the second.
            let apart = meta.modified.duration_since(stat.modified).unwrap_or_else(|err| err.duration());
            assert!(apart < Duration::from_secs(1), "{key}: listed {:?}, stat {:?}", meta.modified, stat.modified);
            assert!(meta.modified >= before, "{key} was written just now, not at {:?}", meta.modified);
        }
    }
    // Rewriting an object moves its time (garbage collection reads ages from it).
    let old = store.stat("nested/c").await.unwrap().expect("written").modified;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put(&store, "nested/c", b"c").await;
    let new = store.stat("nested/c").await.unwrap().expect("rewritten").modified;
    assert!(new > old, "rewritten at {new:?}, first written at {old:?}");
    assert_eq!(store.list_meta("missing/", None, 10).await.unwrap(), storage::MetaPage::default());
}

/// Lists `prefix` page by page, passing the last entry of each page as the next `start_after`.
async fn list_all_pages(
    store: &Arc<dyn BlobStore>,
    prefix: &str,
    limit: usize,
    delimited: bool,
) -> Vec<ListPage> {
    let mut pages: Vec<ListPage> = Vec::new();
    loop {
        let start_after = pages.last().and_then(|page| page.entries.last()).cloned();
        let page = store.list(prefix, start_after.as_deref(), limit, delimited).await.unwrap();
        let truncated = page.truncated;
        pages.push(page);
        assert!(pages.len() <= 100, "listing {prefix} by {limit} does not end");
        if !truncated {
            return pages;
        }
    }
}

/// Checks that `pages` hold `expected` exactly once, in order, at most `limit` per page, with
/// `truncated` set exactly on the pages that have a successor and no trailing empty page.
fn check_pages(pages: &[ListPage], expected: &[String], limit: usize, what: &str) {
    let all: Vec<String> = pages.iter().flat_map(|page| page.entries.clone()).collect();
    assert_eq!(all, expected, "{what}: every entry exactly once, in order; pages {pages:?}");
    assert_eq!(pages.len(), expected.len().div_ceil(limit).max(1), "{what}: page count; pages {pages:?}");
    for (n, page) in pages.iter().enumerate() {
        let last = n == pages.len() - 1;
        assert!(page.entries.len() <= limit, "{what}: page {n} exceeds the limit");
        assert_eq!(page.truncated, !last, "{what}: truncated flag of page {n}; pages {pages:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Ranged and streamed reads

async fn get_range(store: Arc<dyn BlobStore>) {
    let content = pattern(1000, 7);
    put(&store, "ranged", &content).await;
    for range in [0..1, 10..20, 0..1000, 999..1000, 250..750] {
        let reader = store.get("ranged", Some(range.clone())).await.unwrap().expect("written");
        assert_eq!(reader.meta.size, 1000, "meta describes the whole object, not the range");
        assert_eq!(
            collect(reader.body).await,
            &content[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    for range in [990..1001, 1000..1001, 2000..3000] {
        let res = store.get("ranged", Some(range.clone())).await.map(|reader| reader.map(|r| r.meta));
        assert_err!(
            res,
            BlobStoreError::RangeNotSatisfiable { start, end, size }
                if start == range.start && end == range.end && size == 1000
        );
    }
    assert!(store.get("absent", Some(0..1)).await.unwrap().is_none(), "absence wins over the range");
}

async fn get_large_object(store: Arc<dyn BlobStore>) {
    // Bigger than any sensible read buffer, and not a multiple of a power of two.
    let content = pattern(5 * 1024 * 1024 + 12_345, 42);
    let id = "large-upload";
    store.stage_create(id).await.unwrap();
    let chunks: Vec<Bytes> = content.chunks(300_000).map(Bytes::copy_from_slice).collect();
    let size = store.stage_append(id, 0, byte_stream(chunks)).await.unwrap();
    assert_eq!(size, content.len() as u64);
    let digest = storage::Digest::of(&content);
    store.stage_commit(id, &common::content_key(&digest)).await.unwrap();

    let reader = store.get(&common::content_key(&digest), None).await.unwrap().expect("committed");
    assert_eq!(reader.meta.size, content.len() as u64);
    assert_eq!(store.stat(&common::content_key(&digest)).await.unwrap().expect("committed"), reader.meta);
    // Compare chunk by chunk as they arrive; a body delivered as one chunk was buffered whole.
    let mut body = reader.body;
    let (mut offset, mut n_chunks) = (0usize, 0usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("reading a committed object");
        assert_eq!(&chunk[..], &content[offset..offset + chunk.len()], "bytes at offset {offset}");
        offset += chunk.len();
        n_chunks += 1;
    }
    assert_eq!(offset, content.len());
    assert!(n_chunks > 1, "a {offset}-byte object arrives in more than one chunk");

    let range = 300_000u64..2_000_001;
    let reader = store.get(&common::content_key(&digest), Some(range.clone())).await.unwrap().expect("committed");
    assert_eq!(collect(reader.body).await, &content[range.start as usize..range.end as usize]);
}

// ---------------------------------------------------------------------------------------------
// Staged uploads

async fn staged_upload(store: Arc<dyn BlobStore>) {
    let id = "upload-1";
    store.stage_create(id).await.unwrap();
    assert_eq!(store.stage_size(id).await.unwrap(), Some(0));

    let hasher = storage::digest::Hasher::new();
    let parts: [&[&[u8]]; 4] = [&[b"hello ", b"staged"], &[], &[b" world", b"", b"!"], &[b"\n"]];
    let mut appended = Vec::new();
    for chunks in parts {
        let offset = appended.len() as u64;
        let body = byte_stream(chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect());
        let size = store.stage_append(id, offset, hasher.tap(body)).await.unwrap();
        appended.extend(chunks.concat());
        assert_eq!(size, appended.len() as u64, "stage_append returns the new size");
        assert_eq!(store.stage_size(id).await.unwrap(), Some(size));
    }
    assert_eq!(collect(store.stage_read(id).await.unwrap()).await, appended);
    let digest = hasher.digest();
    assert_eq!(digest, storage::Digest::of(&appended), "the tap saw every appended byte");

    // A hasher rebuilt from the staged bytes, as a process that did not see the appends would.
    let rebuilt = storage::digest::Hasher::new();
    rebuilt.consume(store.stage_read(id).await.unwrap()).await.unwrap();
    assert_eq!(rebuilt.digest(), digest);

    let key = common::content_key(&digest);
    assert!(store.stat(&key).await.unwrap().is_none(), "staged bytes are invisible before commit");
    store.stage_commit(id, &key).await.unwrap();
    let stored = read(&store, &key).await.expect("visible after commit");
    assert_eq!(stored, appended);
    assert_eq!(storage::Digest::of(&stored), digest);
    assert_eq!(store.stat(&key).await.unwrap().expect("committed").size, appended.len() as u64);

    assert_eq!(store.stage_size(id).await.unwrap(), None, "commit ends the staged upload");
    assert_err!(store.stage_read(id).await.map(|_| ()), BlobStoreError::NotFound(_));
    assert_err!(store.stage_append(id, 0, byte_stream(vec![])).await, BlobStoreError::NotFound(_));
    assert_err!(store.stage_commit(id, "other").await, BlobStoreError::NotFound(_));
    assert!(store.stat("other").await.unwrap().is_none());
    assert_eq!(read(&store, &key).await.expect("still there"), appended);
}

async fn stage_append_wrong_offset(store: Arc<dyn BlobStore>) {
    let id = "offsets";
    store.stage_create(id).await.unwrap();
    store.stage_append(id, 0, bytes_body(b"0123456789")).await.unwrap();
    for wrong in [0, 5, 9, 11, 1 << 40] {
        assert_err!(
            store.stage_append(id, wrong, bytes_body(b"abc")).await,
            BlobStoreError::PreconditionFailed(_)
        );
        assert_eq!(store.stage_size(id).await.unwrap(), Some(10), "a refused append changes nothing");
    }
    assert_eq!(store.stage_append(id, 10, bytes_body(b"abc")).await.unwrap(), 13);
    assert_eq!(collect(store.stage_read(id).await.unwrap()).await, b"0123456789abc");
    assert_err!(store.stage_append("unknown", 0, bytes_body(b"abc")).await, BlobStoreError::NotFound(_));
    assert_eq!(store.stage_size("unknown").await.unwrap(), None, "appending does not create");
}

async fn stage_append_failure_keeps_size(store: Arc<dyn BlobStore>) {
    let id = "failing";
    store.stage_create(id).await.unwrap();
    let hasher = storage::digest::Hasher::new();
    store.stage_append(id, 0, hasher.tap(bytes_body(b"kept"))).await.unwrap();

    // The failing body first delivers more than a backend would buffer, so that some of it
    // reaches storage before the error.
    let before = hasher.snapshot();
    let failing: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(Bytes::from(pattern(3 * 1024 * 1024, 1))),
        Ok(Bytes::from_static(b"more")),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away")),
        Ok(Bytes::from_static(b"never read")),
    ]));
    assert_err!(store.stage_append(id, 4, hasher.tap(failing)).await, BlobStoreError::Io(_));
    assert_eq!(store.stage_size(id).await.unwrap(), Some(4), "a failed append leaves the previous size");
    assert_eq!(collect(store.stage_read(id).await.unwrap()).await, b"kept");

    // The upload resumes from the previous size, with the hash rolled back by the caller.
    hasher.restore(before);
    assert_eq!(store.stage_append(id, 4, hasher.tap(bytes_body(b" going"))).await.unwrap(), 10);
    assert_eq!(hasher.digest(), storage::Digest::of(b"kept going"));
    store.stage_commit(id, "resumed").await.unwrap();
    assert_eq!(read(&store, "resumed").await.as_deref(), Some(&b"kept going"[..]));
}

async fn stage_abort(store: Arc<dyn BlobStore>) {
    let id = "aborted";
    store.stage_create(id).await.unwrap();
    store.stage_append(id, 0, bytes_body(b"some bytes")).await.unwrap();
    store.stage_abort(id).await.unwrap();
    assert_eq!(store.stage_size(id).await.unwrap(), None);
    assert_err!(store.stage_read(id).await.map(|_| ()), BlobStoreError::NotFound(_));
    assert_err!(store.stage_commit(id, "aborted-key").await, BlobStoreError::NotFound(_));
    assert!(store.stat("aborted-key").await.unwrap().is_none());
    store.stage_abort(id).await.expect("aborting twice succeeds");
    store.stage_abort("never-created").await.expect("aborting an unknown upload succeeds");
    assert!(!store.stale_stages(Duration::ZERO).await.unwrap().contains(&id.to_owned()));

    // The id can be used again.
    store.stage_create(id).await.unwrap();
    assert_eq!(store.stage_size(id).await.unwrap(), Some(0));
}

async fn stale_stages(store: Arc<dyn BlobStore>) {
    store.stage_create("open").await.unwrap();
    store.stage_append("open", 0, bytes_body(b"pending")).await.unwrap();
    store.stage_create("committed").await.unwrap();
    store.stage_append("committed", 0, bytes_body(b"done")).await.unwrap();
    store.stage_commit("committed", "done").await.unwrap();
    store.stage_create("aborted").await.unwrap();
    store.stage_abort("aborted").await.unwrap();

    // Long enough for any clock granularity to see the stage as older than zero.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stale = store.stale_stages(Duration::ZERO).await.unwrap();
    assert_eq!(stale, ["open"], "only the open stage is stale");
    let stale = store.stale_stages(Duration::from_secs(3600)).await.unwrap();
    assert!(stale.is_empty(), "a stage touched just now is not an hour old: {stale:?}");
}

// ---------------------------------------------------------------------------------------------
// Keys

async fn invalid_keys(store: Arc<dyn BlobStore>) {
    store.stage_create("valid").await.unwrap();
    store.stage_append("valid", 0, bytes_body(b"staged")).await.unwrap();
    for bad in ["../x", "/a", "a//b", "a/../b"] {
        assert_err!(store.stat(bad).await, BlobStoreError::InvalidKey(_));
        assert_err!(store.get(bad, None).await.map(|r| r.map(|r| r.meta)), BlobStoreError::InvalidKey(_));
        assert_err!(
            store.get(bad, Some(0..1)).await.map(|r| r.map(|r| r.meta)),
            BlobStoreError::InvalidKey(_)
        );
        assert_err!(store.get_small(bad, 1024).await, BlobStoreError::InvalidKey(_));
        for condition in
            [PutCondition::Always, PutCondition::IfAbsent, PutCondition::IfMatch(storage::ETag("x".into()))]
        {
            assert_err!(
                store.put_small(bad, Bytes::from_static(b"x"), condition).await,
                BlobStoreError::InvalidKey(_)
            );
        }
        assert_err!(store.delete(bad).await, BlobStoreError::InvalidKey(_));
        assert_err!(store.stage_commit("valid", bad).await, BlobStoreError::InvalidKey(_));
        assert_eq!(store.stage_size("valid").await.unwrap(), Some(6), "a refused commit keeps the stage");
        assert_err!(store.list(&format!("{bad}/"), None, 10, false).await, BlobStoreError::InvalidKey(_));
        assert_err!(store.list(&format!("{bad}/"), None, 10, true).await, BlobStoreError::InvalidKey(_));
    }
    // A listing prefix is empty or ends in `/`.
    assert_err!(store.list("a", None, 10, false).await, BlobStoreError::InvalidKey(_));

    // A stage id is a single key segment.
    for bad in ["../x", "/a", "a//b", "a/../b", "a/b", "..", ""] {
        assert_err!(store.stage_create(bad).await, BlobStoreError::InvalidKey(_));
        assert_err!(store.stage_append(bad, 0, bytes_body(b"x")).await, BlobStoreError::InvalidKey(_));
        assert_err!(store.stage_read(bad).await.map(|_| ()), BlobStoreError::InvalidKey(_));
        assert_err!(store.stage_size(bad).await, BlobStoreError::InvalidKey(_));
        assert_err!(store.stage_commit(bad, "key").await, BlobStoreError::InvalidKey(_));
        assert_err!(store.stage_abort(bad).await, BlobStoreError::InvalidKey(_));
    }

    // Nothing was written anywhere by the refused calls.
    assert_eq!(store.list("", None, 10, false).await.unwrap(), ListPage::default());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.stale_stages(Duration::ZERO).await.unwrap(), ["valid"]);
    assert_eq!(collect(store.stage_read("valid").await.unwrap()).await, b"staged");
}

// ---------------------------------------------------------------------------------------------
// Helpers

async fn put(store: &Arc<dyn BlobStore>, key: &str, bytes: &[u8]) {
    store.put_small(key, Bytes::copy_from_slice(bytes), PutCondition::Always).await.unwrap();
}

/// The whole object through the streaming `get`, `None` when absent.
async fn read(store: &Arc<dyn BlobStore>, key: &str) -> Option<Vec<u8>> {
    let reader = store.get(key, None).await.unwrap()?;
    Some(collect(reader.body).await)
}

/// All names directly below `prefix`, in one page.
async fn names(store: &Arc<dyn BlobStore>, prefix: &str) -> Vec<String> {
    let page = store.list(prefix, None, 1000, true).await.unwrap();
    assert!(!page.truncated);
    page.entries
}

async fn collect(mut body: ByteStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.expect("reading a stored object"));
    }
    bytes
}

fn byte_stream(chunks: Vec<Bytes>) -> ByteStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

fn bytes_body(bytes: &'static [u8]) -> ByteStream {
    byte_stream(vec![Bytes::from_static(bytes)])
}

/// `len` bytes of a deterministic pseudo-random sequence (xorshift64), different for each `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
