//! The Kubernetes manifests: `deploy/kubernetes/` (a kustomize base and one overlay per cloud
//! load balancer) and the sidecar example in `config/kubernetes/`; docs/kubernetes.md and
//! docs/replicas.md:
//! - `kubectl kustomize` renders the base and every overlay, and every rendered document
//!   validates against the Kubernetes schemas (`kubernetes-validate --strict`, offline), as does
//!   the sidecar example; so do the commands docs/kubernetes.md shows for it, one for each;
//! - the base has no PROXY protocol and a ClusterIP Service (what `kubectl port-forward`
//!   reaches); `aws-nlb` makes the Service an NLB with PROXY protocol v2 and turns PROXY
//!   protocol on in certgate's config; `azure` makes it an Azure Load Balancer that keeps client
//!   addresses (`externalTrafficPolicy: Local`) and leaves PROXY protocol off; an overlay
//!   changes nothing else, and its config differs from the base's in `proxyProtocol` alone;
//! - in each, the pieces fit: the Service, PodDisruptionBudget and HorizontalPodAutoscaler
//!   select the Deployment's pods; the pod is non-root with a read-only root file system;
//!   probes use the admin port; `terminationGracePeriodSeconds` exceeds drain delay plus grace;
//! - `certgate check` accepts each rendered config with the Secrets mounted beside it;
//! - the real binary runs with the Deployment's args and env and the ConfigMap and Secrets laid
//!   out as the kubelet mounts them (`..data` symlink to a timestamped folder), the apps'
//!   upstreams pointed at a local echo app, and reports ready through `certgate health`; the
//!   base serves a loopback client (as `kubectl port-forward` connects), `aws-nlb` refuses it
//!   as not from a trusted balancer; both reload when a Secret update swaps `..data`.
//!
//! `kubectl` (1.21 or later, for `resources: [../../base]` and `patches` in a kustomization) is
//! one of the tools a test needs: missing, the tests are skipped, and fail under CI.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::stdin::output_with_stdin;
use common::*;
use process::{Child, Stream};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

const INSTALL_VALIDATE: &str = "python3 -m pip install kubernetes-validate";

const INSTALL_KUBECTL: &str = "apt-get install kubectl, 1.21 or later, from the Kubernetes \
    package repository (Debian's own kubernetes-client is 1.20, whose `kubectl kustomize` \
    cannot read these kustomizations)";

/// The sidecar example, a plain manifest.
const SIDECAR: &str = "config/kubernetes/deployment.yaml";

/// The base, then every overlay, by name (`base`, `aws-nlb`, …).
fn kustomizations() -> Vec<(String, PathBuf)> {
    let mut overlays: Vec<(String, PathBuf)> =
        std::fs::read_dir(repo("deploy/kubernetes/overlays"))
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                )
            })
            .collect();
    overlays.sort();
    let mut all = vec![("base".to_owned(), repo("deploy/kubernetes/base"))];
    all.extend(overlays);
    all
}

/// The worked examples of `deploy/kubernetes/examples/` (kustomizations over the base that add
/// an app of their own), by name.
fn examples() -> Vec<(String, PathBuf)> {
    let mut examples: Vec<(String, PathBuf)> =
        std::fs::read_dir(repo("deploy/kubernetes/examples"))
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                )
            })
            .collect();
    examples.sort();
    examples
}

fn kustomization(name: &str) -> PathBuf {
    kustomizations()
        .into_iter()
        .find(|(each, _)| each == name)
        .unwrap_or_else(|| panic!("no kustomization {name}"))
        .1
}

