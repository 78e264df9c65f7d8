//! A tiny executor: a fixed set of pinned futures, one ready bit per task,
//! and `WFI` when nothing is ready.
//!
//! A task's waker sets its bit (from thread mode or from an interrupt
//! handler). The loop polls only tasks whose bit is set, so a task waiting on
//! `ctx.done()` is polled once to register and once after it is woken: no
//! polling loop. Each poll is counted, and so is every `WFI`.

use core::cell::Cell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use critical_section::Mutex;

/// At most this many tasks (one bit each).
pub const MAX_TASKS: usize = 32;

/// Ready bits, set by wakers.
static READY: Mutex<Cell<u32>> = Mutex::new(Cell::new(0));

/// One task: a pinned future and its poll count.
pub struct Task<'a> {
    fut: Pin<&'a mut dyn Future<Output = ()>>,
    /// How often it was polled.
    pub polls: u32,
    /// It completed.
    pub done: bool,
}

impl<'a> Task<'a> {
    /// A task running `fut`.
    pub fn new(fut: Pin<&'a mut dyn Future<Output = ()>>) -> Task<'a> {
        Task {
            fut,
            polls: 0,
            done: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Rounds of the loop (each polls every ready task once).
    pub rounds: u32,
    /// `WFI`s executed (the core slept until the next interrupt).
    pub sleeps: u32,
    /// Polls, all tasks together.
    pub polls: u32,
}

fn set_ready(i: usize) {
    critical_section::with(|cs| {
        let r = READY.borrow(cs);
        r.set(r.get() | (1 << i));
    });
}

const VTABLE: RawWakerVTable = RawWakerVTable::new(
    |p| RawWaker::new(p, &VTABLE),
    |p| set_ready(p as usize),
    |p| set_ready(p as usize),
    |_| {},
);

fn waker(i: usize) -> Waker {
    // SAFETY: the vtable's functions only read the index in the data pointer;
    // they are thread- and interrupt-safe (a critical section) and the data
    // needs no drop.
    unsafe { Waker::from_raw(RawWaker::new(i as *const (), &VTABLE)) }
}

/// Runs every task to completion. Gives up with `Err` once `ticks()`
/// reaches `give_up_at` (a hung check must fail, not hang).
pub fn run(
    tasks: &mut [Task<'_>],
    ticks: impl Fn() -> u64,
    give_up_at: u64,
) -> Result<Stats, Stats> {
    assert!(tasks.len() <= MAX_TASKS);
    let mut stats = Stats::default();
    critical_section::with(|cs| READY.borrow(cs).set(((1u64 << tasks.len()) - 1) as u32));
    loop {
        let ready = critical_section::with(|cs| READY.borrow(cs).replace(0));
        if ready != 0 {
            stats.rounds += 1;
        }
        for (i, task) in tasks.iter_mut().enumerate() {
            if ready & (1 << i) == 0 || task.done {
                continue;
            }
            let w = waker(i);
            let mut cx = Context::from_waker(&w);
            task.polls += 1;
            stats.polls += 1;
            if let Poll::Ready(()) = task.fut.as_mut().poll(&mut cx) {
                task.done = true;
            }
        }
        if tasks.iter().all(|t| t.done) {
            return Ok(stats);
        }
        if ticks() >= give_up_at {
            return Err(stats);
        }
        // Sleep unless a waker ran since we looked. Interrupts are masked
        // while checking, so a wake-up cannot slip in between the check and
        // the WFI; a pending interrupt still ends the WFI, and runs as soon
        // as the critical section ends.
        crate::cs::tag(crate::cs::Tag::Sleep);
        critical_section::with(|cs| {
            if READY.borrow(cs).get() == 0 {
                stats.sleeps += 1;
                cortex_m::asm::wfi();
            }
        });
        crate::cs::tag(crate::cs::Tag::None);
    }
}
