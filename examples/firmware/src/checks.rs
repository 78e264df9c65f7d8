//! The checks: cancel-tree driven by real interrupts on a real core model.
//!
//! * (a) a task awaiting `done()` on a child, whose parent is cancelled from
//!   the PendSV interrupt handler (pended by SysTick after
//!   [`ISR_CANCEL_TICKS`] ticks);
//! * (b) a `with_timeout` that the SysTick clock's alarm fires while the core
//!   sleeps in WFI: the waiting task is polled twice (register, then ready)
//!   however long it waits;
//! * (c) `after_func` closures run (in the interrupt that cancelled, or at
//!   once on an ended context), and a stopped one does not;
//! * (d) a cause given to `cancel_with` is seen by children and
//!   grandchildren; first cancel wins;
//! * (e) a subtree: the parent's deadline reaches every child and
//!   grandchild, and wakes each one's task.
//!
//! Plus: heap bytes per node, the timer queue empties, the heap returns to
//! where it started, nothing is allocated or freed inside an interrupt
//! handler, waiting allocates nothing. With `measure-cs`: the longest
//! interrupts-masked sections (see `cs.rs` and docs/embedded.md).

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::{Cell, UnsafeCell};
use core::future::Future;
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicU8, Ordering};
use core::time::Duration;

use cancel_tree::{CancelHandle, Cause, Clock, Context, Error};
use cortex_m::peripheral::SCB;
use critical_section::Mutex;

use crate::clock::CLOCK;
use crate::executor::{self, Task};
use crate::heap::{self, HEAP};
use crate::report::Report;
use cortex_m_semihosting::hprintln;

/// (a): PendSV cancels this many ticks after the scenario starts.
const ISR_CANCEL_TICKS: u64 = 20;
/// (b): the timeout.
const TIMEOUT_MS: u64 = 50;
/// (e): the subtree parent's timeout.
const SUBTREE_MS: u64 = 80;
/// A deadline fires on the tick it is due; allow this much lateness.
const SLACK_TICKS: u64 = 1;
/// Exception numbers (IPSR).
const THREAD_MODE: u32 = 0;
const PENDSV: u32 = 14;
const SYSTICK: u32 = 15;
const UNSET: u32 = u32::MAX;

// --- the interrupt side ----------------------------------------------------

/// A value handed from thread mode to one interrupt handler, which uses it by
/// reference (so the handler neither allocates nor frees), then taken back
/// in thread mode.
struct IsrSlot<T> {
    state: AtomicU8,
    value: UnsafeCell<Option<T>>,
}

const EMPTY: u8 = 0;
const FULL: u8 = 1;
const USED: u8 = 2;

// SAFETY: `value` is written only in thread mode while `state` is EMPTY (no
// handler reads it then), read by the handler only while FULL, and taken back
// inside a critical section (so never while the handler runs). The value is
// used from another context, hence `T: Send + Sync`.
unsafe impl<T: Send + Sync> Sync for IsrSlot<T> {}

impl<T> IsrSlot<T> {
    const fn new() -> IsrSlot<T> {
        IsrSlot {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(None),
        }
    }

    /// Thread mode: hands `v` over.
    fn put(&self, v: T) {
        assert_eq!(self.state.load(Ordering::Acquire), EMPTY);
        // SAFETY: EMPTY: no handler reads the cell.
        unsafe { *self.value.get() = Some(v) };
        self.state.store(FULL, Ordering::Release);
    }

    /// Handler: uses the value once, if one was handed over.
    fn use_once(&self, f: impl FnOnce(&T)) -> bool {
        if self.state.load(Ordering::Acquire) != FULL {
            return false;
        }
        // SAFETY: FULL: thread mode does not touch the cell until it takes it
        // back in a critical section, which cannot start while we run.
        if let Some(v) = unsafe { (*self.value.get()).as_ref() } {
            f(v);
        }
        self.state.store(USED, Ordering::Release);
        true
    }

    /// Thread mode: takes the value back (used or not).
    fn take(&self) -> Option<T> {
        critical_section::with(|_| {
            self.state.store(EMPTY, Ordering::Release);
            // SAFETY: in a critical section no handler runs.
            unsafe { (*self.value.get()).take() }
        })
    }
}

