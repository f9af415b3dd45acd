//! Which repositories map to which upstream, and how their names read there.
//!
//! A repository below an upstream's prefix (`proxy/docker.io/library/alpine`) is that upstream's
//! repository of the rest of the name (`library/alpine`); with `library`, a one-component name
//! gains `library/` as Docker Hub's do, so `proxy/docker.io/alpine` and
//! `proxy/docker.io/library/alpine` are one repository, the latter. Transparent mirroring puts
//! requests under the prefix: containerd names the upstream host with `?ns=docker.io`, and
//! dockerd's `registry-mirrors` send no `ns=` at all, so the default upstream takes pulls of
//! repositories that do not exist here.

use crate::names::{NameError, RepoName};

use super::upstream::UpstreamConfig;

/// The upstream's name for the repository `local`, when `local` is below its prefix.
pub fn remote_name(config: &UpstreamConfig, local: &RepoName) -> Option<String> {
    let rest = local.as_str().strip_prefix(config.prefix.as_str())?.strip_prefix('/')?;
    Some(with_library(config, rest))
}

/// The repository kept here for the upstream's repository `remote`: `<prefix>/<remote>`.
pub fn local_name(config: &UpstreamConfig, remote: &str) -> Result<RepoName, NameError> {
    format!("{}/{}", config.prefix, with_library(config, remote)).parse()
}

/// `remote` as the upstream names it: `library/` added to one component when it asks for that.
fn with_library(config: &UpstreamConfig, remote: &str) -> String {
    if config.library && !remote.contains('/') {
        format!("library/{remote}")
    } else {
        remote.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(prefix: &str, library: bool) -> UpstreamConfig {
        UpstreamConfig {
            name: "docker.io".parse().unwrap(),
            url: "https://registry-1.docker.io".parse().unwrap(),
            prefix: prefix.parse().unwrap(),
            hosts: vec!["docker.io".into()],
            default: false,
            library,
            credentials: None,
            ca_pem: None,
            timeout: std::time::Duration::from_secs(30),
            tag_ttl: std::time::Duration::from_secs(300),
            stale_for: std::time::Duration::from_secs(7 * 86_400),
            tag_moves: Default::default(),
            max_bytes: None,
        }
    }

    #[test]
    fn names_here_and_upstream() {
        let hub = upstream("proxy/docker.io", true);
        let partner = upstream("partner", false);
        // (upstream, local name, its name upstream)
        let cases: [(&UpstreamConfig, &str, Option<&str>); 8] = [
            (&hub, "proxy/docker.io/library/alpine", Some("library/alpine")),
            (&hub, "proxy/docker.io/alpine", Some("library/alpine")),
            (&hub, "proxy/docker.io/bitnami/redis", Some("bitnami/redis")),
            (&hub, "proxy/docker.io", None),
            (&hub, "proxy/docker.iox/alpine", None),
            (&hub, "build/app", None),
            (&partner, "partner/app", Some("app")),
            (&partner, "partner/team/app", Some("team/app")),
        ];
        for (config, local, expected) in cases {
            assert_eq!(remote_name(config, &local.parse().unwrap()).as_deref(), expected, "{local}");
        }
        assert_eq!(local_name(&hub, "alpine").unwrap().as_str(), "proxy/docker.io/library/alpine");
        assert_eq!(local_name(&hub, "library/alpine").unwrap().as_str(), "proxy/docker.io/library/alpine");
        assert_eq!(local_name(&partner, "app").unwrap().as_str(), "partner/app");
        assert!(local_name(&hub, &"a".repeat(250)).is_err(), "too long once prefixed");
    }
}
