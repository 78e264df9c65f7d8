//! What `ServerLayer` adds to a request: the same axum hello-world handler
//! with and without the layer, measured interleaved so that whatever else
//! the host is doing hits every variant alike.
//!
//! One router serves the handler on three routes, one per variant, so every
//! variant shares the server, the connection and the tokio workers (a
//! variant with a connection of its own measures where its connection's
//! tasks happen to run as much as the layer):
//!
//! * `/plain`: no layer;
//! * `/layer`: `ServerLayer` (a context per request, no deadline);
//! * `/layer_deadline`: `ServerLayer` with a default timeout, so every
//!   request also queues and dequeues a deadline on the std clock.
//!
//! Groups:
//!
//! * `loopback/*`: HTTP/1.1 over 127.0.0.1, one keep-alive connection, a
//!   hyper client, server and client on one 2-worker tokio runtime. Each
//!   iteration sends one request to every route (in rotating order) and
//!   times only the variant being measured.
//! * `in_process/*`: the router called directly (no sockets), the same way:
//!   the layer's own cost, without the network's noise.
//!
//! After criterion's report, a summary from every request sent in the run
//! (each variant's requests interleaved with the others' throughout): each
//! variant's median (p50) and the layer's cost against `plain`, in
//! nanoseconds and as a share of `plain`'s p50.
//!
//! ```text
//! cargo bench -p cancel-tree-tower --bench server_layer -- --warm-up-time 1 --measurement-time 3
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use cancel_tree::Context;
use cancel_tree_tower::ServerLayer;
use criterion::Criterion;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

const VARIANTS: [&str; 3] = ["plain", "layer", "layer_deadline"];
/// Each variant's route.
const PATHS: [&str; 3] = ["/plain", "/layer", "/layer_deadline"];

/// Every timed request, per group and variant.
static SAMPLES: Mutex<BTreeMap<(&str, &str), Vec<Duration>>> = Mutex::new(BTreeMap::new());

fn record(group: &'static str, variant: &'static str, d: Duration) {
    SAMPLES
        .lock()
        .unwrap()
        .entry((group, variant))
        .or_default()
        .push(d);
}

/// The hello-world on one route per variant.
fn app(root: &Context) -> Router {
    async fn hello() -> &'static str {
        "hello"
    }
    let layer = ServerLayer::new(root.clone());
    Router::new()
        .route("/plain", get(hello))
        .route("/layer", get(hello).layer(layer.clone()))
        .route(
            "/layer_deadline",
            get(hello).layer(layer.default_timeout(Duration::from_secs(30))),
        )
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// One GET of `path` on a keep-alive connection, the body read
/// to its end.
async fn request(send: &mut SendRequest<Empty<Bytes>>, path: &'static str) {
    send.ready().await.unwrap();
    let request = http::Request::get(path)
        .header("host", "bench")
        .body(Empty::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello");
}

fn loopback(c: &mut Criterion, rt: &Runtime, root: &Context) {
    let mut client = rt.block_on(async { connect(serve(app(root)).await).await });
    let mut group = c.benchmark_group("loopback");
    for (measured, variant) in VARIANTS.into_iter().enumerate() {
        group.bench_function(variant, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for i in 0..iters {
                        for k in 0..VARIANTS.len() {
                            let v = (i as usize + k) % VARIANTS.len();
                            let start = Instant::now();
                            request(&mut client, PATHS[v]).await;
                            let d = start.elapsed();
                            // Every request counts for the summary, so
                            // its medians cover the same moments.
                            record("loopback", VARIANTS[v], d);
                            if v == measured {
                                total += d;
                            }
                        }
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

fn in_process(c: &mut Criterion, rt: &Runtime, root: &Context) {
    let mut app = app(root);
    let call = |app: &mut Router, path: &'static str| {
        let request = http::Request::get(path).body(Body::empty()).unwrap();
        let fut = app.call(request);
        async move {
            let response = fut.await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "hello");
        }
    };
    let mut group = c.benchmark_group("in_process");
    for (measured, variant) in VARIANTS.into_iter().enumerate() {
        group.bench_function(variant, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for i in 0..iters {
                        for k in 0..VARIANTS.len() {
                            let v = (i as usize + k) % VARIANTS.len();
                            let start = Instant::now();
                            let app = ServiceExt::<http::Request<Body>>::ready(&mut app)
                                .await
                                .unwrap();
                            call(app, PATHS[v]).await;
                            let d = start.elapsed();
                            // Every request counts for the summary, so
                            // its medians cover the same moments.
                            record("in_process", VARIANTS[v], d);
                            if v == measured {
                                total += d;
                            }
                        }
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn summary() {
    let mut samples = SAMPLES.lock().unwrap();
    for group in ["loopback", "in_process"] {
        let Some(plain) = samples.get_mut(&(group, "plain")).map(|s| median(s)) else {
            continue;
        };
        println!("{group}: p50 plain {:.2} us", plain.as_secs_f64() * 1e6);
        for variant in ["layer", "layer_deadline"] {
            let Some(p50) = samples.get_mut(&(group, variant)).map(|s| median(s)) else {
                continue;
            };
            let added = p50.as_nanos() as f64 - plain.as_nanos() as f64;
            println!(
                "{group}: p50 {variant} {:.2} us: {:+.0} ns per request, {:+.2}% of plain's p50, ratio {:.3}",
                p50.as_secs_f64() * 1e6,
                added,
                100.0 * added / plain.as_nanos() as f64,
                p50.as_secs_f64() / plain.as_secs_f64(),
            );
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (root, _shutdown) = Context::background().with_cancel();
    let mut c = Criterion::default().configure_from_args();
    in_process(&mut c, &rt, &root);
    loopback(&mut c, &rt, &root);
    c.final_summary();
    summary();
}
