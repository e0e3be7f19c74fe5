//! The Kubernetes manifests (`deploy/kubernetes/`, and the sidecar example in
//! `config/kubernetes/`), docs/replicas.md:
//! - every manifest validates against the Kubernetes schemas (`kubernetes-validate --strict`,
//!   offline), and so does the command docs/kubernetes.md shows for it;
//! - the pieces fit: the Service, PodDisruptionBudget and HorizontalPodAutoscaler select the
//!   Deployment's pods; the pod is non-root with a read-only root file system; probes use the
//!   admin port; `terminationGracePeriodSeconds` exceeds drain delay plus grace;
//! - the real binary runs with the Deployment's args and env and the ConfigMap and Secrets laid
//!   out as the kubelet mounts them (`..data` symlink to a timestamped folder), reports ready
//!   through `certgate health`, refuses a loopback connection that is not from a trusted
//!   balancer, and reloads when a Secret update swaps `..data`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::stdin::output_with_stdin;
use common::*;
use process::{Child, Stream};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files.push(repo("config/kubernetes/deployment.yaml"));
    files
}

const INSTALL_VALIDATE: &str = "python3 -m pip install kubernetes-validate";

/// Every document of a YAML file, as JSON (PyYAML, which kubernetes-validate brings).
fn documents(path: &Path) -> Vec<Value> {
    let output = output_with_stdin(
        Command::new("python3").args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ]),
        &std::fs::read(path).unwrap(),
    );
    assert!(
        output.status.success(),
        "cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Every deploy/kubernetes document, by kind.
fn ingress_documents() -> HashMap<String, Value> {
    let mut by_kind = HashMap::new();
    for path in manifests() {
        if path.starts_with(repo("config")) {
            continue;
        }
        for document in documents(&path) {
            let kind = document["kind"].as_str().unwrap().to_owned();
            assert!(
                by_kind.insert(kind.clone(), document).is_none(),
                "two {kind}s"
            );
        }
    }
    by_kind
}

fn yaml_tools() -> bool {
    tools::available_with(
        "python3",
        &["-m", "kubernetes_validate", "--version"],
        INSTALL_VALIDATE,
    ) && tools::available_with("python3", &["-c", "import yaml"], INSTALL_VALIDATE)
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    if !yaml_tools() {
        return;
    }
    let files = manifests();
    assert!(files.len() >= 6, "{files:?}");
    for path in files {
        let output = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} does not validate:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_documented_validation_command_validates_every_manifest() {
    if !yaml_tools() {
        return;
    }
    let page = std::fs::read_to_string(repo("docs/kubernetes.md")).unwrap();
    let command = page
        .lines()
        .find(|line| line.starts_with("python3 -m kubernetes_validate "))
        .expect("docs/kubernetes.md shows how to validate the manifests offline");
    let output = Command::new("sh")
        .args(["-e", "-c", command])
        .current_dir(repo(""))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command}\n{printed}");
    for path in manifests() {
        let name = path.strip_prefix(repo("")).unwrap().display().to_string();
        assert!(
            printed.contains(&format!("{name} passed")),
            "{command} does not validate {name}:\n{printed}"
        );
    }
}

#[test]
fn the_ingress_manifests_fit_together() {
    if !yaml_tools() {
        return;
    }
    let docs = ingress_documents();
    let deployment = &docs["Deployment"];
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&docs["Service"]["spec"]["selector"], labels);
    assert_eq!(docs["Service"]["spec"]["type"], "LoadBalancer");
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

    let config: Value =
        serde_json::from_str(docs["ConfigMap"]["data"]["certgate.json"].as_str().unwrap()).unwrap();
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
        "{ports:?}"
    );
    let drain_ms = config["timeouts"]["drainDelayMs"].as_u64().unwrap();
    let grace_ms = config["timeouts"]["shutdownGraceMs"].as_u64().unwrap();
    let termination_s = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination_s * 1000 > drain_ms + grace_ms,
        "terminationGracePeriodSeconds {termination_s} does not cover {drain_ms} + {grace_ms} ms"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_deployment_runs_certgate_with_its_files_mounted_as_kubernetes_does() {
    if !yaml_tools() {
        return;
    }
    let docs = ingress_documents();
    let pod = &docs["Deployment"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let pki = Pki::new();
    let server = pki.server_ca.issue(LeafSpec {
        dns: vec![
            "payments.example.com".to_owned(),
            "www.example.com".to_owned(),
        ],
        ..LeafSpec::server()
    });
    let root = TempDir::new();

    // What each volume holds: the ConfigMap's data, and the Secrets docs/replicas.md's commands make.
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
    let config_map: Vec<(String, Vec<u8>)> = docs["ConfigMap"]["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap().as_bytes().to_vec()))
        .collect();
    let host_path = |mount: &str| root.path().join(mount.trim_start_matches('/'));

    let mut mounted: HashMap<String, MountedVolume> = HashMap::new();
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
        mounted.insert(name.to_owned(), MountedVolume::new(path, &files));
    }

    // The container's args and env, with absolute paths under the mount root and the
    // listeners moved to free loopback ports.
    let mut args: Vec<String> = container["args"]
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
    args.extend(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"].map(String::from));
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
    assert!(
        env.iter()
            .any(|(name, value)| name == "CERTGATE_LOG_FORMAT" && value == "json"),
        "the Deployment logs JSON: {env:?}"
    );
    let env_refs: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut certgate = Child::spawn(&arg_refs, root.path(), &env_refs);
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

    // The config trusts only the cluster's balancers: a loopback client is refused before
    // any TLS.
    let refused = get(
        addr,
        &ClientOptions::new(&pki, "www.example.com"),
        "www.example.com",
        "/",
    )
    .await;
    assert!(
        refused.is_err(),
        "a connection from an untrusted source was served"
    );
    let metrics = scrape(admin.parse().unwrap()).await;
    assert_eq!(
        metric(
            &metrics,
            r#"certgate_proxy_protocol_refusals_total{reason="untrusted_source"}"#
        ),
        1.0,
        "{metrics}"
    );

    // A Secret update swaps `..data`; certgate reloads by itself.
    mounted
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
