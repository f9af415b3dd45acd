//! Real clients pulling through the proxy as a transparent mirror of "docker.io", which here is a
//! CNCF Distribution on loopback (Docker Hub itself is never contacted): containerd (`ctr` with
//! a `hosts.toml` mirror, so every request carries `?ns=docker.io`), dockerd with
//! `--registry-mirror` (no `ns=`: the default upstream), and skopeo and podman with a
//! `registries.conf` mirror. Every digest a client ends up with is the upstream's. Each client's
//! fallback to the real registry points at a closed port, so a failing mirror fails the test
//! instead of reaching the internet.

mod common;

use common::clients::Clients;
use common::daemons::{Containerd, Dockerd};
use common::distribution::{self, Distribution};
use common::TestRegistry;

/// "docker.io" (a Distribution) holding `library/alpine:3` (an OCI index of two platforms) and
/// `library/busybox:1` (a Docker schema 2 image), and a portcullis mirroring it.
struct Mirror {
    upstream: Distribution,
    proxy: TestRegistry,
    /// The upstream digests of alpine:3 and busybox:1.
    alpine: String,
    busybox: String,
    clients: Clients,
    dir: tempfile::TempDir,
}

async fn mirror() -> Mirror {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Distribution::start(distribution::Options::default()).await;
    let clients = Clients::new();
    let host = upstream.base_url.strip_prefix("http://").unwrap().to_owned();
    let index = common::images::multi_platform_index(&dir.path().join("alpine"), "3", 11);
    let image = common::images::multi_layer_image(&dir.path().join("busybox"), "1", 2, 12);
    let mut digests = Vec::new();
    for (layout, name, args) in [(&index, "library/alpine:3", vec!["--all"]), (&image, "library/busybox:1", vec!["--format", "v2s2"])] {
        let digest_file = dir.path().join(format!("{}.digest", name.replace(['/', ':'], "-")));
        let mut copy = vec!["--dest-tls-verify=false", "--digestfile", digest_file.to_str().unwrap()];
        copy.extend(args);
        let source = layout.oci_ref();
        let target = format!("docker://{host}/{name}");
        copy.extend([source.as_str(), target.as_str()]);
        clients.skopeo("copy", &copy).await.ok();
        digests.push(std::fs::read_to_string(&digest_file).unwrap().trim().to_owned());
    }
    assert_eq!(digests[0], index.manifest_digest, "the index went up as it is");
    let text = format!(
        "[[upstreams]]\nname = \"docker.io\"\nurl = \"{}\"\nnamespace = \"proxy/docker.io/**\"\nhosts = [\"docker.io\"]\ndefault = true\n[[namespaces]]\npattern = \"**\"\n",
        upstream.base_url
    );
    let proxy = TestRegistry::with_config_text(&text).await;
    Mirror { upstream, proxy, alpine: digests[0].clone(), busybox: digests[1].clone(), clients, dir }
}

/// Upstream GETs of manifests and blobs so far (its access log).
fn upstream_gets(mirror: &Mirror) -> usize {
    mirror.upstream.requests("GET /v2/library/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_a_hosts_toml_mirror_with_ns() {
    let mirror = mirror().await;
    let containerd = Containerd::start().await;
    let hosts = containerd.path("hosts");
    std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
    // A closed port as the registry itself: a failing mirror must not fall back to the internet.
    let hosts_toml = format!(
        "server = \"http://127.0.0.1:1\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        mirror.proxy.host
    );
    std::fs::write(hosts.join("docker.io/hosts.toml"), hosts_toml).unwrap();
    let hosts_dir = hosts.to_str().unwrap();
    for (image, digest) in [("docker.io/library/alpine:3", &mirror.alpine), ("docker.io/library/busybox:1", &mirror.busybox)] {
        containerd.ctr(&["images", "pull", "--hosts-dir", hosts_dir, "--snapshotter", "native", image]).await.ok();
        let listed = containerd.ctr(&["images", "ls"]).await.ok().stdout;
        let line = listed.lines().find(|line| line.starts_with(&format!("{image} "))).unwrap_or_else(|| panic!("{image} not listed: {listed}"));
        assert!(line.contains(digest.as_str()), "{image}: the upstream's digest {digest}, got {line}");
    }
    // Through the ns= route: into the repositories kept for docker.io.
    assert!(mirror.proxy.has_object("repositories/proxy/docker.io/library/alpine/_tags/3").await);
    assert!(mirror.proxy.has_object("repositories/proxy/docker.io/library/busybox/_tags/1").await);

    // A second containerd pulls from the cache: the upstream sees only the tag checks, if any.
    let before = upstream_gets(&mirror);
    let again = Containerd::start().await;
    again.ctr(&["images", "pull", "--hosts-dir", hosts_dir, "--snapshotter", "native", "docker.io/library/alpine:3"]).await.ok();
    assert_eq!(upstream_gets(&mirror), before, "a warm pull fetches nothing from the upstream");
    drop(mirror.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerd_pulls_through_its_registry_mirror() {
    let mirror = mirror().await;
    let dockerd = Dockerd::start(&mirror.proxy.base_url).await;
    for (image, digest) in [("alpine:3", &mirror.alpine), ("busybox:1", &mirror.busybox)] {
        let pulled = dockerd.docker(&["pull", image]).await;
        assert!(pulled.status.success(), "docker pull {image}: {}{}\ndockerd: {}", pulled.stdout, pulled.stderr, dockerd.log());
        let inspected = dockerd.docker(&["image", "inspect", "--format", "{{json .RepoDigests}}", image]).await.ok();
        assert!(inspected.stdout.contains(digest.as_str()), "{image}: the upstream's digest {digest}, got {}", inspected.stdout);
    }
    // No ns=: the default upstream took the names this registry does not have.
    assert!(mirror.proxy.has_object("repositories/proxy/docker.io/library/alpine/_tags/3").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_podman_pull_through_a_registries_conf_mirror() {
    let mirror = mirror().await;
    // skopeo by the mirror's namespace, podman by the default upstream; docker.io itself is a
    // closed port.
    let conf = format!(
        "[[registry]]\nprefix = \"docker.io/library/busybox\"\nlocation = \"127.0.0.1:1/library/busybox\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{host}/proxy/docker.io/library/busybox\"\ninsecure = true\n\n[[registry]]\nprefix = \"docker.io\"\nlocation = \"127.0.0.1:1\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{host}\"\ninsecure = true\n",
        host = mirror.proxy.host
    );
    std::fs::write(mirror.clients.path("registries.conf"), conf).unwrap();
    for (image, digest) in [("docker.io/library/busybox:1", &mirror.busybox), ("docker.io/library/alpine:3", &mirror.alpine)] {
        let out = mirror.dir.path().join(format!("skopeo-{}", digest.replace(':', "-")));
        let target = format!("oci:{}:x", out.display());
        let source = format!("docker://{image}");
        mirror.clients.skopeo("copy", &["--all", "--preserve-digests", &source, &target]).await.ok();
        assert_eq!(common::images::index_json_digest(&out, "x"), *digest, "skopeo {image}");
    }
    for (image, digest) in [("docker.io/library/alpine:3", &mirror.alpine), ("docker.io/library/busybox:1", &mirror.busybox)] {
        mirror.clients.podman(&["pull", image]).await.ok();
        let inspected = mirror.clients.podman(&["image", "inspect", "--format", "{{.Digest}}", image]).await.ok();
        assert_eq!(inspected.stdout.trim(), digest.as_str(), "podman {image}");
    }
}
