//! Loom models of every race that matters (run: `RUSTFLAGS="--cfg cancel_tree_loom"
//! LOOM_MAX_PREEMPTIONS=3 cargo test --release --test loom`).
//!
//! Each model explores all interleavings (up to the preemption bound) of a
//! small scenario and asserts the invariant `docs/design.md` names for it.
#![cfg(cancel_tree_loom)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc as StdArc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Duration;

use cancel_tree::{Clock, Context, Error, ManualClock};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// A waker that counts wakes in a loom atomic.
struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: StdArc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &StdArc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
fn waker() -> (StdArc<Count>, Waker) {
    let c = StdArc::new(Count(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}
/// Polls `f` once with `w`.
fn poll<F: Future>(f: Pin<&mut F>, w: &Waker) -> Poll<F::Output> {
    f.poll(&mut TaskContext::from_waker(w))
}

fn wakes(c: &Count) -> usize {
    c.0.load(Ordering::SeqCst)
}

#[derive(Debug)]
struct Tag(u8);
impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tag {}", self.0)
    }
}
impl std::error::Error for Tag {}

fn tag_of(ctx: &Context) -> Option<u8> {
    ctx.cause()
        .and_then(|c| c.downcast_ref::<Tag>().map(|t| t.0))
}

/// Invariant W1 (no lost wake-up): a `Done` that returned Pending is woken
/// exactly once by a concurrent cancel; one that saw the flag is Ready.
#[test]
fn cancel_vs_done_registration() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let t = thread::spawn(move || cancel.cancel());
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        let first = poll(done.as_mut(), &w);
        t.join().unwrap();
        match first {
            Poll::Pending => assert_eq!(wakes(&c), 1, "lost wake-up"),
            Poll::Ready(e) => {
                assert_eq!(e, Error::Canceled);
                assert_eq!(wakes(&c), 0);
            }
        }
        assert!(poll(done.as_mut(), &w).is_ready());
    });
}

/// Invariant W2: re-polling with a new waker while a cancel runs wakes the
/// latest waker (or returns Ready), never only the stale one.
#[test]
fn repoll_new_waker_vs_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c1, w1) = waker();
        let (c2, w2) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w1).is_pending());
        let t = thread::spawn(move || cancel.cancel());
        let second = poll(done.as_mut(), &w2);
        t.join().unwrap();
        if second.is_pending() {
            assert_eq!(wakes(&c2), 1, "the latest waker must be woken");
            assert_eq!(wakes(&c1), 0);
        } else {
            assert!(wakes(&c1) + wakes(&c2) <= 1);
        }
    });
}

/// Invariant W3 (no use after free): a `Done` dropped while a cancel walks
/// the waiter list.
#[test]
fn drop_done_vs_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (_c, w) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w).is_pending());
        let t = thread::spawn(move || cancel.cancel());
        drop(done);
        t.join().unwrap();
        assert!(ctx.is_cancelled());
    });
}

/// Invariant T1: a child derived while its parent is being cancelled ends
/// cancelled with the parent's cause (linked before the flag, or born
/// cancelled after it).
#[test]
fn cancel_vs_derive_child() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let t = thread::spawn(move || cancel.cancel_with(Tag(7)));
        let (child, _h) = parent.with_cancel();
        t.join().unwrap();
        assert_eq!(child.err(), Some(Error::Canceled));
        assert_eq!(tag_of(&child), Some(7));
    });
}

/// Invariant T2 (unlink vs walk): a child dropping itself while its parent's
/// cancel walks the child list; no use after free, no leak, siblings reached.
#[test]
fn cancel_vs_child_drop() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (a, ha) = parent.with_cancel();
        let (b, _hb) = parent.with_cancel();
        ha.detach();
        let t = thread::spawn(move || drop(a));
        cancel.cancel();
        t.join().unwrap();
        assert!(b.is_cancelled());
    });
}

/// Invariant C1: two concurrent cancels with different causes: one cause
/// wins, and parent and child agree on it.
#[test]
fn two_cancels_one_cause_everywhere() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, _h) = parent.with_cancel();
        let cancel = Arc::new(cancel);
        let c2 = cancel.clone();
        let t = thread::spawn(move || c2.cancel_with(Tag(1)));
        cancel.cancel_with(Tag(2));
        // Our cancel returned: the child reports cancelled (we won, or we
        // waited for the winner's walk).
        assert!(child.is_cancelled());
        t.join().unwrap();
        let p = tag_of(&parent).unwrap();
        assert_eq!(tag_of(&child), Some(p));
    });
}

/// Invariant C2: when a cancel of the parent returns, a grandchild whose
/// own subtree cancel is racing is already cancelled.
#[test]
fn parent_cancel_vs_child_cancel_completeness() {
    loom::model(|| {
        let (parent, pcancel) = Context::background().with_cancel();
        let (child, ccancel) = parent.with_cancel();
        let (grand, _hg) = child.with_cancel();
        let g2 = grand.clone();
        let t = thread::spawn(move || {
            ccancel.cancel_with(Tag(3));
            assert!(g2.is_cancelled());
        });
        pcancel.cancel_with(Tag(4));
        assert!(
            grand.is_cancelled(),
            "parent's cancel returned before the subtree was flagged"
        );
        t.join().unwrap();
        assert_eq!(tag_of(&grand), tag_of(&child));
    });
}

/// Invariant A1: `after_func` stop() vs cancel: exactly one of "ran" and
/// "stopped".
#[test]
fn after_func_stop_vs_cancel() {
    loom::model(|| {
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
    });
}

/// Invariant D1: a deadline firing vs a cancel: one ending wins, err and
/// cause agree, and the timer leaves the queue.
#[test]
fn deadline_fire_vs_cancel() {
    loom::model(|| {
        let clock = ManualClock::new();
        let root = Context::background_with_clock(clock.clone());
        let (ctx, cancel) = root.with_timeout(Duration::from_nanos(10));
        let c2 = clock.clone();
        let t = thread::spawn(move || c2.advance(Duration::from_nanos(10)));
        cancel.cancel_with(Tag(9));
        t.join().unwrap();
        match ctx.err() {
            Some(Error::Canceled) => assert_eq!(tag_of(&ctx), Some(9)),
            Some(Error::DeadlineExceeded) => {
                assert_eq!(ctx.cause().unwrap(), Error::DeadlineExceeded)
            }
            None => panic!("not ended"),
        }
        assert_eq!(clock.pending(), 0);
    });
}

