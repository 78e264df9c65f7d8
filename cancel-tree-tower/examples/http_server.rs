//! A real HTTP server (axum on tokio) where every request runs under a
//! context, as a Go server's handlers do with `r.Context()`, given by
//! `ServerLayer`:
//!
//! * one server-wide root (`Context::background().with_cancel()`), cancelled
//!   on Ctrl-C with `ServerShutdown`: every in-flight request ends with that
//!   cause, and axum's graceful shutdown (whose signal is the root's
//!   cancellation) lets the server exit;
//! * per request: a deadline (the caller's `grpc-timeout`, or else
//!   `--timeout-ms N` / `HTTP_SERVER_TIMEOUT_MS`, default 1000), a
//!   `RequestId` value (used in every log line), and cancellation with
//!   `ClientDisconnected` when the client goes away.
//!
//! Routes:
//!
//! * `GET /fast`: 200 at once.
//! * `GET /slow?ms=N`: a database-like call in its own task, N ms of 10 ms
//!   steps that checks `ctx.err()` between steps and gives up early: 200 if
//!   it finishes, 504 if the request's deadline passes first, 503 if the
//!   request is cancelled (the server is shutting down; a departed client
//!   reads nothing). An abandoned call logs
//!   `abandoned request N after K steps (why)`.
//! * `GET /stats`: counters, one `name=value` a line (`in_flight` counts
//!   the `/stats` request itself).
//!
//! ```text
//! cargo run -p cancel-tree-tower --example http_server -- --timeout-ms 300 [--port 8080]
//! curl -i 'http://127.0.0.1:PORT/slow?ms=5000'                       # 504 after 300 ms
//! curl -i -H 'grpc-timeout: 100m' 'http://127.0.0.1:PORT/slow?ms=5000' # 504 after 100 ms
//! ```
//!
//! The first line on stdout is `listening on http://ADDR`; log lines follow
//! on stdout.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use cancel_tree::{Context, Error};
use cancel_tree_tower::axum::RequestContext;
use cancel_tree_tower::{
    ClientDisconnected, ContextError, RequestContextExt, ServerLayer, ServerShutdown,
};
use tokio::net::TcpListener;

/// The request's id, carried in its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RequestId(u64);

/// One step of the slow call.
const STEP: Duration = Duration::from_millis(10);

/// How long shutdown waits for in-flight requests to finish.
const DRAIN: Duration = Duration::from_secs(10);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
static COMPLETED: AtomicU64 = AtomicU64::new(0);
static ABANDONED: AtomicU64 = AtomicU64::new(0);
static TIMED_OUT: AtomicU64 = AtomicU64::new(0);
static CANCELED: AtomicU64 = AtomicU64::new(0);
static DISCONNECTED: AtomicU64 = AtomicU64::new(0);

/// Logs a line on stdout, prefixed with the request id from `ctx` if any.
fn log(ctx: &Context, msg: std::fmt::Arguments<'_>) {
    match ctx.value::<RequestId>() {
        Some(RequestId(id)) => println!("[req {id}] {msg}"),
        None => println!("[server] {msg}"),
    }
}

struct Config {
    port: u16,
    timeout: Duration,
}

fn parse_args() -> Result<Config, String> {
    let mut timeout_ms: u64 = match std::env::var("HTTP_SERVER_TIMEOUT_MS") {
        Ok(v) => v
            .parse()
            .map_err(|e| format!("HTTP_SERVER_TIMEOUT_MS={v}: {e}"))?,
        Err(_) => 1000,
    };
    let mut port = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value"))
                .and_then(|v| v.parse::<u64>().map_err(|e| format!("{name} {v}: {e}")))
        };
        match arg.as_str() {
            "--timeout-ms" => timeout_ms = value("--timeout-ms")?,
            "--port" => {
                port = u16::try_from(value("--port")?).map_err(|e| format!("--port: {e}"))?
            }
            "-h" | "--help" => {
                return Err("usage: http_server [--port N] [--timeout-ms N]".into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Config {
        port,
        timeout: Duration::from_millis(timeout_ms),
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let config = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };

    // The server-wide root: cancelling it ends every request.
    let (root, shutdown) = Context::background().with_cancel();

    // Install the Ctrl-C handler before announcing the address, so a SIGINT
    // sent right after the announcement is never missed.
    let mut ctrl_c = pin!(tokio::signal::ctrl_c());
    let interrupted = poll_fn(|cx| Poll::Ready(ctrl_c.as_mut().poll(cx).is_ready())).await;

    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], config.port))).await?;
    println!("listening on http://{}", listener.local_addr()?);
    log(
        &root,
        format_args!("per-request timeout {:?}", config.timeout),
    );

    let app = Router::new()
        .route("/fast", get(|| async { "fast\n" }))
        .route("/slow", get(slow))
        .route("/stats", get(stats))
        // Runs inside the layer: sees the request's context.
        .layer(middleware::from_fn(per_request))
        .layer(ServerLayer::new(root.clone()).default_timeout(config.timeout));
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown({
                let root = root.clone();
                async move {
                    root.done().await;
                }
            })
            .into_future(),
    );

    if !interrupted && let Err(e) = ctrl_c.await {
        log(&root, format_args!("cannot listen for Ctrl-C: {e}"));
        std::future::pending::<()>().await;
    }
    log(&root, format_args!("shutting down"));
    shutdown.cancel_with(ServerShutdown);
    match tokio::time::timeout(DRAIN, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => log(&root, format_args!("server: {e}")),
        Ok(Err(e)) => log(&root, format_args!("server task: {e}")),
        Err(_) => log(
            &root,
            format_args!("requests still in flight after {DRAIN:?}; closing them"),
        ),
    }
    log(&root, format_args!("bye"));
    Ok(())
}

