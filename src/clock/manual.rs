//! [`ManualClock`]: time that moves only when told.

use core::fmt;
use core::time::Duration;

use crate::Instant;
use crate::clock::contract::Clock;
use crate::clock::timer_queue::Timers;
use crate::raw::arc::Arc;
use crate::raw::lock::Lock;
use crate::raw::sync::UnsafeCell;

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
#[derive(Clone)]
pub struct ManualClock(Arc<ManualInner>);

struct ManualInner {
    lock: Lock,
    nanos: UnsafeCell<u64>,
    timers: Timers,
}

// SAFETY: `nanos` is only touched under `lock`; `Timers` is `Sync`.
unsafe impl Send for ManualInner {}
// SAFETY: as above.
unsafe impl Sync for ManualInner {}

impl ManualClock {
    /// A clock at [`Instant::ZERO`].
    pub fn new() -> ManualClock {
        ManualClock::starting_at(Instant::ZERO)
    }

    /// A clock at `start`.
    pub fn starting_at(start: Instant) -> ManualClock {
        ManualClock(Arc::new(ManualInner {
            lock: Lock::new(),
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

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::new()
    }
}

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

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .field("pending", &self.pending())
            .finish()
    }
}
