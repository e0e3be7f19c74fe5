//! The access line, one per request, and its fast path.
//!
//! Every line is the `info` event `request` with target `certgate::proxy`, exactly as
//! tracing-subscriber writes it in `plain` or `json`. Formatting it through tracing costs about
//! 2 µs (field visitors, `core::fmt`, styling that is off, a calendar date per line), which
//! is most of the access log's cost per request. So the binary installs its log writer here
//! and, when the event is enabled, no span is entered and every text field is printable ASCII
//! without a quote or a backslash (so neither format escapes anything), the line is written with
//! the same bytes straight to that writer. Anything else (no writer installed, colours, a
//! `debug` connection span, a field that needs escaping) goes through tracing.
//! `tests::fast_lines_are_the_bytes_tracing_writes` holds the two to the same bytes.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::Method;

use crate::log_queue::LogWriter;
use crate::settings::Upstream;

/// The log writer access lines bypass tracing to, when the binary installed one.
static WRITER: OnceLock<Writer> = OnceLock::new();

/// Where fast lines go and in which format.
#[derive(Debug)]
pub(crate) struct Writer {
    sink: LogWriter,
    json: bool,
}

/// Lets access lines skip tracing's formatter and go straight to `sink`, the writer the
/// global subscriber writes to, in `json` or plain format. Only for a subscriber without
/// colours, and only once: a second call changes nothing.
pub fn install(sink: LogWriter, json: bool) {
    let _ = WRITER.set(Writer { sink, json });
}

/// The installed writer, when the access line is enabled and nothing but the line itself
/// would be printed (no span is entered).
pub(crate) fn fast_writer() -> Option<&'static Writer> {
    let writer = WRITER.get()?;
    (tracing::enabled!(target: "certgate::proxy", tracing::Level::INFO)
        && tracing::Span::current().is_disabled())
    .then_some(writer)
}

/// Makes this worker thread gather its access lines and queue them together; it calls
/// [`flush_this_thread`] whenever it runs out of work and before it ends, and runs
/// [`flush_batches`].
pub(crate) fn batch_this_thread() {
    crate::log_queue::batch_this_thread();
}

/// Queues the access lines this thread has gathered.
pub(crate) fn flush_this_thread() {
    if let Some(writer) = WRITER.get() {
        writer.sink.flush_this_thread();
    }
}

/// Queues this thread's access lines at the latest a few milliseconds after the first of a
/// batch, also while the worker never runs out of work. Runs for the life of the worker.
pub(crate) async fn flush_batches() {
    loop {
        crate::log_queue::batch_due().await;
        flush_this_thread();
    }
}

/// What the access line says of the connection, the same for each of its requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionFields<'a> {
    pub client_addr: SocketAddr,
    pub sni: &'a str,
    pub app: &'a str,
    pub hash: &'a str,
    /// `None` for a request no app took (on the plain-HTTP listener).
    pub upstream: Option<&'a Upstream>,
    /// Which listener, when not the mTLS one (`http`).
    pub listener: Option<&'static str>,
}

/// What the access line says of one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFields<'a> {
    /// `None` for a head refused before it was parsed.
    pub method: Option<&'a Method>,
    pub path: Option<&'a str>,
    pub status: u16,
    /// `None` with `method`.
    pub rule: Option<&'a str>,
    pub duration_ms: u64,
    pub outcome: Option<&'static str>,
    /// How many times the request was sent again to another upstream endpoint; the line
    /// says so when above 0.
    pub retries: u32,
    /// Where the request was sent, when it was: `None` for a request answered before it
    /// reached the upstream client (its line names the app's upstream, as the connection's).
    pub peer: Option<PeerFields<'a>>,
}

/// What the access line says of the upstream a request was sent to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerFields<'a> {
    /// The group's upstream: the `upstream` field.
    pub upstream: &'a Upstream,
    /// `upstream_group`: `latest`, a revision's name, or `upstream-<n>`.
    pub group: &'a str,
    /// `upstream_endpoint`: the address the request went to.
    pub endpoint: &'a str,
}

/// The connection's fields rendered once for the fast path: what comes between the message
/// and `method`, and the `upstream` field of a request that was not sent to a peer.
#[derive(Debug)]
pub(crate) struct RenderedConnection {
    head: Box<str>,
    upstream: Box<str>,
}

