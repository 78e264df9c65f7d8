//! Heap cost of cancel-tree and tokio-util's `CancellationToken`, measured
//! with a counting global allocator.
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! Prints markdown tables: heap bytes and allocations per child node and per
//! timeout context, allocations per hot-path operation, and the inline sizes
//! of the handle and future types. Counters are per thread, so the
//! `StdClock` timer thread (and anything else in the background) does not
//! disturb them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::mem::size_of;
use std::pin::{Pin, pin};
use std::task::{Context as TaskContext, Waker};
use std::time::Duration;

use cancel_tree::{CancelHandle, Context, ManualClock};
use tokio_util::sync::{
    CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned,
};

// ---------------------------------------------------------------------------
// The counting allocator

struct Counting;

thread_local! {
    /// Calls to alloc / alloc_zeroed / realloc.
    static CALLS: Cell<u64> = const { Cell::new(0) };
    /// Bytes currently allocated by this thread (frees on other threads are
    /// not seen; nothing here frees across threads).
    static LIVE: Cell<i64> = const { Cell::new(0) };
    /// Size of the most recent allocation.
    static LAST: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = CALLS.try_with(|c| c.set(c.get() + 1));
    let _ = LIVE.try_with(|c| c.set(c.get() + size as i64));
    let _ = LAST.try_with(|c| c.set(size));
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|c| c.set(c.get() - size as i64));
}

