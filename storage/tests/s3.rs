//! What the S3 backend promises beyond the shared conformance suite: staged uploads that span
//! many part objects and survive a change of replica, conditional writes across two clients,
//! presigned URLs, cleanup of staging and multipart uploads, and how it fails when the server does.
//!
//! Tests that need an S3 server return early without one (see `tests/common/mod.rs`); the ones
//! about configuration and failures bring their own fake server and always run.

#![cfg(feature = "s3")]

mod common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use portcullis_storage as storage;
use storage::s3::{Checksums, IfMatch, S3BlobStore, S3Config, ServerFindings};
use storage::{BlobStore, BlobStoreError, ByteStream, PutCondition};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Asserts that `$res` is an `Err` matching `$pattern`, printing what it was otherwise.
macro_rules! assert_err {
    ($res:expr, $pattern:pat) => {
        match $res {
            Err($pattern) => {}
            other => panic!("expected Err({}), got {:?}", stringify!($pattern), other.map(|_| ())),
        }
    };
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Staged uploads

#[tokio::test]
async fn append_spanning_parts_with_small_and_large_chunks() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let (store, config) = s3.fresh_store().await;
    let part_size = config.part_size as usize;
    let id = "spanning";
    store.stage_create(id).await.unwrap();

    // (chunk size, count) per append: 1 KiB chunks fill the tail, 12 MiB chunks cross part
    // boundaries in the middle of a chunk.
    let appends: [&[(usize, usize)]; 5] =
        [&[(KIB, 3)], &[(12 * MIB, 1), (KIB, 1)], &[(KIB, 5)], &[(12 * MIB, 2)], &[(KIB, 1), (12 * MIB, 1), (KIB, 2)]];
    let hasher = storage::digest::Hasher::new();
    let mut expected = Vec::new();
    for (n, chunks) in appends.iter().enumerate() {
        let mut body = Vec::new();
        for &(size, count) in chunks.iter() {
            for _ in 0..count {
                body.push(Bytes::from(pattern(size, (n * 100 + body.len()) as u64)));
            }
        }
        let offset = expected.len() as u64;
        for chunk in &body {
            expected.extend_from_slice(chunk);
        }
        let size = store.stage_append(id, offset, hasher.tap(byte_stream(body))).await.unwrap();
        assert_eq!(size, expected.len() as u64, "append {n}");
        assert_eq!(store.stage_size(id).await.unwrap(), Some(size), "append {n}");
    }
    assert_eq!(collect(store.stage_read(id).await.unwrap()).await, expected, "stage_read streams parts then tail");

    // Behind the store: full parts of exactly the part size, and one smaller tail.
    let client = s3.client().await;
    let staged = format!("{}/~staging/{id}/", config.prefix);
    let mut n_parts = 0;
    let mut staged_bytes = 0;
    for key in common::raw_keys(&client, &config.bucket, &staged).await {
        let head = client.head_object().bucket(&config.bucket).key(&key).send().await.unwrap();
        let size = head.content_length().unwrap() as usize;
        let name = &key[staged.len()..];
        if name.starts_with("part-") {
            assert_eq!(size, part_size, "{name}");
            n_parts += 1;
            staged_bytes += size;
        } else if name.starts_with("tail-") {
            assert!(size < part_size, "{name} is {size} bytes");
            staged_bytes += size;
        } else {
            assert_eq!(name, "state");
        }
    }
    assert_eq!(n_parts, expected.len() / part_size);
    assert_eq!(staged_bytes, expected.len(), "no stray data objects");

    let digest = hasher.digest();
    assert_eq!(digest, storage::Digest::of(&expected));
    store.stage_commit(id, &digest.blob_key()).await.unwrap();
    let reader = store.get(&digest.blob_key(), None).await.unwrap().expect("committed");
    assert_eq!(reader.meta.size, expected.len() as u64);
    let stored = collect(reader.body).await;
    assert_eq!(storage::Digest::of(&stored), digest);
    assert!(stored == expected, "the committed bytes are the appended bytes");
    assert!(common::raw_keys(&client, &config.bucket, &staged).await.is_empty(), "commit removes the stage");
}

