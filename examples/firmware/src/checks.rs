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

/// The masked sections of the last cancel PendSV made (`measure-cs`): reset
/// right before `cancel_with`, read right after, so they are exactly that
/// call's (SysTick has PendSV's priority, so it cannot preempt it).
#[cfg(feature = "measure-cs")]
static PENDSV_CS: Mutex<Cell<crate::cs::Stats>> = Mutex::new(Cell::new(crate::cs::Stats {
    count: 0,
    max: 0,
    max_ipsr: 0,
    alloc_max: 0,
}));

/// The PendSV handler: cancels the handed-over context from interrupt
/// context ((a), and the fan-out of `latency`).
pub fn on_pendsv() {
    ISR_CANCEL.use_once(|(handle, cause)| {
        #[cfg(feature = "measure-cs")]
        crate::cs::reset();
        // Cloning a cause only bumps a count; cancelling wakes the waiting
        // tasks' wakers and runs the `after_func` closures right here.
        handle.cancel_with(cause.clone());
        #[cfg(feature = "measure-cs")]
        let s = crate::cs::stats();
        set(&PENDSV_CANCELLED_AT, CLOCK.ticks());
        #[cfg(feature = "measure-cs")]
        set(&PENDSV_CS, s);
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

    // The queue's edge cases: equal deadlines, deadlines at the far end of
    // time, and a clock that jumps far ahead at once.
    {
        use cancel_tree::Instant;
        let at = CLOCK.now() + Duration::from_millis(3);
        let equal: Vec<_> = (0..5).map(|_| root.with_deadline(at)).collect();
        let never = root.with_deadline(Instant::MAX);
        let year = root.with_timeout(Duration::from_secs(365 * 24 * 3600));
        let hour = root.with_timeout(Duration::from_secs(3600));
        let queued = CLOCK.timers().len();
        while !equal.iter().all(|(c, _)| c.is_cancelled()) {
            cortex_m::asm::wfi();
        }
        let fired_at = CLOCK.now();
        let equal_ok = equal
            .iter()
            .all(|(c, _)| c.err() == Some(Error::DeadlineExceeded))
            && fired_at >= at
            && fired_at <= at + Duration::from_millis(SLACK_TICKS);
        // An hour passes in one step (tickless idle): the hour's deadline
        // fires in that one `fire`, the later ones stay.
        CLOCK.skip(3600 * crate::clock::TICK_HZ as u64);
        let jump_ok = hour.0.err() == Some(Error::DeadlineExceeded)
            && !year.0.is_cancelled()
            && !never.0.is_cancelled()
            && CLOCK.timers().len() == 2
            && CLOCK
                .timers()
                .next_deadline()
                .is_some_and(|n| n <= year.0.deadline().unwrap());
        r.check(
            "timer queue: equal deadlines fire together; a jump of an hour fires what it passed, nothing after",
            queued == 8 && equal_ok && jump_ok,
            format_args!(
                "{} queued; equal fired at {:?} for {:?}; after the jump: hour {:?}, year {:?}, never {:?}, {} pending",
                queued,
                fired_at,
                at,
                hour.0.err(),
                year.0.err(),
                never.0.err(),
                CLOCK.timers().len()
            ),
        );
        drop((never, year));
        r.check(
            "timer queue: far deadlines leave it when dropped",
            CLOCK.timers().is_empty(),
            format_args!("{} pending", CLOCK.timers().len()),
        );
    }

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
/// section in each phase, in SysTick counts (core clock cycles): a tree
/// derived and cancelled from thread mode, a fan-out of waiters cancelled
/// from PendSV, and the timer queue against the number of pending deadlines.
#[cfg(feature = "measure-cs")]
fn latency(r: &mut Report, root: &Context) {
    use crate::cs;

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

    let fan = isr_fan_out(r, root);
    let (tq, queue) = timer_queue(root);
    // The bound: no timer-queue operation's longest masked section
    // at any count pending is more than twice its figure at 1 pending.
    let one = queue[0];
    let (count, op) = queue[1..]
        .iter()
        .flat_map(|f| (0..4).map(move |op| (f[op], op)))
        .max_by_key(|&(c, op)| c as u64 * 100 / one[op].max(1) as u64)
        .unwrap_or((0, 0));
    r.check(
        "timer queue: masked sections do not grow with pending deadlines",
        count <= 2 * one[op],
        format_args!(
            "worst ratio to 1 pending: {} ({})",
            Ratio(count, one[op]),
            ["fire", "cancel earliest", "arm earliest", "arm latest"][op]
        ),
    );

    r.check(
        "latency measured",
        derive.max > 0 && cancel.max > 0 && fan.iter().all(|s| s.max > 0) && tq,
        format_args!(
            "longest masked section: derive {} us, cancel walk {} us, ISR fan-out {} / {} us, every timer-queue figure non-zero with the right number pending: {}",
            us(derive.max),
            us(cancel.max),
            us(fan[0].max),
            us(fan[1].max),
            tq
        ),
    );
}

/// Microseconds at the core clock, with one decimal.
#[cfg(feature = "measure-cs")]
struct Us(u32);

#[cfg(feature = "measure-cs")]
impl core::fmt::Display for Us {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let tenths = self.0 as u64 * 10_000_000 / crate::clock::CORE_HZ as u64;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}

/// `x / base` as `x.yy` (integer hundredths: no floats on the M0).
#[cfg(feature = "measure-cs")]
struct Ratio(u32, u32);

#[cfg(feature = "measure-cs")]
impl core::fmt::Display for Ratio {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let h = (self.0 as u64 * 100)
            .checked_div(self.1 as u64)
            .unwrap_or(0);
        write!(f, "{}.{:02}x", h / 100, h % 100)
    }
}

// --- ISR fan-out (measure-cs) -----------------------------------------------

/// Wakes of the fan-out's `Done` futures: how many, and which (bit i: the
/// i-th future's waker).
#[cfg(feature = "measure-cs")]
static FAN_WOKEN: Mutex<Cell<(u32, u64)>> = Mutex::new(Cell::new((0, 0)));
/// The fan-out's `after_func` closures: how many ran, and how many of those
/// in PendSV.
#[cfg(feature = "measure-cs")]
static FAN_AF: Mutex<Cell<(u32, u32)>> = Mutex::new(Cell::new((0, 0)));

#[cfg(feature = "measure-cs")]
fn fan_wake(i: usize) {
    critical_section::with(|cs| {
        let c = FAN_WOKEN.borrow(cs);
        let (n, bits) = c.get();
        c.set((n + 1, bits | (1 << i)));
    });
}

#[cfg(feature = "measure-cs")]
const FAN_VTABLE: core::task::RawWakerVTable = core::task::RawWakerVTable::new(
    |p| core::task::RawWaker::new(p, &FAN_VTABLE),
    |p| fan_wake(p as usize),
    |p| fan_wake(p as usize),
    |_| {},
);

/// The waker of the fan-out's `i`-th `Done`: records that it was woken.
#[cfg(feature = "measure-cs")]
fn fan_waker(i: usize) -> core::task::Waker {
    // SAFETY: the vtable's functions only read the index in the data
    // pointer; they are interrupt-safe (a critical section) and the data
    // needs no drop.
    unsafe { core::task::Waker::from_raw(core::task::RawWaker::new(i as *const (), &FAN_VTABLE)) }
}

/// Waiters and `after_func`s of the big fan-out (at most 64: one bit each
/// in `FAN_WOKEN`).
#[cfg(feature = "measure-cs")]
const FAN_OUT: usize = 64;

/// Cancels, from PendSV, a context with `n` `Done` futures pending and `n`
/// `after_func` registrations, for n = 1 and [`FAN_OUT`]: the longest masked
/// section must not grow with n (the walk pops one waiter per section and
/// wakes / runs it with no lock held). Returns the two PendSV figures.
#[cfg(feature = "measure-cs")]
fn isr_fan_out(r: &mut Report, root: &Context) -> [crate::cs::Stats; 2] {
    use core::task::Poll;

    let mut out = [crate::cs::Stats::default(); 2];
    let mut ok = [false; 2];
    for (k, n) in [1, FAN_OUT].into_iter().enumerate() {
        let (ctx, handle) = root.with_cancel();
        let cause = Cause::msg("fan-out cancelled from PendSV");
        set(&FAN_WOKEN, (0, 0));
        set(&FAN_AF, (0, 0));
        // `n` Done futures, each polled once (so registered) with its own
        // waker, and `n` after_func closures; every handle is kept, so
        // nothing is freed in the handler.
        let mut dones: Vec<Pin<Box<cancel_tree::Done<'_>>>> =
            (0..n).map(|_| Box::pin(ctx.done())).collect();
        let mut registered = 0;
        for (i, d) in dones.iter_mut().enumerate() {
            let w = fan_waker(i);
            let mut cx = core::task::Context::from_waker(&w);
            registered += usize::from(d.as_mut().poll(&mut cx).is_pending());
        }
        let afs: Vec<_> = (0..n)
            .map(|_| {
                ctx.after_func(|| {
                    let in_pendsv = u32::from(heap::ipsr() == PENDSV);
                    critical_section::with(|cs| {
                        let c = FAN_AF.borrow(cs);
                        let (ran, isr) = c.get();
                        c.set((ran + 1, isr + in_pendsv));
                    });
                })
            })
            .collect();

        // Hand the handle to PendSV and pend it: it runs at once (thread
        // mode has interrupts enabled), cancels, and records its sections.
        set(&PENDSV_CANCELLED_AT, u64::MAX);
        let isr_allocs = HEAP.counts().isr_allocs;
        ISR_CANCEL.put((handle, cause));
        SCB::set_pendsv();
        cortex_m::asm::dsb();
        cortex_m::asm::isb();
        let ran = get(&PENDSV_CANCELLED_AT) != u64::MAX;
        let handle = ISR_CANCEL.take().map(|(h, _)| h);
        let s = get(&PENDSV_CS);
        out[k] = s;

        let (woken, bits) = get(&FAN_WOKEN);
        let all_bits = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let mut ready = 0;
        for (i, d) in dones.iter_mut().enumerate() {
            let w = fan_waker(i);
            let mut cx = core::task::Context::from_waker(&w);
            ready += usize::from(matches!(
                d.as_mut().poll(&mut cx),
                Poll::Ready(Error::Canceled)
            ));
        }
        let (af_ran, af_isr) = get(&FAN_AF);
        ok[k] = ran
            && registered == n
            && woken as usize == n
            && bits == all_bits
            && ready == n
            && af_ran as usize == n
            && af_isr as usize == n
            && HEAP.counts().isr_allocs == isr_allocs;
        hprintln!(
            "latency: ISR fan-out, {:>2} Done + {:>2} after_func cancelled from PendSV: longest masked section {} counts ({} us), {} sections; {} of {} woken, {} of {} after_func ran in PendSV",
            n,
            n,
            s.max,
            Us(s.max),
            s.count,
            woken,
            n,
            af_isr,
            n
        );
        drop(dones);
        drop(afs);
        drop(handle);
    }
    r.check(
        "ISR fan-out: every waiter woken and every after_func run, from PendSV",
        ok[0] && ok[1],
        format_args!(
            "1 and {} Done futures + after_funcs: {:?} (each: PendSV ran, all registered, each waker woken once, each Done Ready(Canceled), each closure ran in PendSV, no allocation there)",
            FAN_OUT, ok
        ),
    );
    r.check(
        "ISR fan-out: the longest masked section does not grow with the waiters",
        out[0].max > 0 && out[1].max <= 2 * out[0].max,
        format_args!(
            "longest section with 1 waiter + 1 after_func {} counts, with {} + {} {} counts ({}; bound 2.00x); {} vs {} sections",
            out[0].max,
            FAN_OUT,
            FAN_OUT,
            out[1].max,
            Ratio(out[1].max, out[0].max),
            out[0].count,
            out[1].count
        ),
    );
    out
}

// --- the timer queue (measure-cs) --------------------------------------------

/// The longest masked section of each timer-queue operation against the
/// number of deadlines pending, printed as one table line per count.
/// Returns whether every figure was measured (non-zero, with the intended
/// number of deadlines pending), and the figures (`[fire, cancel, arm
/// earliest, arm latest]` per count, the first for 1 pending).
#[cfg(feature = "measure-cs")]
fn timer_queue(root: &Context) -> (bool, Vec<[u32; 4]>) {
    use crate::cs;
    use cancel_tree::Instant;

    // As many as the heap holds: on the micro:bit 128, not 256 (each
    // pending deadline context is a heap node; docs/embedded.md).
    #[cfg(board = "microbit")]
    const NS: [usize; 5] = [1, 4, 16, 32, 128];
    #[cfg(board = "mps2_an386")]
    const NS: [usize; 6] = [1, 4, 16, 32, 128, 256];
    const FIRE: usize = 0;
    const CANCEL: usize = 1;
    const ARM_EARLY: usize = 2;
    const ARM_LATE: usize = 3;
    let mut m = [[0u32; 4]; NS.len()];
    let mut measured = true;
    let now = || CLOCK.now().as_nanos();
    for (k, &n) in NS.iter().enumerate() {
        // fire: deadlines due in the same tick, all in one slot of the
        // wheel, which `fire` drains one entry per masked section. Fired by
        // the SysTick alarm; far enough ahead that all n are queued first.
        let base = now() + 2_000_000 + n as u64 * 200_000;
        let ts: Vec<_> = (0..n)
            .map(|i| root.with_deadline(Instant::from_nanos(base + i as u64)))
            .collect();
        measured &= CLOCK.timers().len() == n;
        cs::reset();
        while !CLOCK.timers().is_empty() {
            cortex_m::asm::wfi();
        }
        m[k][FIRE] = cs::stats().max;
        measured &= ts
            .iter()
            .all(|(c, _)| c.err() == Some(Error::DeadlineExceeded));
        drop(ts);

        // The same queue shape, a second ahead.
        let far = now() + 1_000_000_000;
        let ts: Vec<_> = (0..n)
            .map(|i| root.with_deadline(Instant::from_nanos(far + i as u64)))
            .collect();
        measured &= CLOCK.timers().len() == n;
        // arm: one more deadline context, earlier than all (the new
        // earliest: the clock's alarm is re-armed inside the section)...
        cs::reset();
        let early = root.with_deadline(Instant::from_nanos(far - 1));
        m[k][ARM_EARLY] = cs::stats().max;
        // (The queue's next alarm is no later than its earliest deadline.)
        measured &= CLOCK
            .timers()
            .next_deadline()
            .is_some_and(|at| at <= Instant::from_nanos(far - 1))
            && CLOCK.timers().len() == n + 1;
        drop(early);
        // ... and later than all.
        cs::reset();
        let late = root.with_deadline(Instant::from_nanos(far + n as u64));
        m[k][ARM_LATE] = cs::stats().max;
        measured &= CLOCK
            .timers()
            .next_deadline()
            .is_some_and(|at| at <= Instant::from_nanos(far))
            && CLOCK.timers().len() == n + 1;
        drop(late);
        // cancel / remove: the earliest, from thread mode (a root removal).
        cs::reset();
        ts[0].1.cancel();
        m[k][CANCEL] = cs::stats().max;
        measured &= CLOCK.timers().len() == n - 1;
        drop(ts);
    }
    let one = m[0];
    for (k, &n) in NS.iter().enumerate() {
        let f = m[k];
        hprintln!(
            "latency: timer queue, {:>3} pending: fire {} counts ({}), cancel earliest {} ({}), arm earliest {} ({}), arm latest {} ({}) [ratio to 1 pending]",
            n,
            f[FIRE],
            Ratio(f[FIRE], one[FIRE]),
            f[CANCEL],
            Ratio(f[CANCEL], one[CANCEL]),
            f[ARM_EARLY],
            Ratio(f[ARM_EARLY], one[ARM_EARLY]),
            f[ARM_LATE],
            Ratio(f[ARM_LATE], one[ARM_LATE])
        );
    }
    (
        measured && m.iter().all(|f| f.iter().all(|&c| c > 0)),
        m.to_vec(),
    )
}
