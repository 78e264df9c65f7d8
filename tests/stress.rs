//! Multi-thread stress: the races Go's tests name (TestSimultaneousCancels,
//! TestInterlockedCancels, TestCauseRace) and the ones other tokens shipped
//! bugs for (lost wake-ups, non-atomic subtree cancel).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::Poll;
use std::thread;

use cancel_tree::{Context, Error};
use common::*;

const ROUNDS: usize = scaled(200);

#[test]
fn simultaneous_cancels() {
    // Many contexts cancelled at once from many threads; every waiter wakes.
    for _ in 0..scaled(20) {
        let (root, cancel) = Context::background().with_cancel();
        let mut handles = Vec::new();
        let mut ctxs = Vec::new();
        for _ in 0..scaled(64) {
            let (c, h) = root.with_cancel();
            ctxs.push(c);
            handles.push(h);
        }
        let barrier = Arc::new(Barrier::new(5));
        let waits: Vec<_> = ctxs
            .iter()
            .cloned()
            .map(|c| thread::spawn(move || c.wait()))
            .collect();
        let chunks: Vec<Vec<_>> = {
            let mut v = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
            for (i, h) in handles.into_iter().enumerate() {
                v[i % 4].push(h);
            }
            v
        };
        let cancellers: Vec<_> = chunks
            .into_iter()
            .map(|hs| {
                let b = barrier.clone();
                thread::spawn(move || {
                    b.wait();
                    for h in hs {
                        h.cancel();
                    }
                })
            })
            .collect();
        barrier.wait();
        cancel.cancel();
        for c in cancellers {
            c.join().unwrap();
        }
        for w in waits {
            assert_eq!(w.join().unwrap(), Error::Canceled);
        }
        assert!(ctxs.iter().all(Context::is_cancelled));
    }
}

#[test]
fn interlocked_cancels() {
    // Go: parent's Done cancels the child, from an after_func.
    let (parent, pcancel) = Context::background().with_cancel();
    let (child, ccancel) = parent.with_cancel();
    let _s = parent.after_func(move || ccancel.cancel());
    pcancel.cancel();
    assert!(child.is_cancelled());
}

#[test]
fn when_cancel_returns_every_descendant_is_cancelled_even_racing_a_child_cancel() {
    // Thread A cancels a child (a big subtree); thread B cancels the root.
    // Whichever returns, its subtree must already report cancelled.
    for _ in 0..ROUNDS {
        let (root, rcancel) = Context::background().with_cancel();
        let (child, ccancel) = root.with_cancel();
        let mut leaves = Vec::new();
        let mut hs = Vec::new();
        let mut cur = child.clone();
        for _ in 0..scaled(200) {
            let (c, h) = cur.with_cancel();
            leaves.push(c.clone());
            hs.push(h);
            cur = c;
        }
        let leaves = Arc::new(leaves);
        let barrier = Arc::new(Barrier::new(2));
        let (l2, b2) = (leaves.clone(), barrier.clone());
        let t = thread::spawn(move || {
            b2.wait();
            ccancel.cancel();
            assert!(
                l2.iter().all(Context::is_cancelled),
                "child's cancel returned early"
            );
        });
        barrier.wait();
        rcancel.cancel();
        assert!(
            leaves.iter().all(Context::is_cancelled),
            "root's cancel returned early"
        );
        t.join().unwrap();
        drop(hs);
    }
}

#[test]
fn concurrent_cancel_with_different_causes_one_wins_everywhere() {
    // Go's TestCauseRace: the first non-None cause anyone sees is the final one.
    for _ in 0..ROUNDS {
        let (ctx, cancel) = Context::background().with_cancel();
        let (child, _h) = ctx.with_cancel();
        let cancel = Arc::new(cancel);
        let barrier = Arc::new(Barrier::new(3));
        let ts: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|tag| {
                let (c, b) = (cancel.clone(), barrier.clone());
                thread::spawn(move || {
                    b.wait();
                    c.cancel_with(MyErr(tag));
                })
            })
            .collect();
        barrier.wait();
        let mut first = None;
        loop {
            if let Some(c) = child.cause() {
                first.get_or_insert(c);
            }
            if ts.iter().all(|t| t.is_finished()) {
                break;
            }
        }
        for t in ts {
            t.join().unwrap();
        }
        let final_cause = ctx.cause().unwrap();
        assert!(child.cause().unwrap().ptr_eq(&final_cause));
        if let Some(f) = first {
            assert!(
                f.ptr_eq(&final_cause),
                "a reader saw a cause that did not win"
            );
        }
    }
}

