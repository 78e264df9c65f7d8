//! gRPC across real tonic servers on loopback: deadlines shrinking over
//! three hops, a client's drop or cancel reaching every hop, spent budgets
//! failing before anything is sent, enforcement, graceful shutdown and
//! malformed `grpc-timeout` values.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cancel_tree::{Cause, Context, Error};
use cancel_tree_tower::{ClientDisconnected, RequestContextExt, ServerLayer, ServerShutdown};
use cancel_tree_tower_proto::CallRequest;
use cancel_tree_tower_proto::hop_client::HopClient;
use cancel_tree_tower_proto::hop_server::HopServer;
use common::{
    ChainHop, Log, SOON, context_error, layered_client, plain_channel, serve_chain, serve_hop,
};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request};

/// What a hop's deadline may exceed the caller's by: the request's transit
/// on loopback, which every hop counts as the protocol does
/// (`grpc-timeout` is relative), on a loaded machine.
const TRANSIT: Duration = Duration::from_millis(250);

fn call(wait: bool) -> Request<CallRequest> {
    Request::new(CallRequest { wait, stall: false })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_shrinks_hop_by_hop_over_three_services() {
    const BUDGET: Duration = Duration::from_secs(10);
    let log = Log::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let [a, _b, _c] = serve_chain(&log, &root).await;
    let client = layered_client(a.addr);
    // Connects every hop, so the measured call's transit is a request's.
    let warm_up = client.clone().call(call(false)).await.expect("warm-up");
    assert_eq!(warm_up.get_ref().hops.len(), 3);
    log.clear();

    let t0 = Instant::now();
    let (caller, _c) = Context::background().with_timeout(BUDGET);
    let caller_deadline = caller.deadline().unwrap();
    let reply = client
        .clone()
        .call(call(false).with_context(&caller))
        .await
        .expect("the chain answers");
    let names: Vec<_> = reply
        .get_ref()
        .hops
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["A", "B", "C"]);

    let mut previous = BUDGET;
    for hop in ["A", "B", "C"] {
        let (remaining, deadline, at) = log.started(hop).await;
        let remaining = remaining.unwrap_or_else(|| panic!("{hop} has no deadline"));
        let budget_left = BUDGET.saturating_sub(at - t0);
        // Never less than the caller had left (timeouts are rounded up;
        // 1 µs covers the clocks' nanosecond truncation)...
        assert!(
            remaining + Duration::from_micros(1) >= budget_left,
            "{hop}: {remaining:?} left, the caller had {budget_left:?}"
        );
        // ...and never more, but for the transit.
        assert!(
            remaining <= budget_left + TRANSIT,
            "{hop}: {remaining:?} left, the caller had {budget_left:?}"
        );
        // Each hop has no more time than the one before (up to rounding:
        // `grpc-timeout` is rounded up to the microsecond here).
        assert!(
            remaining <= previous + Duration::from_micros(1),
            "{hop}: {remaining:?} left after {previous:?} at the hop before"
        );
        previous = remaining;
        // The same on the shared clock: the hop's deadline is the caller's,
        // later only by the transit.
        let deadline = deadline.unwrap();
        assert!(deadline >= caller_deadline, "{hop} ends before its caller");
        assert!(deadline - caller_deadline <= TRANSIT, "{hop}: {deadline:?}");
        // The hop reported the same remaining time to its caller.
        let reported = reply.get_ref().hops.iter().find(|h| h.name == hop).unwrap();
        assert_eq!(
            reported.remaining_micros,
            Some(remaining.as_micros() as u64)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dropping_its_call_cancels_every_hop_with_the_disconnect_cause() {
    let log = Log::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let [a, _b, _c] = serve_chain(&log, &root).await;
    let client = layered_client(a.addr);
    let (caller, _c) = Context::background().with_cancel();
    let in_flight = tokio::spawn(async move {
        let mut client = client;
        client.call(call(true).with_context(&caller)).await
    });
    log.started("C").await;
    // The client drops its call (its future), mid-flight.
    in_flight.abort();

    for hop in ["A", "B", "C"] {
        let (error, cause) = log.ended(hop).await;
        assert_eq!(error, Error::Canceled, "{hop}");
        assert!(
            cause.downcast_ref::<ClientDisconnected>().is_some(),
            "{hop} ended with {cause}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancelling_its_context_aborts_the_call_and_every_hop_sees_it() {
    let log = Log::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let [a, _b, _c] = serve_chain(&log, &root).await;
    let mut client = layered_client(a.addr);
    let (caller, cancel) = Context::background().with_cancel();
    let in_flight =
        tokio::spawn(async move { client.call(call(true).with_context(&caller)).await });
    log.started("C").await;
    cancel.cancel_with(Cause::msg("user pressed stop"));

    let status = tokio::time::timeout(SOON, in_flight)
        .await
        .expect("the call ends soon after the cancel")
        .expect("the task")
        .expect_err("the call was cancelled");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "context canceled: user pressed stop");
    let e = context_error(&status).expect("the status carries the context's error");
    assert_eq!(e.error(), Error::Canceled);
    assert_eq!(e.cause().to_string(), "user pressed stop");

    for hop in ["A", "B", "C"] {
        let (error, cause) = log.ended(hop).await;
        assert_eq!(error, Error::Canceled, "{hop}");
        assert!(
            cause.downcast_ref::<ClientDisconnected>().is_some(),
            "{hop} ended with {cause}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_deadline_passing_mid_call_fails_it_with_deadline_exceeded() {
    let log = Log::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let [a, _b, _c] = serve_chain(&log, &root).await;
    let mut client = layered_client(a.addr);
    let (caller, _c) = Context::background().with_timeout(Duration::from_millis(300));
    let status = tokio::time::timeout(SOON, client.call(call(true).with_context(&caller)))
        .await
        .expect("the call ends soon after its deadline")
        .expect_err("the deadline passed");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        context_error(&status).map(|e| e.error()),
        Some(Error::DeadlineExceeded)
    );
    // Every hop's context ended too (by its own deadline or by the reset
    // stream, whichever came first).
    for hop in ["A", "B", "C"] {
        log.ended(hop).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_fails_fast_and_nothing_reaches_the_server() {
    let log = Log::default();
    let (root, _shutdown) = Context::background().with_cancel();
    // Counts every request the server receives, before any other layer.
    let received = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = received.clone();
    let server = Server::builder()
        .layer(tower::util::MapRequestLayer::new(
            move |req: http::Request<tonic::body::Body>| {
                counter.fetch_add(1, Ordering::SeqCst);
                req
            },
        ))
        .layer(ServerLayer::new(root.clone()))
        .add_service(HopServer::new(ChainHop {
            name: "C",
            next: None,
            log: log.clone(),
        }))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    let mut client = layered_client(addr);

    let (expired, _c) = Context::background().with_timeout(Duration::ZERO);
    let status = client
        .call(call(false).with_context(&expired))
        .await
        .expect_err("no time left");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "context deadline exceeded");

    let (cancelled, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Cause::msg("caller gave up"));
    let status = client
        .call(call(false).with_context(&cancelled))
        .await
        .expect_err("cancelled");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(
        context_error(&status).unwrap().cause().to_string(),
        "caller gave up"
    );
    assert_eq!(received.load(Ordering::SeqCst), 0, "nothing was sent");

    // The same client with time left does reach the server.
    let (live, _c) = Context::background().with_timeout(Duration::from_secs(30));
    client
        .call(call(false).with_context(&live))
        .await
        .expect("a live call goes through");
    assert_eq!(received.load(Ordering::SeqCst), 1);
    assert_eq!(log.count_started(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforcement_answers_deadline_exceeded_on_tonics_server() {
    let log = Log::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let layer = ServerLayer::new(root.clone())
        .max_timeout(Duration::from_millis(300))
        .enforce_deadline(true);
    let c = serve_hop("C", None, &log, layer).await;
    // No deadline from the client: the server's maximum is the deadline,
    // and the handler ignores it.
    let mut client = HopClient::new(plain_channel(c.addr));
    let stall = Request::new(CallRequest {
        wait: false,
        stall: true,
    });
    let status = tokio::time::timeout(SOON, client.call(stall))
        .await
        .expect("the layer answers soon after the deadline")
        .expect_err("the deadline passed");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "context deadline exceeded");

    let (error, cause) = log.ended("C").await;
    assert_eq!(error, Error::DeadlineExceeded);
    assert_eq!(cause, Error::DeadlineExceeded);
    log.wait_for("the handler dropped", |e| {
        matches!(e, common::Event::Dropped { hop: "C" }).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforcement_answers_deadline_exceeded_for_the_callers_grpc_timeout() {
    // tonic's routes served by axum (no timer of tonic's own): the
    // caller's `grpc-timeout` is the layer's alone.
    let log = Log::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let hop = ChainHop {
        name: "C",
        next: None,
        log: log.clone(),
    };
    let app = tonic::service::Routes::new(HopServer::new(hop))
        .into_axum_router()
        .layer(ServerLayer::new(root.clone()).enforce_deadline(true));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    let stall = CallRequest {
        wait: false,
        stall: true,
    };
    let (code, message) = tokio::time::timeout(
        SOON,
        common::raw_grpc_call(addr, &[("grpc-timeout", "300m")], stall),
    )
    .await
    .expect("the layer answers soon after the deadline");
    assert_eq!(code, "4", "DEADLINE_EXCEEDED");
    assert_eq!(message, "context deadline exceeded");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (error, _) = log.ended("C").await;
    assert_eq!(error, Error::DeadlineExceeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_cancels_in_flight_calls_with_the_shutdown_cause_and_the_server_exits() {
    let log = Log::default();
    let (root, shutdown) = Context::background().with_cancel();
    let c = serve_hop("C", None, &log, ServerLayer::new(root.clone())).await;
    let mut client = layered_client(c.addr);
    let (caller, _c) = Context::background().with_cancel();
    let in_flight =
        tokio::spawn(async move { client.call(call(true).with_context(&caller)).await });
    log.started("C").await;

    shutdown.cancel_with(ServerShutdown);
    let (error, cause) = log.ended("C").await;
    assert_eq!(error, Error::Canceled);
    assert!(cause.downcast_ref::<ServerShutdown>().is_some(), "{cause}");
    // The handler answered with its context's status...
    let status = tokio::time::timeout(SOON, in_flight)
        .await
        .expect("the call ends")
        .unwrap()
        .expect_err("cancelled by the shutdown");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "context canceled: server shutting down");
    // ...and the server drained and exited.
    let served = tokio::time::timeout(SOON, c.task)
        .await
        .expect("the server exits soon after the shutdown")
        .expect("the server task");
    served.expect("the server exits cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_timeouts_are_answered_internal_and_never_reach_the_service() {
    let log = Log::default();
    let (root, _shutdown) = Context::background().with_cancel();
    let c = serve_hop("C", None, &log, ServerLayer::new(root.clone())).await;
    let mut client = HopClient::new(plain_channel(c.addr));
    let cases = [
        ("", "malformed grpc-timeout: empty"),
        (
            "123456789m",
            "malformed grpc-timeout: the value must be 1 to 8 digits",
        ),
        (
            "m",
            "malformed grpc-timeout: the value must be 1 to 8 digits",
        ),
        (
            "5x",
            "malformed grpc-timeout: the unit must be one of H M S m u n",
        ),
        ("1.5S", "malformed grpc-timeout: the value has a non-digit"),
        ("-1S", "malformed grpc-timeout: the value has a non-digit"),
    ];
    for (value, message) in cases {
        let mut request = call(false);
        request
            .metadata_mut()
            .insert("grpc-timeout", value.parse().expect("ASCII metadata"));
        let status = client.call(request).await.expect_err(value);
        assert_eq!(status.code(), Code::Internal, "{value:?}: {status:?}");
        assert_eq!(status.message(), message, "{value:?}");
    }
    assert_eq!(log.count_started(), 0, "no malformed request reached C");

    // Valid values, including the largest one. (Zero, valid too, is in
    // tests/http.rs: on tonic's transport, tonic's own timer answers it
    // before the handler runs.)
    for value in ["99999999H", "2S"] {
        let mut request = call(false);
        request
            .metadata_mut()
            .insert("grpc-timeout", value.parse().unwrap());
        client.call(request).await.expect(value);
    }
    let remaining: Vec<_> = log
        .all()
        .iter()
        .filter_map(|e| match e {
            common::Event::Started { remaining, .. } => Some(remaining.unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(remaining.len(), 2);
    assert!(remaining[0] > Duration::from_secs(100 * 365 * 24 * 3600));
    assert!(remaining[1] <= Duration::from_secs(2));
}
