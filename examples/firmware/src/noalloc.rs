//! The heap-free checks (feature `no-alloc`): cancel-tree built with no
//! feature at all, and no global allocator in the firmware. Only
//! `StaticScope`, `LocalScope` and `ScopeRef`, on the same executor, SysTick
//! clock and interrupts as `checks.rs`:
//!
//! * (a) a task pins a `LocalScope` parent under the `static` root
//!   [`IRQ_ROOT`] and a child under that, and awaits the child's `done()`;
//!   the PendSV handler cancels the static root [`ISR_CANCEL_TICKS`] ticks
//!   later, and the cancel reaches the child inside the interrupt;
//! * (b) a task pins a `LocalScope::with_timeout` on the SysTick clock and
//!   awaits it: the clock's alarm fires it while the core sleeps in WFI, and
//!   the task is polled twice (register, then ready);
//! * (e) a subtree: a parent `LocalScope` in this function's frame, one task
//!   per child (each pins its child and two grandchildren in its future,
//!   one child with a queued deadline of its own), and a controller task
//!   that sleeps on a timeout scope, then calls
//!   `cancel_with(Error::DeadlineExceeded)` on the parent: every child and
//!   grandchild ends with `err() == Canceled`, `cause() == DeadlineExceeded`,
//!   in the same tick, and the child's deadline leaves the clock's queue;
//! * (f) synchronous checks: first cancel wins, a child attached under an
//!   ended parent is born ended with the parent's cause, a child's cancel
//!   stays below it, deadlines are inherited (Go's rule), a dropped scope
//!   leaves the clock's queue, `with_timeout(0)` is born `DeadlineExceeded`;
//!
//! plus: the clock's timer queue is empty at the end, and the alarm drove
//! the deadlines. There is no heap to count: the build links no allocator
//! at all (`.ci/firmware.sh` checks the symbols).

use core::cell::Cell;
use core::mem::size_of;
use core::pin::pin;
use core::time::Duration;

use cancel_tree::{Clock, Done, Error, Instant, LocalScope, ScopeRef, StaticScope};
use cortex_m::peripheral::SCB;
use cortex_m_semihosting::hprintln;
use critical_section::Mutex;

use crate::clock::CLOCK;
use crate::cpu::ipsr;
use crate::executor::{self, Task};
use crate::report::Report;

/// The root PendSV cancels in (a). A `static`, so an interrupt handler can
/// reach it with no handover at all.
static IRQ_ROOT: StaticScope = StaticScope::new();
/// The root of every other scope here (never cancelled).
static APP: StaticScope = StaticScope::new();

/// (a): PendSV cancels this many ticks after the run starts.
const ISR_CANCEL_TICKS: u64 = 20;
/// (b): the timeout.
const TIMEOUT_MS: u64 = 50;
/// (e): the controller cancels the subtree after this long.
const SUBTREE_CANCEL_MS: u64 = 30;
/// (e): children of the subtree's parent (each with two grandchildren).
const CHILDREN: usize = 4;
/// A deadline fires on the tick it is due; allow this much lateness.
const SLACK_TICKS: u64 = 1;
/// Exception number of PendSV (IPSR).
const PENDSV: u32 = 14;
const NEVER: u64 = u64::MAX;

// --- the interrupt side ----------------------------------------------------

/// The tick at which SysTick pends PendSV.
static PENDSV_AT: Mutex<Cell<u64>> = Mutex::new(Cell::new(NEVER));
/// The tick at which PendSV cancelled [`IRQ_ROOT`], and the IPSR it saw.
static PENDSV_CANCELLED: Mutex<Cell<Option<(u64, u32)>>> = Mutex::new(Cell::new(None));

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

/// The PendSV handler: cancels the static root. The walk reaches (a)'s
/// local parent and child, pinned in a task's future, and wakes the task.
pub fn on_pendsv() {
    if get(&PENDSV_AT) == NEVER {
        return;
    }
    IRQ_ROOT.scope().cancel();
    set(&PENDSV_CANCELLED, Some((CLOCK.ticks(), ipsr())));
}

// --- the tasks ---------------------------------------------------------------

