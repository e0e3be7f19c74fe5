//! Drives the real `certgate` binary as a child process: output read line by line with bounded
//! waits, signals sent with `kill`, and the child killed on drop if a test panics.

#![allow(
    unreachable_pub,
    reason = "the helpers are used from the test modules beside them"
)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common::polling::{poll_blocking, tries_within};

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod cli;
pub mod serving;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_certgate");

/// How long a child may take to start serving or to exit. Generous: the machine may be busy
/// compiling; these are upper bounds, not expectations.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A running `certgate`.
pub struct Child {
    child: std::process::Child,
    lines: Receiver<(Stream, String)>,
    transcript: Arc<Mutex<String>>,
    what: String,
}

impl Child {
    /// Starts `certgate args…` in `dir` with `env` added, colours off, stdout and stderr captured.
    pub fn spawn(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command.args(args).stdin(Stdio::null());
        Self::start(command, args, dir, env)
    }

    /// As `spawn`, with stdin a terminal, as when a person starts certgate by hand: python3
    /// opens a pseudo-terminal, makes it stdin and replaces itself with certgate (same pid),
    /// which inherits the terminal's other end too (a terminal without one is hung up).
    pub fn spawn_at_terminal(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Self {
        const AT_TERMINAL: &str = "import os, pty, sys\n\
            other_end, terminal = pty.openpty()\n\
            os.set_inheritable(other_end, True)\n\
            os.dup2(terminal, 0)\n\
            os.execv(sys.argv[1], sys.argv[1:])";
        Self::spawn_wrapped(&["python3", "-c", AT_TERMINAL], args, dir, env)
    }

    /// As `spawn`, with at most `limit` open files (soft and hard limit, set by `sh`).
    pub fn spawn_with_open_files(limit: u32, args: &[&str], dir: &Path) -> Self {
        let script = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
        Self::spawn_wrapped(&["sh", "-c", &script], args, dir, &[])
    }

    /// Starts `wrapper… certgate args…`, where the wrapper ends by running certgate in its own
    /// place (same pid, so signals reach certgate).
    fn spawn_wrapped(wrapper: &[&str], args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(BIN)
            .args(args)
            .stdin(Stdio::null());
        Self::start(command, args, dir, env)
    }

    fn start(mut command: Command, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Self {
        command
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {:?}: {e} (python3 starts certgate at a terminal: apt-get install python3)",
                command.get_program()
            )
        });
        let (tx, lines) = channel();
        let transcript = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        forward(stdout, Stream::Stdout, tx.clone(), transcript.clone());
        forward(stderr, Stream::Stderr, tx, transcript.clone());
        Self {
            child,
            lines,
            transcript,
            what: format!("certgate {}", args.join(" ")),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child wrote so far, both streams interleaved, colour codes removed.
    pub fn transcript(&self) -> String {
        self.transcript.lock().unwrap().clone()
    }

    /// Reads lines until one of `stream` satisfies `done`; returns that stream's lines up to
    /// and including it. Panics, with the transcript, if the child exits or `PATIENCE` passes.
    pub fn wait_for_line(&mut self, stream: Stream, done: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((from, line)) if from == stream => {
                    let last = done(&line);
                    seen.push(line);
                    if last {
                        return seen;
                    }
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{} did not print the expected line within {PATIENCE:?}; output:\n{}",
                    self.what,
                    self.transcript()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{} exited ({status:?}) before printing the expected line; output:\n{}",
                        self.what,
                        self.transcript()
                    )
                }
            }
        }
    }

    /// Sends `signal` (e.g. `INT`, `TERM`) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits for the child to exit, at most `PATIENCE`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let every = Duration::from_millis(50);
        let exited = poll_blocking(
            tries_within(PATIENCE, every),
            every,
            || self.child.try_wait().unwrap(),
            Option::is_some,
        );
        exited.unwrap_or_else(|| {
            panic!(
                "{} did not exit within {PATIENCE:?}; output:\n{}",
                self.what,
                self.transcript()
            )
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward(
    stream: impl Read + Send + 'static,
    from: Stream,
    lines: Sender<(Stream, String)>,
    transcript: Arc<Mutex<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            {
                let mut transcript = transcript.lock().unwrap();
                transcript.push_str(&line);
                transcript.push('\n');
            }
            // The test may have stopped listening; keep draining so the child never blocks.
            let _ = lines.send((from, line));
        }
    });
}

/// Removes ANSI colour sequences (`ESC [ … letter`), in case the log writer adds them.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