/// Invariant D2: a timeout dropped (all handles gone) while the clock fires
/// it: no use after free, queue empty afterwards.
#[test]
fn deadline_fire_vs_drop() {
    loom::model(|| {
        let clock = ManualClock::new();
        let root = Context::background_with_clock(clock.clone());
        let (ctx, h) = root.with_timeout(Duration::from_nanos(10));
        h.detach();
        let c2 = clock.clone();
        let t = thread::spawn(move || c2.advance(Duration::from_nanos(10)));
        drop(ctx);
        t.join().unwrap();
        assert_eq!(clock.pending(), 0);
    });
}

/// The timing wheel (timer queue, invariant 3): two deadlines in one far
/// slot, drained by `fire` one entry per lock hold (one ends, the other
/// moves down a level in between), while another thread cancels the second
/// and derives a new timeout (inserted while the slot is being drained).
/// Every context ends once, as it should; nothing stays queued that ended.
#[test]
fn wheel_drain_vs_cancel_and_insert() {
    loom::model(|| {
        let clock = ManualClock::new();
        let root = Context::background_with_clock(clock.clone());
        // 64 and 70 ns share a level-1 slot; 70 needs a second step.
        let (a, _ha) = root.with_timeout(Duration::from_nanos(64));
        let (b, hb) = root.with_timeout(Duration::from_nanos(70));
        let c2 = clock.clone();
        let t = thread::spawn(move || c2.advance(Duration::from_nanos(100)));
        hb.cancel();
        let (c, _hc) = root.with_timeout(Duration::from_nanos(3));
        t.join().unwrap();
        assert_eq!(a.err(), Some(Error::DeadlineExceeded));
        assert!(b.is_cancelled(), "cancelled or expired");
        // `c` was derived at 0 (due at 3: fired by the advance, or queued
        // just after it and due at the next fire) or at 100 (pending).
        if c.err().is_some() {
            assert!(c.deadline().unwrap().as_nanos() <= clock.now().as_nanos());
        }
        assert_eq!(clock.pending(), usize::from(c.err().is_none()));
        clock.advance(Duration::from_nanos(3));
        assert!(c.is_cancelled());
        assert_eq!(clock.pending(), 0);
    });
}

/// The timing wheel: a cancel that empties the slot being drained. `b`
/// (70 ns) is queued before `a` (64 ns), so the drain of their level-1 slot
/// takes `a` first (due: ended, the lock released for its expire) and may
/// leave `b` alone in the slot for the cancel to remove, which must end the
/// drain (`unlink`), or else the wheel stays "draining": its next deadline
/// stuck at the slot's start and an empty wheel no longer jumping to now.
/// (In `wheel_drain_vs_cancel_and_insert` the cancelled entry is taken
/// first, so a removal never empties the drained slot there.)
#[test]
fn wheel_cancel_empties_the_drained_slot() {
    loom::model(|| {
        let clock = ManualClock::new();
        let root = Context::background_with_clock(clock.clone());
        let (b, hb) = root.with_timeout(Duration::from_nanos(70));
        let (a, _ha) = root.with_timeout(Duration::from_nanos(64));
        let c2 = clock.clone();
        let t = thread::spawn(move || c2.advance(Duration::from_nanos(100)));
        hb.cancel();
        t.join().unwrap();
        assert_eq!(a.err(), Some(Error::DeadlineExceeded));
        assert!(b.is_cancelled());
        assert_eq!(clock.pending(), 0);
        // Not draining any more: a new deadline is armed exactly.
        let (c, _hc) = root.with_timeout(Duration::from_nanos(5));
        assert_eq!(
            clock.timers().next_deadline(),
            Some(cancel_tree::Instant::from_nanos(105))
        );
        clock.advance(Duration::from_nanos(5));
        assert!(c.is_cancelled());
        assert_eq!(clock.pending(), 0);
    });
}

/// The timing wheel: two threads fire the same clock at once (a clock's
/// alarm and a blocking wait, say) over equal deadlines: each ends exactly
/// once and the queue ends empty. (`set` fires too.)
#[test]
fn wheel_two_fires_equal_deadlines() {
    loom::model(|| {
        let clock = ManualClock::new();
        let root = Context::background_with_clock(clock.clone());
        let (a, _ha) = root.with_timeout(Duration::from_nanos(40));
        let (b, _hb) = root.with_timeout(Duration::from_nanos(40));
        let wakes = Arc::new(AtomicUsize::new(0));
        let afs: Vec<_> = [&a, &b]
            .into_iter()
            .map(|c| {
                let w = wakes.clone();
                c.after_func(move || {
                    w.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let c2 = clock.clone();
        let t = thread::spawn(move || c2.set(cancel_tree::Instant::from_nanos(40)));
        clock.timers().fire(&clock);
        t.join().unwrap();
        assert_eq!(a.err(), Some(Error::DeadlineExceeded));
        assert_eq!(b.err(), Some(Error::DeadlineExceeded));
        assert_eq!(wakes.load(Ordering::SeqCst), 2, "each ended once");
        assert_eq!(clock.pending(), 0);
        drop(afs);
    });
}

/// Invariant W1 through a parent: a `Done` on a leaf child registering while
/// the parent's walk flags that leaf (its fast path) is woken or sees the
/// flag.
#[test]
fn parent_cancel_vs_leaf_child_done_registration() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, _h) = parent.with_cancel();
        let t = thread::spawn(move || cancel.cancel());
        let (c, w) = waker();
        let mut done = Box::pin(child.done());
        let first = poll(done.as_mut(), &w);
        t.join().unwrap();
        if first.is_pending() {
            assert_eq!(wakes(&c), 1, "lost wake-up through the parent");
        }
        assert!(child.is_cancelled());
    });
}

/// A timeout's own handle cancels it (deadline fast path: flag, then leave
/// the queue) while the clock fires it.
#[test]
fn deadline_leaf_cancel_vs_fire_queue_empty() {
    loom::model(|| {
        let clock = ManualClock::new();
        let root = Context::background_with_clock(clock.clone());
        let (ctx, cancel) = root.with_timeout(Duration::from_nanos(5));
        let c2 = clock.clone();
        let t = thread::spawn(move || c2.advance(Duration::from_nanos(5)));
        cancel.cancel();
        assert_eq!(
            clock.pending(),
            0,
            "a cancelled timeout leaves the queue before cancel returns"
        );
        t.join().unwrap();
        assert!(ctx.is_cancelled());
    });
}

