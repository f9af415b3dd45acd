//! What the proxy keeps beside the content it pulled through, which is itself stored exactly as
//! pushed content is (same keys, same digests): per repository, what each tag pointed to upstream
//! when it was last checked (`_upstream_tags/<tag>`), and where and when each proxied manifest or
//! blob came from (`_proxied/sha256/<hex>`), for freshness, stale serving, tag-move alarms and
//! the cache's size cap.

use serde::{Deserialize, Serialize};
use storage::{Digest, PutCondition};

use super::{encode, parses_as, Key, Metadata, Prefix, Result};
use crate::names::{RepoName, Tag};

/// What a proxied repository's tag pointed to upstream, as last checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTagRecord {
    /// The digest the upstream tag pointed to at the last check that reached it: the last seen.
    #[serde(deserialize_with = "parses_as::<Digest, _>")]
    pub digest: String,
    /// When the tag was last checked, answered or not (seconds since the Unix epoch): a failed
    /// check counts, so a failing upstream is asked once per `tag_ttl`, not once per pull.
    pub checked: u64,
    /// When the upstream last answered the check.
    pub confirmed: u64,
    /// Whether the last check failed (the tag is served stale until one succeeds).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failing: bool,
    /// With `tag_moves = "hold"`: the digest the tag moved to upstream, waiting for an admin to
    /// accept it while the old one is served.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "optional_digest")]
    pub pending: Option<String>,
}

/// Where and when proxied content (a manifest or a blob) in a repository came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiedRecord {
    /// The upstream's name.
    pub upstream: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it is a manifest (the unit the cache evicts; blobs go with their manifests).
    #[serde(default)]
    pub manifest: bool,
    /// When it was fetched (seconds since the Unix epoch).
    pub fetched: u64,
    /// When it was last pulled, as last written (writes are spaced out; see `proxy::cache`).
    pub pulled: u64,
}

/// `deserialize_with` of an optional stored digest.
fn optional_digest<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let value: Option<String> = Option::deserialize(deserializer)?;
    if let Some(text) = &value {
        text.parse::<Digest>().map_err(serde::de::Error::custom)?;
    }
    Ok(value)
}

impl Metadata {
    /// What `tag` in the proxied `repo` pointed to upstream when last checked.
    pub async fn upstream_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<UpstreamTagRecord>> {
        self.read(&Key::UpstreamTag(repo, tag).to_string()).await
    }

    /// Records a check of `tag` upstream.
    pub async fn put_upstream_tag(&self, repo: &RepoName, tag: &Tag, record: &UpstreamTagRecord) -> Result<()> {
        self.store.put_small(&Key::UpstreamTag(repo, tag).to_string(), encode(record), PutCondition::Always).await?;
        Ok(())
    }

    /// Forgets the upstream record of `tag` (the tag is gone upstream, or evicted here).
    pub async fn delete_upstream_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        Ok(self.store.delete(&Key::UpstreamTag(repo, tag).to_string()).await?)
    }

    /// Where and when the proxied content `digest` of `repo` came from.
    pub async fn proxied(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ProxiedRecord>> {
        self.read(&Key::Proxied(repo, digest).to_string()).await
    }

    /// Records proxied content of `repo`.
    pub async fn put_proxied(&self, repo: &RepoName, digest: &Digest, record: &ProxiedRecord) -> Result<()> {
        self.store.put_small(&Key::Proxied(repo, digest).to_string(), encode(record), PutCondition::Always).await?;
        Ok(())
    }

    /// Forgets proxied content of `repo` (evicted).
    pub async fn delete_proxied(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        Ok(self.store.delete(&Key::Proxied(repo, digest).to_string()).await?)
    }

    /// Digest hex of the proxied content records of `repo`, a page at a time.
    pub async fn proxied_hexes(&self, repo: &RepoName, start_after: Option<&str>, limit: usize) -> Result<storage::ListPage> {
        Ok(self.store.list(&Prefix::Proxied(repo).to_string(), start_after, limit, true).await?)
    }
}
