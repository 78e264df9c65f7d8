//! [`EmbassyClock`]: deadlines on embassy-time's driver.

use super::driven::{self, Alarm, Driven};
use crate::Instant;
use crate::clock::contract::Clock;
use crate::clock::timer_queue::Timers;

/// A clock on embassy-time (feature `embassy-time`; works with any
/// embassy-time driver: a chip HAL's, `std`, or the mock driver). `now()` is
/// `embassy_time::Instant::now()` in nanoseconds, and deadlines are fired by
/// [`run`](EmbassyClock::run), a task that sleeps with
/// `embassy_time::Timer::at`.
///
/// Made for a `static`: no allocation, no reference counting.
///
/// ```
/// use cancel_tree::{Context, EmbassyClock};
///
/// static CLOCK: EmbassyClock = EmbassyClock::new();
///
/// // With embassy-executor: `#[embassy_executor::task]` on this, and
/// // `spawner.spawn(clock_task())` in main.
/// async fn clock_task() -> ! {
///     CLOCK.run().await
/// }
///
/// let root = Context::background_with_clock(&CLOCK);
/// let (ctx, _cancel) = root.with_timeout(core::time::Duration::from_millis(100));
/// # let _ = (ctx, clock_task);
/// ```
pub struct EmbassyClock {
    timers: Timers,
    alarm: Alarm,
}

impl EmbassyClock {
    /// A clock; put it in a `static` and run [`run`](EmbassyClock::run).
    pub const fn new() -> EmbassyClock {
        EmbassyClock {
            timers: Timers::new(),
            alarm: Alarm::new(),
        }
    }

    /// The driver: spawn it once per clock (it never returns).
    pub async fn run(&'static self) -> ! {
        driven::drive(|| Some(self)).await;
        unreachable!("the driver of a static clock never stops")
    }
}

impl Default for EmbassyClock {
    fn default() -> EmbassyClock {
        EmbassyClock::new()
    }
}

impl Clock for EmbassyClock {
    fn now(&self) -> Instant {
        Instant::from_nanos(embassy_time::Instant::now().as_nanos())
    }
    fn timers(&self) -> &Timers {
        &self.timers
    }
    fn set_alarm(&self, at: Option<Instant>) {
        self.alarm.set(at);
    }
}

impl Driven for &'static EmbassyClock {
    fn alarm(&self) -> &Alarm {
        &self.alarm
    }
    fn sleep_until(&self, at: Instant) -> Option<impl Future<Output = ()> + Send + 'static> {
        let when = embassy_time::Instant::try_from_nanos(at.as_nanos())?;
        Some(embassy_time::Timer::at(when))
    }
}

impl core::fmt::Debug for EmbassyClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EmbassyClock")
            .field("pending", &self.timers.len())
            .finish()
    }
}
