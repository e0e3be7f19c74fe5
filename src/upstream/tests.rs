//! Retiring a client, against a local TCP listener as the app: its idle connection closes, a
//! request that needs a dial fails without the app seeing a connection (or goes through the
//! client that replaced it), and an exchange in flight completes and then closes its
//! connection.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{ClientSettings, GroupSpec, SendError, UpstreamClient};
use crate::settings::{Timeouts, Transport, Upstream};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// An HTTP/1.1 client for the app at `app`, on one worker.
fn client(app: SocketAddr) -> UpstreamClient {
    client_over(app, Transport::Http1)
}

fn client_over(app: SocketAddr, transport: Transport) -> UpstreamClient {
    let upstream = Upstream {
        authority: app.to_string().parse().unwrap(),
        transport,
        tls: None,
    };
    let metrics = crate::metrics::Metrics::new();
    UpstreamClient::new(
        vec![GroupSpec {
            name: "latest",
            upstream: &upstream,
            tls: None,
            weight: 100,
            addresses: super::endpoints::fixed(vec![app]),
            metrics: metrics.upstream_group("app", "latest"),
        }],
        ClientSettings {
            app: "app",
            timeouts: &Timeouts::default(),
            max_connections: 8,
            workers: 1,
            retries: 1,
            health_check: None,
            affinity_key: None,
        },
    )
}

/// A server that sends every request it receives through `client`: the request body an
/// upstream client takes is hyper's own. What a failed send returned is kept in `failures`;
/// each answer names the peer the request was sent to in `x-peer` (`<group> <endpoint>`).
async fn front(client: UpstreamClient) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let recorded = failures.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let client = client.clone();
            let recorded = recorded.clone();
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let client = client.clone();
                let recorded = recorded.clone();
                async move {
                    let mut peer = None;
                    let body = match client.send(request, |_| 0, None, &mut peer).await {
                        Ok(response) => response.into_body().collect().await.unwrap().to_bytes(),
                        Err(error) => {
                            recorded.lock().unwrap().push(format!("{error:?}"));
                            Bytes::from_static(b"failed")
                        }
                    };
                    let peer = peer.map_or_else(String::new, |peer| {
                        format!("{} {}", peer.group(), peer.endpoint())
                    });
                    let mut response = http::Response::new(Full::new(body));
                    response
                        .headers_mut()
                        .insert("x-peer", peer.parse().unwrap());
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    (addr, failures)
}

/// One GET through `front`; the body certgate's side answered with.
async fn get(front: SocketAddr) -> Bytes {
    get_with_peer(front).await.0
}

/// One GET through `front`; the body certgate's side answered with, and its `x-peer`.
async fn get_with_peer(front: SocketAddr) -> (Bytes, String) {
    let tcp = TcpStream::connect(front).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .uri("/")
        .header(http::header::HOST, "app.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let peer = response.headers()["x-peer"].to_str().unwrap().to_owned();
    (
        response.into_body().collect().await.unwrap().to_bytes(),
        peer,
    )
}

/// Reads one request head from the app's end of a connection.
async fn read_request(app_end: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            app_end.read(&mut byte).await.unwrap(),
            1,
            "request cut short"
        );
        head.push(byte[0]);
    }
}

/// Whether the app sees its end of the connection closed (EOF or reset) within a few seconds.
async fn closed(app_end: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), app_end.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn retiring_closes_the_idle_connections() {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = client(app.local_addr().unwrap());
    let (front, _) = front(client.clone()).await;
    let request = tokio::spawn(get(front));
    let (mut app_end, _) = app.accept().await.unwrap();
    read_request(&mut app_end).await;
    app_end.write_all(RESPONSE).await.unwrap();
    assert_eq!(request.await.unwrap(), "ok");

    client.retire(None);
    assert!(closed(&mut app_end).await, "the idle connection is closed");
}

#[tokio::test]
async fn a_retired_client_fails_a_request_that_needs_a_dial_without_connecting() {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let client = client(app_addr);
    let (front, failures) = front(client.clone()).await;
    client.retire(None);

    assert_eq!(get(front).await, "failed");
    let failures = failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0] == format!("{:?}", SendError::Retired),
        "{failures:?}"
    );
    // The first connection the app accepts is the probe's: certgate made none.
    let probe = TcpStream::connect(app_addr).await.unwrap();
    let (_, peer) = app.accept().await.unwrap();
    assert_eq!(peer, probe.local_addr().unwrap());
}