/// A handle dropped as the last reference (its cancel is skipped, the node
/// is freed) racing the parent's walk that pops that node.
#[test]
fn last_handle_drop_vs_parent_walk() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (a, ha) = parent.with_cancel();
        let (b, _hb) = parent.with_cancel();
        drop(a);
        let t = thread::spawn(move || drop(ha));
        cancel.cancel();
        t.join().unwrap();
        assert!(b.is_cancelled());
    });
}

/// Regression (independent review): a timeout derived while its parent is
/// cancelled must not leave a stale queue entry, and the walk that reads
/// "maybe queued" must not race its write.
#[test]
fn derive_timeout_vs_parent_cancel() {
    loom::model(|| {
        let clock = ManualClock::new();
        let root = Context::background_with_clock(clock.clone());
        let (parent, pcancel) = root.with_cancel();
        let t = thread::spawn(move || pcancel.cancel());
        let (child, _h) = parent.with_timeout(Duration::from_nanos(10));
        t.join().unwrap();
        assert!(child.is_cancelled());
        assert_eq!(clock.pending(), 0, "stale queue entry");
    });
}

/// A leaf cancelling itself (fast path) while its parent's walk meets it:
/// both cancels return with the leaf cancelled, one cause everywhere.
#[test]
fn leaf_fast_cancel_vs_parent_cancel() {
    loom::model(|| {
        let (parent, pcancel) = Context::background().with_cancel();
        let (child, ccancel) = parent.with_cancel();
        let c2 = child.clone();
        let t = thread::spawn(move || {
            ccancel.cancel_with(Tag(1));
            assert!(c2.is_cancelled());
        });
        pcancel.cancel_with(Tag(2));
        assert!(child.is_cancelled());
        t.join().unwrap();
        assert!(matches!(tag_of(&child), Some(1) | Some(2)));
    });
}

/// Counts drops of the value it is stored as (to see a node freed exactly
/// once: the value's node is freed when its last child goes).
struct Drops(Arc<AtomicUsize>);
impl Drop for Drops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A cancellable scope under a value node that counts its own drop: the
/// count turns 1 when the scope (which holds the value node) is freed.
fn counted_scope() -> (Context, cancel_tree::CancelHandle, Arc<AtomicUsize>) {
    let dropped = Arc::new(AtomicUsize::new(0));
    let v = Context::background().with_value(Drops(dropped.clone()));
    let (scope, handle) = v.with_cancel();
    (scope, handle, dropped)
}