/// `kubectl kustomize DIR`: the rendered manifests, YAML.
fn render(dir: &Path) -> Vec<u8> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed (it needs {INSTALL_KUBECTL}):\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Every document of a YAML stream, as JSON (PyYAML, which kubernetes-validate brings).
fn documents(yaml: &[u8], what: &str) -> Vec<Value> {
    let output = output_with_stdin(
        Command::new("python3").args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ]),
        yaml,
    );
    assert!(
        output.status.success(),
        "cannot read {what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A kustomization's rendered documents, by kind.
fn rendered(name: &str) -> BTreeMap<String, Value> {
    let mut by_kind = BTreeMap::new();
    for document in documents(&render(&kustomization(name)), name) {
        let kind = document["kind"].as_str().unwrap().to_owned();
        assert!(
            by_kind.insert(kind.clone(), document).is_none(),
            "two {kind}s in {name}"
        );
    }
    by_kind
}

/// certgate's config, as the ConfigMap holds it.
fn certgate_config(docs: &BTreeMap<String, Value>) -> Value {
    serde_json::from_str(docs["ConfigMap"]["data"]["certgate.json"].as_str().unwrap()).unwrap()
}

fn yaml_tools() -> bool {
    tools::available_with(
        "python3",
        &["-m", "kubernetes_validate", "--version"],
        INSTALL_VALIDATE,
    ) && tools::available_with("python3", &["-c", "import yaml"], INSTALL_VALIDATE)
}

/// python3 with kubernetes-validate, and kubectl.
fn kubernetes_tools() -> bool {
    yaml_tools() && tools::available_with("kubectl", &["version", "--client"], INSTALL_KUBECTL)
}

/// Validates `yaml` (`what`, for messages) with `kubernetes-validate --strict -`; each of its
/// `count` documents must pass.
fn assert_validates(yaml: &[u8], count: usize, what: &str) {
    let output = output_with_stdin(
        Command::new("python3").args(["-m", "kubernetes_validate", "--strict", "-"]),
        yaml,
    );
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} does not validate:\n{printed}"
    );
    assert_eq!(
        printed.matches("passed for resource").count(),
        count,
        "{what}:\n{printed}"
    );
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    if !kubernetes_tools() {
        return;
    }
    let sidecar = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(repo(SIDECAR))
        .output()
        .unwrap();
    assert!(
        sidecar.status.success(),
        "{SIDECAR} does not validate:\n{}{}",
        String::from_utf8_lossy(&sidecar.stdout),
        String::from_utf8_lossy(&sidecar.stderr)
    );
    let all = kustomizations();
    assert!(all.len() >= 3, "{all:?}");
    for (name, dir) in all.into_iter().chain(examples()) {
        let yaml = render(&dir);
        let count = documents(&yaml, &name).len();
        assert!(count >= 5, "{name} renders {count} documents");
        assert_validates(&yaml, count, &name);
    }
}

#[test]
fn the_documented_validation_commands_validate_every_manifest() {
    if !kubernetes_tools() {
        return;
    }
    let page = std::fs::read_to_string(repo("docs/kubernetes.md")).unwrap();
    let commands: Vec<&str> = page
        .lines()
        .filter(|line| {
            line.starts_with("python3 -m kubernetes_validate ")
                || (line.starts_with("kubectl kustomize ")
                    && line.contains("| python3 -m kubernetes_validate "))
        })
        .collect();
    let mut validated = Vec::new();
    for command in commands {
        let output = Command::new("bash")
            .args(["-o", "pipefail", "-c", command])
            .current_dir(repo(""))
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{command}\n{printed}");
        let named = command.split_whitespace().nth(2).unwrap();
        if command.starts_with("kubectl kustomize ") {
            let count = documents(&render(&repo(named)), named).len();
            assert_eq!(
                printed.matches("passed for resource").count(),
                count,
                "{command} does not validate every document of {named}:\n{printed}"
            );
            validated.push(repo(named));
        } else {
            assert!(
                printed.contains(&format!("{SIDECAR} passed")),
                "{command} does not validate {SIDECAR}:\n{printed}"
            );
            validated.push(repo(SIDECAR));
        }
    }
    let mut expected: Vec<PathBuf> = kustomizations()
        .into_iter()
        .chain(examples())
        .map(|(_, dir)| dir)
        .collect();
    expected.push(repo(SIDECAR));
    expected.sort();
    validated.sort();
    assert_eq!(
        validated, expected,
        "docs/kubernetes.md validates each manifest, the base, every overlay and every example"
    );
}

