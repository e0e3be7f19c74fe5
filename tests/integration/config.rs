//! Config loading, docs/sidecar.md and docs/config.md "Config reference". Every failure mode is checked twice: through
//! `certgate::Config::load`, and through the real binary's `certgate check --config`
//! (exit 64, stderr naming the file or the problem):
//! - a missing, empty, whitespace-only, unreadable or unparsable config file;
//! - an unknown key at the top level and nested (`clientAuth`, `ingress`,
//!   `serverCertificate`, `forwardClientCert`, `timeouts`), and a key given twice;
//! - a trust bundle or a server chain with one bad certificate among good ones;
//! - a missing certificate file named by the config;
//! - a key that does not match its certificate;
//! - a `require` (explicit or default) or `accept` app with no trust source, also when only
//!   allow-lists are set;
//! - an `ignore` app with clientAuth set;
//! - two apps claiming one host (also differing only in case and trailing dot, and as
//!   wildcards), two catch-all apps, two apps with one name, no apps;
//! - a bad `clientCertificateMode`, a bad upstream URL (also one with an out-of-range port, or
//!   with user:password), a bad pin hash (also 64 characters that are not 64 hex digits);
//!
//! and what succeeds:
//! - relative paths are resolved against the config file's folder, whatever the working
//!   directory (in-process and through the binary, with absolute and relative config paths);
//! - `certgate check` prints one summary line per app and exits 0 on a good config;
//! - `certgate run --config` with a broken config exits 64;
//!
//! and the sidecar flags:
//! - `certgate run` with no `--config` and no `--upstream` exits 64, and so do other bad
//!   usages (unknown command, `check` without `--config`, `--config` with sidecar flags, a bad
//!   `--client-cert-mode`);
//! - `certgate run --listen <a taken port>` exits 1, with a config file and with sidecar flags.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::polling::{poll_blocking, tries_within};
use common::*;
use serde_json::{Value, json};

/// The binary under test.
const CERTGATE: &str = env!("CARGO_BIN_EXE_certgate");

/// A `certgate` command with no `CERTGATE_*` variable inherited from the environment.
fn certgate() -> Command {
    let mut command = Command::new(CERTGATE);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CERTGATE_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info");
    command.stdin(Stdio::null());
    command
}

