//! The S3 test environment shared by `conformance.rs` and `s3.rs`: `portcullis_storage::test_s3`
//! (feature `test-support`, which the dev-dependency on this crate itself turns on).

// Each test file uses a different part of this module.
#[allow(unused_imports)]
pub(crate) use portcullis_storage::test_s3::{multipart_uploads, raw_keys, TestS3};