#[tokio::test]
async fn stage_continued_by_another_replica() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let config = s3.fresh_config().await;
    // Replicas may disagree on the part size (a rolling config change): A leaves a 7 MiB tail,
    // more than B's 5 MiB parts.
    let replica_a =
        S3BlobStore::connect(S3Config { part_size: storage::s3::DEFAULT_PART_SIZE, ..config.clone() }).await.unwrap();
    let replica_b = S3BlobStore::connect(config.clone()).await.unwrap();
    let id = "handover";

    let first = pattern(7 * MIB + 123, 1);
    replica_a.stage_create(id).await.unwrap();
    replica_a.stage_append(id, 0, chunked(&first, 256 * KIB)).await.unwrap();

    // Replica B knows nothing but the id: it finds the size and rebuilds the hash from the bucket.
    let offset = replica_b.stage_size(id).await.unwrap().expect("the stage is in the bucket");
    assert_eq!(offset, first.len() as u64);
    let hasher = storage::digest::Hasher::new();
    hasher.consume(replica_b.stage_read(id).await.unwrap()).await.unwrap();
    assert_eq!(hasher.digest(), storage::Digest::of(&first));

    let second = pattern(3 * MIB, 2);
    let size = replica_b.stage_append(id, offset, hasher.tap(chunked(&second, 64 * KIB))).await.unwrap();
    assert_eq!(size, (first.len() + second.len()) as u64);

    // Replica A's view of the offset is stale now.
    assert_err!(
        replica_a.stage_append(id, offset, chunked(b"late", 4)).await,
        BlobStoreError::PreconditionFailed(_)
    );
    let third = pattern(KIB, 3);
    let size = replica_a.stage_append(id, size, hasher.tap(chunked(&third, KIB))).await.unwrap();

    let expected = [first, second, third].concat();
    assert_eq!(size, expected.len() as u64);
    let digest = hasher.digest();
    assert_eq!(digest, storage::Digest::of(&expected));
    replica_b.stage_commit(id, &digest.blob_key()).await.unwrap();
    assert_eq!(replica_a.stage_size(id).await.unwrap(), None, "the commit ended the stage for every replica");
    let stored = collect(replica_a.get(&digest.blob_key(), None).await.unwrap().expect("committed").body).await;
    assert!(stored == expected);
}

#[tokio::test]
async fn concurrent_appends_on_two_replicas_one_wins() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let config = s3.fresh_config().await;
    let replicas = [
        S3BlobStore::connect(config.clone()).await.unwrap(),
        S3BlobStore::connect(config.clone()).await.unwrap(),
    ];
    let id = "contended";
    let start = pattern(2 * MIB, 9);
    replicas[0].stage_create(id).await.unwrap();
    replicas[0].stage_append(id, 0, chunked(&start, MIB)).await.unwrap();

    // Each body is more than a part, so both writers put part objects before either updates
    // the state.
    let bodies = [pattern(6 * MIB, 10), pattern(6 * MIB, 11)];
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let tasks: Vec<_> = replicas
        .iter()
        .zip(&bodies)
        .map(|(replica, body)| {
            let (replica, body, barrier) = (replica.clone(), body.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                replica.stage_append(id, 2 * MIB as u64, chunked(&body, MIB)).await
            })
        })
        .collect();
    let mut winner = None;
    for (n, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(size) => {
                assert!(winner.is_none(), "two appends at one offset both succeeded");
                assert_eq!(size, 8 * MIB as u64);
                winner = Some(n);
            }
            Err(BlobStoreError::PreconditionFailed(_)) => {}
            Err(err) => panic!("the losing append must fail its precondition, got {err:?}"),
        }
    }
    let winner = winner.expect("one append succeeds");
    let expected = [start.as_slice(), bodies[winner].as_slice()].concat();
    assert!(collect(replicas[1 - winner].stage_read(id).await.unwrap()).await == expected, "the winner's bytes only");

    // The loser removed its objects: what is left is the state and the winner's data.
    let client = s3.client().await;
    let staged = common::raw_keys(&client, &config.bucket, &format!("{}/~staging/{id}/", config.prefix)).await;
    assert_eq!(staged.len(), 1 + 8 / 5 + 1, "state, one part, one tail: {staged:?}");
}

