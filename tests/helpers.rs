//! The helpers users of peer libraries ask for: an `after_func` that hands
//! the closure back instead of running it inline, a guard that cancels only
//! on panic, and `run`'s bias towards cancellation.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};

use cancel_tree::{Context, Error, Panicked};

#[test]
fn try_after_func_registers_on_a_live_context() {
    let (ctx, cancel) = Context::background().with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let af = ctx
        .try_after_func(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .ok()
        .expect("a live context takes the registration");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    cancel.cancel();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(!af.stop());
}

#[test]
fn try_after_func_hands_the_closure_back_on_a_cancelled_context() {
    let (ctx, cancel) = Context::background().with_timeout(std::time::Duration::ZERO);
    drop(cancel);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let Err((f, err)) = ctx.try_after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    }) else {
        panic!("a cancelled context must hand the closure back");
    };
    assert_eq!(err, Error::DeadlineExceeded);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "not run inline");
    f();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the caller runs it where it likes"
    );
}

#[test]
fn try_after_func_on_a_never_cancelled_context_drops_the_closure() {
    struct Drops(Arc<AtomicUsize>);
    impl Drop for Drops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = Drops(dropped.clone());
    let af = Context::background()
        .try_after_func(move || drop(d))
        .ok()
        .expect("Ok: it can never be cancelled");
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "held nothing alive");
    assert!(af.stop());
}

#[test]
fn cancel_on_panic_cancels_when_the_owner_panics() {
    let (ctx, handle) = Context::background().with_cancel();
    let (child, _c) = ctx.with_cancel();
    let t = std::thread::spawn(move || {
        let _guard = handle.cancel_on_panic();
        panic!("boom");
    });
    assert!(t.join().is_err());
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(ctx.cause().unwrap().downcast_ref::<Panicked>().is_some());
    assert!(child.cause().unwrap().downcast_ref::<Panicked>().is_some());
}

#[test]
fn cancel_on_panic_leaves_the_context_alive_on_normal_exit() {
    let (parent, pcancel) = Context::background().with_cancel();
    let (ctx, handle) = parent.with_cancel();
    drop(handle.cancel_on_panic());
    assert_eq!(ctx.err(), None, "detached, not cancelled");
    pcancel.cancel();
    assert_eq!(
        ctx.err(),
        Some(Error::Canceled),
        "still ends with its parent"
    );
}

#[test]
fn cancel_on_panic_gives_the_handle_back() {
    let (ctx, handle) = Context::background().with_cancel();
    let guard = handle.cancel_on_panic();
    let handle = guard.into_handle();
    assert!(!ctx.is_cancelled());
    drop(handle); // an ordinary handle again: dropping it cancels
    assert!(ctx.is_cancelled());
}

/// A future that is always ready with the count of its polls.
struct AlwaysReady(Arc<AtomicUsize>);
impl Future for AlwaysReady {
    type Output = usize;
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<usize> {
        Poll::Ready(self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

#[test]
fn run_checks_the_context_before_polling_the_future() {
    let (ctx, cancel) = Context::background().with_cancel();
    let polls = Arc::new(AtomicUsize::new(0));
    cancel.cancel();
    let (_, waker) = common::counting_waker();
    let mut cx = TaskContext::from_waker(&waker);
    let mut run = pin!(ctx.run(AlwaysReady(polls.clone())));
    assert_eq!(
        run.as_mut().poll(&mut cx),
        Poll::Ready(Err(Error::Canceled))
    );
    assert_eq!(
        polls.load(Ordering::SeqCst),
        0,
        "never polled once cancelled"
    );
}

/// `(file, line)` of a location.
fn at(l: Option<&'static std::panic::Location<'static>>) -> Option<(&'static str, u32)> {
    l.map(|l| (l.file(), l.line()))
}

#[test]
fn cancel_records_its_caller_for_the_whole_subtree() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (leaf, _l) = ctx.with_cancel(); // ended lock-free by the walk
    let (inner, _i) = ctx.with_cancel();
    let (below, _b) = inner.with_value(1u8).with_cancel(); // under a lock-free inner
    let (waited, _w) = ctx.with_cancel();
    let _done = std::pin::pin!(waited.done()); // (never polled: still a leaf)
    let line = line!() + 1;
    cancel.cancel();
    let want = Some((file!(), line));
    for c in [&ctx, &leaf, &inner, &below, &waited] {
        assert_eq!(at(c.cancel_location()), want, "{c:?}");
        assert_eq!(at(c.cause().unwrap().location()), want);
    }
    // Born cancelled under it: the same.
    let (late, _late) = ctx.with_cancel();
    assert_eq!(at(late.cancel_location()), want);
}

#[test]
fn a_custom_cause_keeps_the_first_location_it_was_cancelled_with() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_cancel();
    let cause = cancel_tree::Cause::msg("stop");
    let line = line!() + 1;
    cancel.cancel_with(cause.clone());
    assert_eq!(at(child.cancel_location()), Some((file!(), line)));
    // Used again elsewhere: the first place stays.
    let (other, other_cancel) = Context::background().with_cancel();
    other_cancel.cancel_with(cause);
    assert_eq!(at(other.cancel_location()), Some((file!(), line)));
}

#[test]
fn a_cancel_that_finds_its_context_ended_records_nothing() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let late = cancel_tree::Cause::msg("too late");
    cancel.cancel_with(late.clone());
    assert_eq!(late.location(), None, "this call ended nothing");
    assert_eq!(ctx.cause().unwrap(), Error::Canceled, "first ending wins");
}

#[test]
fn endings_no_call_chose_have_no_location() {
    let (ctx, cancel) = Context::background().with_cancel();
    drop(cancel);
    assert!(ctx.is_cancelled());
    assert_eq!(ctx.cancel_location(), None, "a dropped handle");
    let (t, _t) = Context::background().with_timeout(std::time::Duration::ZERO);
    assert_eq!(t.cancel_location(), None, "a deadline");
    let (live, _h) = Context::background().with_cancel();
    assert_eq!(live.cancel_location(), None, "live");
}

#[test]
fn a_merged_context_reports_its_other_parents_cancel_location() {
    let (a, _ca) = Context::background().with_cancel();
    let (b, cb) = Context::background().with_cancel();
    let (m, _cm) = a.merge(&b);
    let line = line!() + 1;
    cb.cancel();
    assert_eq!(at(m.cancel_location()), Some((file!(), line)));
}

#[test]
fn local_scopes_record_too() {
    static ROOT: cancel_tree::StaticScope = cancel_tree::StaticScope::new();
    let child = std::pin::pin!(cancel_tree::LocalScope::new(ROOT.scope()));
    let child = child.into_ref().get();
    let line = line!() + 1;
    ROOT.scope().cancel();
    assert_eq!(at(child.cause().unwrap().location()), Some((file!(), line)));
}
