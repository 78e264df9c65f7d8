//! Merged contexts (`Context::merge`, `Context::merge_all`): a context with
//! several parents, cancelled by whichever ends first, with that parent's
//! error and cause; deadline the earliest; values searched first parent
//! first; every parent left when the merged context goes.

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use cancel_tree::{Cause, Context, Error, Instant, ManualClock};

#[derive(Debug, PartialEq)]
struct Tag(&'static str);
impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Tag {}

fn tag(ctx: &Context) -> Option<&'static str> {
    ctx.cause()?.downcast_ref::<Tag>().map(|t| t.0)
}

#[test]
fn the_first_parent_cancels_it_like_any_child() {
    let (a, ca) = Context::background().with_cancel();
    let (b, _cb) = Context::background().with_cancel();
    let (m, _cm) = a.merge(&b);
    let (child, _h) = m.with_cancel();
    assert_eq!(m.err(), None);
    ca.cancel_with(Tag("a went"));
    assert_eq!(m.err(), Some(Error::Canceled));
    assert_eq!(tag(&m), Some("a went"));
    assert_eq!(tag(&child), Some("a went"), "and its descendants");
    assert!(!b.is_cancelled(), "cancellation never flows up");
}

#[test]
fn any_other_parent_cancels_it_with_its_error_and_cause() {
    let (a, _ca) = Context::background().with_cancel();
    let (b, _cb) = Context::background().with_cancel();
    let (c, cc) = Context::background().with_cancel();
    let (m, _cm) = Context::merge_all(&a, [&b, &c]);
    let (grandchild, _g) = m.with_value(1u8).with_cancel();
    cc.cancel_with(Tag("c went"));
    assert_eq!(m.err(), Some(Error::Canceled));
    assert_eq!(tag(&m), Some("c went"));
    assert_eq!(tag(&grandchild), Some("c went"));
    assert!(!a.is_cancelled() && !b.is_cancelled());
}

#[test]
fn a_deadline_parent_ends_it_with_deadline_exceeded_and_its_cause() {
    let clock = ManualClock::new();
    let root = Context::background_with_clock(clock.clone());
    let (a, _ca) = Context::background().with_cancel();
    let (b, _cb) = root.with_timeout_cause(Duration::from_secs(1), Tag("slow backend"));
    let (m, _cm) = a.merge(&b);
    assert_eq!(m.deadline(), b.deadline(), "the earliest deadline");
    clock.advance(Duration::from_secs(1));
    assert_eq!(m.err(), Some(Error::DeadlineExceeded));
    assert_eq!(tag(&m), Some("slow backend"));
}

#[test]
fn the_first_ending_wins() {
    let (a, ca) = Context::background().with_cancel();
    let (b, cb) = Context::background().with_cancel();
    let (m, cm) = a.merge(&b);
    cb.cancel_with(Tag("b first"));
    ca.cancel_with(Tag("a second"));
    cm.cancel_with(Tag("own third"));
    assert_eq!(tag(&m), Some("b first"));
}

#[test]
fn born_cancelled_by_the_first_ended_parent_in_order() {
    let (a, _ca) = Context::background().with_cancel();
    let (b, cb) = Context::background().with_cancel();
    let (c, cc) = Context::background().with_cancel();
    cc.cancel_with(Tag("c"));
    cb.cancel_with(Tag("b"));
    let (m, _cm) = Context::merge_all(&a, [&b, &c]);
    assert_eq!(tag(&m), Some("b"), "argument order decides, not time");
    // Through the first parent too.
    let (m2, _cm2) = b.merge(&a);
    assert_eq!(tag(&m2), Some("b"));
}

#[test]
fn its_own_handle_cancels_only_it() {
    let (a, _ca) = Context::background().with_cancel();
    let (b, _cb) = Context::background().with_cancel();
    let (m, cm) = a.merge(&b);
    drop(cm); // dropping the handle cancels, as for any derivation
    assert_eq!(m.err(), Some(Error::Canceled));
    assert!(!a.is_cancelled() && !b.is_cancelled());
}

