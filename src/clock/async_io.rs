//! [`AsyncIoClock`]: deadlines on async-io's (smol's) timers.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::driven::{self, Alarm, Driven};
use crate::Instant;
use crate::clock::contract::Clock;
use crate::clock::timer_queue::Timers;

/// A clock on async-io's timers (feature `async-io`; the timers smol uses):
/// `now()` is monotonic time since the clock was made, and deadlines are
/// fired by a driver future that sleeps with `async_io::Timer::at`.
///
/// [`new`](AsyncIoClock::new) returns the clock and its driver; spawn the
/// driver on your executor (it is `Send + 'static` and ends when the clock
/// and every tree using it are gone):
///
/// ```
/// use cancel_tree::{AsyncIoClock, Context, Error};
/// use std::time::Duration;
///
/// let (clock, driver) = AsyncIoClock::new();
/// let ex = async_executor::Executor::new();
/// ex.spawn(driver).detach();
/// let root = Context::background_with_clock(clock);
/// let (ctx, _cancel) = root.with_timeout(Duration::from_millis(10));
/// let err = async_io::block_on(ex.run(ctx.done()));
/// assert_eq!(err, Error::DeadlineExceeded);
/// ```
#[derive(Clone)]
pub struct AsyncIoClock {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: std::time::Instant,
    timers: Timers,
    alarm: Alarm,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.alarm.set(None);
    }
}

impl AsyncIoClock {
    /// The clock and the driver future to spawn.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (AsyncIoClock, impl Future<Output = ()> + Send + 'static) {
        let inner = Arc::new(Inner {
            epoch: std::time::Instant::now(),
            timers: Timers::new(),
            alarm: Alarm::new(),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let driver = driven::drive(move || weak.upgrade().map(|inner| AsyncIoClock { inner }));
        (AsyncIoClock { inner }, driver)
    }
}

impl Clock for AsyncIoClock {
    fn now(&self) -> Instant {
        let nanos = self.inner.epoch.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
    fn timers(&self) -> &Timers {
        &self.inner.timers
    }
    fn set_alarm(&self, at: Option<Instant>) {
        self.inner.alarm.set(at);
    }
}

impl Driven for AsyncIoClock {
    fn alarm(&self) -> &Alarm {
        &self.inner.alarm
    }
    fn sleep_until(&self, at: Instant) -> Option<impl Future<Output = ()> + Send + 'static> {
        let when = self
            .inner
            .epoch
            .checked_add(Duration::from_nanos(at.as_nanos()))?;
        let timer = async_io::Timer::at(when);
        Some(async move {
            timer.await;
        })
    }
}

impl std::fmt::Debug for AsyncIoClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncIoClock")
            .field("pending", &self.inner.timers.len())
            .finish()
    }
}
