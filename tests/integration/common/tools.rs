//! External tools a test drives (openssl, curl, python3, chromium): present, or the test is skipped with
//! a message, except under CI (`CI` set), where a missing tool fails the test with the command
//! that installs it. A missing tool never lets a test pass silently.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// True when `program` runs; false (test skipped) when it does not and `CI` is unset; panics
/// under CI with `install` as the advice.
pub fn available(program: &str, version_arg: &str, install: &str) -> bool {
    available_with(program, &[version_arg], install)
}

/// openssl, for certificates and PKCS#12 archives made the way people make them.
pub fn openssl() -> bool {
    available("openssl", "version", "apt-get install openssl")
}

/// curl, the client people try certgate with.
pub fn curl() -> bool {
    available("curl", "--version", "apt-get install curl")
}

/// Reports that `what` a test needs is not installed: under CI the test fails, saying to run
/// `install`; elsewhere it prints that the test is skipped, and the caller returns.
pub fn missing(what: &str, install: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is needed by this test under CI: {install}"
    );
    eprintln!("SKIPPED: {what} is not installed ({install})");
}

/// Runs openssl with `args` in `dir`; its output, whatever its exit status. Check
/// [`openssl`] first.
pub fn openssl_output(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl {}: {e}", args.join(" ")))
}

/// Runs openssl with `args` in `dir`, panicking with its stderr when it fails; its output.
pub fn run_openssl(dir: &Path, args: &[&str]) -> Output {
    let output = openssl_output(dir, args);
    assert!(
        output.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Like `available`, for a check that takes several arguments (`python3 -c "import yaml"`).
pub fn available_with(program: &str, args: &[&str], install: &str) -> bool {
    let runs = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runs {
        missing(
            &format!("`{program}` (`{program} {}` did not run)", args.join(" ")),
            install,
        );
    }
    runs
}

/// The Chromium browser and NSS's `certutil`, for tests that run a page in a real browser
/// (`.ci/run` installs both).
pub fn chromium() -> bool {
    let install = "apt-get install chromium libnss3-tools";
    available("chromium", "--version", install) && installed("certutil", install)
}

/// Whether `program` can be started at all (for tools with no argument that exits 0); false
/// (test skipped) when it cannot and `CI` is unset; panics under CI with `install` as the advice.
pub fn installed(program: &str, install: &str) -> bool {
    let starts = Command::new(program)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !starts {
        missing(&format!("`{program}` (it cannot be started)"), install);
    }
    starts
}
