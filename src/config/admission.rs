//! `[admission]`: the Kubernetes admission webhooks (`/admission/mutate`, `/admission/validate`):
//! the host names this registry is known by in image references, what validation demands, which
//! namespaces are exempt, and how often admitted digests are judged again for drift. Without the
//! section the webhook endpoints answer `404` and nothing is remembered.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::admission::AdmissionConfig;
use crate::policy::gate::GateMode;

/// `[admission]` as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileAdmission {
    hosts: Vec<String>,
    mode: GateMode,
    require_digest: bool,
    allowed_registries: Vec<String>,
    exempt_namespaces: Vec<String>,
    exempt_labels: BTreeMap<String, String>,
    revalidate_every: String,
}

impl Default for FileAdmission {
    fn default() -> Self {
        FileAdmission {
            hosts: Vec::new(),
            mode: GateMode::Enforce,
            require_digest: false,
            allowed_registries: Vec::new(),
            exempt_namespaces: vec!["kube-system".to_owned()],
            exempt_labels: BTreeMap::new(),
            revalidate_every: "1h".to_owned(),
        }
    }
}

impl FileAdmission {
    pub(super) fn load(self) -> Result<AdmissionConfig, String> {
        if self.hosts.is_empty() {
            return Err("admission.hosts: name at least one host this registry is known by in image references (e.g. \"registry.example.com\")".to_owned());
        }
        let hosts = self.hosts.iter().map(|host| checked_host(host, "admission.hosts")).collect::<Result<Vec<_>, _>>()?;
        let allowed_registries = self
            .allowed_registries
            .iter()
            .map(|entry| {
                let (host, path) = entry.split_once('/').map_or((entry.as_str(), None), |(host, path)| (host, Some(path)));
                let host = checked_host(host, "admission.allowed_registries")?;
                match path {
                    None => Ok(host),
                    Some(path) if path.parse::<crate::names::RepoName>().is_ok() => Ok(format!("{host}/{path}")),
                    Some(_) => Err(format!("admission.allowed_registries: {entry:?}: expected HOST[:PORT] or HOST[:PORT]/PATH with a repository path")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        for namespace in &self.exempt_namespaces {
            if !crate::metadata::admissions::is_dns_label(namespace) {
                return Err(format!("admission.exempt_namespaces: {namespace:?} is not a Kubernetes namespace name"));
            }
        }
        for (key, value) in &self.exempt_labels {
            if !valid_label_key(key) || !valid_label_value(value) {
                return Err(format!("admission.exempt_labels: {key:?} = {value:?} is not a Kubernetes label"));
            }
        }
        let revalidate_every = humantime::parse_duration(&self.revalidate_every)
            .map_err(|err| format!("admission.revalidate_every: {:?}: {err}", self.revalidate_every))?;
        if revalidate_every < Duration::from_secs(60) {
            return Err(format!("admission.revalidate_every: expected at least 1m, found {:?}", self.revalidate_every));
        }
        Ok(AdmissionConfig {
            hosts,
            mode: self.mode,
            require_digest: self.require_digest,
            allowed_registries,
            exempt_namespaces: self.exempt_namespaces,
            exempt_labels: self.exempt_labels,
            revalidate_every,
        })
    }
}

/// `host[:port]`, lowercased: what an image reference names a registry by.
fn checked_host(host: &str, what: &str) -> Result<String, String> {
    let probe = format!("{host}/x");
    match crate::admission::image::ImageName::parse(&probe) {
        Ok(image) if image.host == host.to_ascii_lowercase() => Ok(image.host),
        _ => Err(format!("{what}: {host:?} is not HOST or HOST:PORT as image references write it (with a `.` or a port, or localhost)")),
    }
}

/// `[prefix/]name`: a DNS subdomain prefix and a name of at most 63 characters.
fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(prefix, name)| (Some(prefix), name));
    prefix.is_none_or(|prefix| !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(crate::metadata::admissions::is_dns_label))
        && !name.is_empty()
        && valid_label_value(name)
}

/// At most 63 characters of `[A-Za-z0-9._-]`, starting and ending with a letter or digit.
fn valid_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || (bytes.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b)))
}