#[test]
fn deadline_is_the_earliest_of_all_parents() {
    let clock = ManualClock::new();
    let root = Context::background_with_clock(clock.clone());
    let (a, _a) = root.with_deadline(Instant::from_nanos(500));
    let (b, _b) = root.with_deadline(Instant::from_nanos(300));
    let (c, _c) = root.with_deadline(Instant::from_nanos(400));
    let (m, _m) = Context::merge_all(&a, [&b, &c]);
    assert_eq!(m.deadline(), Some(Instant::from_nanos(300)));
    let (m2, _m2) = Context::merge_all(&b, [&a]);
    assert_eq!(m2.deadline(), Some(Instant::from_nanos(300)));
    // A later deadline under it is a plain child reporting the merged one.
    let (later, _l) = m.with_deadline(Instant::from_nanos(1_000));
    assert_eq!(later.deadline(), Some(Instant::from_nanos(300)));
    // Without any deadline.
    let (x, _x) = Context::background().with_cancel();
    let (m3, _m3) = x.merge(&Context::background());
    assert_eq!(m3.deadline(), None);
    clock.set(Instant::from_nanos(300));
    assert_eq!(later.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn values_first_parent_first_then_the_others_in_order() {
    struct Only(&'static str);
    let a = Context::background().with_value(Tag("a")).with_value(1u8);
    let b = Context::background().with_value(Tag("b")).with_value(2u16);
    let c = Context::background()
        .with_value(Tag("c"))
        .with_value(Only("c"));
    let (m, _m) = Context::merge_all(&a, [&b, &c]);
    assert_eq!(m.value::<Tag>(), Some(&Tag("a")));
    assert_eq!(m.value::<u8>(), Some(&1));
    assert_eq!(m.value::<u16>(), Some(&2));
    assert_eq!(m.value::<Only>().map(|o| o.0), Some("c"));
    assert_eq!(m.value::<u32>(), None);
    // Nested: a merged parent's own parents come before the next parent.
    let d = Context::background().with_value(Tag("d")).with_value(3u32);
    let (inner, _i) = b.merge(&c);
    let (outer, _o) = Context::merge_all(&inner, [&d]);
    assert_eq!(outer.value::<Tag>(), Some(&Tag("b")));
    assert_eq!(outer.value::<Only>().map(|o| o.0), Some("c"));
    assert_eq!(outer.value::<u32>(), Some(&3));
}

#[test]
fn parents_that_can_never_end_add_nothing() {
    let (a, ca) = Context::background().with_cancel();
    let root = Context::background().with_value(7u8);
    let (m, _m) = Context::merge_all(&a, [&root, &root.without_cancel()]);
    assert_eq!(m.value::<u8>(), Some(&7));
    ca.cancel();
    assert_eq!(m.err(), Some(Error::Canceled));
    // Only never-ending parents: only its handle ends it.
    let (never, cn) = Context::background().merge(&Context::todo());
    assert_eq!(never.err(), None);
    cn.cancel();
    assert_eq!(never.err(), Some(Error::Canceled));
}

#[test]
fn merging_a_context_with_itself_or_its_child() {
    let (a, ca) = Context::background().with_cancel();
    let (child, _c) = a.with_cancel();
    let (m, _m) = Context::merge_all(&a, [&a, &child]);
    ca.cancel_with(Tag("a"));
    assert_eq!(tag(&m), Some("a"));
}

#[test]
fn done_is_woken_by_another_parents_cancel() {
    let (a, _ca) = Context::background().with_cancel();
    let (b, cb) = Context::background().with_cancel();
    let (m, _cm) = a.merge(&b);
    let (woke, waker) = common::counting_waker();
    let mut done = pin!(m.done());
    assert!(
        done.as_mut()
            .poll(&mut TaskContext::from_waker(&waker))
            .is_pending()
    );
    cb.cancel();
    assert_eq!(common::wakes(&woke), 1);
    assert_eq!(
        done.as_mut().poll(&mut TaskContext::from_waker(&waker)),
        Poll::Ready(Error::Canceled)
    );
}

#[test]
fn after_func_runs_when_another_parent_ends() {
    let (a, _ca) = Context::background().with_cancel();
    let (b, cb) = Context::background().with_cancel();
    let (m, _cm) = a.merge(&b);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let _af = m.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    cb.cancel();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "before the parent's cancel returned"
    );
}

#[test]
fn a_custom_cause_is_shared_not_copied() {
    let (a, _ca) = Context::background().with_cancel();
    let (b, cb) = Context::background().with_cancel();
    let (m, _cm) = a.merge(&b);
    cb.cancel_with(Cause::new(Tag("shared")));
    assert_eq!(m.cause(), b.cause());
}

#[test]
fn debug_names_the_merge() {
    let (a, _ca) = Context::background().with_cancel();
    let (m, _cm) = a.merge(&Context::background());
    assert_eq!(
        format!("{m:?}"),
        "Context(background.with_cancel.merge, live)"
    );
}

#[test]
fn dropping_a_merged_context_frees_parents_it_alone_kept() {
    struct Drops(Arc<AtomicUsize>);
    impl Drop for Drops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let (a, ca) = Context::background()
        .with_value(Drops(dropped.clone()))
        .with_cancel();
    let (b, cb) = Context::background()
        .with_value(Drops(dropped.clone()))
        .with_cancel();
    let (m, cm) = a.merge(&b);
    drop((a, b, ca, cb));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        0,
        "the merged context holds both"
    );
    assert!(m.is_cancelled(), "the parents' handles cancelled it");
    drop((m, cm));
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "both freed with it");
}