/// (a)'s handle and cause, for PendSV.
static ISR_CANCEL: IsrSlot<(CancelHandle, Cause)> = IsrSlot::new();
/// The tick at which SysTick pends PendSV.
static PENDSV_AT: Mutex<Cell<u64>> = Mutex::new(Cell::new(u64::MAX));
/// The tick at which PendSV cancelled.
static PENDSV_CANCELLED_AT: Mutex<Cell<u64>> = Mutex::new(Cell::new(u64::MAX));
/// Where each `after_func` closure ran (IPSR), `UNSET` if it did not.
static AF_ISR_IPSR: Mutex<Cell<u32>> = Mutex::new(Cell::new(UNSET));
static AF_TIMEOUT_IPSR: Mutex<Cell<u32>> = Mutex::new(Cell::new(UNSET));
static AF_SUBTREE_IPSR: Mutex<Cell<u32>> = Mutex::new(Cell::new(UNSET));
static AF_STOPPED_IPSR: Mutex<Cell<u32>> = Mutex::new(Cell::new(UNSET));
static AF_ENDED_IPSR: Mutex<Cell<u32>> = Mutex::new(Cell::new(UNSET));

fn get<T: Copy>(m: &Mutex<Cell<T>>) -> T {
    critical_section::with(|cs| m.borrow(cs).get())
}

fn set<T: Copy>(m: &Mutex<Cell<T>>, v: T) {
    critical_section::with(|cs| m.borrow(cs).set(v));
}

/// Called by the SysTick handler after the clock counted tick `t`.
pub fn on_tick(t: u64) {
    if t == get(&PENDSV_AT) {
        SCB::set_pendsv();
    }
}

/// The PendSV handler: cancels (a)'s context from interrupt context.
pub fn on_pendsv() {
    ISR_CANCEL.use_once(|(handle, cause)| {
        // Cloning a cause only bumps a count; cancelling wakes the waiting
        // task's waker and runs (a)'s `after_func` right here.
        handle.cancel_with(cause.clone());
        set(&PENDSV_CANCELLED_AT, CLOCK.ticks());
    });
}

// --- thread mode -----------------------------------------------------------

fn cause_text(ctx: &Context) -> Option<String> {
    ctx.cause().map(|c| c.to_string())
}

/// Where a task's `done()` ended: the error and the tick.
type Outcome = Cell<Option<(Error, u64)>>;

async fn wait_done(ctx: &Context, out: &Outcome) {
    let e = ctx.done().await;
    out.set(Some((e, CLOCK.ticks())));
}

fn ipsr_name(n: u32) -> &'static str {
    match n {
        THREAD_MODE => "thread mode",
        PENDSV => "PendSV",
        SYSTICK => "SysTick",
        UNSET => "did not run",
        _ => "another handler",
    }
}

/// Runs every check, recording results in `r`.
pub fn run(r: &mut Report) {
    let heap_at_start = HEAP.used();
    {
        let root = Context::background_with_clock(&CLOCK);
        memory_costs(r, &root);
        async_checks(r, &root);
        sync_checks(r, &root);
        #[cfg(feature = "measure-cs")]
        latency(r, &root);
        let pending = CLOCK.timers().len();
        r.check(
            "timer queue empty",
            pending == 0,
            format_args!("{} deadlines pending after every check", pending),
        );
    }
    let used = HEAP.used();
    let c = HEAP.counts();
    r.check(
        "heap back to its starting level",
        used == heap_at_start,
        format_args!(
            "{} B in use before, {} B after; peak {} B; {} allocations, {} frees",
            heap_at_start, used, c.peak, c.allocs, c.frees
        ),
    );
    r.check(
        "no allocation or free inside an interrupt handler",
        c.isr_allocs == 0 && c.isr_frees == 0,
        format_args!(
            "{} allocations, {} frees in handlers",
            c.isr_allocs, c.isr_frees
        ),
    );
    r.check(
        "clock alarm drove the deadlines",
        CLOCK.fires() >= 2,
        format_args!(
            "alarm fired {} times, set_alarm called {} times",
            CLOCK.fires(),
            CLOCK.alarm_requests()
        ),
    );
}

