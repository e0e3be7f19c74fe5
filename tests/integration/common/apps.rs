//! Apps of test configs: one of each mode at `<name>.example.test`, and the smallest config a
//! test of the listener runs, one `ignore` app at [`IGNORE_HOST`] in front of a new echo
//! upstream.

use std::net::SocketAddr;

use super::{Pki, TempDir, app, echo_upstream};

/// An app `name` at `<name>.example.test` in `mode` (`require`, `accept` or `ignore`); but
/// for `ignore` it trusts the client CA `Pki::write` writes.
pub fn app_of_mode(name: &str, upstream: SocketAddr, mode: &str) -> serde_json::Value {
    let host = format!("{name}.example.test");
    let mut entry = app(name, &[host.as_str()], upstream, mode);
    if mode != "ignore" {
        entry["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    }
    entry
}

/// The host of the one `ignore` app.
pub const IGNORE_HOST: &str = "ignore.example.test";

/// An `ignore` app at [`IGNORE_HOST`] in front of `upstream`.
pub fn ignore_app(upstream: SocketAddr) -> serde_json::Value {
    app("ignore", &[IGNORE_HOST], upstream, "ignore")
}

/// A folder holding `pki`'s files, and a config listening on 127.0.0.1:0 with one `ignore`
/// app in front of a new echo upstream and the top-level keys of `extra` added.
pub async fn ignore_app_config(
    pki: &Pki,
    extra: serde_json::Value,
) -> (TempDir, serde_json::Value) {
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let mut config = serde_json::json!({ "listen": "127.0.0.1:0", "apps": [ignore_app(upstream)] });
    for (key, value) in extra
        .as_object()
        .expect("extra config keys as a JSON object")
    {
        config[key] = value.clone();
    }
    (dir, config)
}

/// certgate in-process with one `ignore` app in front of a new echo upstream, the top-level
/// keys of `extra` added.
pub async fn ignore_gateway(pki: &Pki, extra: serde_json::Value) -> super::Gateway {
    let (dir, config) = ignore_app_config(pki, extra).await;
    super::Gateway::start(dir, config).await
}
