//! Clocks: the [`Clock`] trait, the deterministic [`ManualClock`], and the
//! std default [`StdClock`].

#[cfg(feature = "alloc")]
use core::fmt;
#[cfg(feature = "alloc")]
use core::time::Duration;

#[cfg(all(
    not(cancel_tree_loom),
    any(feature = "tokio", feature = "async-io", feature = "embassy-time")
))]
mod driven;

#[cfg(all(not(cancel_tree_loom), feature = "async-io"))]
mod async_io;
#[cfg(all(not(cancel_tree_loom), feature = "embassy-time"))]
mod embassy;
#[cfg(all(not(cancel_tree_loom), feature = "tokio"))]
mod tokio;

#[cfg(all(not(cancel_tree_loom), feature = "async-io"))]
pub use async_io::AsyncIoClock;
#[cfg(all(not(cancel_tree_loom), feature = "embassy-time"))]
pub use embassy::EmbassyClock;
#[cfg(all(not(cancel_tree_loom), feature = "tokio"))]
pub use tokio::TokioClock;

use crate::Instant;
#[cfg(feature = "alloc")]
use crate::arc::Arc;
#[cfg(feature = "alloc")]
use crate::state::Word;
#[cfg(feature = "alloc")]
use crate::sync::UnsafeCell;
use crate::timer::Timers;

/// A source of time that can wake the crate when a deadline is due.
///
/// A tree uses one clock (see [`Context::background_with_clock`](crate::Context::background_with_clock)); the crate
/// keeps that clock's queue of pending deadlines in the [`Timers`] the clock
/// stores. Implementing a clock on one hardware timer takes three methods:
///
/// * [`now`](Clock::now): the current time. **Monotonic**: it never goes
///   backwards. The epoch is the clock's own (boot, process start, ...).
/// * [`timers`](Clock::timers): a [`Timers`] the clock owns (a field, or a
///   `static`).
/// * [`set_alarm`](Clock::set_alarm): "call [`Timers::fire`] once
///   `now() >= at`". A new call replaces the previous request; `None` cancels
///   it. The crate calls it while holding the queue's lock (so the calls are
///   totally ordered) from whatever thread derives or fires a context, so it
///   must be quick, must not block, and **must not call back into this
///   crate** (not `fire`, and not derive, cancel or drop contexts);
///   if `at` is already past, arrange for `fire` to be called soon (pend the
///   interrupt, notify the thread). Firing late or spuriously is harmless;
///   firing never is not.
///
/// `fire` may be called from a thread or from the alarm's interrupt handler
/// (without `std` the queue lock is a critical section, so an interrupt can
/// never find it held). Contexts whose deadline passed are cancelled inside
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

/// A clock that moves only when told: deterministic deadlines for tests,
/// simulations and fuzzing. Works without `std`.
///
/// Clones share one time and one queue. [`advance`](ManualClock::advance) and
/// [`set`](ManualClock::set) cancel every context whose deadline became due,
/// earliest first, on the calling thread, before they return.
///
/// ```
/// use cancel_tree::{Context, Error, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let root = Context::background_with_clock(clock.clone());
/// let (ctx, _cancel) = root.with_timeout(Duration::from_secs(30));
/// clock.advance(Duration::from_secs(29));
/// assert_eq!(ctx.err(), None);
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
/// ```
#[cfg(feature = "alloc")]
#[derive(Clone)]
pub struct ManualClock(Arc<ManualInner>);

#[cfg(feature = "alloc")]
struct ManualInner {
    lock: Word,
    nanos: UnsafeCell<u64>,
    timers: Timers,
}

// SAFETY: `nanos` is only touched under `lock`.
#[cfg(feature = "alloc")]
unsafe impl Send for ManualInner {}
// SAFETY: as above.
#[cfg(feature = "alloc")]
unsafe impl Sync for ManualInner {}

#[cfg(feature = "alloc")]
impl ManualClock {
    /// A clock at [`Instant::ZERO`].
    pub fn new() -> ManualClock {
        ManualClock::starting_at(Instant::ZERO)
    }

    /// A clock at `start`.
    pub fn starting_at(start: Instant) -> ManualClock {
        ManualClock(Arc::new(ManualInner {
            lock: Word::new(0),
            nanos: UnsafeCell::new(start.as_nanos()),
            timers: Timers::new(),
        }))
    }

    /// Moves time forward by `d` (saturating at [`Instant::MAX`]) and fires
    /// every deadline that became due.
    pub fn advance(&self, d: Duration) {
        let guard = self.0.lock.lock();
        self.0.nanos.with_mut(|n| {
            // SAFETY: lock held.
            unsafe { *n = Instant::from_nanos(*n).saturating_add(d).as_nanos() }
        });
        drop(guard);
        self.0.timers.fire(self);
    }