/// A handle dropped while its context lives (the lock-free end-and-release
/// in one step) racing the parent's walk flagging the same leaf without its
/// lock: the leaf ends once, with the right error, and is freed once.
#[test]
fn leaf_end_and_release_vs_parent_walk() {
    loom::model(|| {
        let dropped = Arc::new(AtomicUsize::new(0));
        let (parent, pcancel) = Context::background().with_cancel();
        let (child, ch) = parent.with_cancel();
        let holder = child.with_value(Drops(dropped.clone()));
        drop(child);
        let t = thread::spawn(move || drop(ch));
        pcancel.cancel();
        t.join().unwrap();
        assert!(holder.is_cancelled());
        assert_eq!(holder.err(), Some(Error::Canceled));
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(holder);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

/// A custom cause that counts its drops.
#[derive(Debug)]
struct CountedCause(Arc<AtomicUsize>);
impl std::fmt::Display for CountedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("counted")
    }
}
impl std::error::Error for CountedCause {}
impl Drop for CountedCause {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Where the dying leaf sits, for [`custom_cause_walk_vs_free`].
#[derive(Clone, Copy)]
enum Leaf {
    /// In its parent scope's own list.
    OwnList,
    /// In a shard of its parent (the free's word is loaded under the
    /// shard's lock).
    Shard,
    /// Under a value node under the scope (derived with `acquire == false`;
    /// its free takes the scope's lock and keeps the value node's
    /// reference).
    UnderValue,
}

/// A walk with a custom cause may write it into a leaf whose last
/// reference has just gone (under the lock of the leaf's list, before the
/// leaf's free takes that lock). The free reads `CAUSE_CUSTOM` from the word
/// it loads under that lock, not from its last decrement: the cause is
/// released exactly once, never leaked.
fn custom_cause_walk_vs_free(leaf: Leaf) {
    loom::model(move || {
        let dropped = Arc::new(AtomicUsize::new(0));
        let (parent, pcancel) = Context::background().with_cancel();
        let (child, ch) = match leaf {
            Leaf::OwnList => parent.with_cancel(),
            Leaf::Shard => {
                cancel_tree::__loom_hooks::install_shards(&parent);
                parent.with_cancel()
            }
            Leaf::UnderValue => parent.with_value(5u8).with_cancel(),
        };
        ch.detach();
        let t = thread::spawn(move || drop(child));
        pcancel.cancel_with(CountedCause(dropped.clone()));
        t.join().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(parent);
        drop(pcancel);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn custom_cause_walk_vs_leaf_free() {
    custom_cause_walk_vs_free(Leaf::OwnList);
}

#[test]
fn custom_cause_walk_vs_sharded_leaf_free() {
    custom_cause_walk_vs_free(Leaf::Shard);
}

#[test]
fn custom_cause_walk_vs_leaf_under_value_free() {
    custom_cause_walk_vs_free(Leaf::UnderValue);
}

/// The sharded leaf's free racing the parent's walk and then the
/// parent's collapse (the child may give its reference back through a
/// collapsed shard).
#[test]
fn custom_cause_walk_vs_sharded_leaf_free_collapse() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let dropped = Arc::new(AtomicUsize::new(0));
        let (parent, pcancel) = Context::background().with_cancel();
        cancel_tree::__loom_hooks::install_shards(&parent);
        let (child, ch) = parent.with_cancel();
        ch.detach();
        drop(parent);
        let cause = CountedCause(dropped.clone());
        let t = thread::spawn(move || drop(child));
        pcancel.cancel_with(cause);
        drop(pcancel);
        t.join().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

/// The inlined derive with `acquire == false` (through a value node)
/// racing a custom-cause cancel of the scope: the child ends with the cause.
#[test]
fn cancel_vs_derive_under_value() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let v = parent.with_value(5u8);
        drop(parent);
        let t = thread::spawn(move || cancel.cancel_with(Tag(7)));
        let (child, _h) = v.with_cancel();
        t.join().unwrap();
        assert_eq!(child.err(), Some(Error::Canceled));
        assert_eq!(tag_of(&child), Some(7));
    });
}

/// A walk that flags a child without its lock while another thread derives
/// the child's first child (taking the child's lock, setting HAS_KIDS): the
/// grandchild ends cancelled whichever way it goes.
#[test]
fn walk_flag_vs_first_grandchild() {
    loom::model(|| {
        let (root, rcancel) = Context::background().with_cancel();
        let (child, _ch) = root.with_cancel();
        let t = thread::spawn(move || rcancel.cancel());
        let (grandchild, _gh) = child.with_cancel();
        t.join().unwrap();
        assert!(child.is_cancelled());
        assert!(grandchild.is_cancelled());
        assert_eq!(
            grandchild.cause().and_then(|c| c.as_error()),
            Some(Error::Canceled)
        );
    });
}

/// The last child leaving its parent (unlock and parent release in one
/// step) racing the parent's own last references going: the parent, and so
/// the value node above it, is freed exactly once.
#[test]
fn child_free_vs_parent_free() {
    loom::model(|| {
        let (parent, ph, dropped) = counted_scope();
        let (child, chh) = parent.with_cancel();
        let t = thread::spawn(move || {
            drop(chh);
            drop(child);
        });
        drop(ph);
        drop(parent);
        t.join().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

/// Two threads deriving from one parent at once (one finds the parent's
/// lock taken and installs the shard array), then one cancels the parent
/// while the other may still be linking: every child, in the parent's list
/// or in a shard, ends cancelled.
#[test]
fn concurrent_derives_vs_cancel() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let p2 = parent.clone();
        let t = thread::spawn(move || p2.with_cancel());
        let (c1, _h1) = parent.with_cancel();
        cancel.cancel();
        let (c2, _h2) = t.join().unwrap();
        assert!(c1.is_cancelled());
        assert!(c2.is_cancelled());
    });
}

/// Children in shards outliving every context and handle of their parent:
/// the last release collapses the shard array, and the parent (so the value
/// node above it) is freed exactly once, after the last child.
#[test]
fn sharded_children_outlive_parent() {
    loom::model(|| {
        let (parent, ph, dropped) = counted_scope();
        let p1 = parent.clone();
        let p2 = parent.clone();
        let t1 = thread::spawn(move || {
            let (c, h) = p1.with_cancel();
            drop(p1);
            h.detach();
            drop(c);
        });
        let t2 = thread::spawn(move || {
            let (c, h) = p2.with_cancel();
            drop(p2);
            (c, h)
        });
        ph.detach();
        drop(parent);
        t1.join().unwrap();
        let (c2, h2) = t2.join().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        assert!(!c2.is_cancelled());
        drop(h2);
        assert!(c2.is_cancelled());
        drop(c2);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

/// A parent walk taking its temporary reference on a sharded node while that
/// node's last context goes (the release that would leave only the shard
/// array's reference collapses the array) and its children go too: the node
/// is freed exactly once, after its last child. (Regression for a
/// use-after-free an independent review found, where the claim of the
/// collapse was a separate step after the decrement. Freed nodes are
/// poisoned under loom, but this model does not reach that interleaving at
/// its bound; `collapse_owner_vs_walker_reference` does, and fails without
/// the fix.)
#[test]
fn collapse_vs_parent_walk() {
    // Bound 2: at 3 this model (two threads, each deriving, dropping and one
    // cancelling) runs for many minutes.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let (root, rcancel, dropped) = counted_scope();
        let (p, ph) = root.with_cancel();
        ph.detach();
        let p2 = p.clone();
        let t = thread::spawn(move || {
            let (c, h) = p2.with_cancel();
            drop(p2);
            rcancel.cancel();
            drop((c, h));
        });
        let (c1, h1) = p.with_cancel();
        drop((c1, h1));
        drop(p);
        t.join().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(root);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

/// The last context of a sharded node goes (leaving only the shard array's
/// reference, so its releaser owns the collapse) while a parent walk finds
/// the node in its list and wants a reference. The walk must not take and
/// drop a reference in between: that drop would make it a second collapse
/// owner, which frees the node under the first (the use-after-free an
/// independent review found). Freed nodes are poisoned under loom, so any
/// late access fails the model. Run with the node's child in a shard alive
/// through the collapse (its count moves to the word) and already gone
/// (the collapse frees the node).
#[test]
fn collapse_owner_vs_walker_reference() {
    for child_outlives in [true, false] {
        loom::model(move || {
            let (root, rcancel, dropped) = counted_scope();
            let (p, ph) = root.with_cancel();
            ph.detach();
            cancel_tree::__loom_hooks::install_shards(&p);
            let (c, ch) = p.with_cancel();
            ch.detach();
            let c = if child_outlives {
                Some(c)
            } else {
                drop(c);
                None
            };
            let walker = thread::spawn(move || rcancel.cancel());
            drop(p);
            walker.join().unwrap();
            assert!(root.is_cancelled());
            if let Some(c) = c {
                assert!(c.is_cancelled());
                drop(c);
            }
            assert_eq!(dropped.load(Ordering::SeqCst), 0);
            drop(root);
            assert_eq!(dropped.load(Ordering::SeqCst), 1);
        });
    }
}

/// Merged contexts, M1: a parent other than the first is cancelled while
/// the merged context's last holder drops it. The free path unlinks its
/// entry under that parent's lock, or the walk claimed it first and holds a
/// reference: no freed node is touched (they are poisoned under loom), and
/// every parent is freed exactly once afterwards.
#[test]
fn merged_drop_vs_other_parent_cancel() {
    loom::model(|| {
        let (a, ah, a_drops) = counted_scope();
        let (b, bh, b_drops) = counted_scope();
        let (m, mh) = a.merge(&b);
        mh.detach();
        drop((a, b));
        let t = thread::spawn(move || bh.cancel_with(Tag(2)));
        drop(m);
        t.join().unwrap();
        drop(ah);
        assert_eq!(a_drops.load(Ordering::SeqCst), 1);
        assert_eq!(b_drops.load(Ordering::SeqCst), 1);
    });
}

/// M2: both parents cancelled at once with different causes: the merged
/// context (and its child) ends once, with one of the two, the same
/// everywhere, and is cancelled once both cancels returned.
#[test]
fn merged_two_parents_cancel_at_once() {
    loom::model(|| {
        let (a, ah) = Context::background().with_cancel();
        let (b, bh) = Context::background().with_cancel();
        let (m, _mh) = a.merge(&b);
        let (child, _ch) = m.with_cancel();
        let t = thread::spawn(move || bh.cancel_with(Tag(2)));
        ah.cancel_with(Tag(1));
        t.join().unwrap();
        let got = tag_of(&m).expect("cancelled once both cancels returned");
        assert!(got == 1 || got == 2);
        assert_eq!(tag_of(&child), Some(got));
        drop(b);
    });
}

/// M3: a merged context created while its other parent is cancelled: it
/// ends with that parent's cause, whether it saw the parent cancelled at
/// creation or was linked first and reached by the walk.
#[test]
fn merged_create_vs_other_parent_cancel() {
    loom::model(|| {
        let (a, _ah) = Context::background().with_cancel();
        let (b, bh) = Context::background().with_cancel();
        let t = thread::spawn(move || bh.cancel_with(Tag(7)));
        let (m, _mh) = a.merge(&b);
        t.join().unwrap();
        assert_eq!(tag_of(&m), Some(7));
        assert!(!a.is_cancelled());
    });
}

/// Where a cancel was called: a child derived while its parent is being
/// cancelled reports the parent's location once both are done, whether it
/// was linked first and reached by the walk, or born under the ended parent
/// (the parent was ended lock-free by `cancel()`, whose location is written
/// right after the ending).
/// (A child that locks the parent between that compare-and-swap and the
/// location's store reads the location from its parent: `INHERIT`.)
#[test]
fn lock_free_cancel_vs_derive_location() {
    loom::model(|| {
        let (ctx, h) = Context::background().with_cancel();
        let t = thread::spawn(move || h.cancel());
        let (child, _ch) = ctx.with_cancel();
        t.join().unwrap();
        let parent_at = ctx.cancel_location();
        assert!(parent_at.is_some(), "cancel() records its caller");
        assert_eq!(child.cancel_location(), parent_at, "the child's location");
    });
}

/// Review: a custom cause forwarded to a merged context whose last holder
/// drops it meanwhile: the cause is released exactly once (node cell and
/// forward cell), every parent freed once, no freed node touched.
#[test]
fn merged_forward_custom_cause_vs_drop() {
    loom::model(|| {
        let cause_drops = Arc::new(AtomicUsize::new(0));
        let (a, ah, a_drops) = counted_scope();
        let (b, bh, b_drops) = counted_scope();
        let (m, mh) = a.merge(&b);
        mh.detach();
        drop((a, b));
        let c = cause_drops.clone();
        let t = thread::spawn(move || bh.cancel_with(CountedCause(c)));
        drop(m);
        t.join().unwrap();
        drop(ah);
        assert_eq!(a_drops.load(Ordering::SeqCst), 1);
        assert_eq!(b_drops.load(Ordering::SeqCst), 1);
        assert_eq!(cause_drops.load(Ordering::SeqCst), 1);
    });
}

/// Review: the same context passed twice (two entries in one waiter list)
/// while it is cancelled and the merged context is dropped.
#[test]
fn merged_same_parent_twice_cancel_vs_drop() {
    loom::model(|| {
        let (b, bh, b_drops) = counted_scope();
        let (m, mh) = Context::merge_all(&b, [&b, &b]);
        mh.detach();
        let (k, kh) = m.with_cancel();
        drop(b);
        let t = thread::spawn(move || bh.cancel_with(Tag(3)));
        drop(m);
        t.join().unwrap();
        assert_eq!(tag_of(&k), Some(3));
        drop((k, kh));
        assert_eq!(b_drops.load(Ordering::SeqCst), 1);
    });
}

/// The same window for an inner node a walk ends without its lock
/// (`try_end_inner`, location written right after): a grandchild derived
/// under it meanwhile reports the walk's location.
#[test]
fn walk_lock_free_inner_vs_derive_location() {
    loom::model(|| {
        let (root, h) = Context::background().with_cancel();
        let (mid, _mh) = root.with_cancel();
        let (_leaf, _lh) = mid.with_cancel();
        let t = thread::spawn(move || h.cancel());
        let (late, _late_h) = mid.with_cancel();
        t.join().unwrap();
        let at = root.cancel_location();
        assert!(at.is_some());
        assert_eq!(mid.cancel_location(), at);
        assert_eq!(late.cancel_location(), at);
    });
}

/// Review: two other parents cancelled at once; whichever walk claims the
/// merged context first, the cancel that ended the *other* parent must not
/// return before the merged context reports cancelled (the guarantee
/// `merge_all` documents).
#[test]
fn merged_other_parent_cancel_returns_after_merged_cancelled() {
    loom::model(|| {
        let (a, _ah) = Context::background().with_cancel();
        let (b, bh) = Context::background().with_cancel();
        let (c, ch) = Context::background().with_cancel();
        let (m, _mh) = Context::merge_all(&a, [&b, &c]);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            ch.cancel();
            assert!(m2.is_cancelled(), "c's cancel returned");
        });
        bh.cancel();
        assert!(m.is_cancelled(), "b's cancel returned");
        t.join().unwrap();
        drop((b, c));
    });
}

// ---------------------------------------------------------------------------
// Task groups (`docs/design.md`, "Task groups").

/// A group task's error, `Clone` so that it can be the group's `E`.
#[derive(Clone, Debug)]
struct Fail(u8);
impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} failed", self.0)
    }
}
impl std::error::Error for Fail {}

/// Polls `fut` to completion on this loom thread, sleeping on a loom
/// `Notify` between polls (a lost wake-up is a deadlock loom reports).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(loom::sync::Notify);
    impl Wake for Unpark {
        fn wake(self: StdArc<Self>) {
            self.0.notify();
        }
        fn wake_by_ref(self: &StdArc<Self>) {
            self.0.notify();
        }
    }
    let unpark = StdArc::new(Unpark(loom::sync::Notify::new()));
    let waker = Waker::from(unpark.clone());
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = poll(fut.as_mut(), &waker) {
            return v;
        }
        unpark.0.wait();
    }
}