impl Writer {
    /// The connection's part of every line, or `None` when a field needs escaping (its
    /// lines then go through tracing).
    pub(crate) fn render_connection(
        &self,
        fields: &ConnectionFields<'_>,
    ) -> Option<RenderedConnection> {
        let addr = fields.client_addr.to_string();
        let upstream = fields.upstream.map(ToString::to_string).unwrap_or_default();
        let texts = [
            addr.as_str(),
            fields.sni,
            fields.app,
            fields.hash,
            &upstream,
            fields.listener.unwrap_or(""),
        ];
        if !texts.into_iter().all(is_plain) {
            return None;
        }
        let mut head = String::with_capacity(160);
        let mut field = Fields::new(&mut head, self.json);
        field.display("client.addr", &addr);
        field.quoted("sni", fields.sni);
        field.display("app", fields.app);
        field.quoted("client.hash", fields.hash);
        if let Some(listener) = fields.listener {
            field.quoted("listener", listener);
        }
        let mut tail = String::with_capacity(upstream.len() + 16);
        if fields.upstream.is_some() {
            Fields::new(&mut tail, self.json).display("upstream", &upstream);
        }
        Some(RenderedConnection {
            head: head.into(),
            upstream: tail.into(),
        })
    }

    /// Writes the line, or returns `false` when a field needs escaping (the caller then
    /// logs it through tracing).
    pub(crate) fn write(
        &self,
        connection: &RenderedConnection,
        request: &RequestFields<'_>,
    ) -> bool {
        LINE.with_borrow_mut(|line| {
            line.clear();
            if !self.render(line, now_micros(), connection, request) {
                return false;
            }
            // As tracing does: a full queue drops the line.
            self.sink.write_batched(line.as_bytes());
            true
        })
    }

    /// Appends the line at `micros` since the epoch to `line`, or returns `false` (and leaves
    /// it as it was) when a request field needs escaping.
    fn render(
        &self,
        line: &mut String,
        micros: u64,
        connection: &RenderedConnection,
        request: &RequestFields<'_>,
    ) -> bool {
        let texts = [
            request.method.map_or("", Method::as_str),
            request.path.unwrap_or(""),
            request.rule.unwrap_or(""),
            request
                .peer
                .map_or("", |peer| peer.upstream.authority.as_str()),
            request.peer.map_or("", |peer| peer.group),
            request.peer.map_or("", |peer| peer.endpoint),
        ];
        if !texts.into_iter().all(is_plain) {
            return false;
        }
        if self.json {
            line.push_str("{\"timestamp\":\"");
            push_timestamp(line, micros);
            line.push_str("\",\"level\":\"INFO\",\"message\":\"request\",");
        } else {
            push_timestamp(line, micros);
            line.push_str("  INFO certgate::proxy: request ");
        }
        line.push_str(&connection.head);
        let mut field = Fields::continuing(line, self.json);
        if let Some(method) = request.method {
            field.display("method", method.as_str());
        }
        if let Some(path) = request.path {
            field.quoted("path", path);
        }
        field.number("status", u64::from(request.status));
        if let Some(rule) = request.rule {
            field.quoted("rule", rule);
        }
        field.number("duration_ms", request.duration_ms);
        match request.peer {
            Some(peer) => {
                field.url("upstream", peer.upstream);
                field.display("upstream_group", peer.group);
                field.display("upstream_endpoint", peer.endpoint);
            }
            None if !connection.upstream.is_empty() => {
                field.separate();
                line.push_str(&connection.upstream);
            }
            None => {}
        }
        let mut field = Fields::continuing(line, self.json);
        if let Some(outcome) = request.outcome {
            field.quoted("outcome", outcome);
        }
        if request.retries > 0 {
            field.number("retries", u64::from(request.retries));
        }
        if self.json {
            line.push_str(",\"target\":\"certgate::proxy\"}");
        }
        line.push('\n');
        true
    }
}