#[tokio::test]
async fn stage_abort_and_commit_leave_nothing_under_staging() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let (store, config) = s3.fresh_store().await;
    let client = s3.client().await;
    let staging = format!("{}/~staging/", config.prefix);

    store.stage_create("aborted").await.unwrap();
    store.stage_append("aborted", 0, chunked(&pattern(12 * MIB, 4), 4 * MIB)).await.unwrap();
    store.stage_create("committed").await.unwrap();
    store.stage_append("committed", 0, chunked(&pattern(11 * MIB, 5), 4 * MIB)).await.unwrap();
    store.put_small("visible", Bytes::from_static(b"x"), PutCondition::Always).await.unwrap();
    assert!(common::raw_keys(&client, &config.bucket, &staging).await.len() >= 6);

    // The staging area never shows in listings of the store, delimited or not.
    assert_eq!(store.list("", None, 100, false).await.unwrap().entries, ["visible"]);
    assert_eq!(store.list("", None, 100, true).await.unwrap().entries, ["visible"]);

    store.stage_abort("aborted").await.unwrap();
    store.stage_commit("committed", "blob").await.unwrap();
    assert_eq!(common::raw_keys(&client, &config.bucket, &staging).await, Vec::<String>::new());
    assert!(store.stale_stages(Duration::ZERO).await.unwrap().is_empty());
    let uploads = client.list_multipart_uploads().bucket(&config.bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "the commit's multipart upload is complete");
}

#[tokio::test]
async fn failed_append_removes_its_parts() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let (store, config) = s3.fresh_store().await;
    let client = s3.client().await;
    let id = "failing";
    let staged = format!("{}/~staging/{id}/", config.prefix);
    store.stage_create(id).await.unwrap();
    let kept = pattern(3 * MIB, 12);
    store.stage_append(id, 0, chunked(&kept, MIB)).await.unwrap();
    let before = common::raw_keys(&client, &config.bucket, &staged).await;

    // Enough for two part objects before the body fails.
    let failing: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(Bytes::from(pattern(12 * MIB, 13))),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away")),
    ]));
    assert_err!(store.stage_append(id, kept.len() as u64, failing).await, BlobStoreError::Io(_));
    assert_eq!(store.stage_size(id).await.unwrap(), Some(kept.len() as u64));
    assert_eq!(common::raw_keys(&client, &config.bucket, &staged).await, before, "the parts written are gone");
    assert!(collect(store.stage_read(id).await.unwrap()).await == kept);
}

/// A commit that died after starting its multipart upload leaves the upload in the state; the
/// stage refuses appends (empty ones change nothing and pass), and a new commit or an abort
/// cleans the upload up.
#[tokio::test]
async fn interrupted_commit_is_recovered() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let (store, config) = s3.fresh_store().await;
    let client = s3.client().await;
    let content = pattern(11 * MIB, 14);
    for (id, finish_by_commit) in [("recommitted", true), ("aborted", false)] {
        store.stage_create(id).await.unwrap();
        store.stage_append(id, 0, chunked(&content, MIB)).await.unwrap();

        // What the dead commit left: an upload on the target, recorded in the state.
        let target = format!("{}/blobs/{id}", config.prefix);
        let upload = client.create_multipart_upload().bucket(&config.bucket).key(&target).send().await.unwrap();
        let state_key = format!("{}/~staging/{id}/state", config.prefix);
        let state = client.get_object().bucket(&config.bucket).key(&state_key).send().await.unwrap();
        let mut state: serde_json::Value =
            serde_json::from_slice(&state.body.collect().await.unwrap().into_bytes()).unwrap();
        state["commit"] = serde_json::json!({ "key": target, "upload_id": upload.upload_id().unwrap() });
        let json = serde_json::to_vec(&state).unwrap();
        client.put_object().bucket(&config.bucket).key(&state_key).body(json.into()).send().await.unwrap();

        assert_err!(
            store.stage_append(id, content.len() as u64, chunked(b"more", 4)).await,
            BlobStoreError::PreconditionFailed(_)
        );
        // An empty append changes nothing, so it passes: it is what a client's retried
        // `PUT ?digest=` sends after a failed commit, before committing again.
        assert_eq!(store.stage_append(id, content.len() as u64, byte_stream(Vec::new())).await.unwrap(), content.len() as u64);
        assert_err!(store.stage_append(id, 0, byte_stream(Vec::new())).await, BlobStoreError::PreconditionFailed(_));
        if finish_by_commit {
            store.stage_commit(id, &format!("blobs/{id}")).await.unwrap();
            assert!(read(&store, &format!("blobs/{id}")).await == content);
        } else {
            store.stage_abort(id).await.unwrap();
            assert!(store.stat(&format!("blobs/{id}")).await.unwrap().is_none());
        }
        let uploads = client.list_multipart_uploads().bucket(&config.bucket).send().await.unwrap();
        assert!(uploads.uploads().is_empty(), "{id}: {:?}", uploads.uploads());
        assert_eq!(store.stage_size(id).await.unwrap(), None);
    }
}