#[test]
fn the_ingress_manifests_fit_together() {
    if !kubernetes_tools() {
        return;
    }
    for (name, _) in kustomizations() {
        let docs = rendered(&name);
        let deployment = &docs["Deployment"];
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
        assert_eq!(&docs["Service"]["spec"]["selector"], labels, "{name}");
        assert_eq!(
            &docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
            labels
        );
        let target = &docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"];
        assert_eq!(target["kind"], "Deployment");
        assert_eq!(target["name"], deployment["metadata"]["name"]);
        assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);

        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert!(pod["topologySpreadConstraints"].is_array());
        assert!(pod["affinity"]["podAntiAffinity"].is_object());
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert!(container["resources"]["requests"]["cpu"].is_string());
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            assert_eq!(container[probe]["httpGet"]["path"], path);
            assert_eq!(container[probe]["httpGet"]["port"], "admin");
        }
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .any(|volume| volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]),
            "{name}: the pod mounts the ConfigMap by its name (no hash suffix): {volumes:?}"
        );

        let config = certgate_config(&docs);
        let admin_port: u64 = config["admin"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let ports = container["ports"].as_array().unwrap();
        assert!(
            ports
                .iter()
                .any(|port| port["name"] == "admin" && port["containerPort"] == admin_port),
            "{name}: {ports:?}"
        );
        let drain_ms = config["timeouts"]["drainDelayMs"].as_u64().unwrap();
        let grace_ms = config["timeouts"]["shutdownGraceMs"].as_u64().unwrap();
        let termination_s = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            termination_s * 1000 > drain_ms + grace_ms,
            "{name}: terminationGracePeriodSeconds {termination_s} does not cover {drain_ms} + {grace_ms} ms"
        );
    }
}

/// `document` without `metadata.annotations` and the `spec` keys named.
fn without(document: &Value, spec_keys: &[&str]) -> Value {
    let mut document = document.clone();
    if let Some(metadata) = document["metadata"].as_object_mut() {
        metadata.remove("annotations");
    }
    if let Some(spec) = document["spec"].as_object_mut() {
        for key in spec_keys {
            spec.remove(*key);
        }
    }
    document
}

#[test]
fn the_base_has_no_proxy_protocol_and_each_overlay_does_what_it_says() {
    if !kubernetes_tools() {
        return;
    }
    let base = rendered("base");
    let base_config = certgate_config(&base);
    assert!(
        base_config.get("proxyProtocol").is_none(),
        "the base must serve `kubectl port-forward`: {base_config}"
    );
    assert_eq!(base["Service"]["spec"]["type"], "ClusterIP");
    assert!(base["Service"]["metadata"].get("annotations").is_none());

    let overlays: Vec<String> = kustomizations()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name != "base")
        .collect();
    assert_eq!(
        overlays,
        ["aws-nlb", "azure"],
        "a new overlay needs its checks here"
    );

    for name in &overlays {
        let docs = rendered(name);
        assert_eq!(
            docs.keys().collect::<Vec<_>>(),
            base.keys().collect::<Vec<_>>(),
            "{name}"
        );
        // An overlay changes the Service and the config, nothing else.
        for (kind, document) in &docs {
            match kind.as_str() {
                "ConfigMap" => {}
                "Service" => assert_eq!(
                    without(document, &["type", "externalTrafficPolicy"]),
                    without(&base[kind], &["type"]),
                    "{name}"
                ),
                _ => assert_eq!(document, &base[kind], "{name} changes the {kind}"),
            }
        }
        let service = &docs["Service"];
        assert_eq!(service["spec"]["type"], "LoadBalancer", "{name}");
        let annotations = &service["metadata"]["annotations"];
        let mut config = certgate_config(&docs);
        match name.as_str() {
            "aws-nlb" => {
                for (annotation, value) in [
                    ("aws-load-balancer-type", "external"),
                    ("aws-load-balancer-nlb-target-type", "ip"),
                    ("aws-load-balancer-proxy-protocol", "*"),
                ] {
                    assert_eq!(
                        annotations[format!("service.beta.kubernetes.io/{annotation}")],
                        value,
                        "{name}: {annotations}"
                    );
                }
                let sources = config["proxyProtocol"]["trustedSources"]
                    .as_array()
                    .unwrap();
                assert!(!sources.is_empty(), "{config}");
                config.as_object_mut().unwrap().remove("proxyProtocol");
            }
            "azure" => {
                assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
                assert!(
                    config.get("proxyProtocol").is_none(),
                    "the Azure Load Balancer sends no PROXY header: {config}"
                );
                assert!(
                    annotations
                        .as_object()
                        .is_none_or(|all| all.keys().all(|key| !key.contains("proxy-protocol"))),
                    "{annotations}"
                );
            }
            _ => unreachable!(),
        }
        assert_eq!(
            config, base_config,
            "{name}'s certgate.json differs from the base's in more than proxyProtocol"
        );
    }
}