// SAFETY: forwards every call to the system allocator unchanged; the
// counters are const-initialised thread-locals, so touching them never
// allocates or recurses.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_free(layout.size());
        note_alloc(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Snap {
    calls: u64,
    live: i64,
}

fn snap() -> Snap {
    Snap {
        calls: CALLS.with(Cell::get),
        live: LIVE.with(Cell::get),
    }
}

/// Allocation calls and net live bytes of `f` (what it leaves allocated).
fn measure<R>(f: impl FnOnce() -> R) -> (R, u64, i64) {
    let before = snap();
    let r = f();
    let after = snap();
    (r, after.calls - before.calls, after.live - before.live)
}

/// Allocation calls of `f`, run `n` times (nothing kept).
fn calls_per_op(n: u64, mut f: impl FnMut()) -> f64 {
    let before = snap();
    for _ in 0..n {
        f();
    }
    (snap().calls - before.calls) as f64 / n as f64
}

const N: usize = 10_000;

fn row(what: &str, ct: String, tu: String) {
    println!("| {what} | {ct} | {tu} |");
}

fn per(calls: u64, bytes: i64, n: usize) -> String {
    format!(
        "{:.1} B, {:.2} allocs",
        bytes as f64 / n as f64,
        calls as f64 / n as f64
    )
}

fn main() {
    let waker = Waker::noop();
    let mut cx = TaskContext::from_waker(waker);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();

    // Start the StdClock timer thread outside any measurement.
    {
        let (warm, _c) = Context::background().with_timeout(Duration::from_secs(3600));
        black_box(&warm);
    }

    println!("## Heap per node (net live bytes and allocation calls)\n");
    println!("| | cancel-tree | tokio-util |");
    println!("|---|---|---|");

    // --- one child under a fresh parent: the exact node allocation(s).
    let (ct_parent, _ph) = Context::background().with_cancel();
    let (one, ct_calls, ct_live) = measure(|| ct_parent.with_cancel());
    let ct_last = LAST.with(Cell::get);
    drop(one);
    let tu_parent = CancellationToken::new();
    let (one, tu_calls, tu_live) = measure(|| tu_parent.child_token());
    drop(one);
    row(
        "first child of a fresh parent",
        format!("{ct_live} B in {ct_calls} alloc(s) (node {ct_last} B)"),
        format!("{tu_live} B in {tu_calls} alloc(s) (node + parent's child Vec)"),
    );

    // --- 10,000 children under one parent (amortised; includes the parent's
    // child list growth for tokio-util).
    let mut ct_kids = Vec::with_capacity(N);
    let (_, c1, l1) = measure(|| {
        for _ in 0..N {
            ct_kids.push(ct_parent.with_cancel());
        }
    });
    let mut tu_kids = Vec::with_capacity(N);
    let (_, c2, l2) = measure(|| {
        for _ in 0..N {
            tu_kids.push(tu_parent.child_token());
        }
    });
    row(
        "per child, 10,000 under one parent",
        per(c1, l1, N),
        per(c2, l2, N),
    );
    // Dropping them returns everything.
    // (Including the up to 32 nodes this thread caches for reuse.)
    let (_, _, back1) = measure(|| {
        ct_kids.clear();
        cancel_tree::trim_thread_cache();
    });
    let (_, _, back2) = measure(|| tu_kids.clear());
    row(
        "bytes returned when they are dropped (per child)",
        format!("{:.1} B", -back1 as f64 / N as f64),
        format!("{:.1} B", -back2 as f64 / N as f64),
    );

    // --- a chain (each child under the previous one).
    let mut ct_chain: Vec<(Context, CancelHandle)> = Vec::with_capacity(N);
    let (_, c1, l1) = measure(|| {
        ct_chain.push(ct_parent.with_cancel());
        for i in 1..N {
            let next = ct_chain[i - 1].0.with_cancel();
            ct_chain.push(next);
        }
    });
    let mut tu_chain: Vec<CancellationToken> = Vec::with_capacity(N);
    let (_, c2, l2) = measure(|| {
        tu_chain.push(tu_parent.child_token());
        for i in 1..N {
            let next = tu_chain[i - 1].child_token();
            tu_chain.push(next);
        }
    });
    row("per node of a 10,000 chain", per(c1, l1, N), per(c2, l2, N));
    drop(ct_chain);
    drop(tu_chain);

    // --- timeout contexts.
    let clock = ManualClock::new();
    let mroot = Context::background_with_clock(clock.clone());
    let (mparent, _mph) = mroot.with_cancel();
    let (one, mc, ml) = measure(|| mparent.with_timeout(Duration::from_secs(30)));
    let m_last = LAST.with(Cell::get);
    drop(one);
    let (one, sc, sl) = measure(|| ct_parent.with_timeout(Duration::from_secs(30)));
    drop(one);
    let (one, tc, tl) = measure(|| {
        let tok = tu_parent.child_token();
        let mut sleep = Box::pin(tokio::time::sleep(Duration::from_secs(30)));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        (tok, sleep)
    });
    drop(one);
    row(
        "one timeout context (ManualClock tree)",
        format!("{ml} B in {mc} alloc(s) (node {m_last} B)"),
        "-".into(),
    );
    row(
        "one timeout context (StdClock / tokio runtime)",
        format!("{sl} B in {sc} alloc(s)"),
        format!(
            "{tl} B in {tc} alloc(s): child token + `Box<Sleep>` ({} B inline if not boxed)",
            size_of::<tokio::time::Sleep>()
        ),
    );

    let mut ct_t = Vec::with_capacity(N);
    let (_, c1, l1) = measure(|| {
        for _ in 0..N {
            ct_t.push(ct_parent.with_timeout(Duration::from_secs(30)));
        }
    });
    let mut tu_t: Vec<(CancellationToken, Pin<Box<tokio::time::Sleep>>)> = Vec::with_capacity(N);
    let (_, c2, l2) = measure(|| {
        for _ in 0..N {
            let mut sleep = Box::pin(tokio::time::sleep(Duration::from_secs(30)));
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
            tu_t.push((tu_parent.child_token(), sleep));
        }
    });
    row(
        "per timeout context, 10,000 pending",
        per(c1, l1, N),
        per(c2, l2, N),
    );
    let mut tu_t2: Vec<CancellationToken> = Vec::with_capacity(N);
    let (_, c3, l3) = measure(|| {
        for _ in 0..N {
            tu_t2.push(tu_parent.child_token());
        }
    });
    row(
        "per timeout context, 10,000 pending, tokio `Sleep` kept inline (not counted)",
        "-".into(),
        format!(
            "{} + {} B inline",
            per(c3, l3, N),
            size_of::<tokio::time::Sleep>()
        ),
    );
    drop(ct_t);
    drop(tu_t);
    drop(tu_t2);

    // --- merged contexts (two parents), against a tokio-util child token
    // plus a task-free bridge is not possible there: listed alone.
    let (other, _oh) = Context::background().with_cancel();
    let (one, c1, l1) = measure(|| ct_parent.merge(&other));
    drop(one);
    let mut merged = Vec::with_capacity(N);
    let (_, c2, l2) = measure(|| {
        for _ in 0..N {
            merged.push(ct_parent.merge(&other));
        }
    });
    drop(merged);
    let base = LIVE.with(Cell::get);
    for _ in 0..1_000_000 {
        drop(ct_parent.merge(&other));
    }
    cancel_tree::trim_thread_cache();
    let grown = LIVE.with(Cell::get) - base;
    row(
        "one merged context (two parents); per one of 10,000; growth over 1,000,000 create/drop",
        format!("{l1} B in {c1} alloc(s); {}; {grown} B", per(c2, l2, N)),
        "- (no merge)".into(),
    );

    println!("\n## Allocation calls per operation\n");
    println!("| operation | cancel-tree | tokio-util |");
    println!("|---|---|---|");
    let (ctx, h) = ct_parent.with_cancel();
    let tok = tu_parent.child_token();
    const OPS: u64 = 10_000;
    row(
        "is_cancelled",
        format!(
            "{}",
            calls_per_op(OPS, || {
                black_box(black_box(&ctx).is_cancelled());
            })
        ),
        format!(
            "{}",
            calls_per_op(OPS, || {
                black_box(black_box(&tok).is_cancelled());
            })
        ),
    );
    row(
        "clone + drop",
        format!("{}", calls_per_op(OPS, || drop(black_box(ctx.clone())))),
        format!("{}", calls_per_op(OPS, || drop(black_box(tok.clone())))),
    );
    row(
        "child create + drop (parent has another live child; cancel-tree: the node comes from the thread's cache)",
        format!(
            "{}",
            calls_per_op(OPS, || drop(black_box(ct_parent.with_cancel())))
        ),
        format!(
            "{}",
            calls_per_op(OPS, || drop(black_box(tu_parent.child_token())))
        ),
    );
    // A parent with no other children: tokio-util allocates the parent's
    // child Vec on the push and frees it again (shrink) on the removal.
    let (lonely_ct, _lh) = Context::background().with_cancel();
    let lonely_tu = CancellationToken::new();
    // The same with the thread's node cache emptied before every child: what
    // a thread that does not drop children itself pays.
    row(
        "child create + drop, thread cache emptied before each (cancel-tree only)",
        format!(
            "{}",
            calls_per_op(OPS, || {
                cancel_tree::trim_thread_cache();
                drop(black_box(ct_parent.with_cancel()))
            })
        ),
        "-".to_string(),
    );
    row(
        "child create + drop (parent has no other child)",
        format!(
            "{}",
            calls_per_op(OPS, || drop(black_box(lonely_ct.with_cancel())))
        ),
        format!(
            "{}",
            calls_per_op(OPS, || drop(black_box(lonely_tu.child_token())))
        ),
    );
    let live_ct = calls_per_op(OPS, || {
        let mut f = pin!(ctx.done());
        assert!(f.as_mut().poll(&mut cx).is_pending());
    });
    let live_tu = calls_per_op(OPS, || {
        let mut f = pin!(tok.cancelled());
        assert!(f.as_mut().poll(&mut cx).is_pending());
    });
    row(
        "done()/cancelled(): create + poll + drop, live",
        format!("{live_ct}"),
        format!("{live_tu}"),
    );
    // With a real (Arc) waker, which is cloned into the waiter.
    let arc_waker = Waker::from(std::sync::Arc::new(NoopWake));
    let mut acx = TaskContext::from_waker(&arc_waker);
    let live_ct_arc = calls_per_op(OPS, || {
        let mut f = pin!(ctx.done());
        assert!(f.as_mut().poll(&mut acx).is_pending());
    });
    let live_tu_arc = calls_per_op(OPS, || {
        let mut f = pin!(tok.cancelled());
        assert!(f.as_mut().poll(&mut acx).is_pending());
    });
    row(
        "done()/cancelled(): create + poll + drop, live, Arc waker",
        format!("{live_ct_arc}"),
        format!("{live_tu_arc}"),
    );
    let ct_timeout = calls_per_op(OPS, || {
        let (c, h) = ct_parent.with_timeout(Duration::from_secs(30));
        h.cancel();
        drop((c, h));
    });
    let m_timeout = calls_per_op(OPS, || {
        let (c, h) = mparent.with_timeout(Duration::from_secs(30));
        h.cancel();
        drop((c, h));
    });
    let tu_timeout = calls_per_op(OPS, || {
        let t = tu_parent.child_token();
        let mut sleep = pin!(tokio::time::sleep(Duration::from_secs(30)));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        t.cancel();
    });
    row(
        "timeout create + cancel (StdClock / ManualClock; tokio: child + stack-pinned Sleep)",
        format!("{ct_timeout} / {m_timeout}"),
        format!("{tu_timeout}"),
    );
    h.cancel();
    tok.cancel();
    row(
        "done()/cancelled(): create + poll + drop, cancelled",
        format!(
            "{}",
            calls_per_op(OPS, || {
                let mut f = pin!(ctx.done());
                assert!(f.as_mut().poll(&mut cx).is_ready());
            })
        ),
        format!(
            "{}",
            calls_per_op(OPS, || {
                let mut f = pin!(tok.cancelled());
                assert!(f.as_mut().poll(&mut cx).is_ready());
            })
        ),
    );
    // Cancelling a 4-ary tree of 10 levels (349,525 nodes).
    let ct_root = Context::background().with_cancel();
    let mut ct_nodes = vec![];
    build_tree(&ct_root, &mut ct_nodes, |p: &(Context, CancelHandle)| {
        p.0.with_cancel()
    });
    let tu_root = CancellationToken::new();
    let mut tu_nodes = vec![];
    build_tree(&tu_root, &mut tu_nodes, |p: &CancellationToken| {
        p.child_token()
    });
    let (_, c1, l1) = measure(|| ct_root.1.cancel());
    let (_, c2, l2) = measure(|| tu_root.cancel());
    row(
        "cancel a 4x10 tree (349,524 descendants): allocs, net bytes",
        format!("{c1}, {l1} B"),
        format!("{c2}, {l2} B"),
    );
    drop(ct_nodes);
    drop(tu_nodes);

    println!("\n## Inline sizes (bytes, 64-bit)\n");
    println!("| type | cancel-tree | tokio-util |");
    println!("|---|---|---|");
    let (ctx, _h) = ct_parent.with_cancel();
    let tok = tu_parent.child_token();
    row(
        "handle",
        format!("`Context` {}", size_of::<Context>()),
        format!("`CancellationToken` {}", size_of::<CancellationToken>()),
    );
    row(
        "cancel handle",
        format!("`CancelHandle` {}", size_of::<CancelHandle>()),
        "(the token itself)".into(),
    );
    row(
        "wait future (borrowing)",
        format!("`Done` {}", std::mem::size_of_val(&ctx.done())),
        format!(
            "`WaitForCancellationFuture` {} (check: {})",
            std::mem::size_of_val(&tok.cancelled()),
            size_of::<WaitForCancellationFuture<'static>>()
        ),
    );
    row(
        "wait future (owned)",
        format!("`DoneOwned` {}", std::mem::size_of_val(&ctx.done_owned())),
        format!(
            "`WaitForCancellationFutureOwned` {}",
            size_of::<WaitForCancellationFutureOwned>()
        ),
    );
    row(
        "`(Context, CancelHandle)` pair",
        format!("{}", size_of::<(Context, CancelHandle)>()),
        "-".into(),
    );
    row(
        "tokio `Sleep` (for timeouts)",
        "-".into(),
        format!("{}", size_of::<tokio::time::Sleep>()),
    );
}

struct NoopWake;
impl std::task::Wake for NoopWake {
    fn wake(self: std::sync::Arc<Self>) {}
}

/// A complete 4-ary tree of 10 levels below `root` (root not included).
fn build_tree<T>(root: &T, nodes: &mut Vec<T>, derive: impl Fn(&T) -> T) {
    for _ in 0..4 {
        nodes.push(derive(root));
    }
    let (mut start, mut end) = (0, nodes.len());
    for _ in 2..10 {
        for i in start..end {
            for _ in 0..4 {
                let c = derive(&nodes[i]);
                nodes.push(c);
            }
        }
        (start, end) = (end, nodes.len());
    }
}