/// (a), (b), (c), (e): tasks on the executor, woken from interrupts.
fn async_checks(r: &mut Report, root: &Context) {
    // (a) A child whose parent PendSV cancels, with a cause.
    let (ctx_a, handle_a) = root.with_cancel();
    let (child_a, _handle_child_a) = ctx_a.with_cancel();
    let isr_cause = Cause::msg("cancelled from PendSV");
    let _af_a = child_a.after_func(|| set(&AF_ISR_IPSR, heap::ipsr()));
    let af_stopped = child_a.after_func(|| set(&AF_STOPPED_IPSR, heap::ipsr()));
    let stopped = af_stopped.stop();

    // (b) A timeout, fired by the SysTick clock's alarm.
    let b_start = CLOCK.ticks();
    let (ctx_b, _handle_b) = root.with_timeout(Duration::from_millis(TIMEOUT_MS));
    let _af_b = ctx_b.after_func(|| set(&AF_TIMEOUT_IPSR, heap::ipsr()));

    // (e) A subtree under one deadline: 4 children (with_cancel, with_value,
    // with_timeout later than the parent's, with_cancel), 2 grandchildren
    // each (with_cancel, with_value). Every handle is kept, so nothing ends
    // but through the parent.
    let e_start = CLOCK.ticks();
    let (sub, _handle_sub) = root.with_timeout_cause(
        Duration::from_millis(SUBTREE_MS),
        Cause::msg("subtree deadline"),
    );
    let _af_sub = sub.after_func(|| set(&AF_SUBTREE_IPSR, heap::ipsr()));
    let mut leaves: Vec<Context> = Vec::new();
    let mut handles: Vec<CancelHandle> = Vec::new();
    for i in 0..4u32 {
        let child = match i {
            1 => sub.with_value(i),
            2 => {
                let (c, h) = sub.with_timeout(Duration::from_secs(3600));
                handles.push(h);
                c
            }
            _ => {
                let (c, h) = sub.with_cancel();
                handles.push(h);
                c
            }
        };
        let (g0, h0) = child.with_cancel();
        handles.push(h0);
        let g1 = child.with_value(i + 100);
        leaves.push(child);
        leaves.push(g0);
        leaves.push(g1);
    }
    let outcomes: Vec<Outcome> = leaves.iter().map(|_| Cell::new(None)).collect();
    let mut leaf_futs: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = leaves
        .iter()
        .zip(&outcomes)
        .map(|(c, o)| Box::pin(wait_done(c, o)) as Pin<Box<dyn Future<Output = ()>>>)
        .collect();

    let out_a: Outcome = Cell::new(None);
    let out_b: Outcome = Cell::new(None);
    let mut fut_a = pin!(wait_done(&child_a, &out_a));
    let mut fut_b = pin!(wait_done(&ctx_b, &out_b));

    // Arm PendSV, then run everything.
    let a_start = CLOCK.ticks();
    ISR_CANCEL.put((handle_a, isr_cause.clone()));
    set(&PENDSV_AT, a_start + ISR_CANCEL_TICKS);

    let mut tasks: Vec<Task<'_>> = Vec::new();
    tasks.push(Task::new(fut_a.as_mut()));
    tasks.push(Task::new(fut_b.as_mut()));
    for f in leaf_futs.iter_mut() {
        tasks.push(Task::new(f.as_mut()));
    }
    let allocs_before = HEAP.counts().allocs;
    let result = executor::run(&mut tasks, || CLOCK.ticks(), a_start + 1_000);
    let allocs_during = HEAP.counts().allocs - allocs_before;
    let end = CLOCK.ticks();
    let polls: Vec<u32> = tasks.iter().map(|t| t.polls).collect();
    let n_tasks = tasks.len() as u32;
    drop(tasks);
    drop(leaf_futs);

    let stats = match result {
        Ok(s) | Err(s) => s,
    };
    r.check(
        "executor: every task finished",
        result.is_ok(),
        format_args!(
            "{} tasks in {} ticks: {} rounds, {} polls, {} WFI sleeps",
            n_tasks,
            end - a_start,
            stats.rounds,
            stats.polls,
            stats.sleeps
        ),
    );
    r.check(
        "executor: no polling loop",
        stats.polls <= 2 * n_tasks && stats.sleeps >= (SUBTREE_MS / 2) as u32,
        format_args!(
            "{} polls for {} tasks (2 each: register, then ready) while the core slept {} times",
            stats.polls, n_tasks, stats.sleeps
        ),
    );

    r.check(
        "waiting and waking allocate nothing",
        allocs_during == 0,
        format_args!(
            "{} allocations while {} tasks registered, slept and were woken",
            allocs_during, n_tasks
        ),
    );

    // (a)
    let handle_a = ISR_CANCEL.take().map(|(h, _)| h);
    let cancelled_at = get(&PENDSV_CANCELLED_AT);
    let a = out_a.get();
    let a_ok = matches!(a, Some((Error::Canceled, t)) if t == cancelled_at)
        && cancelled_at >= a_start + ISR_CANCEL_TICKS
        && cancelled_at <= a_start + ISR_CANCEL_TICKS + SLACK_TICKS
        && polls[0] <= 2;
    r.check(
        "(a) done() woken by a cancel from an interrupt handler",
        a_ok,
        format_args!(
            "PendSV cancelled the parent after {} ticks; the child's done() gave {:?} at tick +{}; {} polls",
            cancelled_at.wrapping_sub(a_start),
            a.map(|(e, _)| e),
            a.map_or(0, |(_, t)| t.wrapping_sub(a_start)),
            polls[0]
        ),
    );
    r.check(
        "(a) the handle reports cancelled, back in thread mode",
        handle_a.as_ref().is_some_and(|h| h.is_cancelled()),
        format_args!("handle taken back from the PendSV slot"),
    );
    drop(handle_a);

    // (b)
    let b = out_b.get();
    let b_elapsed = b.map_or(0, |(_, t)| t - b_start);
    let b_ok = matches!(b, Some((Error::DeadlineExceeded, _)))
        && (TIMEOUT_MS..=TIMEOUT_MS + SLACK_TICKS).contains(&b_elapsed)
        && polls[1] <= 2
        && ctx_b.cause().is_some_and(|c| c == Error::DeadlineExceeded);
    r.check(
        "(b) with_timeout fired by the SysTick alarm while the core slept",
        b_ok,
        format_args!(
            "{} ms timeout: done() gave {:?} after {} ticks; polled {} times",
            TIMEOUT_MS,
            b.map(|(e, _)| e),
            b_elapsed,
            polls[1]
        ),
    );

    // (c)
    let (af_a, af_b, af_sub, af_stopped_ran) = (
        get(&AF_ISR_IPSR),
        get(&AF_TIMEOUT_IPSR),
        get(&AF_SUBTREE_IPSR),
        get(&AF_STOPPED_IPSR),
    );
    r.check(
        "(c) after_func ran where the context was cancelled",
        af_a == PENDSV && af_b == SYSTICK && af_sub == SYSTICK,
        format_args!(
            "(a)'s in {}, (b)'s in {}, (e)'s in {}",
            ipsr_name(af_a),
            ipsr_name(af_b),
            ipsr_name(af_sub)
        ),
    );
    r.check(
        "(c) a stopped after_func never runs",
        stopped && af_stopped_ran == UNSET,
        format_args!(
            "stop() = {}, closure {}",
            stopped,
            ipsr_name(af_stopped_ran)
        ),
    );

    // (d), from the interrupt: the child sees the very cause PendSV gave.
    let cause_a = child_a.cause();
    r.check(
        "(d) the cause given in the interrupt reaches the child",
        cause_a.as_ref().is_some_and(|c| c.ptr_eq(&isr_cause))
            && cause_text(&child_a).as_deref() == Some("cancelled from PendSV")
            && child_a.err() == Some(Error::Canceled),
        format_args!(
            "child cause = {:?}, err = {:?}",
            cause_text(&child_a),
            child_a.err()
        ),
    );

    // (e)
    let e_due = e_start + SUBTREE_MS;
    let mut e_fail = None;
    for (i, (ctx, out)) in leaves.iter().zip(&outcomes).enumerate() {
        let ok = matches!(out.get(), Some((Error::DeadlineExceeded, t)) if (e_due..=e_due + SLACK_TICKS).contains(&t))
            && polls[2 + i] <= 2
            && ctx.err() == Some(Error::DeadlineExceeded)
            && cause_text(ctx).as_deref() == Some("subtree deadline");
        if !ok && e_fail.is_none() {
            e_fail = Some(i);
        }
    }
    let all_handles = handles.iter().all(|h| h.is_cancelled());
    r.check(
        "(e) the parent's deadline reaches every child and grandchild",
        e_fail.is_none() && all_handles && sub.err() == Some(Error::DeadlineExceeded),
        format_args!(
            "{} descendants (4 children, 8 grandchildren) ended DeadlineExceeded with the parent's cause after {} ticks, each task polled {} times; first failure: {:?}",
            leaves.len(),
            outcomes[0].get().map_or(0, |(_, t)| t - e_start),
            polls[2..].iter().max().copied().unwrap_or(0),
            e_fail
        ),
    );
    // leaves = [child0, g00, g01, child1 (value 1), g10, g11 (value 101), ...]
    let v = (
        leaves[3].value::<u32>().copied(),
        leaves[4].value::<u32>().copied(),
        leaves[5].value::<u32>().copied(),
    );
    r.check(
        "(e) values survive cancellation",
        v == (Some(1), Some(1), Some(101)),
        format_args!(
            "with_value child, its with_cancel and with_value children carry {:?}",
            v
        ),
    );
}