/// A volume as the kubelet lays it out: the files in a timestamped folder, `..data` pointing
/// to it, and one symlink per file through `..data`.
struct MountedVolume {
    path: PathBuf,
    generation: u32,
}

impl MountedVolume {
    fn new(path: PathBuf, files: &[(String, Vec<u8>)]) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let mut volume = Self {
            path,
            generation: 0,
        };
        volume.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.path.join(name)).unwrap();
        }
        volume
    }

    /// What the kubelet does on a Secret or ConfigMap update: a new folder, then an atomic
    /// swap of `..data`.
    fn update(&mut self, files: &[(String, Vec<u8>)]) {
        self.generation += 1;
        let folder = format!("..2026_01_01_00_00_00.{}", self.generation);
        std::fs::create_dir(self.path.join(&folder)).unwrap();
        for (name, contents) in files {
            std::fs::write(self.path.join(&folder).join(name), contents).unwrap();
        }
        let temporary = self.path.join("..data_tmp");
        std::os::unix::fs::symlink(&folder, &temporary).unwrap();
        std::fs::rename(&temporary, self.path.join("..data")).unwrap();
    }
}

fn ticket_key_file() -> Vec<u8> {
    certgate::new_key_file().unwrap().into_bytes()
}

/// A rendered Deployment's certgate container with its volumes mounted under a temp dir.
struct Pod {
    root: TempDir,
    /// The pod's volumes, by name.
    volumes: HashMap<String, MountedVolume>,
    /// The container's args, paths under the temp dir.
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Pod {
    /// Mounts the ConfigMap holding `config` and the Secrets docs/replicas.md's commands make
    /// (a server certificate for the config's hosts from `pki`) as the Deployment in `docs` says.
    fn mount(docs: &BTreeMap<String, Value>, config: &Value, pki: &Pki) -> Self {
        let pod = &docs["Deployment"]["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let hosts: Vec<String> = config["apps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|app| app["hosts"].as_array().unwrap().clone())
            .map(|host| host.as_str().unwrap().to_owned())
            .collect();
        let server = pki.server_ca.issue(LeafSpec {
            dns: hosts,
            ..LeafSpec::server()
        });
        let root = TempDir::new();
        let secrets: HashMap<&str, Vec<(String, Vec<u8>)>> = HashMap::from([
            (
                "certgate-tls",
                vec![
                    ("server.pem".to_owned(), server.pem.clone().into_bytes()),
                    (
                        "server.key".to_owned(),
                        server.key.serialize_pem().into_bytes(),
                    ),
                    (
                        "client-ca.pem".to_owned(),
                        pki.client_ca.pem.clone().into_bytes(),
                    ),
                ],
            ),
            (
                "certgate-ticket-keys",
                vec![("ticket-keys".to_owned(), ticket_key_file())],
            ),
        ]);
        let config_map = vec![(
            "certgate.json".to_owned(),
            serde_json::to_vec_pretty(config).unwrap(),
        )];
        assert_eq!(
            docs["ConfigMap"]["data"].as_object().unwrap().len(),
            1,
            "the ConfigMap holds certgate.json alone"
        );
        let host_path = |mount: &str| root.path().join(mount.trim_start_matches('/'));

        let mut volumes = HashMap::new();
        for mount in container["volumeMounts"].as_array().unwrap() {
            assert_eq!(mount["readOnly"], true, "{mount}");
            let name = mount["name"].as_str().unwrap();
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|volume| volume["name"] == name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            let files = if volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"] {
                config_map.clone()
            } else {
                let secret = volume["secret"]["secretName"].as_str().unwrap();
                secrets
                    .get(secret)
                    .unwrap_or_else(|| panic!("the test does not know Secret {secret}"))
                    .clone()
            };
            let path = host_path(mount["mountPath"].as_str().unwrap());
            volumes.insert(name.to_owned(), MountedVolume::new(path, &files));
        }

        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| {
                let arg = arg.as_str().unwrap();
                if arg.starts_with('/') {
                    host_path(arg).display().to_string()
                } else {
                    arg.to_owned()
                }
            })
            .collect();
        let env: Vec<(String, String)> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|var| {
                let value = var["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("only plain env values are supported: {var}"));
                (var["name"].as_str().unwrap().to_owned(), value.to_owned())
            })
            .collect();
        Self {
            root,
            volumes,
            args,
            env,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }

