//! SPEC.md's numbered semantics (1-5, 7-10, 13) and Go's `context_test.go`
//! checklist, on one thread. Deadlines (6) live in `tests/deadlines.rs`;
//! concurrency in `tests/stress.rs`; depth and memory in `tests/scale.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use cancel_tree::{Cause, Context, Error};
use common::*;

// ---- 1. roots ----

#[test]
fn roots_are_never_cancelled() {
    for root in [Context::background(), Context::todo()] {
        assert!(!root.is_cancelled());
        assert_eq!(root.err(), None);
        assert!(root.cause().is_none());
        assert_eq!(root.deadline(), None);
        let (c, waker) = counting_waker();
        let mut done = std::pin::pin!(root.done());
        assert!(poll_once(done.as_mut(), &waker).is_pending());
        assert!(poll_once(done.as_mut(), &waker).is_pending());
        assert_eq!(wakes(&c), 0);
    }
}

#[test]
fn debug_tells_roots_apart() {
    assert_eq!(
        format!("{:?}", Context::background()),
        "Context(background, live)"
    );
    assert_eq!(format!("{:?}", Context::todo()), "Context(todo, live)");
    let (ctx, cancel) = Context::background().with_value(1u8).with_cancel();
    assert_eq!(
        format!("{ctx:?}"),
        "Context(background.with_value.with_cancel, live)"
    );
    cancel.cancel();
    assert_eq!(
        format!("{ctx:?}"),
        "Context(background.with_value.with_cancel, context canceled)"
    );
}

// ---- 2. cancellation flows down only ----

#[test]
fn parent_finishes_child() {
    let (parent, cancel) = Context::background().with_cancel();
    let (cancel_child, _h1) = parent.with_cancel();
    let value_child = parent.with_value(3u32);
    let (grandchild, _h2) = value_child.with_cancel();
    assert!(!cancel_child.is_cancelled() && !grandchild.is_cancelled());
    cancel.cancel();
    for c in [&parent, &cancel_child, &value_child, &grandchild] {
        assert_eq!(c.err(), Some(Error::Canceled));
        assert_eq!(c.cause().unwrap(), Error::Canceled);
    }
}

#[test]
fn child_finishes_first() {
    let (parent, pcancel) = Context::background().with_cancel();
    let (child, ccancel) = parent.with_cancel();
    let (sibling, _s) = parent.with_cancel();
    ccancel.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(
        parent.err(),
        None,
        "cancelling a child never touches the parent"
    );
    assert_eq!(sibling.err(), None, "nor its siblings");
    pcancel.cancel_with(MyErr("later"));
    assert_eq!(
        child.cause().unwrap(),
        Error::Canceled,
        "the child's first ending stays"
    );
    assert_eq!(
        sibling.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("later"))
    );
}

#[test]
fn layers_of_values_and_cancels() {
    // Go's TestLayersCancel / TestLayersTimeout shape: alternate layers.
    let (c0, cancel0) = Context::background().with_cancel();
    let v1 = c0.with_value(1i32);
    let (c2, _h2) = v1.with_cancel();
    let v3 = c2.with_value("three");
    let (c4, h4) = v3.with_cancel();
    assert_eq!(c4.value::<i32>(), Some(&1));
    assert_eq!(c4.value::<&str>(), Some(&"three"));
    h4.cancel();
    assert!(c4.is_cancelled() && !c2.is_cancelled() && !v3.is_cancelled());
    cancel0.cancel();
    assert!(c2.is_cancelled() && v1.is_cancelled() && v3.is_cancelled());
}

// ---- 3. born cancelled ----

#[test]
fn child_of_cancelled_parent_is_born_cancelled() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with(MyErr("gone"));
    let (child, _h) = parent.with_cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(
        child.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("gone"))
    );
    let v = parent.with_value(1u8);
    let (grand, _h2) = v.with_cancel();
    assert_eq!(grand.cause().unwrap().to_string(), "my error: gone");
    // done() is ready at once and after_func runs at once.
    let (c, waker) = counting_waker();
    let mut d = std::pin::pin!(grand.done());
    assert_eq!(poll_once(d.as_mut(), &waker), Poll::Ready(Error::Canceled));
    assert_eq!(wakes(&c), 0);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let stop = grand.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(!stop.stop());
}