/// (c), (d) and handle semantics, synchronously in thread mode.
fn sync_checks(r: &mut Report, root: &Context) {
    // (d) A cause reaches children and grandchildren; a queued timeout
    // below leaves the clock's queue.
    let (parent, handle) = root.with_cancel();
    let (child, _hc) = parent.with_cancel();
    let (grandchild, _hg) = child.with_timeout(Duration::from_secs(10));
    let queued = CLOCK.timers().len();
    handle.cancel_with(Cause::msg("brown-out detected"));
    let after = CLOCK.timers().len();
    let ok = child.err() == Some(Error::Canceled)
        && grandchild.err() == Some(Error::Canceled)
        && cause_text(&child).as_deref() == Some("brown-out detected")
        && cause_text(&grandchild).as_deref() == Some("brown-out detected");
    r.check(
        "(d) cancel_with(cause): children and grandchildren see the cause",
        ok,
        format_args!(
            "grandchild err = {:?}, cause = {:?}",
            grandchild.err(),
            cause_text(&grandchild)
        ),
    );
    r.check(
        "(d) a cancelled timeout leaves the clock's queue at once",
        queued == 1 && after == 0,
        format_args!("{} pending before the cancel, {} after", queued, after),
    );
    handle.cancel_with(Error::DeadlineExceeded);
    r.check(
        "(d) first cancel wins",
        cause_text(&grandchild).as_deref() == Some("brown-out detected"),
        format_args!(
            "after a second cancel_with the cause is {:?}",
            cause_text(&grandchild)
        ),
    );

    let (q, hq) = root.with_cancel();
    hq.cancel_with(Error::DeadlineExceeded);
    r.check(
        "(d) cancel_with(Error::DeadlineExceeded)",
        q.err() == Some(Error::Canceled) && q.cause().is_some_and(|c| c == Error::DeadlineExceeded),
        format_args!("err = {:?}, cause = {:?}", q.err(), cause_text(&q)),
    );

    // (c) after_func on an ended context runs at once, here.
    let _af = child.after_func(|| set(&AF_ENDED_IPSR, heap::ipsr()));
    let ran = get(&AF_ENDED_IPSR);
    r.check(
        "(c) after_func on an ended context runs at once",
        ran == THREAD_MODE,
        format_args!("ran in {}", ipsr_name(ran)),
    );

    // Handles: dropping cancels, detach does not.
    let (d1, h1) = root.with_cancel();
    drop(h1);
    let (d2, h2) = root.with_cancel();
    h2.detach();
    r.check(
        "dropping a CancelHandle cancels; detach() does not",
        d1.is_cancelled() && !d2.is_cancelled(),
        format_args!("dropped: {:?}, detached: {:?}", d1.err(), d2.err()),
    );

    // A deadline already due: born DeadlineExceeded, never queued.
    let (z, _hz) = root.with_timeout(Duration::ZERO);
    r.check(
        "with_timeout(0) is born DeadlineExceeded",
        z.err() == Some(Error::DeadlineExceeded) && CLOCK.timers().is_empty(),
        format_args!("err = {:?}", z.err()),
    );
    r.check(
        "the tree's clock is the SysTick clock",
        root.now() == CLOCK.now() || root.now() < CLOCK.now(),
        format_args!("now = {:?} (tick {})", root.now(), CLOCK.ticks()),
    );
}

