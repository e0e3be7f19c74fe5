//! Running a program with bytes on its standard input.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// Runs `command` with `input` on its stdin, capturing stdout and stderr; its output.
pub fn output_with_stdin(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}