/// What a task saw when its `done()` resolved.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// `done()`'s output.
    err: Error,
    /// The tick it resolved at.
    tick: u64,
    /// The cause of the scope it awaited.
    cause: Option<Error>,
    /// Scenario-specific: every other scope it checked agreed.
    others_ok: bool,
}

type Out = Cell<Option<Seen>>;

fn cause_of(s: ScopeRef<'_>) -> Option<Error> {
    s.cause().and_then(|c| c.as_error())
}

/// (a): a parent and a child pinned in this future, under the static root
/// that PendSV cancels.
async fn isr_cancelled(out: &Out) {
    let parent = pin!(LocalScope::new(IRQ_ROOT.scope()));
    let parent = parent.into_ref().get();
    let child = pin!(LocalScope::new(parent));
    let child = child.into_ref().get();
    let err = child.done().await;
    out.set(Some(Seen {
        err,
        tick: CLOCK.ticks(),
        cause: cause_of(child),
        others_ok: parent.err() == Some(Error::Canceled)
            && cause_of(parent) == Some(Error::Canceled),
    }));
}

/// (b): a timeout on the SysTick clock, pinned in this future. Also
/// records the deadline it reports and the queue length once it is armed.
async fn timeout(out: &Out, armed: &Cell<Option<(u64, Option<Instant>, usize)>>) {
    let start = CLOCK.ticks();
    let t = pin!(LocalScope::with_timeout(
        APP.scope(),
        &CLOCK,
        Duration::from_millis(TIMEOUT_MS)
    ));
    let t = t.into_ref().get();
    armed.set(Some((start, t.deadline(), CLOCK.timers().len())));
    let err = t.done().await;
    out.set(Some(Seen {
        err,
        tick: CLOCK.ticks(),
        cause: cause_of(t),
        others_ok: true,
    }));
}

/// (e): sleeps on a timeout scope, then ends the subtree with a
/// `DeadlineExceeded` cause. Records the tick and the queue length just
/// before and after the cancel.
async fn controller(sub: ScopeRef<'_>, out: &Cell<Option<(u64, usize, usize)>>) {
    let sleep = pin!(LocalScope::with_timeout(
        APP.scope(),
        &CLOCK,
        Duration::from_millis(SUBTREE_CANCEL_MS)
    ));
    sleep.into_ref().get().done().await;
    let before = CLOCK.timers().len();
    sub.cancel_with(Error::DeadlineExceeded);
    out.set(Some((CLOCK.ticks(), before, CLOCK.timers().len())));
}

/// (e): one child of `sub` and two grandchildren, pinned in this future;
/// child 2 has a deadline of its own (an hour away: queued), child 3 one on
/// `with_deadline`. Awaits the second grandchild.
async fn subtree_child(sub: ScopeRef<'_>, i: usize, out: &Out) {
    let hour = Duration::from_secs(3600);
    let child = pin!(match i {
        2 => LocalScope::with_timeout(sub, &CLOCK, hour),
        3 => LocalScope::with_deadline(sub, &CLOCK, CLOCK.now().saturating_add(hour)),
        _ => LocalScope::new(sub),
    });
    let child = child.into_ref().get();
    let g0 = pin!(LocalScope::new(child));
    let g0 = g0.into_ref().get();
    let g1 = pin!(LocalScope::new(child));
    let g1 = g1.into_ref().get();
    let err = g1.done().await;
    let ended = |s: ScopeRef<'_>| {
        s.err() == Some(Error::Canceled) && cause_of(s) == Some(Error::DeadlineExceeded)
    };
    out.set(Some(Seen {
        err,
        tick: CLOCK.ticks(),
        cause: cause_of(g1),
        others_ok: ended(child) && ended(g0),
    }));
}

// --- the checks --------------------------------------------------------------