#[test]
#[cfg_attr(miri, ignore = "many threads and iterations: native only")]
#[cfg_attr(target_family = "wasm", ignore = "needs threads")]
fn parents_cancel_while_merged_contexts_come_and_go() {
    for round in 0..200 {
        let (a, ca) = Context::background().with_cancel();
        let (b, cb) = Context::background().with_cancel();
        let (a2, b2) = (a.clone(), b.clone());
        let churn = std::thread::spawn(move || {
            for _ in 0..50 {
                let (m, cm) = a2.merge(&b2);
                let (k, _k) = m.with_cancel();
                drop(m);
                drop(cm);
                drop(k);
            }
        });
        let (kept, _kh) = a.merge(&b);
        if round % 2 == 0 {
            cb.cancel_with(Tag("b"));
        } else {
            ca.cancel_with(Tag("a"));
        }
        churn.join().unwrap();
        let want = if round % 2 == 0 { "b" } else { "a" };
        assert_eq!(tag(&kept), Some(want));
    }
}

/// Value lookup through merged contexts whose parents share ancestors (a
/// diamond per level) must not revisit those ancestors once per path: the
/// depth-first search would take 2^levels steps for a value that is absent.
#[test]
#[cfg_attr(target_family = "wasm", ignore = "needs a watchdog thread")]
fn value_lookup_through_diamonds_is_not_exponential() {
    const LEVELS: usize = 48;
    let mut ctx = Context::background().with_value(0u8);
    let mut handles = Vec::new();
    for _ in 0..LEVELS {
        let (m, h) = ctx.merge(&ctx);
        handles.push(h);
        ctx = m;
    }
    // Found at once (first parent chain), as before.
    assert_eq!(ctx.value::<u8>(), Some(&0));
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = ctx.clone();
    std::thread::spawn(move || {
        let _ = tx.send(probe.value::<u32>().is_none());
    });
    let absent = rx
        .recv_timeout(Duration::from_secs(if cfg!(miri) { 600 } else { 10 }))
        .expect("lookup of an absent value through 48 diamonds did not finish in 10 s");
    assert!(absent);
}

