//! Tag writes and deletes under the namespace's tag rules, atomic through the store's
//! conditional writes:
//! - mutable tags are overwritten;
//! - immutable and write-once tags are created with create-only writes, so of many racing pushes
//!   exactly one binds the tag; re-binding the same digest is an idempotent success;
//! - an immutable tag is never deleted; a write-once tag leaves a tombstone (written before the
//!   tag is removed) that keeps its name bound to its digest forever. Re-binding a deleted
//!   write-once tag to that same digest is allowed: the name still means the same content.

use storage::{BlobStoreError, Digest, PutCondition};

use crate::names::{RepoName, Tag};
use super::{Registry, RegistryError, Result};
use crate::metadata::{MetadataError, StoredTag, TagRecord};
use crate::policy::namespaces::TagMode;
use crate::policy::tags::{rule_for, EffectiveRule};

/// How many times a create-only write is retried when the tag vanishes between two reads.
const MAX_RACE_RETRIES: usize = 8;

/// What binding one tag did, so a failed multi-tag push can be undone.
enum Bound {
    /// The tag already pointed to the digest.
    Unchanged,
    /// The tag was created, or moved from the previous record.
    Written { previous: Option<TagRecord> },
}

fn is_precondition_failure(err: &MetadataError) -> bool {
    matches!(err, MetadataError::Store(BlobStoreError::PreconditionFailed(_)))
}

fn refused_move(repo: &RepoName, tag: &Tag, rule: &EffectiveRule, bound: &str, wanted: &Digest) -> RegistryError {
    RegistryError::Denied(format!(
        "tag {repo}:{tag} is {} ({}) and bound to {bound}; refusing to bind it to {wanted}",
        rule.mode,
        rule.source()
    ))
}

impl Registry {
    /// The tag rule for `tag` in `repo`.
    pub fn tag_rule(&self, repo: &RepoName, tag: &Tag) -> EffectiveRule {
        rule_for(&self.config().namespaces, repo.as_str(), Some(tag.as_str()))
    }

    /// Points every tag at `digest`, all or nothing: a refused or failed tag undoes the others.
    pub(super) async fn bind_tags(&self, repo: &RepoName, tags: &[&Tag], digest: &Digest) -> Result<()> {
        // Refuse up front what the rules refuse, so the common refusal writes nothing at all.
        for tag in tags {
            self.check_bindable(repo, tag, digest).await?;
        }
        let mut done: Vec<(&Tag, Option<TagRecord>)> = Vec::new();
        for tag in tags {
            match self.bind_tag(repo, tag, digest).await {
                Ok(Bound::Unchanged) => {}
                Ok(Bound::Written { previous }) => done.push((tag, previous)),
                Err(err) => {
                    for (tag, previous) in done.into_iter().rev() {
                        let undone = match previous {
                            Some(record) => self.metadata.put_tag(repo, tag, &record, PutCondition::Always).await,
                            None => self.metadata.delete_tag(repo, tag).await,
                        };
                        if let Err(undo_err) = undone {
                            tracing::error!(repo = %repo, tag = %tag, error = %undo_err, "cannot undo a tag of a failed push");
                        }
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    pub(super) async fn check_bindable(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        let rule = self.tag_rule(repo, tag);
        if rule.mode == TagMode::Mutable {
            return Ok(());
        }
        let wanted = digest.to_string();
        if let Some(current) = self.metadata.tag(repo, tag).await? {
            if current.record.digest != wanted {
                return Err(refused_move(repo, tag, &rule, &current.record.digest, digest));
            }
        }
        if rule.mode == TagMode::WriteOnce {
            self.check_tombstone(repo, tag, &rule, digest).await?;
        }
        Ok(())
    }

    async fn check_tombstone(&self, repo: &RepoName, tag: &Tag, rule: &EffectiveRule, digest: &Digest) -> Result<()> {
        match self.metadata.tombstone(repo, tag).await? {
            Some(burned) if burned.digest != digest.to_string() => Err(RegistryError::Denied(format!(
                "tag {repo}:{tag} is write-once ({}) and was bound to {} before it was deleted; it can never be bound to {digest}",
                rule.source(),
                burned.digest
            ))),
            _ => Ok(()),
        }
    }

    async fn bind_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<Bound> {
        let rule = self.tag_rule(repo, tag);
        let record = TagRecord { digest: digest.to_string() };
        if rule.mode == TagMode::Mutable {
            let previous = self.metadata.tag(repo, tag).await?.map(|stored| stored.record);
            if previous.as_ref() == Some(&record) {
                return Ok(Bound::Unchanged);
            }
            self.metadata.put_tag(repo, tag, &record, PutCondition::Always).await?;
            return Ok(Bound::Written { previous });
        }
        for _ in 0..MAX_RACE_RETRIES {
            if rule.mode == TagMode::WriteOnce {
                self.check_tombstone(repo, tag, &rule, digest).await?;
            }
            match self.metadata.put_tag(repo, tag, &record, PutCondition::IfAbsent).await {
                Ok(()) => return Ok(Bound::Written { previous: None }),
                Err(err) if is_precondition_failure(&err) => {}
                Err(err) => return Err(err.into()),
            }
            match self.metadata.tag(repo, tag).await? {
                Some(StoredTag { record: current, .. }) if current == record => return Ok(Bound::Unchanged),
                Some(StoredTag { record: current, .. }) => return Err(refused_move(repo, tag, &rule, &current.digest, digest)),
                // Deleted between our write and our read: try again.
                None => continue,
            }
        }
        Err(RegistryError::Unavailable(format!("tag {repo}:{tag} keeps changing; retry")))
    }

    /// Deletes a tag as its rule allows: mutable tags go, immutable ones stay, write-once ones
    /// leave a tombstone; in a protected namespace a cosign evidence tag stays while its subject
    /// does. Returns the digest the tag pointed to.
    pub(super) async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Digest> {
        let current = self.metadata.tag(repo, tag).await?;
        let current = current.ok_or_else(|| RegistryError::ManifestUnknown(format!("{repo}:{tag}")))?;
        let digest: Digest = current
            .record
            .digest
            .parse()
            .map_err(|_| RegistryError::Internal(format!("tag {repo}:{tag} holds {:?}", current.record.digest)))?;
        if let Some(subject) = tag.cosign_subject() {
            self.refuse_evidence_delete(repo, &subject, &format!("tag {repo}:{tag}")).await?;
        }
        let rule = self.tag_rule(repo, tag);
        match rule.mode {
            TagMode::Mutable => {}
            TagMode::Immutable => {
                return Err(RegistryError::Denied(format!(
                    "tag {repo}:{tag} is immutable ({}) and bound to {}; it cannot be deleted",
                    rule.source(),
                    current.record.digest
                )));
            }
            TagMode::WriteOnce => self.metadata.put_tombstone(repo, tag, &current.record).await?,
        }
        self.metadata.delete_tag(repo, tag).await?;
        Ok(digest)
    }
}
