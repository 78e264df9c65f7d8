//! A real HTTP/1.1 server (hyper 1 on tokio) where every request runs under
//! a context, as a Go server's handlers do with `r.Context()`:
//!
//! * one server-wide root (`Context::background().with_cancel()`), cancelled
//!   on Ctrl-C: every in-flight request ends and the server exits;
//! * per request: a `RequestId` value (used in every log line), a timeout
//!   (`--timeout-ms N`, or `HTTP_SERVER_TIMEOUT_MS`, default 1000), and
//!   cancellation when the client disconnects (hyper drops the request's
//!   future, which holds the request's `CancelHandle`; dropping it cancels).
//!
//! Routes:
//!
//! * `GET /fast`: 200 at once.
//! * `GET /slow?ms=N`: a database-like call in its own task, N ms of 10 ms
//!   steps that checks `ctx.err()` between steps and gives up early: 200 if
//!   it finishes, 504 if the request's deadline passes first, 503 if the
//!   server is shutting down. An abandoned call logs
//!   `abandoned request N after K steps`.
//! * `GET /stats`: counters, one `name=value` a line (`in_flight` counts
//!   the `/stats` request itself).
//!
//! ```text
//! cargo run --example http_server -- --timeout-ms 300 [--port 8080]
//! curl -i 'http://127.0.0.1:PORT/slow?ms=5000'   # 504 after 300 ms
//! ```
//!
//! The first line on stdout is `listening on http://ADDR`; log lines follow
//! on stdout.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use cancel_tree::{Cause, Context, Error};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The request's id, carried in its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RequestId(u64);

/// One step of the slow call.
const STEP: Duration = Duration::from_millis(10);

/// How long shutdown waits for connections to finish.
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
    let mut interrupted = poll_fn(|cx| Poll::Ready(ctrl_c.as_mut().poll(cx).is_ready())).await;

    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], config.port))).await?;
    println!("listening on http://{}", listener.local_addr()?);
    log(
        &root,
        format_args!("per-request timeout {:?}", config.timeout),
    );

    let mut connections = JoinSet::new();
    while !interrupted {
        tokio::select! {
            res = &mut ctrl_c => {
                if let Err(e) = res {
                    log(&root, format_args!("cannot listen for Ctrl-C: {e}"));
                }
                interrupted = true;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(root.clone(), stream, peer, config.timeout));
                }
                Err(e) => log(&root, format_args!("accept: {e}")),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }

    log(&root, format_args!("shutting down"));
    drop(listener);
    shutdown.cancel_with(Cause::msg("server shutting down"));
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log(
            &root,
            format_args!("connections still open after {DRAIN:?}; closing them"),
        );
        connections.shutdown().await;
    }
    log(&root, format_args!("bye"));
    Ok(())
}

/// Serves one connection until it closes, or until the root is cancelled
/// (then: finish the in-flight request, which the cancel ends, and close).
async fn serve_connection(root: Context, stream: TcpStream, peer: SocketAddr, timeout: Duration) {
    let service = service_fn({
        let root = root.clone();
        move |req| handle(root.clone(), timeout, req)
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut conn = pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        _ = root.done() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        // Includes clients that go away mid-request.
        log(&root, format_args!("connection from {peer}: {e}"));
    }
}

/// Logs and counts a request whose future hyper dropped before it answered
/// (the client disconnected).
struct InFlight {
    ctx: Context,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        if !self.answered {
            DISCONNECTED.fetch_add(1, Ordering::SeqCst);
            log(&self.ctx, format_args!("client went away; cancelling"));
        }
    }
}

async fn handle(
    root: Context,
    timeout: Duration,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = RequestId(NEXT_ID.fetch_add(1, Ordering::SeqCst));
    // The request's context. `_cancel` lives in this future: when hyper
    // drops the future (the client went away), dropping it cancels `ctx`.
    let (ctx, _cancel) = root.with_value(id).with_timeout(timeout);
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    // Declared after `_cancel`, so dropped (and logged) before the cancel.
    let mut in_flight = InFlight {
        ctx: ctx.clone(),
        answered: false,
    };
    log(&ctx, format_args!("{} {}", req.method(), req.uri()));

    let (status, body) = route(&ctx, &req).await;
    in_flight.answered = true;
    log(&ctx, format_args!("{}", status.as_u16()));
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("x-request-id", hyper::header::HeaderValue::from(id.0));
    Ok(resp)
}

async fn route(ctx: &Context, req: &Request<Incoming>) -> (StatusCode, String) {
    if req.method() != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/fast" => (StatusCode::OK, "fast\n".into()),
        "/stats" => (StatusCode::OK, stats()),
        "/slow" => {
            let Some(ms) = query_u64(req.uri().query(), "ms") else {
                return (StatusCode::BAD_REQUEST, "want /slow?ms=N\n".into());
            };
            // The call runs in its own task, as a database driver's would,
            // and watches the context; our future only waits for it. If
            // hyper drops our future, the task sees the cancel and stops.
            let call = tokio::spawn(slow_call(ctx.clone(), Duration::from_millis(ms)));
            match call.await {
                Ok(Ok(steps)) => (StatusCode::OK, format!("slow call done in {steps} steps\n")),
                Ok(Err(e)) => error_response(ctx, e),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// 504 when the request's deadline passed, 503 when it was cancelled (the
/// server is shutting down; a departed client reads nothing).
fn error_response(ctx: &Context, e: Error) -> (StatusCode, String) {
    match e {
        Error::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, format!("{e}\n")),
        Error::Canceled => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", why(ctx, e)),
        ),
    }
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
    match ctx.cause() {
        Some(cause) if cause.as_error() != Some(err) => format!("{err}: {cause}"),
        _ => err.to_string(),
    }
}

fn stats() -> String {
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
