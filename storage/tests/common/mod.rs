//! The S3 test environment shared by `conformance.rs` and `s3.rs`: `portcullis_storage::test_s3`
//! (feature `test-support`, which the dev-dependency on this crate itself turns on).

// Each test file uses a different part of this module.
#[allow(unused_imports)]
pub(crate) use portcullis_storage::test_s3::{multipart_uploads, raw_keys, TestS3};

/// A key to commit content with `digest` under, laid out as the registry lays out blobs (the
/// layout itself is the registry's, in `portcullis::metadata::layout`).
pub(crate) fn content_key(digest: &portcullis_storage::Digest) -> String {
    format!("blobs/sha256/{}/{}", &digest.hex()[..2], digest.hex())
}
