//! The admin listener (never the mTLS one): `/healthz`, `/readyz`, `/metrics`, and
//! `/upstreams`, the live state of every app's upstream endpoints in the newest config
//! generation (JSON, read from the endpoints when asked).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::apps::LiveApps;
use crate::drain::Draining;
use crate::metrics::Metrics;
use crate::proxy::body::ProxyBody;
use crate::proxy::error::plain_response;

/// What the admin listener reads: the metrics, the drain flag and the served apps.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub metrics: Arc<Metrics>,
    pub draining: Draining,
    pub apps: LiveApps,
}

/// Serves admin requests until the task is stopped.
pub(crate) async fn serve(listener: TcpListener, admin: Admin) {
    loop {
        let (tcp, _) = crate::accept::next(&listener, "admin").await;
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&admin, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn answer(admin: &Admin, request: &Request<Incoming>) -> Response<ProxyBody> {
    let Admin {
        metrics,
        draining,
        apps,
    } = admin;
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/healthz" => plain_response(StatusCode::OK, "ok\n"),
        "/readyz" if !draining.is_ready() => {
            plain_response(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        "/readyz" => plain_response(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let body = Full::new(Bytes::from(metrics.encode()));
            let mut response = Response::new(Either::Right(body));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/upstreams" => {
            let mut body = serde_json::to_vec_pretty(&apps.load().upstreams()).unwrap_or_default();
            body.push(b'\n');
            let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => plain_response(StatusCode::NOT_FOUND, "not found\n"),
    }
}
