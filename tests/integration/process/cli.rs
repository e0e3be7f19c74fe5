//! Running one `certgate` subcommand to its end (colours off, no config path from the
//! environment) and checking how it exited.

use std::path::Path;
use std::process::{Command, Output};

use super::BIN;

/// The sidecar flags every sidecar-form command needs: an upstream and the server's
/// certificate and key as `Pki::write` names them.
pub const SIDECAR: [&str; 6] = [
    "--upstream",
    "http://127.0.0.1:8080",
    "--cert",
    "server.pem",
    "--key",
    "server.key",
];

/// Runs `certgate args…` in `dir` with `env` added and waits for it to exit.
pub fn certgate(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CERTGATE_CONFIG");
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

/// Asserts that `output` is of a command that exited with `code`; its stdout and stderr.
pub fn exited(output: &Output, code: i32) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status; stdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// Asserts that `text` (a command's output) says every one of `says` and none of `never`.
pub fn assert_says(text: &str, says: &[&str], never: &[&str]) {
    for needle in says {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    for needle in never {
        assert!(!text.contains(needle), "{needle:?} in {text}");
    }
}
