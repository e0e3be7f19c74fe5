//! The documented path, as a new reader walks it, in a fresh copy of the repository (its
//! tracked files: no `certs/` keys, no build): every shell command of the README in reading
//! order, then those of the ingress walk-through that opens docs/config.md, taken from the
//! Markdown and run as written, with these changes only:
//! - `cargo run --release -- ARGS` runs the binary under test with ARGS, `cargo install --path
//!   . --locked` puts it on `PATH` (a `certgate …` command before that line fails the test),
//!   and `cargo test` is this suite, not run again;
//! - the commands that serve (`certgate demo`, `certgate run`) are started with `--listen
//!   127.0.0.1:0` (`run` also with `--admin 127.0.0.1:0` and JSON logs) at a terminal, waited
//!   for, and stopped with Ctrl-C (SIGINT), as a reader stops one before starting the next
//!   and at the end; a
//!   curl command's port 8443 is the one the running server got;
//! - each command's exit status and output are checked against what the docs say around it:
//!   the demo makes the PKI; `pki init` keeps the demo's CA and client certificate; `check`
//!   passes with one line per app; `explain` prints a verdict that matches its exit status; a
//!   curl under a comment that says "refused" is refused in the handshake, one under a comment
//!   that says "answers NNN" gets status NNN from certgate, and any other gets 200 from the
//!   app, without the `X-Forwarded-Client-Cert` value the client sent.
//!
//! A command the test has no rule for fails it: a new command in the docs needs one here.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TempDir, tools};
use process::{Child, Stream};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The ```sh blocks of `markdown`, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + "```sh\n".len()..];
        let end = body.find("```").expect("an unterminated code block");
        blocks.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    blocks
}

/// One step of the path: a command and the comment lines above it (the last ones before it in
/// its block, kept for the commands that follow until another comment).
#[derive(Debug)]
struct Step {
    page: &'static str,
    command: String,
    comment: String,
}

/// The commands of `text`'s sh blocks, `\`-continued lines joined, trailing comments cut.
fn steps(page: &'static str, text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for block in sh_blocks(text) {
        let mut comment = String::new();
        let mut after_command = true;
        let mut pending = String::new();
        for line in block.lines() {
            let line = line.trim_end();
            if let Some(continued) = line.strip_suffix('\\') {
                pending.push_str(continued);
                continue;
            }
            let whole = std::mem::take(&mut pending) + line;
            let whole = whole.trim();
            if whole.is_empty() {
                continue;
            }
            if whole.starts_with('#') {
                if after_command {
                    comment.clear();
                    after_command = false;
                }
                comment.push_str(whole);
                comment.push('\n');
                continue;
            }
            after_command = true;
            let command = match whole.find(" # ") {
                Some(at) => whole[..at].trim_end(),
                None => whole,
            };
            steps.push(Step {
                page,
                command: command.to_owned(),
                comment: comment.clone(),
            });
        }
    }
    steps
}

/// The README's commands, then the walk-through's: docs/config.md up to its first section.
fn reading_order() -> Vec<Step> {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let config = std::fs::read_to_string(Path::new(REPO).join("docs/config.md")).unwrap();
    let walk_through = &config[..config.find("\n## ").unwrap_or(config.len())];
    let mut all = steps("README.md", &readme);
    all.extend(steps("docs/config.md", walk_through));
    all
}

/// The repository's tracked files, as they are in the working tree, copied into a temp dir:
/// what a fresh clone holds (git-ignored files such as `certs/*` keys are not tracked).
fn fresh_copy() -> TempDir {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(REPO)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let copy = TempDir::new();
    let mut copied = 0;
    for name in listed.stdout.split(|&byte| byte == 0) {
        let name = std::str::from_utf8(name).unwrap();
        let source = Path::new(REPO).join(name);
        if name.is_empty() || !source.is_file() {
            continue;
        }
        let target = copy.path().join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&source, &target).unwrap();
        copied += 1;
    }
    assert!(copied > 50, "only {copied} tracked files");
    assert!(
        !copy.path().join("certs/ca.pem").exists(),
        "a fresh clone has no PKI"
    );
    copy
}

