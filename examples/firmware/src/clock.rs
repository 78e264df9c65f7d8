//! A [`cancel_tree::Clock`] on the Cortex-M SysTick timer.
//!
//! SysTick interrupts at [`TICK_HZ`]. Its handler calls
//! [`SysTickClock::on_tick`], which counts the tick and, once the alarm the
//! library asked for is due, calls `timers().fire(self)`: due contexts are
//! cancelled right there, in the interrupt, and their wakers (our executor's:
//! they set a ready bit) and `after_func` closures run there too.
//!
//! * `now()` is `ticks × 1 ms`: monotonic, 1-tick resolution.
//! * `set_alarm(at)` only stores the tick at which to fire (the library calls
//!   it inside its queue's critical section, so it must be quick and must not
//!   call `fire`). An alarm already in the past fires on the next tick
//!   (≤ 1 ms late), which the `Clock` contract allows ("fire soon").
//!
//! Everything is behind `critical_section::Mutex`es, so it works the same on
//! ARMv6-M (no compare-and-swap, no 64-bit atomics) and ARMv7E-M.

use core::cell::Cell;

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use critical_section::Mutex;

/// SysTick rate: one tick per millisecond.
pub const TICK_HZ: u32 = 1_000;
/// Length of one tick.
#[cfg_attr(not(feature = "lib"), allow(dead_code))]
pub const NANOS_PER_TICK: u64 = 1_000_000_000 / TICK_HZ as u64;

/// The core clock SysTick counts (its "processor clock" source).
#[cfg(board = "mps2_an386")]
pub const CORE_HZ: u32 = 25_000_000;
/// The core clock SysTick counts (its "processor clock" source).
#[cfg(board = "microbit")]
pub const CORE_HZ: u32 = 16_000_000;

/// A tick counter on SysTick, and (with the `lib` feature) the
/// cancel-tree clock built on it.
pub struct SysTickClock {
    ticks: Mutex<Cell<u64>>,
    /// The tick at which to call `fire` (`u64::MAX`: no alarm).
    #[cfg_attr(not(feature = "lib"), allow(dead_code))]
    alarm_tick: Mutex<Cell<u64>>,
    /// How often the alarm went off (`fire` was called from the ISR).
    #[cfg_attr(not(feature = "lib"), allow(dead_code))]
    fires: Mutex<Cell<u32>>,
    /// How often the library called `set_alarm`.
    #[cfg_attr(not(feature = "lib"), allow(dead_code))]
    alarm_requests: Mutex<Cell<u32>>,
    #[cfg(feature = "lib")]
    timers: cancel_tree::Timers,
}

impl SysTickClock {
    /// A stopped clock at tick 0 (usable in a `static`).
    pub const fn new() -> SysTickClock {
        SysTickClock {
            ticks: Mutex::new(Cell::new(0)),
            alarm_tick: Mutex::new(Cell::new(u64::MAX)),
            fires: Mutex::new(Cell::new(0)),
            alarm_requests: Mutex::new(Cell::new(0)),
            #[cfg(feature = "lib")]
            timers: cancel_tree::Timers::new(),
        }
    }

    /// Starts SysTick at [`TICK_HZ`] from the core clock, with its interrupt.
    pub fn start(&self, mut syst: SYST) {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(CORE_HZ / TICK_HZ - 1);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
    }

    /// Ticks since `start`.
    pub fn ticks(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    /// The SysTick interrupt: counts one tick and fires due deadlines.
    /// Returns the new tick count.
    pub fn on_tick(&self) -> u64 {
        let (now, _due) = critical_section::with(|cs| {
            let t = self.ticks.borrow(cs).get() + 1;
            self.ticks.borrow(cs).set(t);
            (t, t >= self.alarm_tick.borrow(cs).get())
        });
        #[cfg(feature = "lib")]
        if _due {
            critical_section::with(|cs| {
                let f = self.fires.borrow(cs);
                f.set(f.get() + 1);
            });
            // Cancels every due context, here in the interrupt, then calls
            // `set_alarm` with the next deadline (or `None`).
            self.timers.fire(self);
        }
        now
    }

    /// Tickless idle: the counter jumps `ticks` ahead at once (as after a
    /// low-power sleep with the tick interrupt off), then the clock fires
    /// what came due meanwhile, as its next tick would.
    #[cfg(feature = "scenarios")]
    pub fn skip(&self, ticks: u64) {
        let due = critical_section::with(|cs| {
            let t = self.ticks.borrow(cs).get() + ticks;
            self.ticks.borrow(cs).set(t);
            t >= self.alarm_tick.borrow(cs).get()
        });
        if due {
            self.timers.fire(self);
        }
    }

    /// How many times the alarm went off.
    #[cfg_attr(
        not(any(feature = "scenarios", feature = "no-alloc")),
        allow(dead_code)
    )]
    pub fn fires(&self) -> u32 {
        critical_section::with(|cs| self.fires.borrow(cs).get())
    }

    /// How many times the library called `set_alarm`.
    #[cfg_attr(
        not(any(feature = "scenarios", feature = "no-alloc")),
        allow(dead_code)
    )]
    pub fn alarm_requests(&self) -> u32 {
        critical_section::with(|cs| self.alarm_requests.borrow(cs).get())
    }
}

#[cfg(feature = "lib")]
impl cancel_tree::Clock for SysTickClock {
    fn now(&self) -> cancel_tree::Instant {
        cancel_tree::Instant::from_nanos(self.ticks() * NANOS_PER_TICK)
    }

    fn timers(&self) -> &cancel_tree::Timers {
        &self.timers
    }

    fn set_alarm(&self, at: Option<cancel_tree::Instant>) {
        // The first tick at which `now() >= at`.
        let tick = at.map_or(u64::MAX, |at| at.as_nanos().div_ceil(NANOS_PER_TICK));
        critical_section::with(|cs| {
            self.alarm_tick.borrow(cs).set(tick);
            let r = self.alarm_requests.borrow(cs);
            r.set(r.get() + 1);
        });
    }
}

/// The one clock of this firmware.
pub static CLOCK: SysTickClock = SysTickClock::new();