#[test]
fn err_implies_cause_and_done() {
    // Go #75533: once err() is Some, cause() is the real cause and done() ready.
    for _ in 0..ROUNDS {
        let (ctx, cancel) = Context::background().with_cancel();
        let (child, _h) = ctx.with_cancel();
        let t = thread::spawn(move || cancel.cancel_with(MyErr("real")));
        let (_, waker) = counting_waker();
        loop {
            if child.err().is_some() {
                let c = child.cause().expect("cause set once err is");
                assert_eq!(c.downcast_ref::<MyErr>(), Some(&MyErr("real")));
                let mut d = std::pin::pin!(child.done());
                assert!(matches!(
                    poll_once(d.as_mut(), &waker),
                    Poll::Ready(Error::Canceled)
                ));
                break;
            }
        }
        t.join().unwrap();
    }
}

#[test]
fn no_lost_wakeups_between_register_and_cancel() {
    // A waiter registers while another thread cancels: it is woken exactly
    // once, or sees the cancellation on its poll.
    for _ in 0..scaled(2000) {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c, waker) = counting_waker();
        let t = thread::spawn(move || cancel.cancel());
        let mut d = Box::pin(ctx.done());
        let first = poll_once(d.as_mut(), &waker);
        t.join().unwrap();
        match first {
            Poll::Ready(_) => {}
            Poll::Pending => assert_eq!(wakes(&c), 1, "lost wake-up"),
        }
        assert!(matches!(poll_once(d.as_mut(), &waker), Poll::Ready(_)));
    }
}

#[test]
fn repoll_with_new_waker_races_cancel() {
    for _ in 0..scaled(1000) {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c1, w1) = counting_waker();
        let (c2, w2) = counting_waker();
        let mut d = Box::pin(ctx.done());
        assert!(poll_once(d.as_mut(), &w1).is_pending());
        let t = thread::spawn(move || cancel.cancel());
        let second = poll_once(d.as_mut(), &w2);
        t.join().unwrap();
        if second.is_pending() {
            assert_eq!(wakes(&c1) + wakes(&c2), 1);
            assert_eq!(wakes(&c2), 1, "the latest waker must be woken");
        }
    }
}

#[test]
fn drop_done_while_cancelling() {
    for _ in 0..scaled(1000) {
        let (ctx, cancel) = Context::background().with_cancel();
        let (_, w) = counting_waker();
        let mut ds: Vec<_> = (0..8).map(|_| Box::pin(ctx.done())).collect();
        for d in &mut ds {
            assert!(poll_once(d.as_mut(), &w).is_pending());
        }
        let t = thread::spawn(move || cancel.cancel());
        drop(ds);
        t.join().unwrap();
    }
}

