//! Bytes to push: pseudo-random (so nothing in the path can compress or deduplicate them),
//! different for every seed, and made fast enough that making 1 GiB takes well under a second.

use bytes::Bytes;
use sha2::Digest as _;

/// `len` pseudo-random bytes from `seed`.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut buf = vec![0u8; len];
    fill(&mut buf, seed);
    Bytes::from(buf)
}

/// Fills `buf` with pseudo-random bytes from `seed` (splitmix64 per 8 bytes).
pub(crate) fn fill(buf: &mut [u8], seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = splitmix64(&mut state).to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