/// Heap bytes per kind of node on this (32-bit) target, as the allocator
/// accounts them.
fn memory_costs(r: &mut Report, root: &Context) {
    let used = || HEAP.used();
    let base = used();
    let clock_root = Context::background_with_clock(&CLOCK);
    let root_b = used() - base;
    let m = used();
    let (c, h) = root.with_cancel();
    let cancel_b = used() - m;
    let m = used();
    let (t, ht) = c.with_timeout(Duration::from_secs(3600));
    let timeout_b = used() - m;
    let m = used();
    let v = c.with_value(7u32);
    let value_b = used() - m;
    let m = used();
    let af = c.after_func(|| {});
    let af_b = used() - m;
    let m = used();
    let cause = Cause::msg("brown-out");
    let cause_b = used() - m;
    // A Done future, polled (so it registers its waiter) and dropped.
    let done_b = {
        let m = used();
        let mut done = pin!(t.done());
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        let pending = done.as_mut().poll(&mut cx).is_pending();
        (used() - m) + usize::from(!pending)
    };
    hprintln!(
        "heap per node: background_with_clock {} B, with_cancel {} B, with_timeout {} B, with_value(u32) {} B, after_func(empty closure) {} B, Cause::msg {} B, done() {} B",
        root_b,
        cancel_b,
        timeout_b,
        value_b,
        af_b,
        cause_b,
        done_b
    );
    drop((cause, af, v, t, ht, c, h, clock_root));
    r.check(
        "done() allocates nothing; dropping frees every node",
        done_b == 0 && used() == base,
        format_args!("{} B in use before, {} B after", base, used()),
    );
}

