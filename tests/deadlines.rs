//! SPEC semantic 6 and the deadline rows of 5 (Go's TestCause table), on a
//! ManualClock; a few real-time checks on StdClock with generous limits.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use cancel_tree::{Cause, Clock, Context, Error, Instant, ManualClock};
use common::*;

fn tree() -> (ManualClock, Context) {
    let clock = ManualClock::new();
    let root = Context::background_with_clock(clock.clone());
    (clock, root)
}

const S: Duration = Duration::from_secs(1);

#[test]
fn deadline_fires_when_the_clock_reaches_it_without_anyone_polling() {
    let (clock, root) = tree();
    let (ctx, _h) = root.with_deadline(Instant::from_nanos(5_000));
    assert_eq!(ctx.deadline(), Some(Instant::from_nanos(5_000)));
    assert_eq!(clock.pending(), 1);
    clock.set(Instant::from_nanos(4_999));
    assert_eq!(ctx.err(), None);
    clock.set(Instant::from_nanos(5_000));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.cause().unwrap(), Error::DeadlineExceeded);
    assert_eq!(clock.pending(), 0);
    assert_eq!(
        ctx.deadline(),
        Some(Instant::from_nanos(5_000)),
        "still reported after firing"
    );
}

#[test]
fn timeout_is_deadline_from_now() {
    let (clock, root) = tree();
    clock.advance(10 * S);
    assert_eq!(root.now(), Instant::ZERO + 10 * S);
    let (ctx, _h) = root.with_timeout(5 * S);
    assert_eq!(ctx.deadline(), Some(Instant::ZERO + 15 * S));
    clock.advance(4 * S);
    assert!(!ctx.is_cancelled());
    clock.advance(S);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn past_and_present_deadlines_are_born_exceeded() {
    let (clock, root) = tree();
    clock.advance(S);
    for at in [Instant::ZERO, Instant::ZERO + S] {
        let (ctx, _h) = root.with_deadline(at);
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        assert_eq!(ctx.cause().unwrap(), Error::DeadlineExceeded);
    }
    let (ctx, _h) = root.with_timeout(Duration::ZERO);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    // Go: WithTimeoutCause(0, cause) is born with that cause.
    let (ctx, _h) = root.with_timeout_cause(Duration::ZERO, MyErr("zero"));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("zero"))
    );
    assert_eq!(
        clock.pending(),
        0,
        "born-exceeded contexts never enter the queue"
    );
}

#[test]
fn earlier_parent_deadline_swallows_the_childs_timer() {
    let (clock, root) = tree();
    let (parent, _hp) = root.with_timeout(S);
    let (child, _hc) = parent.with_timeout_cause(2 * S, MyErr("child timer"));
    assert_eq!(
        child.deadline(),
        parent.deadline(),
        "reports the parent's deadline"
    );
    assert_eq!(clock.pending(), 1, "later deadlines never enter the queue");
    let (same, _hs) = parent.with_deadline(parent.deadline().unwrap());
    assert_eq!(same.deadline(), parent.deadline());
    assert_eq!(clock.pending(), 1, "equal deadline: follows the parent");
    clock.advance(S);
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        child.cause().unwrap(),
        Error::DeadlineExceeded,
        "the parent's cause, not the child's"
    );
}

#[test]
fn earlier_child_deadline_fires_first_and_alone() {
    let (clock, root) = tree();
    let (parent, _hp) = root.with_timeout(10 * S);
    let (child, _hc) = parent.with_timeout(S);
    assert_eq!(child.deadline(), Some(Instant::ZERO + S));
    assert_eq!(clock.pending(), 2);
    clock.advance(S);
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(parent.err(), None);
    clock.advance(9 * S);
    assert_eq!(parent.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn go_cause_table_with_deadlines() {
    // WithDeadlineCause, deadline passes: DeadlineExceeded / cause.
    let (clock, root) = tree();
    let (ctx, _h) = root.with_deadline_cause(Instant::ZERO + S, MyErr("dl"));
    clock.advance(S);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("dl"))
    );

    // The handle of a *_cause context cancels with Canceled / Canceled.
    let (ctx, h) = root.with_timeout_cause(S, MyErr("unused"));
    h.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap(), Error::Canceled);

    // Cancel with cause, then the deadline passes: cancel wins.
    let (ctx, h) = root.with_timeout(S);
    h.cancel_with(MyErr("first"));
    clock.advance(S);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("first"))
    );

    // Deadline passes, then cancel_with: the deadline wins.
    let (ctx, h) = root.with_timeout(S);
    clock.advance(S);
    h.cancel_with(MyErr("late"));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.cause().unwrap(), Error::DeadlineExceeded);

    // Stacked: cancel-cause parent, timeout child; parent cancelled first.
    let (parent, hp) = root.with_cancel();
    let (child, _hc) = parent.with_timeout_cause(S, MyErr("timeout"));
    hp.cancel_with(MyErr("parent"));
    clock.advance(S);
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(
        child.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("parent"))
    );

    // Stacked: timeout-cause parent fires, child (cancel-cause) inherits.
    let (parent, _hp) = root.with_timeout_cause(S, MyErr("parent timeout"));
    let (child, _hc) = parent.with_cancel();
    clock.advance(S);
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        child.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("parent timeout"))
    );

    // Child with its own cause timeout under a parent with a later one.
    let (parent, _hp) = root.with_timeout_cause(3 * S, MyErr("outer"));
    let (child, _hc) = parent.with_timeout_cause(S, MyErr("inner"));
    clock.advance(S);
    assert_eq!(
        child.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("inner"))
    );
    assert_eq!(parent.err(), None);
}