    /// Moves time to `t` and fires every deadline that became due. Time never
    /// goes backwards: a `t` earlier than [`now`](Clock::now) leaves the time
    /// as it is (and still fires anything due).
    pub fn set(&self, t: Instant) {
        let guard = self.0.lock.lock();
        self.0.nanos.with_mut(|n| {
            // SAFETY: lock held.
            unsafe { *n = (*n).max(t.as_nanos()) }
        });
        drop(guard);
        self.0.timers.fire(self);
    }

    /// The current time (also available through [`Clock::now`]).
    pub fn now(&self) -> Instant {
        let _guard = self.0.lock.lock();
        // SAFETY: lock held.
        Instant::from_nanos(self.0.nanos.with(|n| unsafe { *n }))
    }

    /// Deadlines waiting on this clock.
    pub fn pending(&self) -> usize {
        self.0.timers.len()
    }
}

#[cfg(feature = "alloc")]
impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::new()
    }
}

#[cfg(feature = "alloc")]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        ManualClock::now(self)
    }
    fn timers(&self) -> &Timers {
        &self.0.timers
    }
    fn set_alarm(&self, _at: Option<Instant>) {
        // Time only moves in `advance`/`set`, which fire themselves.
    }
}

#[cfg(feature = "alloc")]
impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .field("pending", &self.pending())
            .finish()
    }
}

#[cfg(all(feature = "std", not(cancel_tree_loom)))]
pub use std_clock::StdClock;

#[cfg(all(feature = "std", not(cancel_tree_loom)))]
pub(crate) mod std_clock {
    use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
    use std::time::Duration;

    use super::Clock;
    use crate::Instant;
    use crate::timer::Timers;

    /// The default clock (`std`): monotonic time since the first use of the
    /// clock in this process, with deadlines fired by one timer thread for the
    /// whole process.
    ///
    /// The thread (`cancel-tree-timer`) starts the first time a deadline is
    /// queued, and never if none is; it sleeps on a condition variable until
    /// the earliest pending deadline (no polling). Accuracy: a deadline fires
    /// no earlier than due, and late by the OS's timer slack and scheduling
    /// latency (typically tens of microseconds to a millisecond on Linux; more
    /// under load). Contexts are cancelled on that thread; a panic from an
    /// `after_func` closure there is reported by the panic hook and the thread
    /// goes on.
    ///
    /// `StdClock` is a handle to that one process-wide clock: all copies are
    /// the same clock, and [`Context::background`](crate::Context::background)
    /// uses it.
    ///
    /// ```
    /// use cancel_tree::{Context, Error};
    /// use std::time::Duration;
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    /// assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    /// ```
    #[derive(Clone, Copy, Debug, Default)]
    pub struct StdClock;

    struct Service {
        timers: Timers,
        state: Mutex<Alarm>,
        wake: Condvar,
    }

    struct Alarm {
        at: Option<Instant>,
        started: bool,
    }

    static SERVICE: Service = Service {
        timers: Timers::new(),
        state: Mutex::new(Alarm {
            at: None,
            started: false,
        }),
        wake: Condvar::new(),
    };

    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();

    /// The longest single sleep; the thread re-checks after it.
    const MAX_SLEEP: Duration = Duration::from_secs(3600);

    pub(crate) static STD_CLOCK: StdClock = StdClock;

    fn state() -> MutexGuard<'static, Alarm> {
        // Nothing panics while holding it; recover anyway.
        SERVICE.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    impl Clock for StdClock {
        fn now(&self) -> Instant {
            let epoch = *EPOCH.get_or_init(std::time::Instant::now);
            let nanos = epoch.elapsed().as_nanos();
            Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        }

        fn timers(&self) -> &Timers {
            &SERVICE.timers
        }

        fn set_alarm(&self, at: Option<Instant>) {
            let mut st = state();
            st.at = at;
            if at.is_some() && !st.started {
                let spawned = std::thread::Builder::new()
                    .name("cancel-tree-timer".into())
                    .spawn(timer_thread);
                // If the OS refuses a thread, the next deadline retries.
                st.started = spawned.is_ok();
            }
            drop(st);
            SERVICE.wake.notify_one();
        }
    }

    fn timer_thread() {
        let mut st = state();
        loop {
            match st.at {
                None => st = SERVICE.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let now = StdClock.now();
                    if now >= at {
                        st.at = None;
                        drop(st);
                        // Contexts are cancelled here; keep the thread alive
                        // through a panicking callback (the hook printed it).
                        let _ = std::panic::catch_unwind(|| SERVICE.timers.fire(&StdClock));
                        st = state();
                    } else {
                        let sleep = (at - now).min(MAX_SLEEP);
                        st = SERVICE
                            .wake
                            .wait_timeout(st, sleep)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
        }
    }
}