// ---- 4. first cancellation wins ----

#[test]
fn first_cancel_wins() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(MyErr("first"));
    cancel.cancel_with(MyErr("second"));
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("first"))
    );
}

#[test]
fn parent_cancel_after_child_changes_nothing() {
    let (parent, pcancel) = Context::background().with_cancel();
    let (child, ccancel) = parent.with_cancel();
    ccancel.cancel_with(MyErr("child"));
    pcancel.cancel_with(MyErr("parent"));
    assert_eq!(
        child.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("child"))
    );
    assert_eq!(
        parent.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("parent"))
    );
}

// ---- 5. causes (Go's TestCause table, cancel rows) ----

#[test]
fn cause_table_without_deadlines() {
    // live: None
    let (ctx, cancel) = Context::background().with_cancel();
    assert!(ctx.cause().is_none());
    // cancel(): Canceled/Canceled
    cancel.cancel();
    assert_eq!(
        (ctx.err(), ctx.cause().unwrap()),
        (Some(Error::Canceled), Cause::from(Error::Canceled))
    );

    // cancel_with(cause): Canceled/cause
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(MyErr("why"));
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("why"))
    );

    // cancel_with(DeadlineExceeded): err stays Canceled, cause is the kind
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Error::DeadlineExceeded);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap(), Error::DeadlineExceeded);

    // parent cause flows to the child, also through values
    let (parent, pcancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_value(0u8).with_cancel();
    pcancel.cancel_with(Cause::msg("parent went away"));
    assert_eq!(child.cause().unwrap().to_string(), "parent went away");
    assert!(
        child.cause().unwrap().ptr_eq(&parent.cause().unwrap()),
        "the same cause, shared"
    );

    // a child's own cause, then the parent's: the child's stays
    let (parent, pcancel) = Context::background().with_cancel();
    let (child, ccancel) = parent.with_cancel();
    ccancel.cancel_with(MyErr("child"));
    pcancel.cancel_with(MyErr("parent"));
    assert_eq!(
        child.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("child"))
    );
}

#[test]
fn cause_api() {
    let c = Cause::new(MyErr("x"));
    assert_eq!(c.to_string(), "my error: x");
    assert!(format!("{c:?}").contains("MyErr"));
    assert_eq!(c.as_error(), None);
    assert!(c != Error::Canceled);
    assert_eq!(c.clone(), c);
    assert_ne!(
        Cause::new(MyErr("x")),
        c,
        "custom causes compare by identity"
    );
    assert_eq!(Cause::new(Error::Canceled), Error::Canceled);
    assert_eq!(Error::Canceled, Cause::from(Error::Canceled));
    let s = Cause::msg(String::from("owned"));
    assert_eq!(s.to_string(), "owned");
    let e: Box<dyn std::error::Error + Send + Sync> = c.clone().into();
    assert_eq!(e.to_string(), "my error: x");
}

#[test]
fn error_strings_are_gos() {
    assert_eq!(Error::Canceled.to_string(), "context canceled");
    assert_eq!(
        Error::DeadlineExceeded.to_string(),
        "context deadline exceeded"
    );
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::Canceled);
    assert_eq!(e.to_string(), "context canceled");
}

// ---- CancelHandle ----

#[test]
fn dropping_the_handle_cancels() {
    let (ctx, cancel) = Context::background().with_cancel();
    drop(cancel);
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn detach_does_not_cancel_but_parent_still_does() {
    let (parent, pcancel) = Context::background().with_cancel();
    let (ctx, cancel) = parent.with_cancel();
    cancel.detach();
    assert!(!ctx.is_cancelled());
    pcancel.cancel();
    assert!(ctx.is_cancelled());
}

#[test]
fn cancel_after_every_context_is_dropped() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, child_cancel) = ctx.with_cancel();
    drop(ctx);
    drop(child);
    cancel.cancel();
    cancel.cancel();
    assert!(cancel.is_cancelled());
    assert!(child_cancel.is_cancelled());
    drop(child_cancel);
    let c = cancel.context();
    assert_eq!(c.err(), Some(Error::Canceled));
}