/// A server the reader started and has not stopped yet.
struct Running {
    child: Child,
    port: u16,
    command: String,
}

/// The reader: where they are, what they installed, what runs.
struct Reader {
    dir: TempDir,
    installed: bool,
    running: Option<Running>,
    /// `--resolve` options for `*.localhost` when this curl does not resolve them itself.
    resolves_localhost: Option<bool>,
    /// What was run, for the final checks: (command, what it was checked for).
    ran: Vec<(String, &'static str)>,
}

fn bin_dir() -> PathBuf {
    Path::new(process::BIN).parent().unwrap().to_owned()
}

impl Reader {
    /// Runs a shell command line in the copy, the binary on PATH once installed.
    fn shell(&self, line: &str) -> Output {
        let mut path = std::env::var("PATH").unwrap_or_default();
        if self.installed {
            path = format!("{}:{path}", bin_dir().display());
        }
        Command::new("sh")
            .args(["-c", line])
            .env("PATH", path)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn take(&mut self, step: &Step) {
        let command = step.command.as_str();
        if let Some(args) = command.strip_prefix("cargo run --release -- ") {
            let binary = format!("'{}'", process::BIN);
            return self.certgate(step, args, &binary);
        }
        if let Some(args) = command.strip_prefix("certgate ") {
            assert!(
                self.installed,
                "{}: `{command}` comes before the reader is told how to install certgate",
                step.page
            );
            return self.certgate(step, args, "certgate");
        }
        if command == "cargo install --path . --locked" {
            // The binary under test is what that builds; putting it on PATH is the rest.
            self.installed = true;
            self.ran.push((command.to_owned(), "install"));
            return;
        }
        if command.starts_with("cargo test") {
            self.ran.push((command.to_owned(), "this suite"));
            return;
        }
        if command.starts_with("curl ") {
            return self.curl(step);
        }
        panic!(
            "{}: no rule for `{command}`: tests/integration/reading_order.rs says how to run and check each command of the path",
            step.page
        );
    }

    fn certgate(&mut self, step: &Step, args: &str, program: &str) {
        let subcommand = args.split_whitespace().next().unwrap();
        match subcommand {
            "demo" => self.serve_demo(step, args),
            "run" => self.serve_config(step, args),
            "pki" => self.pki(step, &format!("{program} {args}")),
            "check" => self.check(step, &format!("{program} {args}")),
            "explain" => self.explain(step, &format!("{program} {args}")),
            _ => panic!(
                "{}: no rule for `certgate {subcommand}` (`{}`)",
                step.page, step.command
            ),
        }
    }

    /// Stops what runs, as a reader does before starting the next server (same port) and at
    /// the end: SIGINT, then a clean exit.
    fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.child.signal("INT");
            let status = running.child.wait_exit();
            assert!(
                status.success(),
                "`{}` exited with {status} after SIGINT:\n{}",
                running.command,
                running.child.transcript()
            );
        }
    }

    fn serve_demo(&mut self, step: &Step, args: &str) {
        self.stop();
        let had_pki = self.dir.path().join("certs/ca.pem").exists();
        let mut argv: Vec<&str> = args.split_whitespace().collect();
        argv.extend(["--listen", "127.0.0.1:0"]);
        let mut child = Child::spawn_at_terminal(&argv, self.dir.path(), &[]);
        let printed = child.wait_for_line(Stream::Stdout, |line| line.contains("Press Ctrl-C"));
        let serving = printed
            .iter()
            .find_map(|line| line.split("serving on 127.0.0.1:").nth(1))
            .unwrap_or_else(|| panic!("`{}` printed no address:\n{printed:?}", step.command));
        let port = serving
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if !had_pki {
            assert!(
                printed
                    .iter()
                    .any(|line| line.contains("Created a development PKI")),
                "`{}` in a fresh clone did not say it made the PKI:\n{}",
                step.command,
                child.transcript()
            );
        }
        for file in ["ca.pem", "server.pem", "client.pem", "client.p12"] {
            assert!(
                self.dir.path().join("certs").join(file).is_file(),
                "`{}` did not write certs/{file}",
                step.command
            );
        }
        self.running = Some(Running {
            child,
            port,
            command: step.command.clone(),
        });
        self.ran.push((step.command.clone(), "serves"));
    }