#[tokio::test]
async fn stage_of_200_mib_committed_as_multipart_copy() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let (store, config) = s3.fresh_store().await;
    let size = 200 * MIB as u64;
    let id = "large";
    store.stage_create(id).await.unwrap();
    let hasher = storage::digest::Hasher::new();
    // Two appends, the second starting in the middle of a part.
    let half = 100 * MIB as u64 + 12_345;
    store.stage_append(id, 0, hasher.tap(generated(half, MIB, 1))).await.unwrap();
    let total = store.stage_append(id, half, hasher.tap(generated(size - half, MIB, 2))).await.unwrap();
    assert_eq!(total, size);
    let digest = hasher.digest();
    store.stage_commit(id, &digest.blob_key()).await.unwrap();

    let meta = store.stat(&digest.blob_key()).await.unwrap().expect("committed");
    assert_eq!(meta.size, size);
    let n_parts = size.div_ceil(config.part_size);
    assert!(meta.etag.0.trim_matches('"').ends_with(&format!("-{n_parts}")), "a multipart ETag: {:?}", meta.etag);
    let check = storage::digest::Hasher::new();
    check.consume(store.get(&digest.blob_key(), None).await.unwrap().expect("committed").body).await.unwrap();
    assert_eq!(check.digest(), digest);
}

/// Measures a 1 GiB upload; only with `PORTCULLIS_TEST_S3_LARGE=1`, as it takes about a minute
/// against moto: `/usr/bin/time -v <test binary> one_gib_stage --exact` reports the peak RSS.
#[tokio::test]
async fn one_gib_stage() {
    if std::env::var("PORTCULLIS_TEST_S3_LARGE").as_deref() != Ok("1") {
        eprintln!("skipping: set PORTCULLIS_TEST_S3_LARGE=1 to upload 1 GiB");
        return;
    }
    let Some(s3) = common::TestS3::from_env() else { return };
    let mut config = s3.fresh_config().await;
    config.part_size = storage::s3::DEFAULT_PART_SIZE;
    let store = S3BlobStore::connect(config).await.unwrap();
    let size = 1024 * MIB as u64;
    store.stage_create("gib").await.unwrap();
    let hasher = storage::digest::Hasher::new();
    let started = Instant::now();
    store.stage_append("gib", 0, hasher.tap(generated(size, 64 * KIB, 7))).await.unwrap();
    let appended = started.elapsed();
    let digest = hasher.digest();
    store.stage_commit("gib", &digest.blob_key()).await.unwrap();
    eprintln!("1 GiB: append {appended:?}, commit {:?}", started.elapsed() - appended);
    assert_eq!(store.stat(&digest.blob_key()).await.unwrap().expect("committed").size, size);
}

