//! Repository names, tags, references and upload ids: parsed once at the edge, so the types carry
//! the checks.
//!
//! Grammar from the distribution-spec "Pulling manifests" section. A valid [`RepoName`] is also a
//! safe store path: its components are `[a-z0-9]` runs joined by `.`, `_`, `__` or `-`, so none
//! is empty, `.`, `..`, or starts with `_` (the prefix of the registry's own key segments).

use std::fmt;
use std::str::FromStr;

/// Longest accepted repository name. The spec bounds `<host>/<name>` to 255 characters for many
/// clients; the name alone gets the same bound.
const MAX_NAME_LEN: usize = 255;

/// A validated repository name such as `build/team/app`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// A validated tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// What a manifest request names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// `.../manifests/v1`
    Tag(Tag),
    /// `.../manifests/sha256:...`
    Digest(storage::Digest),
}

/// A repository and a reference, as written by people: `repo:tag`, `repo@sha256:…`, or `repo`
/// (meaning `repo:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The repository.
    pub repo: RepoName,
    /// The tag or digest.
    pub reference: Reference,
}

/// An upload session's id: a UUID in the form the registry hands out (lowercase, hyphenated), so
/// it is also a safe store key. Any other string names no session that can exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

/// Why a name, tag, reference or upload id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a repository name.
    #[error("invalid repository name {0:?}")]
    Name(String),
    /// Not a tag.
    #[error("invalid tag {0:?}")]
    Tag(String),
    /// A digest reference that does not parse.
    #[error(transparent)]
    Digest(#[from] storage::digest::DigestError),
    /// Not an upload id the registry could have handed out.
    #[error("blob upload unknown to registry: {0:?} is not an upload id")]
    UploadId(String),
}

fn valid_component(component: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !(separator == "." || separator == "_" || separator == "__" || dashes) {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<RepoName, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(NameError::Name(s.chars().take(MAX_NAME_LEN + 1).collect()));
        }
        Ok(RepoName(s.to_owned()))
    }
}

impl RepoName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Tag, NameError> {
        let bytes = s.as_bytes();
        let head_ok = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let rest_ok = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !head_ok || !rest_ok || bytes.len() > 128 {
            return Err(NameError::Tag(s.chars().take(129).collect()));
        }
        Ok(Tag(s.to_owned()))
    }
}

/// The kinds of evidence in cosign's tag scheme: `sha256-<hex>.sig`, `.att`, `.sbom`.
pub const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

impl Tag {
    /// The tag as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// cosign's tag for evidence about `subject`, `suffix` one of [`COSIGN_SUFFIXES`].
    pub fn cosign(subject: &storage::Digest, suffix: &str) -> Tag {
        Tag(format!("sha256-{}.{suffix}", subject.hex()))
    }

    /// The subject of a tag of cosign's scheme: exactly `sha256-<64 lowercase hex>.sig`, `.att`
    /// or `.sbom`. Look-alikes (`sha256-x.sig`) are ordinary tags.
    pub fn cosign_subject(&self) -> Option<storage::Digest> {
        let (hex, suffix) = self.0.strip_prefix("sha256-")?.split_once('.')?;
        if !COSIGN_SUFFIXES.contains(&suffix) {
            return None;
        }
        format!("sha256:{hex}").parse().ok()
    }
}

impl FromStr for Reference {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl FromStr for ImageRef {
    type Err = NameError;