/// Interrupt latency (feature `measure-cs`): the longest interrupts-masked
/// section in each phase, in SysTick counts (core clock cycles).
#[cfg(feature = "measure-cs")]
fn latency(r: &mut Report, root: &Context) {
    use crate::cs;

    // Microseconds at the core clock, with one decimal.
    struct Us(u32);
    impl core::fmt::Display for Us {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let tenths = self.0 as u64 * 10_000_000 / crate::clock::CORE_HZ as u64;
            write!(f, "{}.{}", tenths / 10, tenths % 10)
        }
    }
    let us = Us;
    let show = |what: &str, s: cs::Stats| {
        hprintln!(
            "latency: {}: longest masked section {} counts ({} us) in {}, {} sections; allocator {} counts",
            what,
            s.max,
            us(s.max),
            ipsr_name(s.max_ipsr),
            s.count,
            s.alloc_max
        );
        s
    };

    // Deriving and cancelling a tree of 16 children, each with a Done
    // waiting and an after_func, from thread mode.
    cs::reset();
    let (p, hp) = root.with_cancel();
    let kids: Vec<(Context, CancelHandle)> = (0..16).map(|_| p.with_cancel()).collect();
    let afs: Vec<_> = kids.iter().map(|(k, _)| k.after_func(|| {})).collect();
    let derive = show("derive 16 children + 16 after_func", cs::stats());
    cs::reset();
    hp.cancel();
    let cancel = show(
        "cancel a parent with 16 children (thread mode)",
        cs::stats(),
    );
    drop(afs);
    drop(kids);
    drop(p);

    // Deadlines due in the same tick, queued in increasing order (every one
    // becomes a child of the heap's root): the first pop merges them all.
    #[cfg(board = "microbit")]
    const NS: [usize; 4] = [1, 4, 16, 32];
    #[cfg(board = "mps2_an386")]
    const NS: [usize; 5] = [1, 4, 16, 32, 128];
    let mut fire = [0u32; NS.len()];
    let mut remove = [0u32; NS.len()];
    for (k, &n) in NS.iter().enumerate() {
        // Fired by the SysTick alarm.
        let base = CLOCK.now().as_nanos() + 3_000_000;
        let ts: Vec<_> = (0..n)
            .map(|i| root.with_deadline(cancel_tree::Instant::from_nanos(base + i as u64)))
            .collect();
        cs::reset();
        while !CLOCK.timers().is_empty() {
            cortex_m::asm::wfi();
        }
        fire[k] = cs::stats().max;
        drop(ts);
        // Cancelled from thread mode, the earliest first (a root removal).
        let ts: Vec<_> = (0..n)
            .map(|i| {
                root.with_deadline(cancel_tree::Instant::from_nanos(
                    base + 1_000_000_000 + i as u64,
                ))
            })
            .collect();
        cs::reset();
        ts[0].1.cancel();
        remove[k] = cs::stats().max;
        drop(ts);
    }
    for (k, &n) in NS.iter().enumerate() {
        hprintln!(
            "latency: {} pending deadlines: fire (SysTick) longest masked section {} counts ({} us); cancel the earliest (thread) {} counts ({} us)",
            n,
            fire[k],
            us(fire[k]),
            remove[k],
            us(remove[k])
        );
    }
    r.check(
        "latency measured",
        derive.max > 0 && cancel.max > 0 && fire.iter().all(|&c| c > 0),
        format_args!(
            "longest masked section: cancel walk {} us, fire with 1 deadline {} us, with {} deadlines {} us",
            us(cancel.max),
            us(fire[0]),
            NS[NS.len() - 1],
            us(fire[NS.len() - 1])
        ),
    );
}