#[test]
fn derive_and_drop_children_while_parent_cancels() {
    for _ in 0..scaled(100) {
        let (root, cancel) = Context::background().with_cancel();
        let stop = Arc::new(AtomicBool::new(false));
        let born_live_after = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (root, stop, bad) = (root.clone(), stop.clone(), born_live_after.clone());
                thread::spawn(move || {
                    let mut kept = Vec::new();
                    while !stop.load(Ordering::Acquire) {
                        let was = root.is_cancelled();
                        let (c, h) = root.with_cancel();
                        if was && !c.is_cancelled() {
                            bad.fetch_add(1, Ordering::SeqCst);
                        }
                        if kept.len() < 50 {
                            kept.push((c, h));
                        } else {
                            kept.clear();
                        }
                    }
                    // every kept child ends up cancelled
                    assert!(kept.iter().all(|(c, _)| c.is_cancelled()));
                })
            })
            .collect();
        thread::sleep(std::time::Duration::from_micros(200));
        cancel.cancel();
        stop.store(true, Ordering::Release);
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(born_live_after.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn after_func_stop_races_cancel_exactly_one_outcome() {
    for _ in 0..scaled(2000) {
        let (ctx, cancel) = Context::background().with_cancel();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let af = ctx.after_func(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let t = thread::spawn(move || cancel.cancel());
        let stopped = af.stop();
        t.join().unwrap();
        assert_eq!(usize::from(stopped) + ran.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn clones_dropped_on_many_threads() {
    let (root, cancel) = Context::background().with_cancel();
    let (ctx, h) = root.with_value(5u64).with_cancel();
    let ts: Vec<_> = (0..4)
        .map(|_| {
            let c = ctx.clone();
            thread::spawn(move || {
                for _ in 0..scaled(10_000) {
                    let x = c.clone();
                    assert_eq!(x.value::<u64>(), Some(&5));
                    drop(x);
                }
            })
        })
        .collect();
    drop(ctx);
    for t in ts {
        t.join().unwrap();
    }
    drop(h);
    cancel.cancel();
}

/// Regression (independent review): a parent's walk that drops the last
/// reference on an already-ended child used to free it in phase 1, running
/// user `Drop` code (here a value holding a `CancelHandle` of a node the walk
/// was still flagging), which then waited forever on the walk. Releases are
/// now deferred until the subtree is flagged.
#[test]
fn user_drop_code_run_by_a_walk_may_cancel_nodes_of_that_walk() {
    struct Holder(#[allow(dead_code)] cancel_tree::CancelHandle);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let start = std::time::Instant::now();
        let budget = std::time::Duration::from_secs(if cfg!(miri) { 0 } else { 15 });
        let mut rounds = 0;
        while rounds < 2 || start.elapsed() < budget {
            rounds += 1;
            let (s, hs) = Context::background().with_cancel();
            let mut ended = Vec::new();
            for _ in 0..scaled(200) {
                let (y, hy) = s.with_cancel();
                let v = y.with_value(Holder(hy));
                let (e, he) = v.with_cancel();
                he.cancel(); // ended leaf, still linked under y
                drop((he, v, y));
                ended.push(e);
            }
            let barrier = Arc::new(Barrier::new(2));
            let b2 = barrier.clone();
            let t = thread::spawn(move || {
                b2.wait();
                // Race the walk for the last reference, at varied offsets.
                for (i, e) in ended.into_iter().enumerate() {
                    for _ in 0..(i % 50) {
                        std::hint::spin_loop();
                    }
                    drop(e);
                }
            });
            barrier.wait();
            hs.cancel();
            t.join().unwrap();
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("a cancel walk deadlocked");
}

/// Counts drops of the value it is stored as.
struct Drops(Arc<AtomicUsize>);
impl Drop for Drops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn many_threads_deriving_from_one_parent_which_then_goes() {
    // Threads hammer one parent (its child list gets sharded), keep some
    // children past the parent's last context and handle, and the parent is
    // cancelled midway. Every child kept is cancelled; the parent, and the
    // value node above it, is freed exactly once, after the last child.
    for round in 0..scaled(20) {
        let dropped = Arc::new(AtomicUsize::new(0));
        let v = Context::background().with_value(Drops(dropped.clone()));
        let (parent, cancel) = v.with_cancel();
        drop(v);
        let barrier = Arc::new(Barrier::new(5));
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let parent = parent.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    let mut kept = Vec::new();
                    for i in 0..scaled(2_000) {
                        let (c, h) = parent.with_cancel();
                        match (i + t) % 4 {
                            0 => kept.push((c, h)),
                            1 => h.detach(),
                            2 => drop((c, h)),
                            _ => {
                                let (g, gh) = c.with_cancel();
                                drop(c);
                                drop(h);
                                kept.push((g, gh));
                            }
                        }
                    }
                    kept
                })
            })
            .collect();
        barrier.wait();
        if round % 2 == 0 {
            thread::yield_now();
            cancel.cancel();
            drop(cancel);
        } else {
            drop(cancel);
        }
        drop(parent);
        let kept: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert!(kept.iter().all(|(c, _)| c.is_cancelled()));
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            0,
            "freed while children live"
        );
        drop(kept);
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "freed exactly once");
    }
}