#[test]
fn waiters_and_after_func_fire_at_the_deadline() {
    let (clock, root) = tree();
    let (ctx, _h) = root.with_timeout(S);
    let (c, w) = counting_waker();
    let mut d = std::pin::pin!(ctx.done());
    assert!(poll_once(d.as_mut(), &w).is_pending());
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let _af = ctx.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let (child, _hc) = ctx.with_cancel();
    clock.advance(S);
    assert_eq!(wakes(&c), 1);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "after_func ran inside advance()"
    );
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        poll_once(d.as_mut(), &w),
        Poll::Ready(Error::DeadlineExceeded)
    );
}

#[test]
fn cancelled_or_dropped_timeouts_leave_the_queue_at_once() {
    let (clock, root) = tree();
    let keep: Vec<_> = (1..=100).map(|i| root.with_timeout(i * S)).collect();
    assert_eq!(clock.pending(), 100);
    let (a, ha) = root.with_timeout(S / 2);
    assert_eq!(clock.pending(), 101);
    ha.cancel();
    assert_eq!(clock.pending(), 100, "cancel removes the entry");
    drop(a);
    let (b, hb) = root.with_timeout(S / 2);
    hb.detach();
    drop(b);
    assert_eq!(
        clock.pending(),
        100,
        "dropping the last handle removes the entry"
    );
    // A parent cancel removes every descendant's entry.
    let (p, hp) = root.with_cancel();
    let kids: Vec<_> = (0..10).map(|_| p.with_timeout(S)).collect();
    assert_eq!(clock.pending(), 110);
    hp.cancel();
    assert_eq!(clock.pending(), 100);
    drop(kids);
    // A deadline firing removes its own entry, in order.
    clock.advance(50 * S);
    assert_eq!(clock.pending(), 50);
    assert!(keep[..50].iter().all(|(c, _)| c.is_cancelled()));
    assert!(keep[50..].iter().all(|(c, _)| !c.is_cancelled()));
}

#[test]
fn deadlines_fire_in_deadline_order() {
    let (clock, root) = tree();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut keep = Vec::new();
    for i in [5u64, 3, 9, 1, 7, 3, 2, 8] {
        let (c, h) = root.with_deadline(Instant::from_nanos(i));
        let o = order.clone();
        keep.push((c.after_func(move || o.lock().unwrap().push(i)), c, h));
    }
    clock.set(Instant::from_nanos(100));
    assert_eq!(*order.lock().unwrap(), vec![1, 2, 3, 3, 5, 7, 8, 9]);
}

#[test]
fn saturation_never_panics() {
    let (clock, root) = tree();
    let (a, _ha) = root.with_timeout(Duration::MAX);
    assert_eq!(a.deadline(), Some(Instant::MAX));
    let (b, _hb) = root.with_deadline(Instant::MAX);
    assert_eq!(b.deadline(), Some(Instant::MAX));
    let (c, _hc) = root.with_deadline(Instant::from_nanos(u64::MAX - 1));
    clock.advance(Duration::MAX);
    assert_eq!(clock.now(), Instant::MAX);
    assert!(a.is_cancelled() && b.is_cancelled() && c.is_cancelled());
    clock.advance(Duration::MAX);
    clock.set(Instant::ZERO); // never backwards
    assert_eq!(clock.now(), Instant::MAX);
    let (d, _hd) = root.with_timeout(Duration::MAX);
    assert_eq!(
        d.err(),
        Some(Error::DeadlineExceeded),
        "at the end of time everything is due"
    );
    // Instant arithmetic saturates.
    assert_eq!(Instant::MAX + S, Instant::MAX);
    assert_eq!(Instant::ZERO - Instant::MAX, Duration::ZERO);
}

