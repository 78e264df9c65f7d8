//! `JsClock` on a real JavaScript host: wasm32-unknown-unknown with the `js`
//! feature, run in node by wasm-bindgen-test-runner (`.ci/wasm.sh`).
//! Deadlines fire from node's own `setTimeout`, and futures are woken on
//! wasm-bindgen-futures' executor. Every wait is bounded by a timer of the
//! host's that is not `JsClock`'s.
#![cfg(all(target_family = "wasm", target_os = "unknown", feature = "js"))]

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use cancel_tree::{Cause, Clock, Context, Error, Instant, JsClock};
use js_sys::{Function, Promise, Reflect};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use wasm_bindgen_test::wasm_bindgen_test;

/// The longest any test waits for something that should happen at once or
/// after a few milliseconds.
const LIMIT_MS: i32 = 10_000;

/// Resolves after `ms` on the host's `setTimeout`, called directly.
async fn sleep_ms(ms: i32) {
    let promise = Promise::new(&mut |resolve, _reject| {
        let set_timeout: Function = Reflect::get(&js_sys::global(), &"setTimeout".into())
            .expect("setTimeout")
            .into();
        set_timeout
            .call2(&js_sys::wasm_bindgen::JsValue::NULL, &resolve, &ms.into())
            .expect("setTimeout call");
    });
    JsFuture::from(promise).await.expect("timer promise");
}

/// `f`'s output, or `None` if `ms` pass first.
async fn within<F: Future>(ms: i32, f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut limit = pin!(sleep_ms(ms));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if limit.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[wasm_bindgen_test]
fn background_uses_js_clock_and_time_never_goes_back() {
    let mut last = JsClock.now();
    for _ in 0..1_000 {
        let before = JsClock.now();
        let tree = Context::background().now();
        let after = JsClock.now();
        assert!(last <= before && before <= tree && tree <= after);
        last = after;
    }
}

#[wasm_bindgen_test]
async fn time_moves_while_the_event_loop_runs() {
    let a = JsClock.now();
    sleep_ms(5).await;
    assert!(JsClock.now() > a);
}

#[wasm_bindgen_test]
async fn background_deadline_fires_on_the_js_timer() {
    let root = Context::background();
    let start = root.now();
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(20));
    let deadline = ctx.deadline().expect("a deadline");
    assert!(deadline >= start + Duration::from_millis(20));
    assert_eq!(ctx.err(), None);
    // Nobody polls or checks the context while it waits: the JS timer's
    // callback fires the queue, which wakes this future's waker.
    assert_eq!(
        within(LIMIT_MS, ctx.done()).await,
        Some(Error::DeadlineExceeded)
    );
    assert!(JsClock.now() >= deadline, "never early");
    assert_eq!(ctx.cause().unwrap(), Error::DeadlineExceeded);
}

#[wasm_bindgen_test]
async fn deadline_stops_a_future_under_run_with_its_cause() {
    let root = Context::background_with_clock(JsClock);
    let (ctx, _cancel) = root.with_timeout_cause(Duration::from_millis(5), Cause::msg("too slow"));
    let out = within(LIMIT_MS, ctx.run(std::future::pending::<()>())).await;
    assert_eq!(out, Some(Err(Error::DeadlineExceeded)));
    assert_eq!(ctx.cause().unwrap().to_string(), "too slow");
}

#[wasm_bindgen_test]
async fn done_in_a_spawned_task_is_woken_by_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (ack, ack_handle) = Context::background().with_cancel();
    let seen = Rc::new(Cell::new(None));
    spawn_local({
        let seen = seen.clone();
        async move {
            seen.set(Some(ctx.done().await));
            ack_handle.cancel();
        }
    });
    // Let the task run until it waits on `done()`.
    sleep_ms(0).await;
    assert_eq!(seen.get(), None, "the task waits");
    cancel.cancel();
    assert_eq!(within(LIMIT_MS, ack.done()).await, Some(Error::Canceled));
    assert_eq!(seen.get(), Some(Error::Canceled));
}