    /// The value of `--config` in the container's args.
    fn config_path(&self) -> &str {
        let at = self.args.iter().position(|arg| arg == "--config").unwrap();
        &self.args[at + 1]
    }
}

#[test]
fn check_accepts_the_config_of_the_base_and_of_every_overlay() {
    if !kubernetes_tools() {
        return;
    }
    let pki = Pki::new();
    for (name, _) in kustomizations() {
        assert_check_accepts(&name, &rendered(&name), &pki);
    }
}

/// `certgate check` accepts the config of `docs` (certgate's documents, by kind) with the
/// Secrets laid out as its pod mounts them, and lists each of its apps.
fn assert_check_accepts(name: &str, docs: &BTreeMap<String, Value>, pki: &Pki) {
    let config = certgate_config(docs);
    let pod = Pod::mount(docs, &config, pki);
    let output = Command::new(process::BIN)
        .args(["check", "--config", pod.config_path()])
        .envs(pod.env())
        .current_dir(pod.root.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{name}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for app in config["apps"].as_array().unwrap() {
        let app = app["name"].as_str().unwrap();
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(&format!("{app}: "))),
            "{name}: {stdout}"
        );
    }
}

#[test]
fn the_headless_example_puts_certgate_in_front_of_every_pod_of_the_app() {
    if !kubernetes_tools() {
        return;
    }
    let (name, dir) = examples()
        .into_iter()
        .find(|(name, _)| name == "headless-upstream")
        .expect("deploy/kubernetes/examples/headless-upstream");
    let all = documents(&render(&dir), &name);
    let is_certgate =
        |doc: &Value| doc["metadata"]["labels"]["app.kubernetes.io/name"] == "certgate";
    let certgate: BTreeMap<String, Value> = all
        .iter()
        .filter(|doc| is_certgate(doc) || doc["kind"] == "ConfigMap")
        .map(|doc| (doc["kind"].as_str().unwrap().to_owned(), doc.clone()))
        .collect();
    let app = |kind: &str| {
        all.iter()
            .find(|doc| doc["kind"] == kind && !is_certgate(doc))
            .unwrap_or_else(|| panic!("{name} has no app {kind}"))
    };
    let (service, deployment) = (app("Service"), app("Deployment"));
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "the app's Service is headless"
    );
    let pod = &deployment["spec"]["template"];
    assert_eq!(service["spec"]["selector"], pod["metadata"]["labels"]);
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let port = &service["spec"]["ports"][0];
    let container_port = pod["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|each| each["name"] == port["targetPort"])
        .expect("the Service's targetPort names a container port");
    assert_eq!(container_port["containerPort"], port["port"]);

    let config = certgate_config(&certgate);
    let namespace = service["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let upstream = format!(
        "http://{}.{namespace}.svc.cluster.local:{}",
        service["metadata"]["name"].as_str().unwrap(),
        port["port"]
    );
    assert_eq!(config["apps"][0]["upstream"], upstream.as_str(), "{config}");
    assert!(config["upstreamDns"]["refreshMs"].is_u64(), "{config}");
    assert_check_accepts(&name, &certgate, &Pki::new());
}