#[test]
fn handles_and_contexts_dropped_in_any_order() {
    // Every permutation of dropping (parent ctx, parent handle, child ctx,
    // child handle).
    let orders: [[usize; 4]; 6] = [
        [0, 1, 2, 3],
        [3, 2, 1, 0],
        [1, 3, 0, 2],
        [2, 0, 3, 1],
        [1, 0, 3, 2],
        [3, 1, 2, 0],
    ];
    for order in orders {
        let (p, ph) = Context::background().with_cancel();
        let (c, ch) = p.with_cancel();
        let mut slots: Vec<Option<Box<dyn std::any::Any>>> = vec![
            Some(Box::new(p)),
            Some(Box::new(ph)),
            Some(Box::new(c)),
            Some(Box::new(ch)),
        ];
        for i in order {
            slots[i].take();
        }
    }
}

// ---- 7. values, without_cancel ----

#[test]
fn values_nearest_ancestor_wins() {
    #[derive(Debug, PartialEq)]
    struct Key(u32);
    let a = Context::background().with_value(Key(1));
    let b = a.with_value(Key(2));
    let (c, _h) = b.with_cancel();
    assert_eq!(a.value::<Key>(), Some(&Key(1)));
    assert_eq!(c.value::<Key>(), Some(&Key(2)));
    assert_eq!(c.value::<u64>(), None);
    assert_eq!(Context::background().value::<Key>(), None);
    // with_value makes no scope: cancelling above reaches through it
    let (p, ph) = Context::background().with_cancel();
    let v = p.with_value(Key(3));
    ph.cancel();
    assert!(v.is_cancelled());
}

#[test]
fn values_are_dropped_with_their_last_context() {
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let v = Context::background().with_value(Tracked(drops.clone()));
    let (child, h) = v.with_cancel();
    drop(v);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "the child keeps it alive");
    drop(h);
    assert!(child.value::<Tracked>().is_some());
    drop(child);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn without_cancel_keeps_values_drops_cancellation() {
    let (ctx, cancel) = Context::background().with_value("v").with_cancel();
    let wc = ctx.without_cancel();
    let (child, _h) = wc.with_cancel();
    cancel.cancel_with(MyErr("x"));
    assert!(!wc.is_cancelled() && !child.is_cancelled());
    assert_eq!(wc.deadline(), None);
    assert_eq!(child.value::<&str>(), Some(&"v"));
    assert!(format!("{wc:?}").contains("without_cancel"));
    // cancelled before without_cancel: still live
    let wc2 = ctx.without_cancel();
    assert!(!wc2.is_cancelled());
}

// ---- 8. after_func (Go's AfterFunc tests) ----