#[test]
fn equal_deadlines_all_fire() {
    let (clock, root) = tree();
    let ctxs: Vec<_> = (0..scaled(1000)).map(|_| root.with_timeout(S)).collect();
    clock.advance(S);
    assert!(
        ctxs.iter()
            .all(|(c, _)| c.err() == Some(Error::DeadlineExceeded))
    );
    assert_eq!(clock.pending(), 0);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a million nodes is too slow under Miri; the heap code is covered by the smaller tests"
)]
fn a_million_pending_deadlines() {
    on_small_stack(256 * 1024, || {
        let (clock, root) = tree();
        let mut ctxs: Vec<_> = (0..1_000_000u64)
            .map(|i| root.with_deadline(Instant::from_nanos(1 + (i * 7_919) % 1_000_003)))
            .collect();
        assert_eq!(clock.pending(), 1_000_000);
        // Cancel a third out of order, fire a third, drop the rest.
        for (i, (_, h)) in ctxs.iter().enumerate() {
            if i % 3 == 0 {
                h.cancel();
            }
        }
        assert_eq!(clock.pending(), 1_000_000 - 333_334);
        clock.set(Instant::from_nanos(333_000));
        let fired = ctxs
            .iter()
            .filter(|(c, _)| c.err() == Some(Error::DeadlineExceeded))
            .count();
        assert!(fired > 200_000, "fired {fired}");
        ctxs.truncate(10);
        assert!(clock.pending() <= 10);
    });
}

#[test]
fn without_cancel_drops_deadline_keeps_clock() {
    let (clock, root) = tree();
    let (ctx, _h) = root.with_value(9u8).with_timeout(S);
    let wc = ctx.without_cancel();
    assert_eq!(wc.deadline(), None);
    assert_eq!(wc.now(), clock.now());
    let (t, _ht) = wc.with_timeout(2 * S);
    clock.advance(S);
    assert!(ctx.is_cancelled());
    assert!(!wc.is_cancelled() && !t.is_cancelled());
    clock.advance(S);
    assert!(
        t.is_cancelled(),
        "derived timeouts still use the tree's clock"
    );
    assert_eq!(t.value::<u8>(), Some(&9));
}

#[test]
fn clock_outlives_dropped_tree_and_tree_outlives_clock_handle() {
    let clock = ManualClock::new();
    let root = Context::background_with_clock(clock.clone());
    let (ctx, h) = root.with_timeout(S);
    drop(root);
    drop(clock); // the tree holds its own clone
    assert_eq!(ctx.now(), Instant::ZERO);
    drop(h);
    assert!(ctx.is_cancelled());
    let clock = ManualClock::new();
    let (c2, h2) = Context::background_with_clock(clock.clone()).with_timeout(S);
    drop((c2, h2));
    assert_eq!(clock.pending(), 0);
    clock.advance(S);
    assert!(format!("{clock:?}").contains("pending"));
}

