//! The store layout, spelled once: every key the registry reads or writes is built here, by
//! [`Key`] (one object) or [`Prefix`] (a listing), and parsed back by [`Object::from_key`]. The
//! `metadata` module doc lists the layout, and a test checks that it names every kind of [`Key`],
//! that every key built matches its line, and that ARCHITECTURE.md lists the same lines.
//!
//! A new kind of object is a variant of [`Key`] with its [`Key::pattern`], the same line in the
//! module doc and in ARCHITECTURE.md, a [`Prefix`] if it is listed, and a variant of [`Object`]
//! if `fsck` checks it one by one (the audit log is checked as a chain instead).

use std::fmt;

use storage::Digest;

use super::admissions::Workload;
use crate::names::{RepoName, Tag, UploadId};

/// Every kind of object the registry keeps in the store, with what names it. `Display` writes
/// its key.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    /// Blob and manifest bytes, by content.
    Blob(&'a Digest),
    /// The blob is visible in the repository.
    BlobLink(&'a RepoName, &'a Digest),
    /// A manifest revision in the repository.
    ManifestLink(&'a RepoName, &'a Digest),
    /// A tag.
    Tag(&'a RepoName, &'a Tag),
    /// The digest a deleted write-once tag was bound to.
    Tombstone(&'a RepoName, &'a Tag),
    /// `referrer` refers to `subject` in `repo`.
    Referrer {
        /// The repository.
        repo: &'a RepoName,
        /// The manifest referred to.
        subject: &'a Digest,
        /// The manifest that refers to it.
        referrer: &'a Digest,
    },
    /// The index `parent` in `repo` lists `child`.
    Parent {
        /// The repository.
        repo: &'a RepoName,
        /// The manifest listed.
        child: &'a Digest,
        /// The index that lists it.
        parent: &'a Digest,
    },
    /// The media type a manifest digest is stored as, everywhere.
    ManifestType(&'a Digest),
    /// The repository exists.
    Catalog(&'a RepoName),
    /// The promotion of `digest` into `target`.
    PromotionRecord {
        /// The repository promoted into.
        target: &'a RepoName,
        /// The manifest promoted.
        digest: &'a Digest,
    },
    /// Audit record number `seq`.
    AuditRecord(u64),
    /// The last audit record's number and hash.
    AuditHead,
    /// The verification-summary signing key the registry generated.
    SigningKey,
    /// An upload session.
    Upload(&'a str),
    /// A lease held by one process at a time (`gc`, `scrub`).
    Lease(&'a str),
    /// Present while a collection pass removes what its doomed buckets list.
    Sweep,
    /// One bucket of what a collection pass is about to remove, by the first hex digits of the
    /// sha256 of each victim's key.
    Doomed(&'a str),
    /// What a proxied repository's tag pointed to upstream when last checked.
    UpstreamTag(&'a RepoName, &'a Tag),
    /// Proxied content in a repository: from which upstream, when, and when last pulled.
    Proxied(&'a RepoName, &'a Digest),
    /// The manifest was pulled in the repository (the object's time of writing says when).
    Pulled(&'a RepoName, &'a Digest),
    /// A workload admitted with images of this registry (Kubernetes admission).
    Admission(&'a Workload),
    /// An admitted digest whose verdict turned to failing.
    Drift(&'a RepoName, &'a Digest),
    /// Content whose bytes did not hash to its digest, moved aside by scrub.
    Quarantine(&'a Digest),
}

/// Where keys are listed: a [`Key`] kind's keys are this prefix followed by a name.
#[derive(Debug, Clone, Copy)]
pub enum Prefix<'a> {
    /// Manifest revisions of a repository, by digest hex.
    Manifests(&'a RepoName),
    /// Tags of a repository, by name.
    Tags(&'a RepoName),
    /// Referrer links of a subject, by the referrer's digest hex.
    Referrers(&'a RepoName, &'a Digest),
    /// Parent links of a manifest, by the index's digest hex.
    Parents(&'a RepoName, &'a Digest),
    /// Catalog entries, by [`catalog_entry`].
    Catalog,
    /// Audit records, by sequence number in 20 digits.
    AuditRecords,
    /// Promotion records of a target, by digest hex.
    PromotionRecords(&'a RepoName),
    /// Blob links of a repository, by digest hex.
    BlobLinks(&'a RepoName),
    /// Tombstones of a repository, by tag.
    Tombstones(&'a RepoName),
    /// Every referrer link of a repository, by `<subject hex>/<referrer hex>`.
    AllReferrers(&'a RepoName),
    /// Blob and manifest bytes, by `<2 hex>/<64 hex>`.
    Blobs,
    /// Buckets of a collection pass, by hex prefix.
    Doomed,
    /// Proxied content records of a repository, by digest hex.
    Proxied(&'a RepoName),
    /// Pull records of a repository, by digest hex.
    Pulled(&'a RepoName),
    /// Admission records, by cluster, namespace, kind and name.
    Admissions,
    /// Drift rows, by repository and digest.
    Drift,
    /// Quarantined content, by digest hex.
    Quarantine,
}

/// The prefixes below which every key is an [`Object`]: what `fsck` walks, in this order.
pub const OBJECT_ROOTS: [&str; 4] = [CATALOG, REPOSITORIES, UPLOADS, PROMOTIONS];

const CATALOG: &str = "catalog/";
const REPOSITORIES: &str = "repositories/";
const UPLOADS: &str = "uploads/";
const PROMOTIONS: &str = "promotions/";
const AUDIT_RECORDS: &str = "audit/records/";
const ADMISSIONS: &str = "admissions/";
const DRIFT: &str = "drift/";

impl Key<'_> {
    /// How the data layout (the `metadata` module doc) writes keys of this kind.
    pub fn pattern(self) -> &'static str {
        match self {
            Key::Blob(_) => "blobs/sha256/<2 hex>/<64 hex>",
            Key::BlobLink(..) => "repositories/<name>/_blobs/sha256/<hex>",
            Key::ManifestLink(..) => "repositories/<name>/_manifests/sha256/<hex>",
            Key::Tag(..) => "repositories/<name>/_tags/<tag>",
            Key::Tombstone(..) => "repositories/<name>/_tombstones/<tag>",
            Key::Referrer { .. } => "repositories/<name>/_referrers/sha256/<subject>/<hex>",
            Key::Parent { .. } => "repositories/<name>/_parents/sha256/<child>/<parent>",
            Key::ManifestType(_) => "types/sha256/<hex>",
            Key::Catalog(_) => "catalog/<hex name in 200-char segments>/-",
            Key::PromotionRecord { .. } => "promotions/<target>/_records/<hex>",
            Key::AuditRecord(_) => "audit/records/<seq, 20 digits>",
            Key::AuditHead => "audit/head",
            Key::SigningKey => "keys/vsa-signing-key.pem",
            Key::Upload(_) => "uploads/<uuid>",
            Key::Lease(_) => "leases/<name>",
            Key::Sweep => "gc/sweep",
            Key::Doomed(_) => "gc/doomed/<hex prefix>",
            Key::UpstreamTag(..) => "repositories/<name>/_upstream_tags/<tag>",
            Key::Proxied(..) => "repositories/<name>/_proxied/sha256/<hex>",
            Key::Pulled(..) => "repositories/<name>/_pulled/sha256/<hex>",
            Key::Admission(_) => "admissions/<hex cluster>/<namespace>/<kind>/<name>",
            Key::Drift(..) => "drift/<name>/_digests/<hex>",
            Key::Quarantine(_) => "quarantine/sha256/<hex>",
        }
    }
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Key::Blob(digest) => write!(f, "{}{}/{}", Prefix::Blobs, &digest.hex()[..2], digest.hex()),
            Key::BlobLink(repo, digest) => write!(f, "{}{}", Prefix::BlobLinks(repo), digest.hex()),
            Key::ManifestLink(repo, digest) => write!(f, "{}{}", Prefix::Manifests(repo), digest.hex()),
            Key::Tag(repo, tag) => write!(f, "{}{tag}", Prefix::Tags(repo)),
            Key::Tombstone(repo, tag) => write!(f, "{}{tag}", Prefix::Tombstones(repo)),
            Key::Referrer { repo, subject, referrer } => write!(f, "{}{}", Prefix::Referrers(repo, subject), referrer.hex()),
            Key::Parent { repo, child, parent } => write!(f, "{}{}", Prefix::Parents(repo, child), parent.hex()),
            Key::ManifestType(digest) => write!(f, "types/sha256/{}", digest.hex()),
            Key::Catalog(repo) => write!(f, "{CATALOG}{}", catalog_entry(repo)),
            Key::PromotionRecord { target, digest } => write!(f, "{}{}", Prefix::PromotionRecords(target), digest.hex()),
            Key::AuditRecord(seq) => write!(f, "{AUDIT_RECORDS}{}", audit_entry(seq)),
            Key::AuditHead => f.write_str("audit/head"),
            Key::SigningKey => f.write_str("keys/vsa-signing-key.pem"),
            Key::Upload(upload_id) => write!(f, "{UPLOADS}{upload_id}"),
            Key::Lease(name) => write!(f, "leases/{name}"),
            Key::Sweep => f.write_str("gc/sweep"),
            Key::Doomed(bucket) => write!(f, "{}{bucket}", Prefix::Doomed),
            Key::UpstreamTag(repo, tag) => write!(f, "{REPOSITORIES}{repo}/_upstream_tags/{tag}"),
            Key::Proxied(repo, digest) => write!(f, "{}{}", Prefix::Proxied(repo), digest.hex()),
            Key::Pulled(repo, digest) => write!(f, "{}{}", Prefix::Pulled(repo), digest.hex()),
            Key::Admission(workload) => {
                write!(f, "{ADMISSIONS}{}/{}/{}/{}", workload.cluster_segment(), workload.namespace, workload.kind, workload.name)
            }
            Key::Drift(repo, digest) => write!(f, "{DRIFT}{repo}/_digests/{}", digest.hex()),
            Key::Quarantine(digest) => write!(f, "{}{}", Prefix::Quarantine, digest.hex()),
        }
    }
}

impl fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Prefix::Manifests(repo) => write!(f, "{REPOSITORIES}{repo}/_manifests/sha256/"),
            Prefix::Tags(repo) => write!(f, "{REPOSITORIES}{repo}/_tags/"),
            Prefix::Referrers(repo, subject) => write!(f, "{REPOSITORIES}{repo}/_referrers/sha256/{}/", subject.hex()),
            Prefix::Parents(repo, child) => write!(f, "{REPOSITORIES}{repo}/_parents/sha256/{}/", child.hex()),
            Prefix::Catalog => f.write_str(CATALOG),
            Prefix::AuditRecords => f.write_str(AUDIT_RECORDS),
            Prefix::PromotionRecords(target) => write!(f, "{PROMOTIONS}{target}/_records/"),
            Prefix::BlobLinks(repo) => write!(f, "{REPOSITORIES}{repo}/_blobs/sha256/"),
            Prefix::Tombstones(repo) => write!(f, "{REPOSITORIES}{repo}/_tombstones/"),
            Prefix::AllReferrers(repo) => write!(f, "{REPOSITORIES}{repo}/_referrers/sha256/"),
            Prefix::Blobs => f.write_str("blobs/sha256/"),
            Prefix::Doomed => f.write_str("gc/doomed/"),
            Prefix::Proxied(repo) => write!(f, "{REPOSITORIES}{repo}/_proxied/sha256/"),
            Prefix::Pulled(repo) => write!(f, "{REPOSITORIES}{repo}/_pulled/sha256/"),
            Prefix::Admissions => f.write_str(ADMISSIONS),
            Prefix::Drift => f.write_str(DRIFT),
            Prefix::Quarantine => f.write_str("quarantine/sha256/"),
        }
    }
}

/// The name of audit record `seq` below [`Prefix::AuditRecords`]: 20 digits, so names sort by
/// number.
pub fn audit_entry(seq: u64) -> String {
    format!("{seq:020}")
}

/// The catalog key of `repo`, relative to `catalog/`. Hex keeps the byte order of names (`a` <
/// `a-b` < `a/b`, which `/`-separated keys would not), the 200-character segments keep file names
/// short, and the final `-` sorts before any hex digit so a name comes before the longer names it
/// prefixes.
pub fn catalog_entry(repo: &RepoName) -> String {
    format!("{}/-", catalog_seek(repo.as_str()))
}

/// Where a listing of `catalog/` starts so that its first name is the first one at or after
/// `prefix` in name order: the hex of `prefix` in the segments of [`catalog_entry`], without its
/// final `/-`, sorts before every key of a name that starts with `prefix` and after every key
/// of a smaller name.
pub fn catalog_seek(prefix: &str) -> String {
    let hex = hex::encode(prefix);
    let segments: Vec<&str> = hex.as_bytes().chunks(200).map(|c| std::str::from_utf8(c).expect("hex is ASCII")).collect();
    segments.join("/")
}

/// The repository name of a catalog key relative to `catalog/`; `None` for anything else.
pub fn catalog_name(entry: &str) -> Option<String> {
    let hex: String = entry.strip_suffix("/-")?.split('/').collect();
    String::from_utf8(hex::decode(hex).ok()?).ok()
}

/// The digest of an entry of [`Prefix::Blobs`] (`<2 hex>/<64 hex>`); `None` for anything else.
pub fn blob_entry_digest(entry: &str) -> Option<Digest> {
    let (fan, hex) = entry.split_once('/')?;
    (hex.get(..2) == Some(fan)).then(|| digest_of_hex(hex)).flatten()
}

/// A digest from the hex a key names it by.
pub fn digest_of_hex(hex: &str) -> Option<Digest> {
    format!("sha256:{hex}").parse().ok()
}

/// A metadata object `fsck` checks one by one, known by its key (the keys below [`OBJECT_ROOTS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// `catalog/...`: the repository exists.
    Catalog(RepoName),
    /// `repositories/<name>/_blobs/sha256/<hex>`
    BlobLink(RepoName, Digest),
    /// `repositories/<name>/_manifests/sha256/<hex>`
    ManifestLink(RepoName, Digest),
    /// `repositories/<name>/_tags/<tag>`
    Tag(RepoName, Tag),
    /// `repositories/<name>/_tombstones/<tag>`
    Tombstone(RepoName, Tag),
    /// `repositories/<name>/_referrers/sha256/<subject>/<referrer>`
    Referrer {
        /// The repository.
        repo: RepoName,
        /// The manifest referred to.
        subject: Digest,
        /// The manifest that refers to it.
        referrer: Digest,
    },
    /// `repositories/<name>/_parents/sha256/<child>/<parent>`
    Parent {
        /// The repository.
        repo: RepoName,
        /// The manifest listed.
        child: Digest,
        /// The index that lists it.
        parent: Digest,
    },
    /// `uploads/<id>`
    Upload(String),
    /// `promotions/<target>/_records/<hex>`
    PromotionRecord {
        /// The repository promoted into.
        target: RepoName,
        /// The manifest promoted.
        digest: Digest,
    },
    /// `repositories/<name>/_upstream_tags/<tag>`
    UpstreamTag(RepoName, Tag),
    /// `repositories/<name>/_proxied/sha256/<hex>`
    Proxied(RepoName, Digest),
    /// `repositories/<name>/_pulled/sha256/<hex>`
    Pulled(RepoName, Digest),
}

impl Object {
    /// The object the registry keeps under `key`; `None` for a key where it keeps none.
    pub fn from_key(key: &str) -> Option<Object> {
        let object = Object::parse(key)?;
        // Round-tripped through the key builders, so the layout is written down once.
        (object.key() == key).then_some(object)
    }

    fn parse(key: &str) -> Option<Object> {
        if let Some(entry) = key.strip_prefix(CATALOG) {
            return catalog_name(entry)?.parse().ok().map(Object::Catalog);
        }
        if let Some(upload_id) = key.strip_prefix(UPLOADS) {
            return upload_id.parse::<UploadId>().is_ok().then(|| Object::Upload(upload_id.to_owned()));
        }
        if let Some(rest) = key.strip_prefix(PROMOTIONS) {
            let (target, hex) = rest.split_once("/_records/")?;
            return Some(Object::PromotionRecord { target: target.parse().ok()?, digest: digest_of_hex(hex)? });
        }
        let rest = key.strip_prefix(REPOSITORIES)?;
        // The name ends where the registry's own segments begin: no component of it starts with `_`.
        let (name, own) = rest.split_once("/_")?;
        let repo: RepoName = name.parse().ok()?;
        let digest = digest_of_hex;
        match own.split('/').collect::<Vec<_>>().as_slice() {
            ["blobs", "sha256", hex] => Some(Object::BlobLink(repo, digest(hex)?)),
            ["manifests", "sha256", hex] => Some(Object::ManifestLink(repo, digest(hex)?)),
            ["tags", tag] => Some(Object::Tag(repo, tag.parse().ok()?)),
            ["tombstones", tag] => Some(Object::Tombstone(repo, tag.parse().ok()?)),
            ["referrers", "sha256", subject, referrer] => {
                Some(Object::Referrer { repo, subject: digest(subject)?, referrer: digest(referrer)? })
            }
            ["parents", "sha256", child, parent] => Some(Object::Parent { repo, child: digest(child)?, parent: digest(parent)? }),
            ["upstream_tags", tag] => Some(Object::UpstreamTag(repo, tag.parse().ok()?)),
            ["proxied", "sha256", hex] => Some(Object::Proxied(repo, digest(hex)?)),
            ["pulled", "sha256", hex] => Some(Object::Pulled(repo, digest(hex)?)),
            _ => None,
        }
    }

    /// What names it.
    pub fn as_key(&self) -> Key<'_> {
        match self {
            Object::Catalog(repo) => Key::Catalog(repo),
            Object::BlobLink(repo, digest) => Key::BlobLink(repo, digest),
            Object::ManifestLink(repo, digest) => Key::ManifestLink(repo, digest),
            Object::Tag(repo, tag) => Key::Tag(repo, tag),
            Object::Tombstone(repo, tag) => Key::Tombstone(repo, tag),
            Object::Referrer { repo, subject, referrer } => Key::Referrer { repo, subject, referrer },
            Object::Parent { repo, child, parent } => Key::Parent { repo, child, parent },
            Object::Upload(upload_id) => Key::Upload(upload_id),
            Object::PromotionRecord { target, digest } => Key::PromotionRecord { target, digest },
            Object::UpstreamTag(repo, tag) => Key::UpstreamTag(repo, tag),
            Object::Proxied(repo, digest) => Key::Proxied(repo, digest),
            Object::Pulled(repo, digest) => Key::Pulled(repo, digest),
        }
    }

    /// The key it is kept under.
    pub fn key(&self) -> String {
        self.as_key().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_keys_sort_like_names() {
        let long = format!("{}/x", "a".repeat(150));
        let mut names = vec!["a", "a-b", "a.b", "a/b", "a_b", "ab", "b", long.as_str(), "a/b/c"];
        names.sort();
        let mut entries: Vec<String> = names.iter().map(|n| catalog_entry(&n.parse().unwrap())).collect();
        entries.sort();
        let decoded: Vec<String> = entries.iter().map(|e| catalog_name(e).unwrap()).collect();
        assert_eq!(decoded, names);
        for entry in &entries {
            storage::validate_key(&format!("{CATALOG}{entry}")).unwrap();
            assert!(entry.split('/').all(|segment| segment.len() <= 200));
        }
        // A listing from a seek starts at the first name at or after the prefix.
        let long_prefix = "a".repeat(100);
        for prefix in ["", "a", "a/", "a/b", "a_", "b", "c", long_prefix.as_str()] {
            let seek = catalog_seek(prefix);
            let listed: Vec<&str> = names.iter().zip(&entries).filter(|(_, e)| e.as_str() > seek.as_str()).map(|(n, _)| *n).collect();
            let expected: Vec<&str> = names.iter().copied().filter(|n| *n >= prefix).collect();
            assert_eq!(listed, expected, "prefix {prefix:?}");
        }
    }

    #[test]
    fn blob_key() {
        let digest = Digest::of(b"");
        assert_eq!(
            Key::Blob(&digest).to_string(),
            "blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn objects_and_their_keys() {
        let hex = "ab".repeat(32);
        let upload_id = "0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11";
        let check = |key: &str, expected: Option<&str>| {
            let got = Object::from_key(key).map(|object| format!("{object:?}"));
            match (got.as_deref(), expected) {
                (Some(got), Some(expected)) => assert!(got.starts_with(expected), "{key}: got {got}, expected {expected}"),
                (got, expected) => assert_eq!(got, expected, "{key}"),
            }
        };
        check(&Key::Catalog(&"a/b".parse().unwrap()).to_string(), Some("Catalog(RepoName(\"a/b\"))"));
        check(&format!("repositories/a/b/_blobs/sha256/{hex}"), Some("BlobLink(RepoName(\"a/b\"), sha256:abab"));
        check(&format!("repositories/a/_manifests/sha256/{hex}"), Some("ManifestLink(RepoName(\"a\"), sha256:abab"));
        check("repositories/a/_tags/v1", Some("Tag(RepoName(\"a\"), Tag(\"v1\"))"));
        check("repositories/a/_tombstones/v1", Some("Tombstone(RepoName(\"a\"), Tag(\"v1\"))"));
        check(&format!("repositories/a/_referrers/sha256/{hex}/{hex}"), Some("Referrer { repo: RepoName(\"a\"), subject: sha256:abab"));
        check(&format!("repositories/a/_parents/sha256/{hex}/{hex}"), Some("Parent { repo: RepoName(\"a\"), child: sha256:abab"));
        check(&format!("uploads/{upload_id}"), Some("Upload(\"0b7d5c7e"));
        check(&format!("promotions/prod/app/_records/{hex}"), Some("PromotionRecord { target: RepoName(\"prod/app\"), digest: sha256:abab"));
        check("repositories/proxy/docker.io/library/alpine/_upstream_tags/3.20", Some("UpstreamTag(RepoName(\"proxy/docker.io/library/alpine\"), Tag(\"3.20\"))"));
        check(&format!("repositories/proxy/x/_proxied/sha256/{hex}"), Some("Proxied(RepoName(\"proxy/x\"), sha256:abab"));
        check(&format!("repositories/a/_pulled/sha256/{hex}"), Some("Pulled(RepoName(\"a\"), sha256:abab"));
        // Keys where the registry keeps no metadata object.
        for key in [
            "repositories/a/_manifests/sha256/zz".to_owned(),
            format!("repositories/A/_manifests/sha256/{hex}"),
            "repositories/a/_tags/-v1".into(),
            "repositories/a/_tags/v1/x".into(),
            "repositories/a/_unknown/v1".into(),
            "repositories/a/tags/v1".into(),
            format!("repositories/a/_referrers/sha256/{hex}"),
            "uploads/not-an-id".into(),
            "catalog/zz/-".into(),
            "catalog/61".into(),
            "keys/vsa-signing-key.pem".into(),
            format!("promotions/prod/app/_records/{hex}/x"),
            format!("promotions/prod/app/records/{hex}"),
            "promotions/prod/app/_records/zz".into(),
            format!("promotions/Prod/_records/{hex}"),
        ] {
            check(&key, None);
        }
    }

    /// The lines of the first fenced block after `heading` in `text`, each without the `//! `
    /// of a module doc.
    fn layout_block<'t>(text: &'t str, heading: &str) -> Vec<&'t str> {
        let after = &text[text.find(heading).unwrap_or_else(|| panic!("{heading:?} is there"))..];
        let lines = after.lines().map(|line| line.strip_prefix("//!").map_or(line, |rest| rest.strip_prefix(' ').unwrap_or(rest)));
        lines.skip_while(|line| !line.starts_with("```")).skip(1).take_while(|line| !line.starts_with("```")).collect()
    }

    /// A key pattern as a regex: each `<...>` stands for one or more characters.
    fn pattern_regex(pattern: &str) -> regex::Regex {
        let mut regex = String::from("^");
        let mut rest = pattern;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("placeholders close") + open;
            regex += &regex::escape(&rest[..open]);
            regex += ".+";
            rest = &rest[close + 1..];
        }
        regex += &regex::escape(rest);
        regex::Regex::new(&(regex + "$")).expect("patterns make regexes")
    }

    // The data layout is written down three times: in the key builders, in the module doc, and in
    // ARCHITECTURE.md. They agree line by line, every kind of key has its line, and every key
    // built matches its line's pattern.
    #[test]
    fn the_documented_layout_is_the_one_built() {
        let module_doc = layout_block(include_str!("mod.rs"), "Below the store root");
        let architecture = layout_block(include_str!("../../ARCHITECTURE.md"), "## Data layout");
        assert_eq!(module_doc, architecture, "the module doc and ARCHITECTURE.md list the same layout");
        let documented: Vec<&str> = module_doc.iter().map(|line| line.split("  ").next().unwrap_or_default()).collect();

        let (repo, tag, digest, other) = ("team/app".parse().unwrap(), "v1".parse().unwrap(), Digest::of(b"a"), Digest::of(b"b"));
        let upload_id = UploadId::random();
        let workload = Workload::new("admission-controller", "shop", "Deployment", "web").unwrap();
        // One of each kind; the match below fails to compile when a kind is missing from it.
        let keys = [
            Key::Blob(&digest),
            Key::BlobLink(&repo, &digest),
            Key::ManifestLink(&repo, &digest),
            Key::Tag(&repo, &tag),
            Key::Tombstone(&repo, &tag),
            Key::Referrer { repo: &repo, subject: &digest, referrer: &other },
            Key::Parent { repo: &repo, child: &digest, parent: &other },
            Key::ManifestType(&digest),
            Key::Catalog(&repo),
            Key::PromotionRecord { target: &repo, digest: &digest },
            Key::AuditRecord(7),
            Key::AuditHead,
            Key::SigningKey,
            Key::Upload(upload_id.as_str()),
            Key::Lease("gc"),
            Key::Sweep,
            Key::Doomed("a0f"),
            Key::UpstreamTag(&repo, &tag),
            Key::Proxied(&repo, &digest),
            Key::Pulled(&repo, &digest),
            Key::Admission(&workload),
            Key::Drift(&repo, &digest),
            Key::Quarantine(&digest),
        ];
        let mut seen = [false; 23];
        for key in keys {
            let kind = match key {
                Key::Blob(_) => 0,
                Key::BlobLink(..) => 1,
                Key::ManifestLink(..) => 2,
                Key::Tag(..) => 3,
                Key::Tombstone(..) => 4,
                Key::Referrer { .. } => 5,
                Key::Parent { .. } => 6,
                Key::ManifestType(_) => 7,
                Key::Catalog(_) => 8,
                Key::PromotionRecord { .. } => 9,
                Key::AuditRecord(_) => 10,
                Key::AuditHead => 11,
                Key::SigningKey => 12,
                Key::Upload(_) => 13,
                Key::Lease(_) => 14,
                Key::Sweep => 15,
                Key::Doomed(_) => 16,
                Key::UpstreamTag(..) => 17,
                Key::Proxied(..) => 18,
                Key::Admission(_) => 19,
                Key::Drift(..) => 20,
                Key::Pulled(..) => 21,
                Key::Quarantine(_) => 22,
            };
            seen[kind] = true;
            let built = key.to_string();
            storage::validate_key(&built).unwrap_or_else(|err| panic!("{built}: {err}"));
            assert!(documented.contains(&key.pattern()), "{} is not in the data layout", key.pattern());
            assert!(pattern_regex(key.pattern()).is_match(&built), "{built} does not match {}", key.pattern());
            if let Some(object) = Object::from_key(&built) {
                assert_eq!(object.as_key().pattern(), key.pattern(), "{built} parses back as its own kind");
            }
        }
        assert!(seen.iter().all(|seen| *seen), "every kind of key has an example here");
        let patterns: Vec<&str> = keys.iter().map(|key| key.pattern()).collect();
        for line in documented {
            assert!(patterns.contains(&line), "{line:?} is documented but no key is built that way");
        }
    }
}