/// The probe finds what the server does, as plain SDK requests see it: which form of `If-Match`
/// matches (quoted on S3 and moto, unquoted on Ceph RGW 16) and whether a streaming upload with
/// the SDK's default checksum trailer is refused (by RGW 16, with 400); and a configured
/// `checksum_when_required` is taken as it is.
#[tokio::test]
async fn probe_finds_what_the_server_does() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let config = S3Config { checksum_when_required: false, ..s3.fresh_config().await };
    let findings = S3BlobStore::connect(config.clone()).await.unwrap().findings();

    let client = common::TestS3 { checksum_when_required: false, ..s3.clone() }.client().await;
    let key = format!("{}/raw", config.prefix);
    let put = || client.put_object().bucket(&config.bucket).key(&key);
    let first = put().body(Bytes::from_static(b"v1").into()).send().await.unwrap();
    let etag = first.e_tag().expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "S3 quotes ETags: {etag}");
    let precondition_failed = |res: Result<_, aws_sdk_s3::error::SdkError<_>>| match res {
        Ok(_) => false,
        Err(err) => match err.raw_response().map(|raw| raw.status().as_u16()) {
            Some(412) => true,
            other => panic!("If-Match write: expected 200 or 412, got {other:?}: {err:?}"),
        },
    };
    let quoted_failed = precondition_failed(put().body(Bytes::from_static(b"v2").into()).if_match(&etag).send().await);
    let expected_if_match = if !quoted_failed {
        IfMatch::Quoted
    } else if !precondition_failed(put().body(Bytes::from_static(b"v2").into()).if_match(etag.trim_matches('"')).send().await) {
        IfMatch::Unquoted
    } else {
        IfMatch::NeverMatches
    };
    // The ETag of v1 is stale now, in either form.
    assert!(precondition_failed(put().body(Bytes::from_static(b"v3").into()).if_match(&etag).send().await));
    assert!(precondition_failed(put().body(Bytes::from_static(b"v3").into()).if_match(etag.trim_matches('"')).send().await));

    let streaming = aws_sdk_s3::primitives::ByteStream::from_body_1_x(http_body_util::Full::new(Bytes::from_static(b"v4")));
    let expected_checksums = match put().body(streaming).send().await {
        Ok(_) => Checksums::Default,
        Err(err) if err.raw_response().map(|raw| raw.status().as_u16()) == Some(400) => Checksums::WhenRequired,
        Err(err) => panic!("streaming upload: expected 200 or 400, got {err:?}"),
    };
    assert_eq!(findings, ServerFindings { if_none_match: true, if_match: expected_if_match, checksums: expected_checksums });
    eprintln!("probe findings on {}: {findings:?}", s3.endpoint);

    let forced = S3BlobStore::connect(S3Config { checksum_when_required: true, ..config }).await.unwrap();
    assert_eq!(forced.findings().checksums, Checksums::WhenRequiredByConfig);
}

#[tokio::test]
async fn checksums_when_required() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let mut config = s3.fresh_config().await;
    config.checksum_when_required = true;
    let store = S3BlobStore::connect(config).await.unwrap();
    store.put_small("small", Bytes::from_static(b"abc"), PutCondition::IfAbsent).await.unwrap();
    let content = pattern(6 * MIB, 6);
    store.stage_create("s").await.unwrap();
    store.stage_append("s", 0, chunked(&content, MIB)).await.unwrap();
    store.stage_commit("s", "big").await.unwrap();
    assert!(read(&store, "big").await == content);
}

#[tokio::test]
async fn janitor_aborts_stale_multipart_uploads() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let (store, config) = s3.fresh_store().await;
    let client = s3.client().await;
    let key = format!("{}/blobs/left-behind", config.prefix);
    client.create_multipart_upload().bucket(&config.bucket).key(&key).send().await.unwrap();
    // Outside the prefix: not ours.
    client.create_multipart_upload().bucket(&config.bucket).key("elsewhere").send().await.unwrap();

    // moto reports a fixed `Initiated` time in 2010, which makes every upload old.
    let listed = client.list_multipart_uploads().bucket(&config.bucket).send().await.unwrap();
    let initiated = listed.uploads()[0].initiated().expect("S3 reports when an upload started");
    let initiated = std::time::SystemTime::try_from(*initiated).unwrap();
    if initiated.elapsed().unwrap_or_default() < Duration::from_secs(3600) {
        assert_eq!(store.abort_stale_multipart(Duration::from_secs(3600)).await.unwrap(), 0, "too young");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.abort_stale_multipart(Duration::ZERO).await.unwrap(), 1);
    let uploads = client.list_multipart_uploads().bucket(&config.bucket).send().await.unwrap();
    let left: Vec<&str> = uploads.uploads().iter().filter_map(|upload| upload.key()).collect();
    assert_eq!(left, ["elsewhere"]);
}