#[tokio::test]
async fn an_exchange_in_flight_when_retired_completes_and_its_connection_closes() {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = client(app.local_addr().unwrap());
    let (front, _) = front(client.clone()).await;
    let request = tokio::spawn(get(front));
    let (mut app_end, _) = app.accept().await.unwrap();
    read_request(&mut app_end).await;

    client.retire(None);
    app_end.write_all(RESPONSE).await.unwrap();
    assert_eq!(request.await.unwrap(), "ok", "the exchange completes");
    assert!(
        closed(&mut app_end).await,
        "the connection closes instead of going back to the pool"
    );
    assert!(client.first_endpoint().pools().take_any().is_none());
}

#[tokio::test]
async fn a_retired_http2_client_fails_a_request_that_needs_a_dial_as_retired() {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let client = client_over(app_addr, Transport::Http2);
    let (front, failures) = front(client.clone()).await;
    client.retire(None);

    assert_eq!(get(front).await, "failed");
    assert_eq!(
        *failures.lock().unwrap(),
        [format!("{:?}", SendError::Retired)]
    );
    let probe = TcpStream::connect(app_addr).await.unwrap();
    let (_, peer) = app.accept().await.unwrap();
    assert_eq!(peer, probe.local_addr().unwrap());
}

#[tokio::test]
async fn a_retired_client_sends_what_needs_a_dial_through_its_successor() {
    let old_app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_addr = old_app.local_addr().unwrap();
    let new_app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = client(old_addr);
    let (front, failures) = front(client.clone()).await;
    client.retire(Some(self::client(new_app.local_addr().unwrap())));

    let request = tokio::spawn(get(front));
    let (mut app_end, _) = new_app.accept().await.unwrap();
    read_request(&mut app_end).await;
    app_end.write_all(RESPONSE).await.unwrap();
    assert_eq!(request.await.unwrap(), "ok");
    assert!(failures.lock().unwrap().is_empty());
    // The first connection the old app accepts is the probe's: the retired client made none.
    let probe = TcpStream::connect(old_addr).await.unwrap();
    let (_, peer) = old_app.accept().await.unwrap();
    assert_eq!(peer, probe.local_addr().unwrap());
}

/// An HTTP/1.1 client for one group whose endpoints are `addresses` for good, with `retries`.
fn group_client(addresses: Vec<SocketAddr>, retries: u32) -> UpstreamClient {
    followed_client(super::endpoints::fixed(addresses), retries)
}

/// An HTTP/1.1 client for one group whose endpoints follow `addresses`, with `retries`.
fn followed_client(addresses: super::Addresses, retries: u32) -> UpstreamClient {
    let upstream = Upstream {
        authority: "app.test:80".parse().unwrap(),
        transport: Transport::Http1,
        tls: None,
    };
    let metrics = crate::metrics::Metrics::new();
    UpstreamClient::new(
        vec![GroupSpec {
            name: "latest",
            upstream: &upstream,
            tls: None,
            weight: 100,
            addresses,
            metrics: metrics.upstream_group("app", "latest"),
        }],
        ClientSettings {
            app: "app",
            timeouts: &Timeouts::default(),
            max_connections: 8,
            workers: 1,
            retries,
            health_check: None,
            affinity_key: None,
        },
    )
}

/// An app that answers every request (`answer_all`), its address, and how many it answered.
async fn answering() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, answer_all(listener))
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Answers every request on `listener` with `ok`, counting them.
fn answer_all(listener: TcpListener) -> Arc<std::sync::atomic::AtomicUsize> {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if tcp.write_all(RESPONSE).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    count
}

#[tokio::test]
async fn a_request_refused_by_one_endpoint_goes_to_another() {
    let dead = closed_port().await;
    let (live_addr, served) = answering().await;
    let client = group_client(vec![dead, live_addr], 1);
    let (front, failures) = front(client.clone()).await;
    for _ in 0..20 {
        assert_eq!(get(front).await, "ok");
    }
    assert!(failures.lock().unwrap().is_empty());
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 20);
}

#[tokio::test]
async fn the_peer_is_the_endpoint_that_answered_a_request_sent_again() {
    let dead = closed_port().await;
    let (live_addr, served) = answering().await;
    let client = group_client(vec![dead, live_addr], 1);
    let (front, _) = front(client.clone()).await;
    for _ in 0..20 {
        let (body, peer) = get_with_peer(front).await;
        assert_eq!(
            (&body[..], peer),
            (&b"ok"[..], format!("latest {live_addr}"))
        );
    }
    // Each request went to the dead endpoint first with odds of one in two until it was
    // ejected: never in 20 requests has odds of one in a million.
    let tried_dead = client.inner.groups[0]
        .current()
        .iter()
        .find(|endpoint| endpoint.address == Some(dead))
        .unwrap()
        .requests_sent();
    assert!(tried_dead > 0, "some requests were sent again");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 20);
}