    fn from_str(s: &str) -> Result<ImageRef, NameError> {
        if let Some((repo, digest)) = s.split_once('@') {
            return Ok(ImageRef { repo: repo.parse()?, reference: Reference::Digest(digest.parse()?) });
        }
        // Repository names contain no `:`, so the last one starts the tag.
        match s.rsplit_once(':') {
            Some((repo, tag)) => Ok(ImageRef { repo: repo.parse()?, reference: Reference::Tag(tag.parse()?) }),
            None => Ok(ImageRef { repo: s.parse()?, reference: Reference::Tag(Tag("latest".to_owned())) }),
        }
    }
}

impl UploadId {
    /// A new, random id.
    pub fn random() -> UploadId {
        UploadId(uuid::Uuid::new_v4().to_string())
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = NameError;

    fn from_str(s: &str) -> Result<UploadId, NameError> {
        // Only the canonical form: the same session must not have two names (and keys).
        match uuid::Uuid::parse_str(s) {
            Ok(uuid) if uuid.to_string() == s => Ok(UploadId(s.to_owned())),
            _ => Err(NameError::UploadId(s.chars().take(64).collect())),
        }
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(tag) => write!(f, "{}:{tag}", self.repo),
            Reference::Digest(digest) => write!(f, "{}@{digest}", self.repo),
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => tag.fmt(f),
            Reference::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        let long = "a".repeat(256);
        let check = |name: &str, ok: bool| assert_eq!(name.parse::<RepoName>().is_ok(), ok, "{name:?}");
        for name in ["a", "build/app", "a/b/c/d", "a.b", "a_b", "a__b", "a---b", "0/9"] {
            check(name, true);
        }
        for name in ["", "A", "a/", "/a", "a//b", "..", "a/../b", "a/./b", ".a", "a.", "a___b", "a._b", "_a", "a/_tags", "a b", "a%2fb", &long] {
            check(name, false);
        }
    }

    #[test]
    fn tags_and_references() {
        for tag in ["v1", "V1.0-rc_1", "_x", "latest"] {
            assert!(tag.parse::<Tag>().is_ok(), "{tag}");
        }
        for tag in ["", ".x", "-x", "a/b", "a:b", &"t".repeat(129)] {
            assert!(tag.parse::<Tag>().is_err(), "{tag}");
        }
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(digest.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!("sha256:zz".parse::<Reference>(), Err(NameError::Digest(_))));
    }

    #[test]
    fn cosign_tags() {
        let hex = "c".repeat(64);
        let subject: storage::Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(Tag::cosign(&subject, "att").as_str(), format!("sha256-{hex}.att"));
        for (tag, cosign) in [
            (format!("sha256-{hex}.sig"), true),
            (format!("sha256-{hex}.sbom"), true),
            ("sha256-x.sig".to_owned(), false),
            (format!("sha256-{}.sig", "C".repeat(64)), false),
            (format!("sha256-{hex}.sig.sig"), false),
            (format!("sha256-{hex}.txt"), false),
            (format!("sha512-{hex}.sig"), false),
            ("v1".to_owned(), false),
        ] {
            let subject_of = tag.parse::<Tag>().unwrap().cosign_subject();
            assert_eq!(subject_of.is_some(), cosign, "{tag}");
        }
        assert_eq!(Tag::cosign(&subject, "sig").cosign_subject(), Some(subject));
    }

    #[test]
    fn upload_ids() {
        let id = UploadId::random();
        assert_eq!(id.as_str().parse::<UploadId>(), Ok(id.clone()));
        let canonical = "0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11";
        assert!(canonical.parse::<UploadId>().is_ok());
        // Other spellings of a UUID are not the id the registry handed out.
        for bad in ["", "u1", "not-a-uuid", "0B7D5C7E-3E7E-4A4E-9A36-4B2E0B1D9C11", "0b7d5c7e3e7e4a4e9a364b2e0b1d9c11", "{0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11}", "../0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11"] {
            assert!(matches!(bad.parse::<UploadId>(), Err(NameError::UploadId(_))), "{bad}");
        }
    }

    #[test]
    fn image_refs() {
        let digest = format!("sha256:{}", "b".repeat(64));
        for (input, shown) in [
            ("prod/app:v2.1", "prod/app:v2.1".to_owned()),
            ("prod/app", "prod/app:latest".to_owned()),
            (&format!("build/app@{digest}"), format!("build/app@{digest}")),
        ] {
            assert_eq!(input.parse::<ImageRef>().unwrap().to_string(), shown);
        }
        for bad in ["Prod/app:v1", "app:", "app@sha256:zz", "../x:v1"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }
}
