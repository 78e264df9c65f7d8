//! Plain HTTP across a real axum server on loopback, with real hyper
//! clients (and raw sockets, to disconnect mid-request): enforcement (504),
//! graceful shutdown, disconnects (mid-request and mid-stream), the end of
//! a request, `grpc-timeout` in (valid, zero, overflowing, malformed), the
//! extractor without the layer, and the client layer on hyper's client.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing;
use bytes::Bytes;
use cancel_tree::{Cause, Context, Error};
use cancel_tree_tower::axum::RequestContext;
use cancel_tree_tower::{
    ClientDisconnected, ClientLayer, ContextError, RequestContextExt, ServerLayer, ServerShutdown,
};
use common::SOON;
use http::{HeaderValue, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{ServiceBuilder, ServiceExt};

/// What the handlers saw.
#[derive(Clone, Default)]
struct Seen {
    contexts: Arc<Mutex<Vec<Context>>>,
    dropped: Arc<AtomicUsize>,
}

impl Seen {
    fn record(&self, ctx: &Context) {
        self.contexts.lock().unwrap().push(ctx.clone());
    }

    fn count(&self) -> usize {
        self.contexts.lock().unwrap().len()
    }

    /// The context of the `n`th request a handler saw, waiting up to
    /// [`SOON`].
    async fn context(&self, n: usize) -> Context {
        let start = Instant::now();
        loop {
            if let Some(ctx) = self.contexts.lock().unwrap().get(n) {
                return ctx.clone();
            }
            assert!(start.elapsed() < SOON, "no request {n} after {SOON:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Counts a handler dropped before it finished.
struct DropWatch(Seen, bool);

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A minute of work that never looks at its context.
async fn hang(State(seen): State<Seen>, RequestContext(ctx): RequestContext) -> &'static str {
    seen.record(&ctx);
    let mut watch = DropWatch(seen, false);
    tokio::time::sleep(Duration::from_secs(60)).await;
    watch.1 = true;
    "done"
}

/// Waits for the request's context to end; 503 with why.
async fn wait(State(seen): State<Seen>, RequestContext(ctx): RequestContext) -> impl IntoResponse {
    seen.record(&ctx);
    ctx.done().await;
    let why = ContextError::from_context(&ctx).expect("ended").to_string();
    (StatusCode::SERVICE_UNAVAILABLE, why)
}

/// The request's remaining time in microseconds, `none`, or `expired`.
async fn deadline(State(seen): State<Seen>, RequestContext(ctx): RequestContext) -> String {
    seen.record(&ctx);
    if ctx.err() == Some(Error::DeadlineExceeded) {
        return "expired".into();
    }
    match ctx.deadline() {
        Some(d) => (d - ctx.now()).as_micros().to_string(),
        None => "none".into(),
    }
}

/// A body that never ends: a line every 10 ms.
struct Ticker(tokio::time::Interval);

impl Body for Ticker {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::ready!(self.0.poll_tick(cx));
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"tick\n")))))
    }
}

async fn stream(State(seen): State<Seen>, RequestContext(ctx): RequestContext) -> axum::body::Body {
    seen.record(&ctx);
    axum::body::Body::new(Ticker(tokio::time::interval(Duration::from_millis(10))))
}

fn app(seen: &Seen) -> Router {
    Router::new()
        .route("/hang", routing::get(hang))
        .route("/wait", routing::get(wait))
        .route("/deadline", routing::get(deadline))
        .route("/stream", routing::get(stream))
        .with_state(seen.clone())
}

/// Serves `app` on 127.0.0.1 (port 0) until `root` is cancelled, then
/// drains (axum's graceful shutdown).
async fn serve(app: Router, root: &Context) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let root = root.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                root.done().await;
            })
            .await
    });
    (addr, task)
}

type HyperClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> http::Request<Empty<Bytes>> {
    let mut request = http::Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).unwrap());
    }
    request.body(Empty::new()).unwrap()
}

