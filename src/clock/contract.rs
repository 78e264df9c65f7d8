//! The [`Clock`] contract: what a source of time implements so that
//! deadlines fire on it.

use crate::Instant;
use crate::clock::timer_queue::Timers;

/// A source of time that can wake the crate when a deadline is due.
///
/// A tree uses one clock (see
/// [`Context::background_with_clock`](crate::Context::background_with_clock));
/// the crate keeps that clock's queue of pending deadlines in the [`Timers`]
/// the clock stores. A clock on one hardware timer is three methods; what
/// each one MUST and MUST NOT do:
///
/// * [`now`](Clock::now) MUST be monotonic: it never returns less than a
///   value it returned before (the epoch is the clock's own: boot, process
///   start, ...). It MUST NOT call back into this crate.
/// * [`timers`](Clock::timers) MUST return the same [`Timers`] every time,
///   one the clock owns (a field, or a `static`), and no other clock's.
/// * [`set_alarm`](Clock::set_alarm)`(Some(at))` MUST arrange for
///   [`Timers::fire`] to be called once `now() >= at`, even if that is
///   already the case (then soon: pend the interrupt, notify the thread).
///   Each call replaces the previous request; `None` cancels it. It is
///   called with the queue's lock held (so calls are totally ordered), from
///   whatever thread or interrupt derives or fires a context: it MUST be
///   quick, MUST NOT block, and MUST NOT call back into this crate (not
///   `fire`, and not derive, cancel or drop contexts).
///
/// `fire` MAY be called late, spuriously or from several places at once;
/// that is harmless. Never calling it is the one thing that breaks deadlines.
/// It may be called from a thread or from the alarm's interrupt handler
/// (without `std` the queue's lock is a critical section, so an interrupt
/// never finds it held). Contexts whose deadline passed are cancelled inside
/// `fire`, on that thread or interrupt: their wakers and `after_func`
/// closures run there.
///
/// ```
/// use cancel_tree::{Clock, Context, Instant, Timers};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// /// A clock driven by a (simulated) hardware tick counter.
/// struct TickClock { ticks: AtomicU64, alarm: AtomicU64, timers: Timers }
///
/// impl Clock for TickClock {
///     fn now(&self) -> Instant {
///         Instant::from_nanos(self.ticks.load(Ordering::Acquire) * 1_000_000)
///     }
///     fn timers(&self) -> &Timers { &self.timers }
///     fn set_alarm(&self, at: Option<Instant>) {
///         self.alarm.store(at.map_or(u64::MAX, Instant::as_nanos), Ordering::Release);
///     }
/// }
///
/// impl TickClock {
///     /// The timer interrupt: one tick.
///     fn on_tick(&self) {
///         self.ticks.fetch_add(1, Ordering::AcqRel);
///         if self.now().as_nanos() >= self.alarm.load(Ordering::Acquire) {
///             self.timers.fire(self);
///         }
///     }
/// }
///
/// static CLOCK: TickClock = TickClock {
///     ticks: AtomicU64::new(0),
///     alarm: AtomicU64::new(u64::MAX),
///     timers: Timers::new(),
/// };
///
/// let root = Context::background_with_clock(&CLOCK);
/// let (ctx, _cancel) = root.with_timeout(std::time::Duration::from_millis(3));
/// for _ in 0..3 {
///     assert!(!ctx.is_cancelled());
///     CLOCK.on_tick();
/// }
/// assert!(ctx.is_cancelled());
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time; never decreases.
    fn now(&self) -> Instant;

    /// The queue of pending deadlines on this clock, which the clock stores
    /// and the crate manages.
    fn timers(&self) -> &Timers;

    /// Requests a call to [`Timers::fire`] once `now() >= at` (replacing any
    /// earlier request); `None` means no deadline is pending.
    fn set_alarm(&self, at: Option<Instant>);
}

/// A null `*const dyn Clock` ("no clock"); only its vtable exists, and it is
/// tiny, so firmware does not pay for `ManualClock`'s.
pub(crate) fn no_clock() -> *const dyn Clock {
    core::ptr::null::<NoClock>() as *const dyn Clock
}

/// The type behind [`no_clock`]; never instantiated (so its queue costs no
/// static memory).
struct NoClock(Timers);

impl Clock for NoClock {
    fn now(&self) -> Instant {
        Instant::ZERO
    }
    fn timers(&self) -> &Timers {
        &self.0
    }
    fn set_alarm(&self, _at: Option<Instant>) {}
}

impl<C: Clock> Clock for &'static C {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn timers(&self) -> &Timers {
        (**self).timers()
    }
    fn set_alarm(&self, at: Option<Instant>) {
        (**self).set_alarm(at)
    }
}