#[tokio::test]
async fn without_retries_a_refused_request_fails() {
    let dead = closed_port().await;
    let other = closed_port().await;
    let client = group_client(vec![dead, other], 0);
    let (front, failures) = front(client.clone()).await;
    let (body, peer) = get_with_peer(front).await;
    assert_eq!(body, "failed");
    assert!(
        [format!("latest {dead}"), format!("latest {other}")].contains(&peer),
        "the peer is the endpoint that refused: {peer}"
    );
    assert_eq!(failures.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_endpoint_that_keeps_refusing_is_ejected_and_gets_no_request() {
    let dead = closed_port().await;
    let (live_addr, _served) = answering().await;
    let client = group_client(vec![dead, live_addr], 1);
    let (front, _) = front(client.clone()).await;
    let set = client.inner.groups[0].clone();
    let dead_endpoint = set
        .current()
        .iter()
        .find(|endpoint| endpoint.address == Some(dead))
        .unwrap()
        .clone();
    for _ in 0..200 {
        assert_eq!(get(front).await, "ok");
        if dead_endpoint.is_ejected() {
            break;
        }
    }
    assert!(
        dead_endpoint.is_ejected(),
        "ejected after failures in a row"
    );
    let sent_before = dead_endpoint.requests_sent();
    for _ in 0..20 {
        assert_eq!(get(front).await, "ok");
    }
    assert_eq!(
        dead_endpoint.requests_sent(),
        sent_before,
        "none while ejected"
    );
}

#[tokio::test]
async fn an_address_removed_from_the_set_drains_and_a_new_one_takes_requests() {
    let (first_addr, first_served) = answering().await;
    let (second_addr, second_served) = answering().await;
    let (source, addresses) = tokio::sync::watch::channel(Arc::from(vec![first_addr]));
    let client = followed_client(addresses, 1);
    assert!(client.inner.direct.is_none(), "a followed set can change");
    let (front, _) = front(client.clone()).await;
    assert_eq!(get(front).await, "ok");
    let set = client.inner.groups[0].clone();
    let old = set.current()[0].clone();
    source.send(Arc::from(vec![second_addr])).unwrap();
    for _ in 0..100 {
        if old.is_draining() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(old.is_draining());
    for _ in 0..5 {
        assert_eq!(get(front).await, "ok");
    }
    assert_eq!(first_served.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(second_served.load(std::sync::atomic::Ordering::SeqCst), 5);
    assert!(
        old.pools().take_any().is_none(),
        "its idle connection closed"
    );
}

#[test]
fn the_schedule_gives_each_group_its_weight_spread_out() {
    let order = super::schedule(&[80, 20]);
    assert_eq!(order.len(), 100);
    assert_eq!(order.iter().filter(|&&group| group == 1).count(), 20);
    assert!(
        order.windows(2).all(|pair| pair != [1, 1]),
        "the smaller share is never sent twice in a row: {order:?}"
    );
    assert!(super::schedule(&[100]).is_empty());
}

#[tokio::test]
async fn the_endpoint_with_fewer_requests_in_flight_is_chosen() {
    let addresses = vec![
        closed_port().await,
        closed_port().await,
        closed_port().await,
    ];
    let client = group_client(addresses, 1);
    let set = client.inner.groups[0].clone();
    let endpoints = set.current();
    let busy = endpoints[0].clone();
    let _held: Vec<_> = (0..3).map(|_| busy.start()).collect();
    for _ in 0..100 {
        let chosen = super::endpoints::pick(&endpoints, &[], || panic!("all are healthy")).unwrap();
        assert!(
            !std::sync::Arc::ptr_eq(chosen, &busy),
            "two choices never land on the busy one alone"
        );
    }
    let tried = vec![endpoints[1].clone(), endpoints[2].clone()];
    let last = super::endpoints::pick(&endpoints, &tried, || {}).unwrap();
    assert!(std::sync::Arc::ptr_eq(last, &busy), "the untried one");
    assert!(super::endpoints::pick(&endpoints, &endpoints, || {}).is_none());
}

#[tokio::test]
async fn only_a_lone_endpoint_whose_address_never_changes_is_sent_to_directly() {
    let (app_addr, served) = answering().await;
    let client = group_client(vec![app_addr], 1);
    let direct = client.inner.direct.clone().expect("one fixed endpoint");
    let (front, failures) = front(client.clone()).await;
    for _ in 0..3 {
        assert_eq!(get(front).await, "ok");
    }
    assert!(failures.lock().unwrap().is_empty());
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(direct.requests_sent(), 3, "counted at its endpoint");
    assert_eq!(
        direct.in_flight(),
        0,
        "each counted in flight until its response ended"
    );
    assert!(
        group_client(vec![app_addr, closed_port().await], 1)
            .inner
            .direct
            .is_none()
    );
    let (_source, addresses) = tokio::sync::watch::channel(Arc::from(vec![app_addr]));
    assert!(followed_client(addresses, 1).inner.direct.is_none());
}