/// Gives the request an id (a value in its context, for the logs), logs it
/// in and out, and counts it.
async fn per_request(
    RequestContext(ctx): RequestContext,
    mut req: Request,
    next: Next,
) -> Response {
    let id = RequestId(NEXT_ID.fetch_add(1, Ordering::SeqCst));
    let ctx = ctx.with_value(id);
    req.set_context(ctx.clone());
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight;
    // Runs when the request's context ends, whoever ends it; logs the
    // departed clients.
    ctx.after_func({
        let ctx = ctx.clone();
        move || {
            let gone = ctx
                .cause()
                .is_some_and(|c| c.downcast_ref::<ClientDisconnected>().is_some());
            if gone {
                DISCONNECTED.fetch_add(1, Ordering::SeqCst);
                log(&ctx, format_args!("client went away"));
            }
        }
    });
    log(&ctx, format_args!("{} {}", req.method(), req.uri()));

    let mut response = next.run(req).await;
    log(&ctx, format_args!("{}", response.status().as_u16()));
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from(id.0));
    response
}

struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn slow(
    RequestContext(ctx): RequestContext,
    RawQuery(query): RawQuery,
) -> (StatusCode, String) {
    let Some(ms) = query_u64(query.as_deref(), "ms") else {
        return (StatusCode::BAD_REQUEST, "want /slow?ms=N\n".into());
    };
    // The call runs in its own task, as a database driver's would, and
    // watches the context; this handler only waits for it. If the handler
    // is dropped (the client went away), the task sees the cancel and stops.
    let call = tokio::spawn(slow_call(ctx.clone(), Duration::from_millis(ms)));
    match call.await {
        Ok(Ok(steps)) => (StatusCode::OK, format!("slow call done in {steps} steps\n")),
        Ok(Err(e)) => error_response(&ctx, e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// 504 when the request's deadline passed, 503 when it was cancelled (the
/// server is shutting down; a departed client reads nothing).
fn error_response(ctx: &Context, e: Error) -> (StatusCode, String) {
    let status = match e {
        Error::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Error::Canceled => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{}\n", why(ctx, e)))
}

/// A database-like call: `total` of work in small steps, checking the
/// context between steps and stopping early once it ends.
async fn slow_call(ctx: Context, total: Duration) -> Result<u64, Error> {
    let steps = total.as_millis().div_ceil(STEP.as_millis());
    let steps = u64::try_from(steps).unwrap_or(u64::MAX);
    for k in 0..steps {
        if let Some(e) = ctx.err() {
            let id = ctx.value::<RequestId>().map_or(0, |r| r.0);
            ABANDONED.fetch_add(1, Ordering::SeqCst);
            match e {
                Error::DeadlineExceeded => TIMED_OUT.fetch_add(1, Ordering::SeqCst),
                Error::Canceled => CANCELED.fetch_add(1, Ordering::SeqCst),
            };
            log(
                &ctx,
                format_args!("abandoned request {id} after {k} steps ({})", why(&ctx, e)),
            );
            return Err(e);
        }
        tokio::time::sleep(STEP).await;
    }
    COMPLETED.fetch_add(1, Ordering::SeqCst);
    Ok(steps)
}

/// `err`, and the cause when it says more (`context canceled: server
/// shutting down`).
fn why(ctx: &Context, err: Error) -> String {
    ContextError::from_context(ctx).map_or_else(|| err.to_string(), |e| e.to_string())
}

async fn stats() -> String {
    let counters = [
        ("in_flight", &IN_FLIGHT),
        ("completed", &COMPLETED),
        ("abandoned", &ABANDONED),
        ("timed_out", &TIMED_OUT),
        ("canceled", &CANCELED),
        ("disconnected", &DISCONNECTED),
    ];
    counters
        .iter()
        .map(|(name, c)| format!("{name}={}\n", c.load(Ordering::SeqCst)))
        .collect()
}

/// `key`'s value in a query string, as a number.
fn query_u64(query: Option<&str>, key: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}