    fn serve_config(&mut self, step: &Step, args: &str) {
        self.stop();
        let mut argv: Vec<&str> = args.split_whitespace().collect();
        argv.extend(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
        let mut child =
            Child::spawn_at_terminal(&argv, self.dir.path(), &[("CERTGATE_LOG_FORMAT", "json")]);
        let port = child.wait_serving().listen().port();
        self.running = Some(Running {
            child,
            port,
            command: step.command.clone(),
        });
        self.ran.push((step.command.clone(), "serves"));
    }

    fn pki(&mut self, step: &Step, line: &str) {
        let certs = self.dir.path().join("certs");
        let before: Vec<Option<Vec<u8>>> = ["ca.pem", "client.pem"]
            .iter()
            .map(|file| std::fs::read(certs.join(file)).ok())
            .collect();
        let output = self.shell(line);
        assert!(
            output.status.success(),
            "{}: `{}` exited with {}:\n{}{}",
            step.page,
            step.command,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for (file, before) in ["ca.pem", "client.pem"].iter().zip(before) {
            if let Some(before) = before {
                assert_eq!(
                    std::fs::read(certs.join(file)).unwrap(),
                    before,
                    "`{}` replaced the demo's certs/{file}: clients that trust it would break",
                    step.command
                );
            }
        }
        self.ran.push((step.command.clone(), "exit 0"));
    }

    fn check(&mut self, step: &Step, line: &str) {
        let output = self.shell(line);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: `{}` exited with {}:\n{stdout}{}",
            step.page,
            step.command,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let config = line
            .split_whitespace()
            .skip_while(|word| *word != "--config")
            .nth(1)
            .unwrap_or_else(|| panic!("no --config in `{}`", step.command));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join(config)).unwrap()).unwrap();
        for app in config["apps"].as_array().unwrap() {
            let name = app["name"].as_str().unwrap();
            assert!(
                stdout
                    .lines()
                    .any(|line| line.starts_with(&format!("{name}: "))),
                "`{}` printed no line for {name}:\n{stdout}",
                step.command
            );
        }
        self.ran.push((step.command.clone(), "exit 0"));
    }