/// Runs the first task on a loom thread of its own and the next ones on the
/// calling thread, before `spawn_task` returns (two threads keep the model
/// small enough to explore; the race is the same).
#[derive(Default)]
struct LoomSpawn {
    spawned_one: std::sync::atomic::AtomicBool,
}
impl cancel_tree::Spawn for LoomSpawn {
    fn spawn_task<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self
            .spawned_one
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            block_on(task);
        } else {
            thread::spawn(move || block_on(task));
        }
    }
}

/// Invariant G1 (the first-error race): two tasks fail at once, one on a
/// thread of its own, one on the owner's thread, which then waits. Exactly
/// one error is the group's: `wait` returns it only after both tasks
/// finished, and the context's cause is that same error (never the
/// `Canceled` that `wait` itself cancels with, never the other task's).
#[test]
fn group_first_error_race() {
    loom::model(|| {
        let group = cancel_tree::SpawnGroup::<_, (), Fail>::new(
            &Context::background(),
            LoomSpawn::default(),
        );
        assert!(group.try_add(async { Err(Fail(1)) }).is_ok());
        assert!(group.try_add(async { Err(Fail(2)) }).is_ok());
        let err = block_on(group.wait()).expect_err("both failed");
        assert!(group.is_empty(), "wait returned after every task");
        let cause = group.context().cause().expect("cancelled");
        let cause = cause.downcast_ref::<Fail>().map(|f| f.0);
        assert_eq!(cause, Some(err.0), "the cause is the error wait returned");
    });
}

