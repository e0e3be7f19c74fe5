//! Sticky sessions (docs/config.md "Sticky sessions"), with real upstream servers on loopback
//! ports, three endpoints in one group:
//! - the first response sets the cookie, its attributes exact on the wire; requests carrying
//!   it all go to its endpoint and set no cookie again;
//! - its endpoint killed: the next request goes to another endpoint and its response sets a
//!   new cookie, which then sticks;
//! - its endpoint removed from the address set: the same;
//! - a cookie that names no endpoint is replaced;
//! - with a traffic split between revisions, the cookie pins the revision with the endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::named::{HOST, Named};
use common::{ClientOptions, Connection, Gateway, Pki, TempDir, app};
use http::StatusCode;
use serde_json::json;
use tokio::sync::watch;

/// Sends a GET with `cookie` (a `certgate-affinity` value); the body and the `Set-Cookie`
/// header of the answer.
async fn get(conn: &mut Connection, cookie: Option<&str>) -> (String, Option<String>) {
    let mut request = conn.get(HOST, "/");
    if let Some(cookie) = cookie {
        request.headers_mut().insert(
            http::header::COOKIE,
            format!("other=1; certgate-affinity={cookie}")
                .parse()
                .unwrap(),
        );
    }
    let reply = conn.send(request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let set: Vec<String> = reply
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    assert!(set.len() <= 1, "{set:?}");
    (
        String::from_utf8(reply.body.to_vec()).unwrap(),
        set.into_iter().next(),
    )
}

/// The value of a `Set-Cookie` header certgate sent, checking its attributes exactly.
fn value(set_cookie: &str) -> String {
    let value = set_cookie
        .strip_prefix("certgate-affinity=")
        .and_then(|rest| rest.strip_suffix("; Path=/; HttpOnly; Secure; SameSite=Lax"))
        .unwrap_or_else(|| panic!("not the affinity cookie: {set_cookie}"));
    assert_eq!(value.len(), 16, "{set_cookie}");
    assert!(
        value.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "{set_cookie}"
    );
    value.to_owned()
}

/// Sends `count` requests with `cookie`: each must reach `name` and set no cookie.
async fn sticks(conn: &mut Connection, cookie: &str, name: &str, count: usize) {
    for _ in 0..count {
        let (body, set) = get(conn, Some(cookie)).await;
        assert_eq!((body.as_str(), set), (name, None));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_pins_a_client_to_an_endpoint_and_moves_it_when_the_endpoint_goes() {
    let mut apps = [
        Some(Named::start("a").await),
        Some(Named::start("b").await),
        Some(Named::start("c").await),
    ];
    let names = ["a", "b", "c"];
    let addrs: Vec<SocketAddr> = apps.iter().map(|app| app.as_ref().unwrap().addr).collect();
    let (source, addresses) = watch::channel(Arc::from(addrs.clone()));
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut entry = app("api", &[HOST], addrs[0], "ignore");
    entry["ingress"]["stickySessions"] = json!({ "affinity": "sticky" });
    let config = json!({ "apps": [entry] });
    let gateway = Gateway::start_edited(dir, config, 0, move |loaded| {
        let app = Arc::get_mut(&mut loaded.apps[0]).unwrap();
        app.groups[0].addresses = addresses;
    })
    .await;
    let mut conn = Connection::open(gateway.addr, &ClientOptions::new(&pki, HOST))
        .await
        .unwrap();

    // Without a cookie: balanced, and each response sets one.
    let (first, set) = get(&mut conn, None).await;
    let cookie = value(&set.expect("the first response sets the cookie"));
    sticks(&mut conn, &cookie, &first, 60).await;
    // A value that names no endpoint is replaced.
    let (_, set) = get(&mut conn, Some("00000000000000ff")).await;
    value(&set.expect("a cookie naming no endpoint is replaced"));
    let (_, set) = get(&mut conn, Some("not-a-value")).await;
    value(&set.expect("a malformed cookie is replaced"));

    // Its endpoint killed: the client moves, and gets a new cookie.
    let index = names.iter().position(|name| *name == first).unwrap();
    apps[index] = None;
    let (second, set) = get(&mut conn, Some(&cookie)).await;
    assert_ne!(second, first);
    let moved = value(&set.expect("a moved client gets a new cookie"));
    assert_ne!(moved, cookie);
    sticks(&mut conn, &moved, &second, 30).await;

    // Its endpoint removed from the set: the same.
    let kept: Vec<SocketAddr> = addrs
        .iter()
        .zip(names)
        .filter(|(_, name)| *name != second)
        .map(|(addr, _)| *addr)
        .collect();
    source.send(Arc::from(kept)).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (third, set) = get(&mut conn, Some(&moved)).await;
    assert!(third != first && third != second, "{third}");
    let again = value(&set.expect("a client of a removed endpoint gets a new cookie"));
    sticks(&mut conn, &again, &third, 30).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_traffic_split_the_cookie_pins_the_revision_too() {
    let latest = Named::start("latest").await;
    let old = Named::start("old").await;
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut entry = app("api", &[HOST], latest.addr, "ignore");
    entry["revisions"] = json!({ "api--old": format!("http://{}", old.addr) });
    entry["ingress"]["stickySessions"] = json!({ "affinity": "Sticky" });
    entry["ingress"]["traffic"] = json!([
        { "weight": 50, "latestRevision": true },
        { "weight": 50, "revisionName": "api--old" },
    ]);
    let gateway = Gateway::start(dir, json!({ "apps": [entry] })).await;
    let mut conn = Connection::open(gateway.addr, &ClientOptions::new(&pki, HOST))
        .await
        .unwrap();
    // Without the cookie the requests are split, and each response sets one.
    let mut cookies = std::collections::HashMap::new();
    for _ in 0..4 {
        let (body, set) = get(&mut conn, None).await;
        cookies.insert(
            body,
            value(&set.expect("each unpinned response sets the cookie")),
        );
    }
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for (name, cookie) in &cookies {
        sticks(&mut conn, cookie, name, 20).await;
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sticky_sessions_no_cookie_is_set() {
    let upstream = Named::start("a").await;
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let config = json!({ "apps": [app("api", &[HOST], upstream.addr, "ignore")] });
    let gateway = Gateway::start(dir, config).await;
    let mut conn = Connection::open(gateway.addr, &ClientOptions::new(&pki, HOST))
        .await
        .unwrap();
    assert_eq!(get(&mut conn, None).await, ("a".to_owned(), None));
    gateway.stop().await;
}