#[wasm_bindgen_test]
async fn done_in_a_spawned_task_is_woken_by_the_timer() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(10));
    let (ack, ack_handle) = Context::background().with_cancel();
    let seen = Rc::new(Cell::new(None));
    spawn_local({
        let seen = seen.clone();
        let ctx = ctx.clone();
        async move {
            seen.set(Some(ctx.done().await));
            ack_handle.cancel();
        }
    });
    assert_eq!(within(LIMIT_MS, ack.done()).await, Some(Error::Canceled));
    assert_eq!(seen.get(), Some(Error::DeadlineExceeded));
}

#[wasm_bindgen_test]
async fn deadlines_fire_in_order_and_after_funcs_run_from_the_timer() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let root = Context::background();
    let mut keep = Vec::new();
    for ms in [30u64, 10, 20] {
        let (ctx, cancel) = root.with_timeout(Duration::from_millis(ms));
        let order = order.clone();
        let af = ctx.after_func(move || order.lock().unwrap().push(ms));
        keep.push((ctx, cancel, af));
    }
    let last = keep[0].0.clone();
    assert_eq!(
        within(LIMIT_MS, last.done()).await,
        Some(Error::DeadlineExceeded)
    );
    assert_eq!(*order.lock().unwrap(), [10, 20, 30]);
    assert!(JsClock.timers().is_empty());
}

#[wasm_bindgen_test]
async fn a_callback_may_start_a_new_timeout_from_inside_the_timer() {
    let (first, _c1) = Context::background().with_timeout(Duration::from_millis(5));
    let slot: Arc<Mutex<Option<(Context, cancel_tree::CancelHandle)>>> = Arc::default();
    let _af = first.after_func({
        let slot = slot.clone();
        move || {
            *slot.lock().unwrap() =
                Some(Context::background().with_timeout(Duration::from_millis(5)))
        }
    });
    assert_eq!(
        within(LIMIT_MS, first.done()).await,
        Some(Error::DeadlineExceeded)
    );
    let second = slot
        .lock()
        .unwrap()
        .as_ref()
        .expect("made in the timer")
        .0
        .clone();
    assert_eq!(
        within(LIMIT_MS, second.done()).await,
        Some(Error::DeadlineExceeded)
    );
}

#[wasm_bindgen_test]
async fn cancelled_and_dropped_timeouts_leave_the_queue_at_once() {
    let (a, cancel_a) = Context::background().with_timeout(Duration::from_millis(10));
    let (b, cancel_b) = Context::background().with_timeout(Duration::from_millis(10));
    assert_eq!(JsClock.timers().len(), 2);
    cancel_a.cancel();
    assert_eq!(a.err(), Some(Error::Canceled));
    assert_eq!(JsClock.timers().len(), 1);
    cancel_b.detach();
    drop(b); // nothing holds it any more
    assert!(JsClock.timers().is_empty());
    // Past the old deadline: the first cancellation still stands.
    sleep_ms(30).await;
    assert_eq!(a.err(), Some(Error::Canceled));
}

#[wasm_bindgen_test]
async fn deadlines_at_the_edges_never_panic() {
    let root = Context::background();
    // Not in the future: born DeadlineExceeded, never queued.
    let (past, _c) = root.with_deadline(Instant::ZERO);
    assert_eq!(past.err(), Some(Error::DeadlineExceeded));
    let (now, _c) = root.with_timeout(Duration::ZERO);
    assert_eq!(now.err(), Some(Error::DeadlineExceeded));
    // Just ahead: by the time the alarm is set it may already be due, and
    // an alarm in the past fires soon.
    let (soon, _c) = root.with_deadline(root.now() + Duration::from_nanos(1));
    assert_eq!(
        within(LIMIT_MS, soon.done()).await,
        Some(Error::DeadlineExceeded)
    );
    // Beyond what `setTimeout` takes (2^31 - 1 ms): queued, and not fired.
    let (far, far_cancel) = root.with_timeout(Duration::from_secs(40 * 24 * 3600));
    let (never, never_cancel) = root.with_timeout(Duration::MAX);
    assert_eq!(never.deadline(), Some(Instant::MAX));
    assert_eq!(JsClock.timers().len(), 2);
    sleep_ms(20).await;
    assert_eq!((far.err(), never.err()), (None, None));
    drop((far_cancel, never_cancel));
    assert!(JsClock.timers().is_empty());
}