/// One GET with `headers`: the status, the headers and the body.
async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &[u8])],
) -> (StatusCode, http::HeaderMap, String) {
    let response = tokio::time::timeout(SOON, hyper_client().request(request(addr, path, headers)))
        .await
        .expect("an answer in time")
        .expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// A raw HTTP/1.1 GET on a fresh connection, left open.
async fn raw_get(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Waits up to [`SOON`] for `ctx` to end.
async fn ended(ctx: &Context) -> (Error, Cause) {
    let error = tokio::time::timeout(SOON, ctx.done())
        .await
        .expect("the request's context ends soon");
    (error, ctx.cause().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforcement_answers_504_and_the_handler_sees_deadline_exceeded() {
    let seen = Seen::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let layer = ServerLayer::new(root.clone())
        .max_timeout(Duration::from_millis(300))
        .enforce_deadline(true);
    let (addr, _server) = serve(app(&seen).layer(layer), &root).await;

    let started = Instant::now();
    let (status, _, body) = get(addr, "/hang", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "context deadline exceeded");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let ctx = seen.context(0).await;
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        seen.dropped.load(Ordering::SeqCst),
        1,
        "the handler was dropped"
    );

    // No time at all: answered at once, the handler never runs.
    let (status, _, _) = get(addr, "/hang", &[("grpc-timeout", b"0n")]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(seen.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_cancels_in_flight_requests_with_the_shutdown_cause_and_the_server_exits()
{
    let seen = Seen::default();
    let (root, shutdown) = Context::background().with_cancel();
    let (addr, server) = serve(app(&seen).layer(ServerLayer::new(root.clone())), &root).await;
    let in_flight = tokio::spawn(async move { get(addr, "/wait", &[]).await });
    let ctx = seen.context(0).await;

    shutdown.cancel_with(ServerShutdown);
    let (error, cause) = ended(&ctx).await;
    assert_eq!(error, Error::Canceled);
    assert!(cause.downcast_ref::<ServerShutdown>().is_some(), "{cause}");
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "context canceled: server shutting down");
    tokio::time::timeout(SOON, server)
        .await
        .expect("the server exits soon after the shutdown")
        .unwrap()
        .expect("the server exits cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnecting_mid_request_cancels_it_with_the_disconnect_cause() {
    let seen = Seen::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let (addr, _server) = serve(app(&seen).layer(ServerLayer::new(root.clone())), &root).await;
    let connection = raw_get(addr, "/hang").await;
    let ctx = seen.context(0).await;
    drop(connection);

    let (error, cause) = ended(&ctx).await;
    assert_eq!(error, Error::Canceled);
    assert!(
        cause.downcast_ref::<ClientDisconnected>().is_some(),
        "{cause}"
    );
    assert_eq!(cause.to_string(), "client disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnecting_mid_stream_cancels_with_the_disconnect_cause() {
    let seen = Seen::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let (addr, _server) = serve(app(&seen).layer(ServerLayer::new(root.clone())), &root).await;
    let mut connection = raw_get(addr, "/stream").await;
    // The response has started: headers and a few ticks.
    let mut read = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&read).contains("tick") {
        let n = tokio::time::timeout(SOON, connection.read(&mut buf))
            .await
            .expect("ticks in time")
            .unwrap();
        assert!(n > 0, "the server closed the stream");
        read.extend_from_slice(&buf[..n]);
    }
    let ctx = seen.context(0).await;
    assert_eq!(ctx.err(), None, "live while streaming");
    drop(connection);

    let (error, cause) = ended(&ctx).await;
    assert_eq!(error, Error::Canceled);
    assert!(
        cause.downcast_ref::<ClientDisconnected>().is_some(),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_answered_in_full_ends_with_a_plain_cancel() {
    let seen = Seen::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let (addr, _server) = serve(app(&seen).layer(ServerLayer::new(root.clone())), &root).await;
    let (status, _, body) = get(addr, "/deadline", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "none"));
    let (error, cause) = ended(&seen.context(0).await).await;
    assert_eq!(error, Error::Canceled);
    assert_eq!(cause, Error::Canceled, "finished, not abandoned: {cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_is_the_callers_capped_by_the_maximum_or_the_default() {
    let seen = Seen::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let layer = ServerLayer::new(root.clone())
        .max_timeout(Duration::from_secs(5))
        .default_timeout(Duration::from_secs(2));
    let (addr, _server) = serve(app(&seen).layer(layer), &root).await;
    let micros = |body: String| -> u64 { body.parse().unwrap_or_else(|_| panic!("{body:?}")) };

    let (_, _, body) = get(addr, "/deadline", &[("grpc-timeout", b"250m")]).await;
    assert!((1..=250_000).contains(&micros(body)));
    let (_, _, body) = get(addr, "/deadline", &[("grpc-timeout", b"1H")]).await;
    assert!((1..=5_000_000).contains(&micros(body)), "capped");
    let (_, _, body) = get(addr, "/deadline", &[]).await;
    assert!((1..=2_000_000).contains(&micros(body)), "the default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_and_overflowing_grpc_timeouts_are_valid() {
    let seen = Seen::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let (addr, _server) = serve(app(&seen).layer(ServerLayer::new(root.clone())), &root).await;
    for zero in [&b"0n"[..], b"00000000m", b"0H"] {
        let (status, _, body) = get(addr, "/deadline", &[("grpc-timeout", zero)]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "expired"));
    }
    // 99999999 hours is past what a 64-bit nanosecond clock can hold: the
    // deadline saturates (at the end of the clock's time).
    let (status, _, body) = get(addr, "/deadline", &[("grpc-timeout", b"99999999H")]).await;
    assert_eq!(status, StatusCode::OK);
    let left = Duration::from_micros(body.parse().unwrap());
    assert!(
        left > Duration::from_secs(100 * 365 * 24 * 3600),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_timeouts_are_400_or_internal_and_never_reach_the_handler() {
    let seen = Seen::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let (addr, _server) = serve(app(&seen).layer(ServerLayer::new(root.clone())), &root).await;
    let cases: [(&[u8], &str); 8] = [
        (b"", "empty"),
        (b"123456789m", "the value must be 1 to 8 digits"),
        (b"m", "the value must be 1 to 8 digits"),
        (b"5x", "the unit must be one of H M S m u n"),
        (b"1.5S", "the value has a non-digit"),
        (b"-1S", "the value has a non-digit"),
        (b"1\xffS", "the value has a non-digit"),
        (b"18446744073709551616S", "the value must be 1 to 8 digits"),
    ];
    for (value, why) in cases {
        let (status, _, body) = get(addr, "/deadline", &[("grpc-timeout", value)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value:?}");
        assert_eq!(body, format!("malformed grpc-timeout: {why}"), "{value:?}");
    }
    // A gRPC request gets a gRPC status: INTERNAL.
    let grpc = [
        ("content-type", &b"application/grpc"[..]),
        ("grpc-timeout", b"5x"),
    ];
    let (status, headers, _) = get(addr, "/deadline", &grpc).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["grpc-status"], "13");
    assert_eq!(
        headers["grpc-message"],
        "malformed grpc-timeout: the unit must be one of H M S m u n"
    );
    assert_eq!(seen.count(), 0, "no malformed request reached a handler");
    // The server is fine.
    let (status, _, _) = get(addr, "/deadline", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extractor_without_the_layer_is_a_clear_500() {
    async fn optional(ctx: Option<RequestContext>) -> String {
        format!("{}", ctx.is_some())
    }
    let seen = Seen::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let app = app(&seen).route("/optional", routing::get(optional));
    let (addr, _server) = serve(app, &root).await;
    let (status, _, body) = get(addr, "/deadline", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        "no request context: the route is not behind cancel_tree_tower::ServerLayer\n"
    );
    let (status, _, body) = get(addr, "/optional", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "false"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_client_behind_the_client_layer_carries_and_enforces_the_callers_context() {
    let seen = Seen::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let app =
        app(&seen)
            .layer(ServerLayer::new(root.clone()))
            .layer(tower::util::MapRequestLayer::new(
                move |req: axum::extract::Request| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    req
                },
            ));
    let (addr, _server) = serve(app, &root).await;
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(hyper_client());

    // The caller's deadline travels.
    let (caller, _c) = Context::background().with_timeout(Duration::from_secs(2));
    let response = client
        .clone()
        .oneshot(request(addr, "/deadline", &[]).with_context(&caller))
        .await
        .expect("a response");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let left: u64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
    assert!((1..=2_000_000).contains(&left), "{left}");
    assert_eq!(received.load(Ordering::SeqCst), 1);

    // A spent budget, or a cancelled caller, sends nothing.
    let (expired, _c) = Context::background().with_timeout(Duration::ZERO);
    let err = client
        .clone()
        .oneshot(request(addr, "/deadline", &[]).with_context(&expired))
        .await
        .expect_err("no time left");
    let err = err.downcast_ref::<ContextError>().expect("a ContextError");
    assert_eq!(err.error(), Error::DeadlineExceeded);
    let (gone, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let err = client
        .clone()
        .oneshot(request(addr, "/deadline", &[]).with_context(&gone))
        .await
        .expect_err("cancelled");
    assert_eq!(
        err.downcast_ref::<ContextError>().unwrap().error(),
        Error::Canceled
    );
    assert_eq!(received.load(Ordering::SeqCst), 1, "nothing was sent");

    // Cancelled mid-flight: the call ends with the cause, and the server's
    // request sees its client go away.
    let (caller, cancel) = Context::background().with_cancel();
    let in_flight = tokio::spawn(
        client
            .clone()
            .oneshot(request(addr, "/wait", &[]).with_context(&caller)),
    );
    let server_ctx = seen.context(1).await;
    cancel.cancel_with(Cause::msg("caller gave up"));
    let err = tokio::time::timeout(SOON, in_flight)
        .await
        .expect("the call ends soon after the cancel")
        .unwrap()
        .expect_err("cancelled");
    let err = err.downcast_ref::<ContextError>().expect("a ContextError");
    assert_eq!(err.to_string(), "context canceled: caller gave up");
    let (error, cause) = ended(&server_ctx).await;
    assert_eq!(error, Error::Canceled);
    assert!(
        cause.downcast_ref::<ClientDisconnected>().is_some(),
        "{cause}"
    );
}