/// A custom cause whose `Drop` panics, dropped with the merged context it
/// ended: the panic goes on, but the merged context's other parents are
/// still given back (as its first parent is), not leaked.
#[test]
#[cfg_attr(target_family = "wasm", ignore = "catches a panic (wasm aborts)")]
fn a_panicking_cause_drop_does_not_leak_the_other_parents() {
    #[derive(Debug)]
    struct Bomb;
    impl std::fmt::Display for Bomb {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bomb")
        }
    }
    impl std::error::Error for Bomb {}
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("cause drop panics");
        }
    }
    struct Drops(Arc<AtomicUsize>);
    impl Drop for Drops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let (a, ah) = Context::background()
        .with_value(Drops(dropped.clone()))
        .with_cancel();
    let (b, bh) = Context::background()
        .with_value(Drops(dropped.clone()))
        .with_cancel();
    let (m, mh) = a.merge(&b);
    mh.cancel_with(Bomb);
    drop((a, ah, b, bh));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        0,
        "the merged context holds both"
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop((m, mh))));
    assert!(r.is_err(), "the cause's panic goes on");
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "both parents given back");
}

/// `merge_all` runs the caller's iterator; if it panics half way, the
/// references already taken on the parents it yielded are given back.
#[test]
#[cfg_attr(target_family = "wasm", ignore = "catches a panic (wasm aborts)")]
fn a_panicking_parents_iterator_leaks_no_parent() {
    struct Drops(Arc<AtomicUsize>);
    impl Drop for Drops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    struct ThenPanic<'a>(Option<&'a Context>);
    impl<'a> Iterator for ThenPanic<'a> {
        type Item = &'a Context;
        fn next(&mut self) -> Option<&'a Context> {
            match self.0.take() {
                Some(c) => Some(c),
                None => panic!("the parents' iterator panics"),
            }
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let (a, ah) = Context::background().with_cancel();
    let (b, bh) = Context::background()
        .with_value(Drops(dropped.clone()))
        .with_cancel();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Context::merge_all(&a, ThenPanic(Some(&b)))
    }));
    assert!(r.is_err());
    drop((a, ah, b, bh));
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "b was not leaked");
}

/// Another parent's walk has claimed the merged context (it is queued on
/// that cancel, not cancelled yet) when a second parent is cancelled: when
/// the cancel that ended the second parent returns, the merged context must
/// report cancelled (as `merge_all` documents), not wait for the first
/// walk to finish its callbacks. Here the first walk's next callback is the
/// one that cancels the second parent.
#[test]
fn a_parent_cancel_returns_with_the_merged_context_cancelled_even_if_another_walk_claimed_it() {
    let (a, _ah) = Context::background().with_cancel();
    let (b, bh) = Context::background().with_cancel();
    let (c, ch) = Context::background().with_cancel();
    let seen = Arc::new(AtomicUsize::new(0));
    let m_slot: Arc<std::sync::Mutex<Option<Context>>> = Arc::default();
    let (s, slot) = (seen.clone(), m_slot.clone());
    // Registered before the merge: the merged context's entry is pushed in
    // front of it, so c's walk claims the merged context first, then runs
    // this.
    let _f = c.after_func(move || {
        bh.cancel(); // ends b; b's walk finds the merged context claimed
        let m = slot.lock().unwrap();
        let cancelled = m.as_ref().unwrap().is_cancelled();
        s.store(if cancelled { 1 } else { 2 }, Ordering::SeqCst);
    });
    let (m, _mh) = Context::merge_all(&a, [&b, &c]);
    *m_slot.lock().unwrap() = Some(m.clone());
    ch.cancel();
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "when b's cancel returned, the merged context was not cancelled"
    );
    assert!(m.is_cancelled());
    drop(b);
}