/// Runs a command that must exit on its own; kills it (and fails) if it is still running
/// after a generous deadline, which only guards against a hang.
fn run_to_exit(mut command: Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn certgate");
    let every = Duration::from_millis(20);
    let tries = tries_within(Duration::from_secs(60), every);
    let exited = poll_blocking(tries, every, || child.try_wait().unwrap(), Option::is_some);
    if exited.is_none() {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!(
            "certgate was still running after 60 s; stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

/// Runs `command` to its end and asserts that it exited with `code`; its stderr.
fn exits(command: Command, code: i32) -> String {
    let output = run_to_exit(command);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    stderr
}

fn check(path: &Path) -> Output {
    let mut command = certgate();
    command.arg("check").arg("--config").arg(path);
    run_to_exit(command)
}

/// A valid config with three apps (require + CA, accept + pin, ignore catch-all) and the
/// files it names, in a fresh folder.
struct Setup {
    dir: TempDir,
    pki: Pki,
    config: Value,
}

impl Setup {
    fn new() -> Self {
        let pki = Pki::new();
        let dir = TempDir::new();
        pki.write(&dir);
        let upstream: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut require = app(
            "payments",
            &["payments.example.test", "*.pay.example.test"],
            upstream,
            "require",
        );
        require["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
        let mut accept = app("portal", &["portal.example.test"], upstream, "accept");
        accept["clientAuth"] = json!({ "allowedHashes": ["ab".repeat(32)] });
        let ignore = app("public", &[], upstream, "ignore");
        Self {
            dir,
            pki,
            config: json!({ "listen": "127.0.0.1:0", "apps": [require, accept, ignore] }),
        }
    }

    fn app(&mut self, name: &str) -> &mut Value {
        self.config["apps"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|app| app["name"] == name)
            .unwrap()
    }

    /// Writes the config as `certgate.json`; returns its (absolute) path.
    fn write(&self) -> PathBuf {
        self.dir.write(
            "certgate.json",
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The sidecar flags naming the server certificate, its key and the client CA of the
    /// folder.
    fn sidecar_files(&self) -> [String; 6] {
        [
            "--cert".into(),
            self.path("server.pem"),
            "--key".into(),
            self.path("server.key"),
            "--client-ca".into(),
            self.path("client-ca.pem"),
        ]
    }
}

/// Asserts that the config file at `path` is refused by `Config::load` and by
/// `certgate check` (exit 64), each error naming every one of `needles`.
fn assert_refused(path: &Path, needles: &[&str]) {
    let error = match common::load_config(path) {
        Ok(config) => panic!("Config::load accepted it ({} apps)", config.apps.len()),
        Err(error) => certgate::error_chain(&error),
    };
    for needle in needles {
        assert!(
            error.contains(needle),
            "Config::load error does not name {needle:?}: {error}"
        );
    }
    let output = check(path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(64),
        "certgate check exit status; stdout {:?}, stderr {stderr:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "certgate check stderr does not name {needle:?}: {stderr}"
        );
    }
}

/// Writes the setup's config and asserts it is refused, naming `needles`.
fn assert_setup_refused(setup: &Setup, needles: &[&str]) {
    assert_refused(&setup.write(), needles);
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

// --- the config file itself -------------------------------------------------------------

#[test]
fn a_missing_config_file_is_refused() {
    let dir = TempDir::new();
    let path = dir.path().join("nowhere.json");
    assert_refused(&path, &[&path.display().to_string()]);
}

#[test]
fn an_empty_config_file_is_refused() {
    let dir = TempDir::new();
    let path = dir.write("empty.json", "");
    assert_refused(&path, &[&path.display().to_string(), "empty"]);
    let path = dir.write("blank.json", " \n\t\n");
    assert_refused(&path, &[&path.display().to_string()]);
}

#[test]
fn an_unreadable_config_file_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let setup = Setup::new();
    let path = setup.write();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads a file whatever its mode; a folder in the config's place is unreadable as a
    // file for everyone, so the case is checked either way.
    if std::fs::read(&path).is_err() {
        assert_refused(&path, &[&path.display().to_string()]);
    }
    let folder = setup.dir.path().join("folder.json");
    std::fs::create_dir(&folder).unwrap();
    assert_refused(&folder, &[&folder.display().to_string()]);
}

#[test]
fn an_unparsable_config_file_is_refused() {
    let dir = TempDir::new();
    let path = dir.write(
        "broken.json",
        "{\n  \"apps\": [\n    { \"name\": \"a\", }\n",
    );
    assert_refused(&path, &[&path.display().to_string(), "line"]);
    let path = dir.write("array.json", "[1, 2, 3]");
    assert_refused(&path, &[&path.display().to_string()]);
}

#[test]
fn an_unknown_top_level_key_is_refused() {
    let mut setup = Setup::new();
    setup.config["lisen"] = "127.0.0.1:8443".into();
    assert_setup_refused(&setup, &["lisen"]);
}

#[test]
fn an_unknown_nested_key_is_refused() {
    let cases: [(&str, &str, Value); 4] = [
        ("clientAuth", "allowUntrustd", json!(true)),
        ("ingress", "clientCertificateMod", json!("ignore")),
        ("serverCertificate", "keyfile", json!("server.key")),
        ("forwardClientCert", "field", json!(["Hash"])),
    ];
    for (object, key, value) in cases {
        let mut setup = Setup::new();
        let app = setup.app("payments");
        if app.get(object).is_none() {
            app[object] = json!({});
        }
        app[object][key] = value;
        assert_setup_refused(&setup, &[key]);
    }
    let mut setup = Setup::new();
    setup.config["timeouts"] = json!({ "idleMS": 1000 });
    assert_setup_refused(&setup, &["idleMS"]);
}

#[test]
fn a_key_given_twice_is_refused() {
    let setup = Setup::new();
    let text = serde_json::to_string_pretty(&setup.config).unwrap();
    let text = text.replacen(
        "\"trustedCaFiles\"",
        "\"allowUntrusted\": false, \"allowUntrusted\": true, \"trustedCaFiles\"",
        1,
    );
    let path = setup.dir.write("certgate.json", text);
    assert_refused(&path, &["allowUntrusted"]);
}

// --- the files it names -----------------------------------------------------------------

#[test]
fn a_trust_bundle_with_one_bad_certificate_among_good_ones_is_refused() {
    let setup = Setup::new();
    let good = Ca::root("another good CA");
    let mut truncated = setup.pki.client_ca.der.to_vec();
    truncated.truncate(truncated.len() - 16);
    let bundle = format!(
        "{}{}{}",
        setup.pki.client_ca.pem,
        pem_block("CERTIFICATE", &truncated),
        good.pem
    );
    setup.dir.write("client-ca.pem", bundle);
    assert_setup_refused(&setup, &[&setup.path("client-ca.pem")]);
}

#[test]
fn a_server_chain_with_one_bad_certificate_is_refused() {
    let setup = Setup::new();
    let chain = format!(
        "{}{}",
        setup.pki.server.pem,
        pem_block("CERTIFICATE", b"\x30\x03\x02\x01\x01")
    );
    setup.dir.write("server.pem", chain);
    assert_setup_refused(&setup, &[&setup.path("server.pem")]);
}

#[test]
fn a_missing_certificate_file_is_refused() {
    let setup = Setup::new();
    std::fs::remove_file(setup.dir.path().join("client-ca.pem")).unwrap();
    assert_setup_refused(&setup, &[&setup.path("client-ca.pem")]);
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused() {
    let setup = Setup::new();
    let other = rcgen::KeyPair::generate().unwrap();
    setup.dir.write("server.key", other.serialize_pem());
    assert_setup_refused(&setup, &[&setup.path("server.key")]);
}

// --- policy -------------------------------------------------------------------------------

#[test]
fn a_require_app_with_no_trust_source_is_refused() {
    let mut setup = Setup::new();
    setup
        .app("payments")
        .as_object_mut()
        .unwrap()
        .remove("clientAuth");
    assert_setup_refused(&setup, &["payments"]);
}

#[test]
fn an_app_with_the_default_mode_and_no_trust_source_is_refused() {
    let mut setup = Setup::new();
    let app = setup.app("payments").as_object_mut().unwrap();
    app.remove("clientAuth");
    app.remove("ingress");
    assert_setup_refused(&setup, &["payments"]);
}

#[test]
fn an_accept_app_with_no_trust_source_is_refused() {
    let mut setup = Setup::new();
    setup
        .app("portal")
        .as_object_mut()
        .unwrap()
        .remove("clientAuth");
    assert_setup_refused(&setup, &["portal"]);
}

#[test]
fn allow_lists_alone_are_not_a_trust_source() {
    let mut setup = Setup::new();
    setup.app("payments")["clientAuth"] = json!({
        "allowUntrusted": false,
        "allowedDnsSans": ["client.example.test"],
        "allowedUriSans": ["spiffe://example.test/client"],
    });
    assert_setup_refused(&setup, &["payments"]);
}

#[test]
fn an_ignore_app_with_client_auth_is_refused() {
    let mut setup = Setup::new();
    setup.app("public")["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    assert_setup_refused(&setup, &["public"]);
    let mut setup = Setup::new();
    setup.app("public")["clientAuth"] = json!({ "allowUntrusted": true });
    assert_setup_refused(&setup, &["public"]);
}

#[test]
fn two_apps_claiming_one_host_are_refused() {
    let mut setup = Setup::new();
    setup.app("portal")["hosts"] = json!(["portal.example.test", "payments.example.test"]);
    assert_setup_refused(&setup, &["payments.example.test", "payments", "portal"]);
}

#[test]
fn two_apps_claiming_one_host_in_different_spellings_are_refused() {
    let mut setup = Setup::new();
    setup.app("portal")["hosts"] = json!(["PAYMENTS.Example.Test."]);
    assert_setup_refused(&setup, &["payments", "portal"]);
    let mut setup = Setup::new();
    setup.app("portal")["hosts"] = json!(["*.PAY.example.test"]);
    assert_setup_refused(&setup, &["payments", "portal"]);
}

#[test]
fn two_catch_all_apps_are_refused() {
    let mut setup = Setup::new();
    setup.app("portal")["hosts"] = json!([]);
    assert_setup_refused(&setup, &["portal", "public"]);
}

#[test]
fn two_apps_with_one_name_are_refused() {
    let mut setup = Setup::new();
    setup.app("portal")["name"] = "payments".into();
    assert_setup_refused(&setup, &["payments"]);
}

#[test]
fn a_config_with_no_apps_is_refused() {
    let mut setup = Setup::new();
    setup.config["apps"] = json!([]);
    assert_setup_refused(&setup, &["app"]);
}

#[test]
fn a_bad_client_certificate_mode_is_refused() {
    for mode in ["optional", "required", ""] {
        let mut setup = Setup::new();
        setup.app("payments")["ingress"]["clientCertificateMode"] = mode.into();
        assert_setup_refused(&setup, &["payments", &format!("{mode:?}")]);
    }
}

#[test]
fn client_certificate_mode_is_case_insensitive() {
    let mut setup = Setup::new();
    setup.app("payments")["ingress"]["clientCertificateMode"] = "Require".into();
    setup.app("portal")["ingress"]["clientCertificateMode"] = "ACCEPT".into();
    setup.app("public")["ingress"]["clientCertificateMode"] = "Ignore".into();
    let config = common::load_config(&setup.write())
        .unwrap_or_else(|e| panic!("refused: {}", certgate::error_chain(&e)));
    let modes: Vec<&str> = config.apps.iter().map(|app| app.mode.as_str()).collect();
    assert_eq!(modes, ["require", "accept", "ignore"]);
}

#[test]
fn a_bad_upstream_url_is_refused() {
    // An https:// upstream without upstreamTls is verified against the system's CAs
    // (tests/integration/upstream_tls.rs).
    for upstream in [
        "http://127.0.0.1:8080/api",
        "127.0.0.1:8080",
        "ftp://127.0.0.1:21",
        "not a url",
        "",
    ] {
        let mut setup = Setup::new();
        setup.app("payments")["upstream"] = upstream.into();
        assert_setup_refused(&setup, &["payments"]);
    }
}

#[test]
fn an_upstream_port_out_of_range_is_refused() {
    // Not silently replaced by port 80.
    for upstream in ["http://127.0.0.1:99999", "http://127.0.0.1:65536"] {
        let mut setup = Setup::new();
        setup.app("payments")["upstream"] = upstream.into();
        assert_setup_refused(&setup, &["payments", upstream]);
    }
}

#[test]
fn an_upstream_url_with_credentials_is_refused() {
    // certgate never sends them, and would print them in `check` and in every access log line.
    let upstream = "http://user:secret@127.0.0.1:8080";
    let mut setup = Setup::new();
    setup.app("payments")["upstream"] = upstream.into();
    assert_setup_refused(&setup, &["payments"]);
}

#[test]
fn a_bad_pin_hash_is_refused() {
    for hash in [
        "abc".to_owned(),
        "ab".repeat(31),
        "ab".repeat(33),
        "zz".repeat(32),
        format!("{} ", "ab".repeat(31) + "a"),
    ] {
        let mut setup = Setup::new();
        setup.app("portal")["clientAuth"]["allowedHashes"] = json!([hash]);
        assert_setup_refused(&setup, &["portal", &hash]);
    }
}

#[test]
fn a_pin_hash_with_sign_characters_is_refused() {
    // 64 characters but not 64 hex digits: `+a` is not a hex byte.
    let hash = "+a".repeat(32);
    let mut setup = Setup::new();
    setup.app("portal")["clientAuth"]["allowedHashes"] = json!([hash]);
    assert_setup_refused(&setup, &["portal", &hash]);
}

// --- what loads ---------------------------------------------------------------------------

#[test]
fn relative_paths_are_resolved_against_the_config_folder_in_process() {
    let setup = Setup::new();
    let path = setup.write();
    let cwd = std::env::current_dir().unwrap();
    assert_ne!(
        cwd,
        setup.dir.path(),
        "the test must run from another folder"
    );
    assert!(!cwd.join("server.pem").exists() && !cwd.join("client-ca.pem").exists());
    let config = common::load_config(&path)
        .unwrap_or_else(|e| panic!("refused: {}", certgate::error_chain(&e)));
    assert_eq!(config.apps.len(), 3);
    for name in ["server.pem", "server.key", "client-ca.pem"] {
        assert!(
            config.files.contains(&setup.dir.path().join(name)),
            "{name} not read from the config folder: {:?}",
            config.files
        );
    }
}

#[test]
fn relative_paths_are_resolved_against_the_config_folder_by_the_binary() {
    let setup = Setup::new();
    let path = setup.write();
    let elsewhere = TempDir::new();

    // Absolute config path, unrelated working directory; then a relative config path from
    // the parent folder.
    let parent = setup.dir.path().parent().unwrap();
    let relative = Path::new(setup.dir.path().file_name().unwrap()).join("certgate.json");
    for (cwd, config) in [(elsewhere.path(), path.as_path()), (parent, &relative)] {
        let mut command = certgate();
        command
            .current_dir(cwd)
            .arg("check")
            .arg("--config")
            .arg(config);
        exits(command, 0);
    }
}

#[test]
fn check_prints_one_summary_line_per_app_and_exits_0() {
    let setup = Setup::new();
    let output = check(&setup.write());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "stdout: {stdout}");
    for (line, (name, mode)) in lines.iter().zip([
        ("payments", "require"),
        ("portal", "accept"),
        ("public", "ignore"),
    ]) {
        assert!(
            line.starts_with(name),
            "{line:?} does not start with {name}"
        );
        assert!(line.contains(mode), "{line:?} does not say {mode}");
    }
    assert!(lines[0].contains("payments.example.test"), "{}", lines[0]);
}

#[test]
fn run_with_a_broken_config_exits_64() {
    let mut setup = Setup::new();
    setup.config["apps"][0]["clientAuth"]["allowUntrustd"] = true.into();
    let path = setup.write();
    let mut command = certgate();
    command.arg("run").arg("--config").arg(&path);
    let stderr = exits(command, 64);
    assert!(stderr.contains("allowUntrustd"), "stderr: {stderr}");
}

// --- sidecar flags ------------------------------------------------------------------------

#[test]
fn run_without_config_or_upstream_exits_64() {
    let setup = Setup::new();
    let mut command = certgate();
    command
        .arg("run")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(setup.sidecar_files());
    let stderr = exits(command, 64);
    assert!(stderr.contains("--upstream"), "stderr: {stderr}");

    let mut command = certgate();
    command.arg("run");
    exits(command, 64);
}

/// `certgate run` with the arguments `args` makes for a listen address, given one that
/// another socket holds, exits 1 naming it.
fn assert_a_taken_port_exits_1(args: impl FnOnce(&str) -> Vec<String>) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut command = certgate();
    command.arg("run").args(args(&addr));
    let stderr = exits(command, 1);
    assert!(stderr.contains(&addr), "stderr: {stderr}");
    drop(taken);
}

#[test]
fn run_on_a_taken_port_exits_1_with_a_config_file() {
    let setup = Setup::new();
    let path = setup.write().display().to_string();
    assert_a_taken_port_exits_1(|addr| {
        vec!["--config".into(), path, "--listen".into(), addr.into()]
    });
}

#[test]
fn run_on_a_taken_port_exits_1_with_sidecar_flags() {
    let setup = Setup::new();
    assert_a_taken_port_exits_1(|addr| {
        let flags = ["--listen", addr, "--upstream", "http://127.0.0.1:8080"];
        let mut args: Vec<String> = flags.map(String::from).to_vec();
        args.extend(setup.sidecar_files());
        args
    });
}

#[test]
fn other_bad_usage_exits_64() {
    let setup = Setup::new();
    let path = setup.write();
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["frobnicate".into()],
        vec!["check".into()],
        vec![
            "run".into(),
            "--config".into(),
            path.into(),
            "--upstream".into(),
            "http://127.0.0.1:8080".into(),
        ],
        [
            "run",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:8080",
        ]
        .into_iter()
        .map(String::from)
        .chain(setup.sidecar_files())
        .chain(["--client-cert-mode".into(), "sometimes".into()])
        .map(Into::into)
        .collect(),
    ];
    for args in cases {
        let mut command = certgate();
        command.args(&args);
        let output = run_to_exit(command);
        assert_eq!(
            output.status.code(),
            Some(64),
            "certgate {args:?}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
