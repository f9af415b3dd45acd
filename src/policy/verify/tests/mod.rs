//! Verification tests: the shared sigstore fixtures (`fixtures`), evidence made here with real
//! keys and certificates (`generated`, built with `testkit`), and malformed and mutated input
//! (`robustness`).

mod fixtures;
mod generated;
mod robustness;
mod testkit;

/// The shared fixtures, read in place (never copied into the repository).
pub(super) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/sigstore");

/// The Trust is shared across async tasks.
#[test]
fn trust_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<super::Trust>();
}
