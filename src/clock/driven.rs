//! What the runtime clock adapters share: an alarm cell and the driver loop
//! that sleeps on the runtime's timer until the alarm and then fires.

use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::Poll;

use event_listener::Event;

use crate::Instant;
use crate::clock::contract::Clock;
use crate::raw::lock::Lock;
use crate::raw::sync::UnsafeCell;

/// The alarm an adapter's driver sleeps towards, and the event that tells it
/// the alarm moved.
pub(crate) struct Alarm {
    lock: Lock,
    at: UnsafeCell<Option<Instant>>,
    changed: Event,
}

// SAFETY: `at` is only touched under `lock`; `Event` is Send + Sync.
unsafe impl Send for Alarm {}
// SAFETY: as above.
unsafe impl Sync for Alarm {}

impl Alarm {
    pub(crate) const fn new() -> Alarm {
        Alarm {
            lock: Lock::new(),
            at: UnsafeCell::new(None),
            changed: Event::new(),
        }
    }

    /// Records the alarm and wakes the driver. Quick and non-blocking, as
    /// [`Clock::set_alarm`] must be.
    pub(crate) fn set(&self, at: Option<Instant>) {
        let guard = self.lock.lock();
        // SAFETY: lock held.
        self.at.with_mut(|a| unsafe { *a = at });
        drop(guard);
        self.changed.notify(usize::MAX);
    }

    fn get(&self) -> Option<Instant> {
        let _guard = self.lock.lock();
        // SAFETY: lock held.
        self.at.with(|a| unsafe { *a })
    }
}

/// A clock whose alarm is driven by a runtime's timer.
pub(crate) trait Driven: Clock + Sized {
    fn alarm(&self) -> &Alarm;
    /// A future that completes when the runtime's clock reaches `at`, or
    /// `None` if `at` cannot be represented there (then: never).
    fn sleep_until(&self, at: Instant) -> Option<impl Future<Output = ()> + Send + 'static>;
}

/// The driver loop: wait until the alarm (or until it moves), fire, repeat.
/// Ends when `get` returns `None` (the clock is gone).
pub(crate) async fn drive<C: Driven>(mut get: impl FnMut() -> Option<C>) {
    loop {
        let Some(clock) = get() else { return };
        // Listen before reading, so a `set` in between is not missed.
        let changed = clock.alarm().changed.listen();
        let sleep = clock.alarm().get().and_then(|at| clock.sleep_until(at));
        drop(clock); // do not keep the clock alive while waiting
        let Some(sleep) = sleep else {
            changed.await;
            continue;
        };
        let mut sleep = pin!(sleep);
        let mut changed = pin!(changed);
        let due = poll_fn(|cx| {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            if changed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await;
        if due {
            let Some(clock) = get() else { return };
            // Fires what is due and re-arms (through `set_alarm`). A panic
            // from a callback must not end the driver (and with it every
            // later deadline): with std it is caught here, after the panic
            // hook reported it; `fire` has re-armed before unwinding.
            #[cfg(feature = "std")]
            {
                let c = &clock;
                let _ =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.timers().fire(c)));
            }
            #[cfg(not(feature = "std"))]
            clock.timers().fire(&clock);
        }
    }
}