/// Runs certgate as the `name` kustomization's Deployment does, its apps' upstreams pointed at
/// a local echo app, and sends it a request from loopback, as `kubectl port-forward` connects
/// from inside the pod: served when the config has no PROXY protocol, refused as an untrusted
/// source when it has. Then a Secret update, and SIGTERM.
async fn run_as_deployed(name: &str) {
    let docs = rendered(name);
    let mut config = certgate_config(&docs);
    let upstream = echo_upstream().await;
    for app in config["apps"].as_array_mut().unwrap() {
        app["upstream"] = Value::String(format!("http://{upstream}"));
    }
    let pki = Pki::new();
    let mut pod = Pod::mount(&docs, &config, &pki);
    let mut args: Vec<&str> = pod.args.iter().map(String::as_str).collect();
    args.extend(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    assert!(
        pod.env
            .iter()
            .any(|(name, value)| name == "CERTGATE_LOG_FORMAT" && value == "json"),
        "the Deployment logs JSON: {:?}",
        pod.env
    );
    let mut certgate = Child::spawn(&args, pod.root.path(), &pod.env());
    let serving = certgate.wait_serving();
    let addr = serving.listen();
    let admin = serving.admin().to_string();

    // What a Docker HEALTHCHECK or exec probe runs.
    let health = Command::new(process::BIN)
        .args(["health", "--admin", &admin])
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{health:?}\n{}",
        certgate.transcript()
    );

    let reply = get(
        addr,
        &ClientOptions::new(&pki, "www.example.com"),
        "www.example.com",
        "/",
    )
    .await;
    let metrics = scrape(admin.parse().unwrap()).await;
    let untrusted = r#"certgate_proxy_protocol_refusals_total{reason="untrusted_source"}"#;
    if config.get("proxyProtocol").is_some() {
        // Only the cluster's balancers are trusted: a loopback client is refused before any TLS.
        assert!(
            reply.is_err(),
            "{name}: a connection from an untrusted source was served"
        );
        assert_eq!(metric(&metrics, untrusted), 1.0, "{metrics}");
    } else {
        let reply = reply.unwrap_or_else(|e| {
            panic!(
                "{name}: a loopback client was not served: {e:?}\n{}",
                certgate.transcript()
            )
        });
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(reply.upstream_header("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(metric(&metrics, untrusted), 0.0, "{metrics}");
    }

    // A Secret update swaps `..data`; certgate reloads by itself.
    pod.volumes
        .get_mut("ticket-keys")
        .unwrap()
        .update(&[("ticket-keys".to_owned(), ticket_key_file())]);
    let lines = certgate.wait_for_line(Stream::Stderr, |line| {
        line.contains("configuration reloaded") || line.contains("reload failed")
    });
    assert!(
        lines.last().unwrap().contains("configuration reloaded"),
        "{}",
        certgate.transcript()
    );

    certgate.signal("TERM");
    let status = certgate.wait_exit();
    assert!(status.success(), "{status}\n{}", certgate.transcript());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_deployment_serves_a_client_that_is_not_a_balancer() {
    if !kubernetes_tools() {
        return;
    }
    run_as_deployed("base").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_nlb_deployment_refuses_a_client_that_is_not_its_balancer() {
    if !kubernetes_tools() {
        return;
    }
    run_as_deployed("aws-nlb").await;
}