/// Runs every check, recording results in `r`.
pub fn run(r: &mut Report) {
    hprintln!(
        "RAM per scope (no heap): StaticScope {} B, LocalScope {} B, ScopeRef {} B, done() future {} B",
        size_of::<StaticScope>(),
        size_of::<LocalScope<'static>>(),
        size_of::<ScopeRef<'static>>(),
        size_of::<Done<'static>>()
    );
    async_checks(r);
    sync_checks(r);
    let pending = CLOCK.timers().len();
    r.check(
        "timer queue empty",
        pending == 0,
        format_args!("CLOCK.timers().len() = {} after every check", pending),
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
    r.check(
        "APP root never cancelled",
        !APP.scope().is_cancelled() && APP.scope().deadline().is_none(),
        format_args!("APP err = {:?}", APP.scope().err()),
    );
}

/// (a), (b), (e): tasks on the executor, woken from interrupts and by each
/// other.
fn async_checks(r: &mut Report) {
    // (e)'s parent lives in this frame; the tasks borrow it.
    let sub = pin!(LocalScope::new(APP.scope()));
    let sub = sub.into_ref().get();

    let out_a: Out = Cell::new(None);
    let out_b: Out = Cell::new(None);
    let armed_b = Cell::new(None);
    let out_ctl = Cell::new(None);
    let out_e: [Out; CHILDREN] = [const { Cell::new(None) }; CHILDREN];

    let mut fut_a = pin!(isr_cancelled(&out_a));
    let mut fut_b = pin!(timeout(&out_b, &armed_b));
    let mut fut_ctl = pin!(controller(sub, &out_ctl));
    let mut fut_e0 = pin!(subtree_child(sub, 0, &out_e[0]));
    let mut fut_e1 = pin!(subtree_child(sub, 1, &out_e[1]));
    let mut fut_e2 = pin!(subtree_child(sub, 2, &out_e[2]));
    let mut fut_e3 = pin!(subtree_child(sub, 3, &out_e[3]));
    hprintln!(
        "task futures (scopes pinned inside): (a) {} B, (b) {} B, controller {} B, subtree child {} B",
        size_of_val(&*fut_a),
        size_of_val(&*fut_b),
        size_of_val(&*fut_ctl),
        size_of_val(&*fut_e0)
    );

    // Arm PendSV, then run everything.
    let start = CLOCK.ticks();
    set(&PENDSV_AT, start + ISR_CANCEL_TICKS);
    let mut tasks = [
        Task::new(fut_a.as_mut()),
        Task::new(fut_b.as_mut()),
        Task::new(fut_ctl.as_mut()),
        Task::new(fut_e0.as_mut()),
        Task::new(fut_e1.as_mut()),
        Task::new(fut_e2.as_mut()),
        Task::new(fut_e3.as_mut()),
    ];
    let result = executor::run(&mut tasks, || CLOCK.ticks(), start + 1_000);
    let end = CLOCK.ticks();
    let mut polls = [0u32; 7];
    for (p, t) in polls.iter_mut().zip(&tasks) {
        *p = t.polls;
    }
    let n_tasks = tasks.len() as u32;
    let stats = match result {
        Ok(s) | Err(s) => s,
    };
    r.check(
        "executor: every task finished",
        result.is_ok(),
        format_args!(
            "{} tasks in {} ticks: {} rounds, {} polls, {} WFI sleeps",
            n_tasks,
            end - start,
            stats.rounds,
            stats.polls,
            stats.sleeps
        ),
    );
    r.check(
        "executor: no polling loop",
        stats.polls <= 2 * n_tasks && stats.sleeps >= (TIMEOUT_MS / 2) as u32,
        format_args!(
            "{} polls for {} tasks (2 each: register, then ready) while the core slept {} times",
            stats.polls, n_tasks, stats.sleeps
        ),
    );

    // (a)
    let cancelled = get(&PENDSV_CANCELLED);
    let a = out_a.get();
    let a_ok = match (cancelled, a) {
        (Some((at, irq)), Some(s)) => {
            irq == PENDSV
                && (start + ISR_CANCEL_TICKS..=start + ISR_CANCEL_TICKS + SLACK_TICKS).contains(&at)
                && s.err == Error::Canceled
                && s.tick == at
                && s.cause == Some(Error::Canceled)
                && s.others_ok
                && polls[0] <= 2
        }
        _ => false,
    };
    r.check(
        "(a) done() on a local child, woken by a cancel of the static root from PendSV",
        a_ok && IRQ_ROOT.scope().is_cancelled(),
        format_args!(
            "PendSV (IPSR {:?}) cancelled IRQ_ROOT after {:?} ticks; the child's done() gave {:?} at tick +{:?}, cause {:?}, parent agreed: {:?}; {} polls",
            cancelled.map(|(_, i)| i),
            cancelled.map(|(t, _)| t - start),
            a.map(|s| s.err),
            a.map(|s| s.tick - start),
            a.and_then(|s| s.cause),
            a.map(|s| s.others_ok),
            polls[0]
        ),
    );

    // (b)
    let b = out_b.get();
    let armed = armed_b.get();
    let b_ok = match (b, armed) {
        (Some(s), Some((b_start, deadline, queued))) => {
            let elapsed = s.tick - b_start;
            s.err == Error::DeadlineExceeded
                && s.cause == Some(Error::DeadlineExceeded)
                && (TIMEOUT_MS..=TIMEOUT_MS + SLACK_TICKS).contains(&elapsed)
                && deadline
                    == Some(Instant::from_nanos(
                        b_start * crate::clock::NANOS_PER_TICK + TIMEOUT_MS * 1_000_000,
                    ))
                && queued >= 1
                && polls[1] <= 2
        }
        _ => false,
    };
    r.check(
        "(b) LocalScope::with_timeout fired by the SysTick alarm while the core slept",
        b_ok,
        format_args!(
            "{} ms timeout: done() gave {:?} after {:?} ticks, cause {:?}; deadline {:?}; {:?} queued when armed; polled {} times",
            TIMEOUT_MS,
            b.map(|s| s.err),
            b.zip(armed).map(|(s, (st, _, _))| s.tick - st),
            b.and_then(|s| s.cause),
            armed.and_then(|(_, d, _)| d),
            armed.map(|(_, _, q)| q),
            polls[1]
        ),
    );

    // (e)
    let ctl = out_ctl.get();
    let mut e_fail = None;
    for (i, o) in out_e.iter().enumerate() {
        let ok = match (o.get(), ctl) {
            (Some(s), Some((at, _, _))) => {
                s.err == Error::Canceled
                    && s.cause == Some(Error::DeadlineExceeded)
                    && s.others_ok
                    && s.tick == at
                    && polls[3 + i] <= 2
            }
            _ => false,
        };
        if !ok && e_fail.is_none() {
            e_fail = Some(i);
        }
    }
    let ctl_ok = ctl.is_some_and(|(at, _, _)| {
        (start + SUBTREE_CANCEL_MS..=start + SUBTREE_CANCEL_MS + SLACK_TICKS).contains(&at)
    }) && polls[2] <= 2;
    r.check(
        "(e) the parent's cancel_with(DeadlineExceeded) reaches every local child and grandchild",
        e_fail.is_none()
            && ctl_ok
            && sub.err() == Some(Error::Canceled)
            && cause_of(sub) == Some(Error::DeadlineExceeded),
        format_args!(
            "{} children + {} grandchildren ended err = Canceled, cause = {:?} at tick +{:?}, each task polled at most {} times; first failure: {:?}",
            CHILDREN,
            2 * CHILDREN,
            out_e[0].get().and_then(|s| s.cause),
            ctl.map(|(t, _, _)| t - start),
            polls[3..].iter().max().copied().unwrap_or(0),
            e_fail
        ),
    );
    // At the cancel, (b)'s timeout and children 2's and 3's deadlines were
    // queued; the cancel takes the two children's out at once.
    r.check(
        "(e) a cancelled local deadline leaves the clock's queue at once",
        ctl.is_some_and(|(_, before, after)| before == 3 && after == 1),
        format_args!(
            "{:?} pending before the cancel, {:?} after",
            ctl.map(|(_, b, _)| b),
            ctl.map(|(_, _, a)| a)
        ),
    );

    // First cancel wins.
    sub.cancel();
    r.check(
        "(e) first cancel wins",
        cause_of(sub) == Some(Error::DeadlineExceeded),
        format_args!("after a second cancel the cause is {:?}", cause_of(sub)),
    );

    // Born ended: a child attached under the ended parent.
    let queued = CLOCK.timers().len();
    let late = pin!(LocalScope::new(sub));
    let late = late.into_ref().get();
    let late_t = pin!(LocalScope::with_timeout(
        sub,
        &CLOCK,
        Duration::from_millis(5)
    ));
    let late_t = late_t.into_ref().get();
    r.check(
        "(f) a child attached under an ended parent is born ended with its cause",
        late.err() == Some(Error::Canceled)
            && cause_of(late) == Some(Error::DeadlineExceeded)
            && late_t.err() == Some(Error::Canceled)
            && cause_of(late_t) == Some(Error::DeadlineExceeded)
            && CLOCK.timers().len() == queued,
        format_args!(
            "err = {:?}, cause = {:?}; with_timeout child: {:?}, {:?}, queue {} -> {}",
            late.err(),
            cause_of(late),
            late_t.err(),
            cause_of(late_t),
            queued,
            CLOCK.timers().len()
        ),
    );
}

/// (f): synchronously, in thread mode.
fn sync_checks(r: &mut Report) {
    // A child's cancel stays below it.
    {
        let p = pin!(LocalScope::new(APP.scope()));
        let p = p.into_ref().get();
        let c1 = pin!(LocalScope::new(p));
        let c1 = c1.into_ref().get();
        let c2 = pin!(LocalScope::new(p));
        let c2 = c2.into_ref().get();
        let g = pin!(LocalScope::new(c1));
        let g = g.into_ref().get();
        c1.cancel();
        r.check(
            "(f) a child's cancel reaches its own children, not its parent or sibling",
            g.err() == Some(Error::Canceled)
                && cause_of(g) == Some(Error::Canceled)
                && !p.is_cancelled()
                && !c2.is_cancelled(),
            format_args!(
                "grandchild {:?}, parent {:?}, sibling {:?}",
                g.err(),
                p.err(),
                c2.err()
            ),
        );
    }

    // Deadlines: Go's rule (a later child deadline is the parent's), and a
    // dropped scope leaves the clock's queue.
    {
        let base = CLOCK.timers().len();
        let p = pin!(LocalScope::with_timeout(
            APP.scope(),
            &CLOCK,
            Duration::from_millis(100)
        ));
        let p = p.into_ref().get();
        let later = pin!(LocalScope::with_timeout(
            p,
            &CLOCK,
            Duration::from_secs(3600)
        ));
        let later = later.into_ref().get();
        let with_later = CLOCK.timers().len() - base;
        let (with_earlier, earlier_deadline) = {
            let earlier = pin!(LocalScope::with_timeout(
                p,
                &CLOCK,
                Duration::from_millis(10)
            ));
            let earlier = earlier.into_ref().get();
            (CLOCK.timers().len() - base, earlier.deadline())
        };
        let after_drop = CLOCK.timers().len() - base;
        r.check(
            "(f) deadlines: a later child deadline is the parent's; an earlier one is queued",
            later.deadline() == p.deadline()
                && p.deadline().is_some()
                && with_later == 1
                && with_earlier == 2
                && earlier_deadline < p.deadline(),
            format_args!(
                "parent {:?}, later child {:?}, earlier child {:?}; queued: {} then {}",
                p.deadline(),
                later.deadline(),
                earlier_deadline,
                with_later,
                with_earlier
            ),
        );
        r.check(
            "(f) a dropped LocalScope leaves the clock's queue",
            after_drop == 1,
            format_args!("{} queued after dropping the earlier child", after_drop),
        );
    }

    // A deadline already due: born DeadlineExceeded on attach, never queued.
    {
        let base = CLOCK.timers().len();
        let z = pin!(LocalScope::with_timeout(
            APP.scope(),
            &CLOCK,
            Duration::ZERO
        ));
        let z = z.into_ref().get();
        r.check(
            "(f) with_timeout(0) is born DeadlineExceeded",
            z.err() == Some(Error::DeadlineExceeded)
                && cause_of(z) == Some(Error::DeadlineExceeded)
                && CLOCK.timers().len() == base,
            format_args!("err = {:?}, cause = {:?}", z.err(), cause_of(z)),
        );
    }
}