// ---------------------------------------------------------------------------------------------
// Small objects and keys

#[tokio::test]
async fn if_absent_race_across_two_clients() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let config = s3.fresh_config().await;
    let replicas = [
        S3BlobStore::connect(config.clone()).await.unwrap(),
        S3BlobStore::connect(config.clone()).await.unwrap(),
    ];
    const WRITERS: usize = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (replica, barrier) = (replicas[writer % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                let content = Bytes::from(format!("writer {writer}"));
                barrier.wait().await;
                (content.clone(), replica.put_small("tags/v1", content, PutCondition::IfAbsent).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (content, Ok(etag)) => winners.push((content, etag)),
            (_, Err(BlobStoreError::PreconditionFailed(_))) => {}
            (_, Err(err)) => panic!("a losing write must fail its precondition, got {err:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    let stored = replicas[1].get_small("tags/v1", 64).await.unwrap().expect("written");
    assert_eq!((stored.bytes, stored.etag), winners.pop().unwrap());
}

#[tokio::test]
async fn presigned_get_fetches_the_object() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let (store, _config) = s3.fresh_store().await;
    let content = pattern(100 * KIB, 8);
    store.put_small("blobs/presigned", Bytes::from(content.clone()), PutCondition::Always).await.unwrap();
    let url = store.presign_get("blobs/presigned", Duration::from_secs(300)).await.unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap() == content);
    assert_err!(store.presign_get("../escape", Duration::from_secs(60)).await, BlobStoreError::InvalidKey(_));
}

#[tokio::test]
async fn empty_prefix_hides_the_staging_area_too() {
    let Some(s3) = common::TestS3::from_env() else { return };
    let mut config = s3.fresh_config().await;
    if s3.shared_bucket.is_some() {
        return; // An empty prefix would list the whole shared bucket.
    }
    config.prefix = String::new();
    let store = S3BlobStore::connect(config).await.unwrap();
    store.stage_create("pending").await.unwrap();
    store.stage_append("pending", 0, chunked(b"bytes", 5)).await.unwrap();
    for key in ["z", "a/b", "zz/y"] {
        store.put_small(key, Bytes::from_static(b"x"), PutCondition::Always).await.unwrap();
    }
    assert_eq!(store.list("", None, 10, false).await.unwrap().entries, ["a/b", "z", "zz/y"]);
    assert_eq!(store.list("", Some("zz/y"), 10, false).await.unwrap().entries, Vec::<String>::new());
    let page = store.list("", None, 3, true).await.unwrap();
    assert_eq!((page.entries, page.truncated), (vec!["a".to_owned(), "z".to_owned(), "zz".to_owned()], false));
    assert_eq!(store.stale_stages(Duration::ZERO).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Configuration and failures (no S3 server needed)

#[tokio::test]
async fn invalid_configurations_are_refused() {
    let base = S3Config {
        endpoint: Some("http://127.0.0.1:9".to_owned()),
        force_path_style: true,
        access_key_id: Some("k".to_owned()),
        secret_access_key: Some("s".to_owned()),
        ..S3Config::new("bucket", "us-east-1")
    };
    type Change = fn(&mut S3Config);
    let cases: [(&str, Change, &str); 5] = [
        ("small parts", |c| c.part_size = 1 << 20, "part_size"),
        ("huge parts", |c| c.part_size = 6 << 30, "part_size"),
        ("no bucket", |c| c.bucket.clear(), "bucket"),
        ("half the keys", |c| c.secret_access_key = None, "access_key_id and secret_access_key"),
        ("bad prefix", |c| c.prefix = "../x".to_owned(), "../x"),
    ];
    for (what, change, expected) in cases {
        let mut config = base.clone();
        change(&mut config);
        match S3BlobStore::connect(config).await {
            Ok(_) => panic!("{what}: accepted"),
            Err(err) => assert!(err.to_string().contains(expected), "{what}: {err}"),
        }
    }
    assert!(!format!("{base:?}").contains("\"s\""), "Debug hides the secret: {base:?}");
}

#[tokio::test]
async fn server_errors_are_retried_then_unavailable() {
    // A server that answers every request with 503 SlowDown.
    let (endpoint, requests) = fake_server(|_| {
        Some(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: 83\r\nConnection: close\r\n\r\n\
             <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                .to_owned(),
        )
    })
    .await;
    let config = S3Config { max_retries: 2, ..test_config(&endpoint) };
    let started = Instant::now();
    let err = S3BlobStore::connect(config).await.expect_err("the server never succeeds");
    assert!(matches!(err, BlobStoreError::Unavailable(_)), "{err:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 3, "the first attempt and two retries");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn dropped_connections_are_unavailable() {
    // A server that closes every connection without answering.
    let (endpoint, requests) = fake_server(|_| None).await;
    let config = S3Config { max_retries: 1, ..test_config(&endpoint) };
    let err = S3BlobStore::connect(config).await.expect_err("no answer");
    assert!(matches!(err, BlobStoreError::Unavailable(_)), "{err:?}");
    // Two attempts of the SDK; hyper may resend a request once on a connection that closed
    // before answering.
    let puts = requests.load(Ordering::SeqCst);
    assert!((2..=4).contains(&puts), "{puts} PUT requests");
}

#[tokio::test]
async fn timeouts_are_unavailable() {
    // A server that reads requests and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = S3Config { timeout: Duration::from_millis(300), max_retries: 0, ..test_config(&endpoint) };
    let started = Instant::now();
    let err = S3BlobStore::connect(config).await.expect_err("no answer");
    assert!(matches!(err, BlobStoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout applies: {:?}", started.elapsed());
    server.abort();
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn test_config(endpoint: &str) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.to_owned()),
        force_path_style: true,
        access_key_id: Some("test".to_owned()),
        secret_access_key: Some("test".to_owned()),
        timeout: Duration::from_secs(5),
        ..S3Config::new("bucket", "us-east-1")
    }
}

/// A loopback HTTP server that reads each request's head and answers with `respond(head)`, or
/// closes the connection on `None`. Returns its URL and the number of PUT requests it saw (the
/// probe's first write; the probe's cleanup DELETEs come after it).
async fn fake_server(respond: fn(&str) -> Option<String>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                if head.starts_with(b"PUT ") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                if let Some(response) = respond(&String::from_utf8_lossy(&head)) {
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                }
            });
        }
    });
    (endpoint, requests)
}

