//! Allocation counts with a counting global allocator: waiting never
//! allocates, clones never allocate, one allocation per child node, and a
//! long-lived parent does not grow across a million short-lived children.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use cancel_tree::{Context, Error};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only adds thread-local counters
// (const-initialised, so touching them never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + layout.size() as isize));
        // SAFETY: caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE_BYTES.try_with(|c| c.set(c.get() - layout.size() as isize));
        // SAFETY: caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}
fn live() -> isize {
    LIVE_BYTES.with(Cell::get)
}

#[test]
fn done_create_poll_drop_never_allocates() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _h) = ctx.with_value(1u8).with_cancel();
    let waker = Waker::noop();
    let mut cx = TaskContext::from_waker(waker);
    let before = allocs();
    for _ in 0..(if cfg!(miri) { 10 } else { 1000 }) {
        let mut d = pin!(child.done());
        assert!(d.as_mut().poll(&mut cx).is_pending());
        assert!(d.as_mut().poll(&mut cx).is_pending());
    }
    // On a root too.
    let root = Context::background();
    let mut d = pin!(root.done());
    assert!(d.as_mut().poll(&mut cx).is_pending());
    assert_eq!(allocs() - before, 0, "done() on a live context allocated");
    let mut pending = pin!(child.done());
    assert!(pending.as_mut().poll(&mut cx).is_pending());
    let before = allocs();
    cancel.cancel();
    assert_eq!(pending.as_mut().poll(&mut cx), Poll::Ready(Error::Canceled));
    for _ in 0..(if cfg!(miri) { 10 } else { 1000 }) {
        let mut d = pin!(child.done());
        assert_eq!(d.as_mut().poll(&mut cx), Poll::Ready(Error::Canceled));
    }
    assert_eq!(
        allocs() - before,
        0,
        "cancel / done() on a cancelled context allocated"
    );
}

/// The first `Done` on a scope waits in its waiter list's slot, later ones
/// in the list (adopting the slot's); neither allocates, in any drop order,
/// and the slot costs the future no bytes.
#[test]
fn the_waiter_slot_and_the_list_never_allocate() {
    #[cfg(target_pointer_width = "64")]
    assert_eq!(
        std::mem::size_of::<cancel_tree::Done<'static>>(),
        56,
        "the slot must not grow the future"
    );
    let (ctx, cancel) = Context::background().with_cancel();
    let waker = Waker::noop();
    let mut cx = TaskContext::from_waker(waker);
    let before = allocs();
    for round in 0..(if cfg!(miri) { 4 } else { 400 }) {
        // Pinned in place inside an `Option`, so that `set(None)` drops each
        // one (in place) in the order the round wants.
        let mut a = pin!(Some(ctx.done()));
        let mut b = pin!(Some(ctx.done()));
        let mut c = pin!(Some(ctx.done()));
        for (d, what) in [
            (&mut a, "slot"),
            (&mut b, "list, adopting a"),
            (&mut c, "list"),
        ] {
            let d = d.as_mut().as_pin_mut().unwrap();
            assert!(d.poll(&mut cx).is_pending(), "{what}");
        }
        if round % 2 == 0 {
            a.set(None); // the adopted slot item leaves the list
            c.set(None);
            b.set(None);
        } else {
            b.set(None);
            a.set(None);
            c.set(None);
        }
        // And a slot item that leaves the slot itself.
        a.set(Some(ctx.done()));
        assert!(a.as_mut().as_pin_mut().unwrap().poll(&mut cx).is_pending());
        a.set(None);
    }
    assert_eq!(allocs() - before, 0, "waiting allocated");
    let mut a = pin!(ctx.done());
    assert!(a.as_mut().poll(&mut cx).is_pending());
    let mut b = pin!(ctx.done());
    assert!(b.as_mut().poll(&mut cx).is_pending());
    let before = allocs();
    cancel.cancel();
    assert_eq!(a.as_mut().poll(&mut cx), Poll::Ready(Error::Canceled));
    assert_eq!(b.as_mut().poll(&mut cx), Poll::Ready(Error::Canceled));
    assert_eq!(allocs() - before, 0, "waking allocated");
}

#[test]
fn hot_path_and_clones_never_allocate() {
    let (ctx, cancel) = Context::background().with_cancel();
    let before = allocs();
    for _ in 0..(if cfg!(miri) { 10 } else { 1000 }) {
        let c = ctx.clone();
        assert!(!c.is_cancelled());
        assert_eq!(c.err(), None);
        assert!(c.cause().is_none());
        drop(c);
        let _b = Context::background();
        let _t = Context::todo();
    }
    assert_eq!(allocs() - before, 0);
    drop(cancel);
}

#[test]
fn one_allocation_of_at_most_64_bytes_per_child() {
    let (parent, _h) = Context::background().with_cancel();
    // Empty this thread's node cache so the child comes from the allocator.
    cancel_tree::trim_thread_cache();
    let (a0, b0) = (allocs(), live());
    let (child, h) = parent.with_cancel();
    let (a1, b1) = (allocs(), live());
    assert_eq!(a1 - a0, 1, "one allocation per child");
    assert!(b1 - b0 <= 64, "child node is {} bytes", b1 - b0);
    drop((child, h));
    // The freed node waits in the thread's cache until trimmed.
    assert_eq!(live(), b1);
    cancel_tree::trim_thread_cache();
    assert_eq!(live(), b0);
    eprintln!("with_cancel child: {} bytes", b1 - b0);
}