/// Invariant G2 (no lost wake-up in an in-task group): a task parks its
/// waker; another thread wakes it while the owner is between polling the
/// task and going idle. `block_on` finishing is the check (a lost wake-up
/// deadlocks, which loom reports).
#[test]
fn group_task_woken_from_another_thread() {
    loom::model(|| {
        let slot: Arc<loom::sync::Mutex<Option<Waker>>> = Arc::new(loom::sync::Mutex::new(None));
        let mut group = cancel_tree::Group::<(), Fail>::new(&Context::background());
        let parked = slot.clone();
        let mut polls = 0;
        let task = std::future::poll_fn(move |cx| {
            polls += 1;
            if polls == 1 {
                *parked.lock().unwrap() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        });
        assert!(group.try_add(task).is_ok());
        let waker = thread::spawn(move || {
            loop {
                if let Some(w) = slot.lock().unwrap().take() {
                    w.wake();
                    return;
                }
                thread::yield_now();
            }
        });
        assert!(block_on(group.wait()).is_ok());
        waker.join().unwrap();
    });
}

/// Invariant G3: the group is dropped while another thread wakes and drops
/// a task's waker. The task's future is dropped exactly once, by the
/// group; the task's memory goes with whichever of the two is last.
#[test]
fn group_drop_vs_task_wake() {
    loom::model(|| {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let slot: Arc<loom::sync::Mutex<Option<Waker>>> = Arc::new(loom::sync::Mutex::new(None));
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut group = cancel_tree::Group::<(), Fail>::new(&Context::background());
        let parked = slot.clone();
        let counted = Counted(dropped.clone());
        let task = std::future::poll_fn(move |cx| {
            let _keep = &counted;
            *parked.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        });
        assert!(group.try_add(task).is_ok());
        {
            let mut wait = Box::pin(group.wait());
            let noop = Waker::noop();
            assert!(poll(wait.as_mut(), noop).is_pending());
        }
        let waker = slot
            .lock()
            .unwrap()
            .take()
            .expect("the task parked its waker");
        let t = thread::spawn(move || {
            waker.wake_by_ref();
            drop(waker);
        });
        drop(group);
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped with the group");
        t.join().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "and never again");
    });
}

// ---------------------------------------------------------------------------
// The waiter slot (`waiter_list`, rule 4; list invariant 5): a `Done` polled
// on a scope with an empty waiter list enters the list's slot without the
// lock. Each model below races it against one party that touches the list
// under the lock, or against the lock-free leaf ending.

/// W1 through the walk's locked leaf ending: a custom cause needs the cause
/// cell, so the cancel takes the lock, finds the list empty and ends the
/// scope as a leaf, with no notification. The slot registrant's `fetch_or`
/// then shows `LOCKED` or `CANCELLED` and it re-checks under the lock.
#[test]
fn slot_register_vs_locked_leaf_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let t = thread::spawn(move || cancel.cancel_with(Tag(3)));
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        let first = poll(done.as_mut(), &w);
        t.join().unwrap();
        match first {
            Poll::Pending => assert_eq!(wakes(&c), 1, "lost wake-up"),
            Poll::Ready(e) => {
                assert_eq!(e, Error::Canceled);
                assert_eq!(wakes(&c), 0);
            }
        }
        drop(done);
        assert_eq!(tag_of(&ctx), Some(3));
    });
}

/// W1 through a parent's walk with a custom cause: the walk flags the leaf
/// child under both locks (the locked leaf path), while a `Done` on the
/// child enters the slot.
#[test]
fn slot_register_vs_parent_locked_walk() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, _h) = parent.with_cancel();
        let t = thread::spawn(move || cancel.cancel_with(Tag(4)));
        let (c, w) = waker();
        let mut done = Box::pin(child.done());
        let first = poll(done.as_mut(), &w);
        t.join().unwrap();
        if first.is_pending() {
            assert_eq!(wakes(&c), 1, "lost wake-up through the parent");
        } else {
            assert_eq!(wakes(&c), 0);
        }
        drop(done);
        assert_eq!(tag_of(&child), Some(4));
    });
}

/// W1 through a parent's walk that flags an inner child lock-free
/// (`try_end_inner`: the child has a child of its own, so `HAS_WAITERS` does
/// not stop the CAS) and drains its waiters later under its lock, while a
/// `Done` on that child enters the slot.
#[test]
fn slot_register_vs_parent_walk_inner_child() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, _h) = parent.with_cancel();
        let (grand, _gh) = child.with_cancel();
        let t = thread::spawn(move || cancel.cancel());
        let (c, w) = waker();
        let mut done = Box::pin(child.done());
        let first = poll(done.as_mut(), &w);
        t.join().unwrap();
        if first.is_pending() {
            assert_eq!(wakes(&c), 1, "lost wake-up through the parent");
        } else {
            assert_eq!(wakes(&c), 0);
        }
        drop(done);
        assert!(grand.is_cancelled());
    });
}