async fn read(store: &S3BlobStore, key: &str) -> Vec<u8> {
    collect(store.get(key, None).await.unwrap().expect("present").body).await
}

async fn collect(mut body: ByteStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.expect("reading from the store"));
    }
    bytes
}

fn byte_stream(chunks: Vec<Bytes>) -> ByteStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

fn chunked(bytes: &[u8], chunk_size: usize) -> ByteStream {
    byte_stream(bytes.chunks(chunk_size).map(Bytes::copy_from_slice).collect())
}

/// `len` generated bytes in chunks of `chunk_size`, produced as they are read, so that a large
/// body never exists whole in the test's memory.
fn generated(len: u64, chunk_size: usize, seed: u64) -> ByteStream {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut remaining = len;
    Box::pin(futures::stream::iter(std::iter::from_fn(move || {
        if remaining == 0 {
            return None;
        }
        let size = remaining.min(chunk_size as u64) as usize;
        remaining -= size as u64;
        let chunk: Vec<u8> = (0..size).map(|_| xorshift(&mut state)).collect();
        Some(Ok::<_, io::Error>(Bytes::from(chunk)))
    })))
}

/// `len` bytes of a deterministic pseudo-random sequence, different for each `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len).map(|_| xorshift(&mut state)).collect()
}

fn xorshift(state: &mut u64) -> u8 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 24) as u8
}