thread_local! {
    /// The line being written, reused so that a line allocates only its copy for the queue.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    /// The `YYYY-MM-DDTHH:MM:SS.` of the last line's second, and that second.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// Whether neither format escapes anything in `text`: printable ASCII, no `"` or `\`.
fn is_plain(text: &str) -> bool {
    text.bytes()
        .all(|byte| (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\')
}

/// Writes `key=value` fields (plain) or `"key":value` members (JSON), separated.
struct Fields<'a> {
    line: &'a mut String,
    json: bool,
    first: bool,
}

impl<'a> Fields<'a> {
    fn new(line: &'a mut String, json: bool) -> Self {
        Self {
            line,
            json,
            first: true,
        }
    }

    /// Fields that follow ones already written.
    fn continuing(line: &'a mut String, json: bool) -> Self {
        Self {
            line,
            json,
            first: false,
        }
    }

    fn separate(&mut self) {
        if !self.first {
            self.line.push(if self.json { ',' } else { ' ' });
        }
        self.first = false;
    }

    fn key(&mut self, key: &str) {
        self.separate();
        if self.json {
            self.line.push('"');
            self.line.push_str(key);
            self.line.push_str("\":");
        } else {
            self.line.push_str(key);
            self.line.push('=');
        }
    }

    /// A `Display` field: bare in plain lines, a string in JSON.
    fn display(&mut self, key: &str, value: &str) {
        self.key(key);
        if self.json {
            self.push_quoted(value);
        } else {
            self.line.push_str(value);
        }
    }

    /// An upstream's URL, as its `Display` writes it: bare in plain lines, a string in JSON.
    fn url(&mut self, key: &str, upstream: &Upstream) {
        self.key(key);
        if self.json {
            self.line.push('"');
        }
        self.line.push_str(upstream.scheme());
        self.line.push_str("://");
        self.line.push_str(upstream.authority.as_str());
        if self.json {
            self.line.push('"');
        }
    }

    /// A `&str` field: quoted in both formats.
    fn quoted(&mut self, key: &str, value: &str) {
        self.key(key);
        self.push_quoted(value);
    }

    fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn push_quoted(&mut self, value: &str) {
        self.line.push('"');
        self.line.push_str(value);
        self.line.push('"');
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, as tracing-subscriber writes it; the part up to the
/// second is computed once a second per thread.
fn push_timestamp(line: &mut String, micros: u64) {
    let second = micros / 1_000_000;
    let (cached, mut prefix) = SECOND.get();
    if cached != second {
        prefix = second_prefix(second);
        SECOND.set((second, prefix));
    }
    line.push_str(std::str::from_utf8(&prefix).unwrap_or_default());
    let fraction = micros % 1_000_000;
    let digits = itoa::Buffer::new().format(fraction).len();
    for _ in digits..6 {
        line.push('0');
    }
    line.push_str(itoa::Buffer::new().format(fraction));
    line.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` of `second` since the epoch (years 1970 to 9999), by the `time`
/// crate's calendar.
fn second_prefix(second: u64) -> [u8; 20] {
    let at = i64::try_from(second)
        .ok()
        .and_then(|second| time::OffsetDateTime::from_unix_timestamp(second).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let mut prefix = [0u8; 20];
    if let Some(bytes) = text.as_bytes().get(..prefix.len()) {
        prefix.copy_from_slice(bytes);
    }
    prefix
}

/// Logs the access line through tracing: the path for lines the fast one declines, and the
/// reference its bytes are tested against.
pub(crate) fn trace(connection: &ConnectionFields<'_>, request: &RequestFields<'_>) {
    let peer = request.peer;
    let upstream = peer.map_or(connection.upstream, |peer| Some(peer.upstream));
    tracing::event!(
        target: "certgate::proxy",
        tracing::Level::INFO,
        client.addr = %connection.client_addr,
        sni = connection.sni,
        app = %connection.app,
        client.hash = connection.hash,
        listener = connection.listener,
        method = request.method.map(tracing::field::display),
        path = request.path,
        status = request.status,
        rule = request.rule,
        duration_ms = request.duration_ms,
        upstream = upstream.map(tracing::field::display),
        upstream_group = peer.map(|peer| tracing::field::display(peer.group)),
        upstream_endpoint = peer.map(|peer| tracing::field::display(peer.endpoint)),
        outcome = request.outcome,
        retries = (request.retries > 0).then_some(request.retries),
        "request"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A `MakeWriter` that keeps what tracing writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// The line tracing-subscriber writes for these fields, as `main.rs` configures it.
    fn traced(
        json: bool,
        connection: &ConnectionFields<'_>,
        request: &RequestFields<'_>,
    ) -> String {
        let captured = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(captured.clone());
        let dispatch = if json {
            tracing::Dispatch::new(builder.json().flatten_event(true).finish())
        } else {
            tracing::Dispatch::new(builder.finish())
        };
        tracing::dispatcher::with_default(&dispatch, || trace(connection, request));
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    /// The fast line for the same fields, or `None` when it declines them.
    fn fast(
        json: bool,
        connection: &ConnectionFields<'_>,
        request: &RequestFields<'_>,
    ) -> Option<String> {
        let (sink, _guard) = crate::log_queue::spawn(io::sink()).unwrap();
        let writer = Writer { sink, json };
        let rendered = writer.render_connection(connection)?;
        let mut line = String::new();
        writer
            .render(&mut line, now_micros(), &rendered, request)
            .then_some(line)
    }

    /// `line` with its timestamp (the one thing that differs between two writes) blanked.
    fn without_timestamp(line: &str) -> String {
        let start = line.find("20").unwrap();
        let end = start + line[start..].find('Z').unwrap();
        format!("{}<time>{}", &line[..start], &line[end + 1..])
    }

    fn connection(sni: &'static str, app: &'static str) -> ConnectionFields<'static> {
        static UPSTREAM: OnceLock<Upstream> = OnceLock::new();
        let upstream = UPSTREAM.get_or_init(|| Upstream {
            authority: "127.0.0.1:8080".parse().unwrap(),
            transport: crate::settings::Transport::Http1,
            tls: None,
        });
        ConnectionFields {
            client_addr: "[2001:db8::7]:51234".parse().unwrap(),
            sni,
            app,
            hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            upstream: Some(upstream),
            listener: None,
        }
    }

    fn request(path: &'static str, outcome: Option<&'static str>) -> RequestFields<'static> {
        RequestFields {
            method: Some(&Method::PATCH),
            path: Some(path),
            status: 201,
            rule: Some("admins"),
            duration_ms: 1234,
            outcome,
            retries: 0,
            peer: None,
        }
    }

    /// An upstream group `group` of app `api`, by name, and one of its endpoints.
    fn peer(group: &'static str) -> PeerFields<'static> {
        static UPSTREAM: OnceLock<Upstream> = OnceLock::new();
        let upstream = UPSTREAM.get_or_init(|| Upstream {
            authority: "orders.internal:8080".parse().unwrap(),
            transport: crate::settings::Transport::Http1,
            tls: None,
        });
        PeerFields {
            upstream,
            group,
            endpoint: "10.0.0.7:8080",
        }
    }

    #[test]
    fn fast_lines_are_the_bytes_tracing_writes() {
        let head_refused = RequestFields {
            method: None,
            path: None,
            status: 431,
            rule: None,
            duration_ms: 0,
            outcome: Some("request_header_too_large"),
            retries: 0,
            peer: None,
        };
        let cases = [
            (
                connection("api.example.test", "api"),
                request("/a/b%20c", None),
            ),
            (connection("", "api"), request("/", Some("client_aborted"))),
            (connection("api.example.test", "api"), head_refused),
            (
                ConnectionFields {
                    sni: "",
                    hash: "",
                    listener: Some("http"),
                    ..connection("", "api")
                },
                request("/", None),
            ),
            (
                ConnectionFields {
                    sni: "",
                    hash: "",
                    upstream: None,
                    listener: Some("http"),
                    ..connection("", "")
                },
                request("/", Some("unknown_host")),
            ),
            (
                connection("api.example.test", "api"),
                RequestFields {
                    retries: 1,
                    peer: Some(peer("api--v2")),
                    ..request("/retried", None)
                },
            ),
            (
                connection("api.example.test", "api"),
                RequestFields {
                    status: 502,
                    peer: Some(peer("latest")),
                    ..request("/failed", None)
                },
            ),
        ];
        for json in [false, true] {
            let retried = fast(json, &cases[5].0, &cases[5].1).unwrap();
            let expected = if json {
                [
                    "\"upstream\":\"http://orders.internal:8080\"",
                    "\"upstream_group\":\"api--v2\"",
                    "\"upstream_endpoint\":\"10.0.0.7:8080\"",
                    "\"retries\":1",
                ]
            } else {
                [
                    " upstream=http://orders.internal:8080 ",
                    " upstream_group=api--v2 ",
                    " upstream_endpoint=10.0.0.7:8080 ",
                    " retries=1",
                ]
            };
            for field in expected {
                assert!(retried.contains(field), "{field} in {retried}");
            }
            assert!(!retried.contains("127.0.0.1:8080"), "{retried}");
            for (connection, request) in &cases {
                let traced = traced(json, connection, request);
                let fast =
                    fast(json, connection, request).expect("plain fields take the fast path");
                assert_eq!(without_timestamp(&fast), without_timestamp(&traced));
                assert_eq!(fast.len(), traced.len(), "{fast}{traced}");
            }
        }
    }

    #[test]
    fn fields_that_need_escaping_go_through_tracing() {
        for json in [false, true] {
            assert!(fast(json, &connection("api", "my \"app\""), &request("/", None)).is_none());
            assert!(fast(json, &connection("api", "caf\u{e9}"), &request("/", None)).is_none());
            assert!(fast(json, &connection("api", "api"), &request("/a\\b", None)).is_none());
            assert!(
                fast(
                    json,
                    &connection("api", "api"),
                    &request("/\u{1b}[31m", None)
                )
                .is_none()
            );
            let quoted_group = RequestFields {
                peer: Some(peer("v\"2")),
                ..request("/", None)
            };
            assert!(fast(json, &connection("api", "api"), &quoted_group).is_none());
            assert!(fast(json, &connection("api", "api"), &request("/plain", None)).is_some());
        }
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let at = |micros: u64| {
            let mut line = String::new();
            push_timestamp(&mut line, micros);
            line
        };
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400_000_007), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_796_169_599_999_999), "2026-12-01T23:59:59.999999Z");
        assert_eq!(at(1_796_169_600_123_456), "2026-12-02T00:00:00.123456Z");
        assert_eq!(at(4_107_542_400_000_000), "2100-03-01T00:00:00.000000Z");
        // The cached second is replaced, not reused, when the second changes.
        assert_eq!(at(1_796_169_599_500_000), "2026-12-01T23:59:59.500000Z");
    }
}