    fn explain(&mut self, step: &Step, line: &str) {
        let output = self.shell(line);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let verdict = stdout
            .lines()
            .find_map(|line| line.strip_prefix("verdict: "))
            .unwrap_or_else(|| {
                panic!(
                    "`{}` printed no verdict ({}):\n{stdout}{}",
                    step.command,
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        let expected = if verdict.trim_start().starts_with("refused") {
            1
        } else {
            0
        };
        assert_eq!(
            output.status.code(),
            Some(expected),
            "`{}`: verdict {verdict:?}",
            step.command
        );
        self.ran.push((step.command.clone(), "a verdict"));
    }

    fn curl(&mut self, step: &Step) {
        let running = self
            .running
            .as_ref()
            .unwrap_or_else(|| panic!("{}: `{}` with nothing running", step.page, step.command));
        let port = running.port;
        let command = step.command.replace(":8443", &format!(":{port}"));
        let resolve = self.localhost_resolve(&command, port);
        let rest = command.strip_prefix("curl ").unwrap();
        let line = format!("curl -sS --max-time 60 -w '\\n%{{http_code}}' {resolve}{rest}");
        let output = self.shell(&line);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
        let status: u16 = status.trim().parse().unwrap_or(0);
        let what = || {
            format!(
                "{}: `{}` under {:?}: exit {:?}, status {status}\n{body}\n{}\nserver:\n{}",
                step.page,
                step.command,
                step.comment,
                output.status.code(),
                String::from_utf8_lossy(&output.stderr),
                self.running.as_ref().unwrap().child.transcript()
            )
        };
        if step.comment.contains("refused") {
            assert!(
                !output.status.success() && status == 0,
                "expected a refused handshake: {}",
                what()
            );
            self.ran.push((step.command.clone(), "refused"));
            return;
        }
        let expected = step
            .comment
            .split("answers ")
            .nth(1)
            .map(|after| after[..3].parse::<u16>().expect("answers NNN"));
        match expected {
            Some(expected) => {
                assert_eq!(status, expected, "{}", what());
                self.ran
                    .push((step.command.clone(), "a status from certgate"));
            }
            None => {
                assert_eq!(status, 200, "{}", what());
                let echo: serde_json::Value = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("not the echo app's JSON ({e}): {}", what()));
                if let Some(sent) = command
                    .split("X-Forwarded-Client-Cert: ")
                    .nth(1)
                    .and_then(|value| value.split('\'').next())
                {
                    assert!(
                        !echo.to_string().contains(sent),
                        "the app got the client's X-Forwarded-Client-Cert: {}",
                        what()
                    );
                }
                self.ran.push((step.command.clone(), "200 from the app"));
            }
        }
    }

    /// `--resolve` options for the `*.localhost` host of `command`, when this curl does not
    /// resolve `*.localhost` to loopback itself (exit code 6) as the README says curl does.
    fn localhost_resolve(&mut self, command: &str, port: u16) -> String {
        let Some(host) = command
            .split("https://")
            .nth(1)
            .and_then(|url| url.split(':').next())
            .filter(|host| host.ends_with(".localhost"))
        else {
            return String::new();
        };
        let resolves = *self.resolves_localhost.get_or_insert_with(|| {
            let probe = Command::new("curl")
                .args(["-sS", "--max-time", "5", &format!("http://{host}:{port}/")])
                .output()
                .unwrap();
            probe.status.code() != Some(6)
        });
        if resolves {
            String::new()
        } else {
            format!("--resolve {host}:{port}:127.0.0.1 ")
        }
    }
}

#[test]
fn the_readme_and_the_ingress_walk_through_work_in_reading_order_in_a_fresh_clone() {
    if !tools::curl()
        || !tools::available("git", "--version", "apt-get install git")
        || !tools::available("python3", "--version", "apt-get install python3")
    {
        return;
    }
    let steps = reading_order();
    let mut reader = Reader {
        dir: fresh_copy(),
        installed: false,
        running: None,
        resolves_localhost: None,
        ran: Vec::new(),
    };
    for step in &steps {
        reader.take(step);
    }
    reader.stop();

    // The path is the one the issue describes: the demo makes the PKI, `pki init` with the
    // example's hosts keeps it, `check` passes with it, and the ingress serves a request.
    let ran = |prefix: &str, outcome: &str| {
        reader
            .ran
            .iter()
            .filter(|(command, checked)| {
                (command.starts_with(prefix) || command.contains(&format!("-- {prefix}")))
                    && *checked == outcome
            })
            .count()
    };
    assert_eq!(ran("demo", "serves"), 1, "{:?}", reader.ran);
    assert_eq!(
        ran("certgate pki init certs --host", "exit 0"),
        1,
        "{:?}",
        reader.ran
    );
    assert_eq!(
        ran("certgate check --config config/ingress.json", "exit 0"),
        1
    );
    assert_eq!(
        ran("certgate run --config config/ingress.json", "serves"),
        1
    );
    assert!(ran("curl ", "200 from the app") >= 5, "{:?}", reader.ran);
    assert!(ran("curl ", "refused") >= 2, "{:?}", reader.ran);
    assert_eq!(
        ran("curl ", "a status from certgate"),
        1,
        "{:?}",
        reader.ran
    );
    let pki_at = reader
        .ran
        .iter()
        .position(|(command, _)| command.starts_with("certgate pki init"))
        .unwrap();
    let demo_at = reader
        .ran
        .iter()
        .position(|(command, _)| command.ends_with("demo"))
        .unwrap();
    assert!(demo_at < pki_at, "{:?}", reader.ran);
}
