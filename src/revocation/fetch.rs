//! HTTP for revocation: GET a CRL, POST an OCSP request, each under its own timeout and with
//! a size cap. Plain `http://` only: CRLs and OCSP responses are signed, and a TLS client to
//! fetch them would itself need revocation checking (RFC 5280 section 8, RFC 6960 appendix A).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long one fetch (connect, request, whole body) may take.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest CRL accepted.
pub(crate) const MAX_CRL_BYTES: usize = 16 * 1024 * 1024;
/// The largest OCSP response accepted.
pub(crate) const MAX_OCSP_BYTES: usize = 64 * 1024;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    #[error("request failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("answered {status}")]
    Status { status: StatusCode },
    #[error("reading the answer failed")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot build the request")]
    Build(#[source] http::Error),
    #[error("the fetch stopped before it finished")]
    Stopped,
}

/// A small HTTP/1.1 client; responders often close after each answer, so nothing is pooled.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    /// A client with no connection pool.
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(FETCH_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Self { client }
    }

    /// GETs `uri` (a CRL).
    pub(crate) async fn get(&self, uri: &Uri) -> Result<Bytes, FetchError> {
        let request = Request::get(uri.clone())
            .body(Full::new(Bytes::new()))
            .map_err(FetchError::Build)?;
        self.send(request, MAX_CRL_BYTES).await
    }

    /// POSTs an OCSP request (RFC 6960 appendix A.1).
    pub(crate) async fn post_ocsp(&self, uri: &Uri, body: Vec<u8>) -> Result<Bytes, FetchError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/ocsp-request"),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(FetchError::Build)?;
        self.send(request, MAX_OCSP_BYTES).await
    }

    async fn send(&self, request: Request<Full<Bytes>>, limit: usize) -> Result<Bytes, FetchError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(FetchError::Request)?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status {
                    status: response.status(),
                });
            }
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(FetchError::Body)?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }
}

/// What fetching each of the config's `crlUrls` gave, by URL.
pub(crate) type Fetched = HashMap<Uri, Result<Bytes, FetchError>>;

/// Fetches every URL at once (each once, however many apps list it), on the caller's runtime.
pub(crate) async fn get_all(urls: impl IntoIterator<Item = Uri>) -> Fetched {
    let fetcher = Fetcher::new();
    let mut fetches = HashMap::new();
    for url in urls {
        if let Entry::Vacant(slot) = fetches.entry(url) {
            let (fetcher, url) = (fetcher.clone(), slot.key().clone());
            slot.insert(tokio::spawn(async move { fetcher.get(&url).await }));
        }
    }
    let mut fetched = HashMap::with_capacity(fetches.len());
    for (url, fetch) in fetches {
        fetched.insert(url, fetch.await.unwrap_or(Err(FetchError::Stopped)));
    }
    fetched
}

/// What `fetched` holds for `url`: the bytes, shared by every app that lists it, or the
/// error (taken: loading stops at the first).
pub(crate) fn take(fetched: &mut Fetched, url: &Uri) -> Result<Bytes, FetchError> {
    match fetched.get(url) {
        Some(Ok(bytes)) => Ok(bytes.clone()),
        _ => Err(fetched
            .remove(url)
            .and_then(Result::err)
            .unwrap_or(FetchError::Stopped)),
    }
}