/// Two `Done`s registering at once on one scope: one gets the slot, the
/// other the list (adopting the slot item if it was first), and the slot
/// owner drops while that happens; the survivor is woken exactly once by
/// the cancel that follows, and nobody touches a dropped waiter (under loom
/// a `Waiter`'s drop writes all its cells, so a later access races it).
#[test]
fn slot_vs_list_registration_and_drop() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let ctx2 = ctx.clone();
        let t = thread::spawn(move || {
            let (c, w) = waker();
            let mut done = Box::pin(ctx2.done());
            assert!(poll(done.as_mut(), &w).is_pending());
            drop(done);
            assert_eq!(wakes(&c), 0);
        });
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w).is_pending());
        t.join().unwrap();
        cancel.cancel();
        assert_eq!(wakes(&c), 1, "the remaining waiter is woken once");
        assert!(poll(done.as_mut(), &w).is_ready());
    });
}

/// Two `Done`s registering while a cancel runs: each is woken once or saw
/// the flag, whichever of slot and list it got.
#[test]
fn two_registrations_vs_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let ctx2 = ctx.clone();
        let t = thread::spawn(move || {
            let (c, w) = waker();
            let mut done = Box::pin(ctx2.done_owned());
            let first = poll(done.as_mut(), &w);
            (first.is_pending(), c, done)
        });
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        let first = poll(done.as_mut(), &w);
        cancel.cancel();
        let (other_pending, other_c, other_done) = t.join().unwrap();
        assert_eq!(wakes(&c), usize::from(first.is_pending()), "main waiter");
        // The other waiter's wake may come only from this cancel, which has
        // returned; its own poll may have seen the flag.
        if other_pending {
            assert_eq!(wakes(&other_c), 1, "other waiter");
        } else {
            assert_eq!(wakes(&other_c), 0);
        }
        drop(other_done);
        drop(done);
    });
}

/// A `Done` in the slot dropped while the cancel claims it (the lock-free
/// leave fails, so the drop waits in the lock for the claimant to take the
/// waker): no use after free, the waker is woken at most once.
#[test]
fn slot_drop_vs_cancel_claim() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w).is_pending());
        let t = thread::spawn(move || cancel.cancel_with(Tag(5)));
        drop(done);
        t.join().unwrap();
        assert!(wakes(&c) <= 1);
        assert_eq!(tag_of(&ctx), Some(5));
    });
}

/// A `Done` entering the slot while an `after_func` registers on the same
/// scope under the lock (adopting the slot item, or finding the list taken
/// so the `Done` takes the list), then dropped; a cancel afterwards runs the
/// function once and wakes nobody stale.
#[test]
fn slot_register_vs_after_func() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let ctx2 = ctx.clone();
        let t = thread::spawn(move || {
            ctx2.after_func(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
        });
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w).is_pending());
        let af = t.join().unwrap();
        cancel.cancel();
        assert_eq!(wakes(&c), 1, "the Done is woken once");
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the function ran once");
        drop(done);
        drop(af);
    });
}

/// As [`slot_register_vs_after_func`], but the `Done` drops (leaving the
/// slot, or unlinking after an adoption) while the `after_func` registers;
/// then the function runs once on cancel.
#[test]
fn slot_drop_vs_after_func_adoption() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w).is_pending());
        let ctx2 = ctx.clone();
        let t = thread::spawn(move || {
            ctx2.after_func(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
        });
        drop(done);
        let af = t.join().unwrap();
        cancel.cancel();
        assert_eq!(wakes(&c), 0, "a dropped Done is not woken");
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the function ran once");
        drop(af);
    });
}

/// W2 with the first waker in the slot and a custom cause (the locked walk
/// claims the slot item): a re-poll with a new waker, under the lock, either
/// replaces the waker before the claim or sees the flag.
#[test]
fn slot_repoll_new_waker_vs_locked_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c1, w1) = waker();
        let (c2, w2) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w1).is_pending());
        let t = thread::spawn(move || cancel.cancel_with(Tag(6)));
        let second = poll(done.as_mut(), &w2);
        t.join().unwrap();
        if second.is_pending() {
            assert_eq!(wakes(&c2), 1, "the latest waker must be woken");
            assert_eq!(wakes(&c1), 0);
        } else {
            assert!(wakes(&c1) + wakes(&c2) <= 1);
        }
    });
}

// ---------------------------------------------------------------------------
// More waiter-slot models: interleavings the models above do not name, and
// the listed (second) waiter path, which the first models no longer reach.

/// The root's own locked walk (it has a child, so it is not a leaf and
/// takes the `WALKING` path) and its notify phase, which skips the lock
/// when `HAS_WAITERS` is clear, vs a `Done` on that root entering the slot.
#[test]
fn slot_register_vs_root_walk_notify_skip() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (child, _h) = ctx.with_cancel();
        let t = thread::spawn(move || cancel.cancel());
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        let first = poll(done.as_mut(), &w);
        t.join().unwrap();
        match first {
            Poll::Pending => assert_eq!(wakes(&c), 1, "lost wake-up"),
            Poll::Ready(e) => {
                assert_eq!(e, Error::Canceled);
                assert_eq!(wakes(&c), 0);
            }
        }
        assert!(poll(done.as_mut(), &w).is_ready());
        drop(done);
        assert!(child.is_cancelled());
    });
}

/// A `CancelHandle` dropped while its context lives (the lock-free
/// end-and-release `try_end_leaf(.., release = true)`) vs a `Done` entering
/// the slot.
#[test]
fn slot_register_vs_handle_drop() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let t = thread::spawn(move || drop(cancel));
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        let first = poll(done.as_mut(), &w);
        t.join().unwrap();
        match first {
            Poll::Pending => assert_eq!(wakes(&c), 1, "lost wake-up"),
            Poll::Ready(_) => assert_eq!(wakes(&c), 0),
        }
        assert!(ctx.is_cancelled());
        drop(done);
    });
}

