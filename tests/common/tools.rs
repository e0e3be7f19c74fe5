//! External tools a test drives (openssl, python3): present, or the test is skipped with a
//! message, except under CI (`CI` set), where a missing tool fails the test with the command
//! that installs it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::process::{Command, Stdio};

/// True when `program` runs; false (test skipped) when it does not and `CI` is unset; panics
/// under CI with `install` as the advice.
pub fn available(program: &str, version_arg: &str, install: &str) -> bool {
    let runs = Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if runs {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "`{program}` is needed by this test under CI: {install}"
    );
    eprintln!("SKIPPED: `{program}` is not installed ({install})");
    false
}

/// openssl, for certificates made the way people make them.
pub fn openssl() -> bool {
    available("openssl", "version", "apt-get install openssl")
}

/// Runs openssl with `args` in `dir`, panicking with its stderr when it fails.
pub fn run_openssl(dir: &std::path::Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Like `available`, for a check that takes several arguments (`python3 -c "import yaml"`).
pub fn available_with(program: &str, args: &[&str], install: &str) -> bool {
    let runs = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if runs {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "`{program} {}` is needed by this test under CI: {install}",
        args.join(" ")
    );
    eprintln!(
        "SKIPPED: `{program} {}` does not run ({install})",
        args.join(" ")
    );
    false
}