#[test]
fn parent_does_not_grow_across_a_million_children() {
    let (parent, _h) = Context::background().with_cancel();
    let (grand_parent_child, _h2) = parent.with_cancel(); // a long-lived sibling
    let base = live();
    for i in 0..(if cfg!(miri) { 300 } else { 1_000_000u32 }) {
        let (c, h) = parent.with_cancel();
        match i % 3 {
            0 => drop((c, h)),
            1 => {
                h.detach();
                drop(c)
            }
            _ => {
                let v = c.with_value(i);
                drop(c);
                drop(h);
                drop(v)
            }
        }
    }
    // At most the thread's node cache (32 blocks of 64 bytes) is kept...
    assert!(
        live() - base <= 32 * 64,
        "memory must be O(live nodes): {} bytes kept",
        live() - base
    );
    // ...and returned on request.
    cancel_tree::trim_thread_cache();
    assert!(live() <= base, "memory must be O(live nodes)");
    drop(grand_parent_child);
}

#[test]
fn long_lived_parents_do_not_grow_across_a_million_merged_children() {
    let (a, _ha) = Context::background().with_cancel();
    let (b, _hb) = Context::background().with_value(5u8).with_cancel();
    let (c, _hc) = Context::background().with_cancel();
    let (kept, _k) = a.merge(&b); // one that stays: its entries stay too
    let base = live();
    for i in 0..(if cfg!(miri) { 300 } else { 1_000_000u32 }) {
        let (m, h) = Context::merge_all(&a, [&b, &c]);
        match i % 3 {
            0 => drop((m, h)),
            1 => {
                h.detach();
                drop(m)
            }
            _ => {
                let (k, kh) = m.with_cancel();
                drop((m, h));
                assert!(k.is_cancelled());
                drop((k, kh))
            }
        }
    }
    cancel_tree::trim_thread_cache();
    assert!(
        live() <= base,
        "merged children must leave every parent: {} bytes kept",
        live() - base
    );
    drop(kept);
}

#[test]
fn short_lived_children_reuse_cached_nodes() {
    let (parent, _h) = Context::background().with_cancel();
    let a0 = allocs();
    for _ in 0..(if cfg!(miri) { 100 } else { 10_000 }) {
        let (c, h) = parent.with_cancel();
        drop((c, h));
    }
    // The first child may need the allocator; every later one reuses the
    // node its predecessor left in the thread's cache.
    assert!(allocs() - a0 <= 1, "{} allocations", allocs() - a0);
}

#[test]
fn timeout_context_is_one_allocation() {
    let clock = cancel_tree::ManualClock::new();
    let root = Context::background_with_clock(clock.clone());
    let (parent, _h) = root.with_cancel();
    let (a0, b0) = (allocs(), live());
    let (ctx, h) = parent.with_timeout(std::time::Duration::from_secs(30));
    let (a1, b1) = (allocs(), live());
    assert_eq!(a1 - a0, 1, "a timeout context is one allocation");
    drop((ctx, h));
    assert_eq!(live(), b0);
    assert_eq!(clock.pending(), 0);
    eprintln!("with_timeout child: {} bytes", b1 - b0);
}

#[test]
fn timeouts_do_not_grow_memory() {
    let clock = cancel_tree::ManualClock::new();
    let root = Context::background_with_clock(clock.clone());
    let n: u64 = if cfg!(miri) { 20 } else { 1000 };
    let _pending: Vec<_> = (0..n)
        .map(|i| root.with_timeout(std::time::Duration::from_secs(60 + i)))
        .collect();
    let base = live();
    for _ in 0..(if cfg!(miri) { 100 } else { 100_000 }) {
        let (c, h) = root.with_timeout(std::time::Duration::from_secs(30));
        drop(h);
        drop(c);
    }
    assert_eq!(live(), base);
    assert_eq!(clock.pending(), n as usize);
}

/// An in-task `Group` allocates each task once (header and future in one
/// block) and nothing else per task once its own vectors have grown:
/// running the tasks, waking them and finishing them allocate nothing.
#[test]
fn in_task_group_allocates_one_block_per_task_and_nothing_to_run_them() {
    use cancel_tree::{Cause, Group};
    let n = if cfg!(miri) { 20 } else { 1000 };
    let mut group = Group::<usize, Cause>::new(&Context::background());
    let mut cx = TaskContext::from_waker(Waker::noop());
    for round in 0..2 {
        let (a0, b0) = (allocs(), live());
        for i in 0..n {
            let task = async move {
                YieldOnce(false).await; // woken once
                Ok(i)
            };
            assert!(group.try_add(task).is_ok());
        }
        let added = allocs() - a0;
        let a1 = allocs();
        let mut wait = pin!(group.wait());
        // The first poll runs every task to its yield; each wakes itself,
        // so the second finishes them all.
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        let waited = allocs() - a1;
        if round == 0 {
            // The group's slot and result vectors grow (amortised).
            assert!(added <= n + 40, "{added} allocations to add {n} tasks");
        } else {
            assert_eq!(added, n, "one allocation per task");
            assert_eq!(waited, 0, "running and finishing tasks allocated");
            assert_eq!(live(), b0, "every task freed");
        }
    }
}

/// Pending once (waking itself), then ready: a task that yields once,
/// without a dependency (this file also runs on wasm32-wasip1).
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