/// A lock holder empties the list by unlinking its last item (a plain
/// store of the head: `after_func` stop) while a `Done` tries the slot
/// (its CAS either fails on the listed item, so it registers under the
/// lock, or enters after the store). A later cancel wakes it once and does
/// not run the stopped function.
#[test]
fn slot_register_vs_after_func_stop() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let af = ctx.after_func(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let t = thread::spawn(move || af.stop());
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w).is_pending());
        assert!(t.join().unwrap(), "stopped before any cancel");
        cancel.cancel();
        assert_eq!(wakes(&c), 1, "the Done is woken once");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert!(poll(done.as_mut(), &w).is_ready());
    });
}

/// A re-poll with a new waker of a `Done` in the slot (the lock is dropped
/// to clone the waker, then taken again) while an `after_func` registration
/// adopts the slot item: the new waker is the one woken, once.
#[test]
fn slot_repoll_new_waker_vs_adoption() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c1, w1) = waker();
        let (c2, w2) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w1).is_pending());
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let ctx2 = ctx.clone();
        let t = thread::spawn(move || {
            ctx2.after_func(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
        });
        assert!(poll(done.as_mut(), &w2).is_pending());
        let af = t.join().unwrap();
        cancel.cancel();
        assert_eq!(wakes(&c2), 1, "the latest waker is woken");
        assert_eq!(wakes(&c1), 0);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        drop(done);
        drop(af);
    });
}

/// A `Done` in the slot polled again (the fast path may see the flag and be
/// ready while the notify phase has not claimed it yet) and then dropped
/// (leaving the slot lock-free, or meeting the claimant in the lock) while
/// the cancel runs: never touched after the drop, woken at most once.
#[test]
fn slot_repoll_and_drop_vs_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w).is_pending());
        let t = thread::spawn(move || cancel.cancel());
        let second = poll(done.as_mut(), &w);
        drop(done);
        t.join().unwrap();
        // Dropped: it may or may not be woken (a drop before the claim
        // leaves the slot), but never twice.
        let _ = second;
        assert!(wakes(&c) <= 1);
    });
}

/// A merged context registering its entry in its other parent's waiter
/// list (adopting a slot `Done` there, or finding the list taken so the
/// `Done` registers under the lock) while that `Done` enters the slot; the
/// cancel of that parent wakes the `Done` once and ends the merged context
/// with its cause.
#[test]
fn slot_vs_merge_entry_adoption() {
    loom::model(|| {
        let (a, _ah) = Context::background().with_cancel();
        let (b, bh) = Context::background().with_cancel();
        let b2 = b.clone();
        let t = thread::spawn(move || a.merge(&b2));
        let (c, w) = waker();
        let mut done = Box::pin(b.done());
        assert!(poll(done.as_mut(), &w).is_pending());
        let (m, _mh) = t.join().unwrap();
        bh.cancel_with(Tag(7));
        assert_eq!(wakes(&c), 1, "the Done is woken once");
        assert_eq!(tag_of(&m), Some(7));
        drop(done);
    });
}

/// A child derived under the lock (a lock holder that does not cancel)
/// while a `Done` enters the slot: its `fetch_or` may show `LOCKED`, so it
/// re-checks under the lock, finds no ending and stays pending in the slot
/// (the re-check's `Pending` path); the cancel afterwards (now through the
/// walk, the scope having a child) wakes it once.
#[test]
fn slot_register_vs_child_derive() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let ctx2 = ctx.clone();
        let t = thread::spawn(move || ctx2.with_cancel());
        let (c, w) = waker();
        let mut done = Box::pin(ctx.done());
        assert!(poll(done.as_mut(), &w).is_pending());
        let (child, _ch) = t.join().unwrap();
        cancel.cancel();
        assert_eq!(wakes(&c), 1, "woken once");
        assert!(child.is_cancelled());
        drop(done);
    });
}

/// W3 for a waiter in the list proper (not the slot): since the slot, the
/// first `Done` on a scope never takes the list, so `drop_done_vs_cancel`
/// no longer drives this path. A first `Done` holds the slot (and is
/// adopted by the second's registration); the second is dropped while the
/// cancel pops both.
#[test]
fn listed_done_drop_vs_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c0, w0) = waker();
        let (c1, w1) = waker();
        let mut d0 = Box::pin(ctx.done());
        let mut d1 = Box::pin(ctx.done());
        assert!(poll(d0.as_mut(), &w0).is_pending());
        assert!(poll(d1.as_mut(), &w1).is_pending());
        let t = thread::spawn(move || cancel.cancel());
        drop(d1);
        t.join().unwrap();
        assert_eq!(wakes(&c0), 1);
        assert!(wakes(&c1) <= 1);
        assert!(poll(d0.as_mut(), &w0).is_ready());
    });
}

/// W2 for a waiter in the list proper: a re-poll with a new waker of the
/// second (listed) `Done` while the cancel runs wakes the latest waker.
#[test]
fn listed_repoll_new_waker_vs_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c0, w0) = waker();
        let (c1, w1) = waker();
        let (c2, w2) = waker();
        let mut d0 = Box::pin(ctx.done());
        let mut d1 = Box::pin(ctx.done());
        assert!(poll(d0.as_mut(), &w0).is_pending());
        assert!(poll(d1.as_mut(), &w1).is_pending());
        let t = thread::spawn(move || cancel.cancel());
        let second = poll(d1.as_mut(), &w2);
        t.join().unwrap();
        assert_eq!(wakes(&c0), 1);
        if second.is_pending() {
            assert_eq!(wakes(&c2), 1, "the latest waker must be woken");
            assert_eq!(wakes(&c1), 0);
        } else {
            assert!(wakes(&c1) + wakes(&c2) <= 1);
        }
    });
}

/// W1 for a first poll that finds the slot taken (so registers under the
/// lock, adopting the slot item) while the cancel runs.
#[test]
fn listed_registration_vs_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (c0, w0) = waker();
        let (c1, w1) = waker();
        let mut d0 = Box::pin(ctx.done());
        assert!(poll(d0.as_mut(), &w0).is_pending());
        let t = thread::spawn(move || cancel.cancel());
        let mut d1 = Box::pin(ctx.done());
        let first = poll(d1.as_mut(), &w1);
        t.join().unwrap();
        assert_eq!(wakes(&c0), 1);
        assert_eq!(
            wakes(&c1),
            usize::from(first.is_pending()),
            "lost or stray wake-up"
        );
        drop(d1);
        drop(d0);
    });
}