fn counter() -> (Arc<AtomicUsize>, impl FnOnce() + Send + 'static) {
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    (n, move || {
        m.fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn after_func_runs_once_on_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (n, f) = counter();
    let stop = ctx.after_func(f);
    assert_eq!(n.load(Ordering::SeqCst), 0);
    cancel.cancel();
    assert_eq!(
        n.load(Ordering::SeqCst),
        1,
        "runs on the cancelling thread before cancel returns"
    );
    cancel.cancel();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert!(!stop.stop(), "already ran");
}

#[test]
fn after_func_stop_prevents_run() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (n, f) = counter();
    let stop = ctx.after_func(f);
    assert!(stop.stop());
    assert!(!stop.stop(), "second stop is false");
    cancel.cancel();
    assert_eq!(n.load(Ordering::SeqCst), 0);
}

#[test]
fn after_func_on_parent_cancel_and_handle_dropped() {
    let (parent, pcancel) = Context::background().with_cancel();
    let (ctx, h) = parent.with_cancel();
    h.detach();
    let (n, f) = counter();
    drop(ctx.after_func(f)); // dropping the handle does not stop f
    drop(ctx); // nor does dropping the context: the registration keeps it linked
    pcancel.cancel();
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[test]
fn after_func_on_never_cancelled_contexts() {
    for ctx in [Context::background(), Context::todo(), {
        let (c, _h) = Context::background().with_cancel();
        c.without_cancel()
    }] {
        let captured = Arc::new(());
        let held = captured.clone();
        let stop = ctx.after_func(move || drop(held));
        assert_eq!(Arc::strong_count(&captured), 1, "holds nothing alive");
        assert!(stop.stop());
        assert!(!stop.stop());
    }
}

#[test]
fn after_func_may_cancel_derive_and_drop_contexts() {
    let (parent, pcancel) = Context::background().with_cancel();
    let (other, other_cancel) = Context::background().with_cancel();
    let p2 = parent.clone();
    let slot = Arc::new(std::sync::Mutex::new(Some(other_cancel)));
    let s2 = slot.clone();
    let stop = parent.after_func(move || {
        // derive from the cancelled context, cancel another, drop our own clone
        let (c, _h) = p2.with_cancel();
        assert!(c.is_cancelled());
        s2.lock().unwrap().take().unwrap().cancel();
        drop(p2);
    });
    pcancel.cancel();
    assert!(other.is_cancelled());
    drop(stop);
}

#[test]
#[cfg_attr(
    target_family = "wasm",
    ignore = "catches a panic: wasm aborts on panic"
)]
fn panicking_after_func_propagates_after_the_walk_and_tree_stays_usable() {
    let (root, cancel) = Context::background().with_cancel();
    let (a, _ha) = root.with_cancel();
    let (b, _hb) = root.with_cancel();
    let (n, f) = counter();
    let _s1 = a.after_func(|| panic!("boom"));
    let _s2 = b.after_func(f);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cancel.cancel()));
    assert!(res.is_err(), "the panic reaches the cancelling thread");
    assert!(a.is_cancelled() && b.is_cancelled(), "the walk completed");
    assert_eq!(n.load(Ordering::SeqCst), 1, "other callbacks still ran");
    let (fresh, h) = root.with_cancel();
    assert!(fresh.is_cancelled());
    drop(h);
    let (x, hx) = Context::background().with_cancel();
    hx.cancel();
    assert!(x.is_cancelled());
}

#[test]
#[cfg_attr(
    target_family = "wasm",
    ignore = "catches a panic: wasm aborts on panic"
)]
fn panicking_after_func_during_unwind_does_not_abort() {
    let (ctx, cancel) = Context::background().with_cancel();
    let _s = ctx.after_func(|| panic!("inner"));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _cancel = cancel; // dropped while unwinding
        panic!("outer");
    }));
    assert!(res.is_err());
    assert!(ctx.is_cancelled());
}

// ---- 9. run ----

#[test]
fn run_returns_output_or_err() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert_eq!(block_on(ctx.run(async { 7 })), Ok(7));
    cancel.cancel();
    assert_eq!(block_on(ctx.run(async { 7 })), Err(Error::Canceled));
}

#[test]
fn run_stops_an_always_ready_future() {
    // An always-ready future that cancels its own context on its third poll.
    struct Spin<'a> {
        polls: usize,
        cancel: &'a cancel_tree::CancelHandle,
    }
    impl std::future::Future for Spin<'_> {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.polls == 3 {
                self.cancel.cancel();
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    let (ctx, cancel) = Context::background().with_cancel();
    let res = block_on(ctx.run(Spin {
        polls: 0,
        cancel: &cancel,
    }));
    assert_eq!(res, Err(Error::Canceled));
}

