//! Starting `certgate run` with JSON logs and reading its `serving` line: where the child
//! listens for clients and, when configured, for the admin endpoints.

use std::net::SocketAddr;
use std::path::Path;

use super::{Child, Stream};

/// The arguments that run `certgate.json` with JSON logs (the `serving` line is read from them).
pub const RUN_CONFIG: [&str; 5] = ["--log-format", "json", "run", "--config", "certgate.json"];

/// The JSON `serving` log line of a child.
#[derive(Debug)]
pub struct Serving(pub serde_json::Value);

impl Serving {
    /// The address the mTLS listener is bound to.
    pub fn listen(&self) -> SocketAddr {
        self.addr("listen")
    }

    /// The address the admin listener is bound to; panics when the line has none.
    pub fn admin(&self) -> SocketAddr {
        self.addr("admin")
    }

    /// The address the plain-HTTP listener is bound to; panics when the line has none.
    pub fn listen_http(&self) -> SocketAddr {
        self.addr("listen_http")
    }

    fn addr(&self, field: &str) -> SocketAddr {
        self.0[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} field in {}", self.0))
            .parse()
            .unwrap_or_else(|e| panic!("{field} in {} is not an address: {e}", self.0))
    }
}

impl Child {
    /// Writes `config` to `certgate.json` in `dir`, starts `certgate` there with
    /// [`RUN_CONFIG`] then `args`, and waits for it to serve.
    pub fn run_config(dir: &Path, config: &serde_json::Value, args: &[&str]) -> (Self, Serving) {
        Self::run_config_with(false, dir, config, args)
    }

    /// As `run_config`, with stdin a terminal ([`Child::spawn_at_terminal`]).
    pub fn run_config_at_terminal(dir: &Path, config: &serde_json::Value) -> (Self, Serving) {
        Self::run_config_with(true, dir, config, &[])
    }

    fn run_config_with(
        at_terminal: bool,
        dir: &Path,
        config: &serde_json::Value,
        args: &[&str],
    ) -> (Self, Serving) {
        std::fs::write(
            dir.join("certgate.json"),
            serde_json::to_vec(config).unwrap(),
        )
        .unwrap();
        let mut argv = RUN_CONFIG.to_vec();
        argv.extend_from_slice(args);
        let mut child = match at_terminal {
            true => Self::spawn_at_terminal(&argv, dir, &[]),
            false => Self::spawn(&argv, dir, &[]),
        };
        let serving = child.wait_serving();
        (child, serving)
    }

    /// Waits for the `serving` line of a child started with `--log-format json`.
    pub fn wait_serving(&mut self) -> Serving {
        let lines = self.wait_for_line(Stream::Stderr, |line| line.contains("\"serving\""));
        let line = lines.last().unwrap();
        Serving(
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("the serving line is not JSON ({e}): {line}")),
        )
    }
}