#[test]
#[cfg_attr(target_family = "wasm", ignore = "needs threads")]
fn concurrent_fire_and_cancel_and_drop() {
    for _ in 0..scaled(50) {
        let (clock, root) = tree();
        let ctxs: Vec<_> = (0..200)
            .map(|i| root.with_timeout(Duration::from_nanos(1 + i % 20)))
            .collect();
        let (a, b): (Vec<_>, Vec<_>) = ctxs.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let c2 = clock.clone();
        let t1 = std::thread::spawn(move || {
            for _ in 0..25 {
                c2.advance(Duration::from_nanos(1));
            }
        });
        let t2 = std::thread::spawn(move || {
            for (_, (c, h)) in a {
                h.cancel();
                assert!(c.is_cancelled());
            }
        });
        drop(b);
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(clock.pending(), 0);
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "StdClock's timer thread outlives the test, which Miri rejects; its leak check matters more"
)]
#[cfg_attr(
    target_family = "wasm",
    ignore = "block_on parks until StdClock's thread fires; see std_clock_without_threads"
)]
fn real_time_timeout_with_std_clock() {
    // Taken before the timeout is made: the deadline is 20 ms after a clock
    // reading inside `with_timeout`, so it can be just under 20 ms after any
    // instant taken later.
    let start = std::time::Instant::now();
    let (ctx, _h) = Context::background().with_timeout(Duration::from_millis(20));
    assert_eq!(
        ctx.wait_timeout(Duration::from_secs(10)),
        Some(Error::DeadlineExceeded)
    );
    assert!(start.elapsed() >= Duration::from_millis(20), "never early");
    assert!(ctx.deadline().is_some());
    let (ctx, _h) =
        Context::background().with_timeout_cause(Duration::from_millis(5), Cause::msg("slow"));
    assert_eq!(block_on(ctx.done()), Error::DeadlineExceeded);
    assert_eq!(ctx.cause().unwrap().to_string(), "slow");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "StdClock's timer thread outlives the test, which Miri rejects; its leak check matters more"
)]
fn std_clock_is_monotonic_and_cancelled_timeouts_do_not_fire_later() {
    let clock = cancel_tree::StdClock;
    let a = clock.now();
    let b = clock.now();
    assert!(b >= a);
    let (ctx, h) = Context::background().with_timeout(Duration::from_millis(10));
    h.cancel();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

/// Without threads (wasm32-wasip1) StdClock starts no thread of its own:
/// the blocking waits fire its deadlines while they sleep, and so can a
/// loop of the caller's.
#[test]
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
fn std_clock_without_threads() {
    use cancel_tree::{Clock, StdClock};
    let start = std::time::Instant::now();
    let (ctx, _h) = Context::background().with_timeout(Duration::from_millis(20));
    // A wait that ends first leaves the deadline pending.
    assert_eq!(ctx.wait_timeout(Duration::from_millis(1)), None);
    assert_eq!(ctx.err(), None);
    assert_eq!(
        ctx.wait_timeout(Duration::from_secs(10)),
        Some(Error::DeadlineExceeded)
    );
    assert!(start.elapsed() >= Duration::from_millis(20), "never early");
    // `wait` has no limit of its own: the deadline ends it.
    let (ctx, _h) =
        Context::background().with_timeout_cause(Duration::from_millis(5), Cause::msg("slow"));
    assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    assert_eq!(ctx.cause().unwrap().to_string(), "slow");
    // The caller's own loop: sleep until the next deadline, fire.
    let (ctx, _h) = Context::background().with_timeout(Duration::from_millis(5));
    for _ in 0..1_000 {
        if ctx.is_cancelled() {
            break;
        }
        let next = StdClock
            .timers()
            .next_deadline()
            .expect("a pending deadline");
        std::thread::sleep(next - StdClock.now());
        StdClock.timers().fire(&StdClock);
    }
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(StdClock.timers().is_empty());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "StdClock's timer thread outlives the test, which Miri rejects; its leak check matters more"
)]
#[cfg_attr(target_family = "wasm", ignore = "needs threads")]
fn many_real_timeouts_on_many_threads() {
    let ts: Vec<_> = (0..scaled(4))
        .map(|t| {
            std::thread::spawn(move || {
                let ctxs: Vec<_> = (0..scaled(50))
                    .map(|i| {
                        Context::background()
                            .with_timeout(Duration::from_millis(1 + (i as u64 * 7 + t as u64) % 30))
                    })
                    .collect();
                for (c, _) in &ctxs {
                    assert_eq!(
                        c.wait_timeout(Duration::from_secs(20)),
                        Some(Error::DeadlineExceeded)
                    );
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "StdClock's timer thread outlives the test, which Miri rejects; its leak check matters more"
)]
#[cfg_attr(
    target_family = "wasm",
    ignore = "catches a panic: wasm aborts on panic"
)]
fn std_clock_survives_a_panicking_after_func() {
    // Regression (independent review): a panic escaping fire() used to leave
    // the alarm unarmed, so no later deadline on the clock ever fired.
    let (a, _ha) = Context::background().with_timeout(Duration::from_millis(5));
    let _af = a.after_func(|| panic!("after_func panics on the timer thread"));
    assert_eq!(
        a.wait_timeout(Duration::from_secs(10)),
        Some(Error::DeadlineExceeded)
    );
    std::thread::sleep(Duration::from_millis(20));
    let (b, _hb) = Context::background().with_timeout(Duration::from_millis(5));
    assert_eq!(
        b.wait_timeout(Duration::from_secs(10)),
        Some(Error::DeadlineExceeded),
        "the clock stopped"
    );
}

#[test]
#[cfg_attr(
    target_family = "wasm",
    ignore = "catches a panic: wasm aborts on panic"
)]
fn manual_clock_panicking_after_func_propagates_and_the_clock_goes_on() {
    let (clock, root) = tree();
    let (a, _ha) = root.with_timeout(S);
    let (b, _hb) = root.with_timeout(2 * S);
    let _af = a.after_func(|| panic!("boom"));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| clock.advance(S)));
    assert!(res.is_err(), "the panic reaches advance()'s caller");
    assert!(a.is_cancelled());
    clock.advance(S);
    assert_eq!(b.err(), Some(Error::DeadlineExceeded));
    assert_eq!(clock.pending(), 0);
}