#[test]
fn run_drops_the_future_on_cancel() {
    struct OnDrop(Arc<AtomicUsize>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let (ctx, cancel) = Context::background().with_cancel();
    let guard = OnDrop(dropped.clone());
    let fut = async move {
        let _g = guard;
        std::future::pending::<()>().await
    };
    let (c, waker) = counting_waker();
    let mut run = std::pin::pin!(ctx.run(fut));
    assert!(poll_once(run.as_mut(), &waker).is_pending());
    cancel.cancel();
    assert_eq!(wakes(&c), 1);
    assert_eq!(
        poll_once(run.as_mut(), &waker),
        Poll::Ready(Err(Error::Canceled))
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "dropped on cancel, not at the end of scope"
    );
}

// ---- 10. done ----

#[test]
fn done_wakes_the_latest_waker() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (c1, w1) = counting_waker();
    let (c2, w2) = counting_waker();
    let mut done = std::pin::pin!(ctx.done());
    assert!(poll_once(done.as_mut(), &w1).is_pending());
    assert!(poll_once(done.as_mut(), &w1).is_pending());
    assert!(poll_once(done.as_mut(), &w2).is_pending());
    cancel.cancel();
    assert_eq!((wakes(&c1), wakes(&c2)), (0, 1));
    assert_eq!(poll_once(done.as_mut(), &w2), Poll::Ready(Error::Canceled));
    assert!(futures_core::FusedFuture::is_terminated(&*done));
    assert_eq!(poll_once(done.as_mut(), &w2), Poll::Ready(Error::Canceled));
}

#[test]
fn done_through_ancestors_and_values() {
    let (root, cancel) = Context::background().with_cancel();
    let (mid, _h) = root.with_value(1u8).with_cancel();
    let leaf = mid.with_value(2u16);
    let (c, w) = counting_waker();
    let mut d = std::pin::pin!(leaf.done_owned());
    assert!(poll_once(d.as_mut(), &w).is_pending());
    drop(leaf);
    cancel.cancel_with(MyErr("up"));
    assert_eq!(wakes(&c), 1);
    assert_eq!(poll_once(d.as_mut(), &w), Poll::Ready(Error::Canceled));
    assert_eq!(
        d.context().cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("up"))
    );
}

#[test]
fn many_waiters_each_woken_once_and_dropped_waiters_are_not() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut futs: Vec<_> = (0..100).map(|_| Box::pin(ctx.done())).collect();
    let wakers: Vec<_> = (0..100).map(|_| counting_waker()).collect();
    for (f, (_, w)) in futs.iter_mut().zip(&wakers) {
        assert!(poll_once(f.as_mut(), w).is_pending());
    }
    // drop every other one before cancelling
    let mut kept = Vec::new();
    for (i, f) in futs.into_iter().enumerate() {
        if i % 2 == 0 {
            kept.push(f);
        }
    }
    cancel.cancel();
    for (i, (c, _)) in wakers.iter().enumerate() {
        assert_eq!(wakes(c), usize::from(i % 2 == 0), "waiter {i}");
    }
    drop(kept);
}

#[test]
fn done_dropped_without_poll_and_never_polled() {
    let (ctx, cancel) = Context::background().with_cancel();
    drop(ctx.done());
    drop(ctx.done_owned());
    cancel.cancel();
    drop(ctx.done());
}

// ---- wait / wait_timeout ----

#[test]
#[cfg_attr(target_family = "wasm", ignore = "needs a second thread")]
fn wait_blocks_until_cancelled_from_another_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        cancel.cancel_with(MyErr("bye"));
    });
    assert_eq!(ctx.wait(), Error::Canceled);
    assert_eq!(
        ctx.wait_timeout(std::time::Duration::from_secs(5)),
        Some(Error::Canceled)
    );
    t.join().unwrap();
}

#[test]
fn wait_timeout_times_out_and_saturates() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert_eq!(ctx.wait_timeout(std::time::Duration::from_millis(5)), None);
    assert_eq!(ctx.wait_timeout(std::time::Duration::ZERO), None);
    cancel.cancel();
    assert_eq!(
        ctx.wait_timeout(std::time::Duration::MAX),
        Some(Error::Canceled)
    );
}

// ---- 13 (shape): Context is cheap ----

#[test]
fn types_are_what_the_spec_says() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_traits::<Context>();
    assert_send_sync::<cancel_tree::CancelHandle>();
    assert_send_sync::<cancel_tree::AfterFunc>();
    assert_send_sync::<cancel_tree::DoneOwned>();
    fn is_fused<F: futures_core::FusedFuture<Output = Error>>(_: &F) {}
    let ctx = Context::background();
    is_fused(&ctx.done());
    is_fused(&ctx.done_owned());
    fn copy_eq<T: Copy + Eq + std::fmt::Debug + std::error::Error>() {}
    copy_eq::<Error>();
}
