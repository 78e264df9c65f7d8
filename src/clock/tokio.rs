//! [`TokioClock`]: deadlines on tokio's time driver.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::driven::{self, Alarm, Driven};
use crate::Instant;
use crate::clock::contract::Clock;
use crate::clock::timer_queue::Timers;

/// A clock on tokio's time driver (feature `tokio`): `now()` is
/// `tokio::time::Instant`, and deadlines are fired by one task per clock
/// sleeping with `tokio::time::sleep_until` — so a runtime with paused time
/// (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`) gets
/// deterministic deadlines that auto-advance with it.
///
/// Create it inside a runtime ([`new`](TokioClock::new)) or with a
/// [`Handle`](tokio::runtime::Handle). Clones share one clock. The driver
/// task ends when the last clone (and every tree using it) is gone; if the
/// runtime shuts down first, pending deadlines no longer fire.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use cancel_tree::{Context, Error, TokioClock};
/// use std::time::Duration;
///
/// let root = Context::background_with_clock(TokioClock::new());
/// let (ctx, _cancel) = root.with_timeout(Duration::from_secs(30));
/// assert_eq!(ctx.done().await, Error::DeadlineExceeded); // paused time jumps 30 s
/// # }
/// ```
#[derive(Clone)]
pub struct TokioClock {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: tokio::time::Instant,
    timers: Timers,
    alarm: Alarm,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the driver task notice the clock is gone.
        self.alarm.set(None);
    }
}

impl TokioClock {
    /// A clock on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does); use
    /// [`with_handle`](TokioClock::with_handle) there.
    // No `Default`: it would panic outside a runtime.
    #[allow(clippy::new_without_default)]
    pub fn new() -> TokioClock {
        TokioClock::with_handle(&tokio::runtime::Handle::current())
    }

    /// A clock whose driver task runs on `handle`'s runtime.
    pub fn with_handle(handle: &tokio::runtime::Handle) -> TokioClock {
        let _enter = handle.enter();
        let inner = Arc::new(Inner {
            epoch: tokio::time::Instant::now(),
            timers: Timers::new(),
            alarm: Alarm::new(),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        handle.spawn(driven::drive(move || {
            weak.upgrade().map(|inner| TokioClock { inner })
        }));
        TokioClock { inner }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        let d = tokio::time::Instant::now().saturating_duration_since(self.inner.epoch);
        Instant::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
    fn timers(&self) -> &Timers {
        &self.inner.timers
    }
    fn set_alarm(&self, at: Option<Instant>) {
        self.inner.alarm.set(at);
    }
}

impl Driven for TokioClock {
    fn alarm(&self) -> &Alarm {
        &self.inner.alarm
    }
    fn sleep_until(&self, at: Instant) -> Option<impl Future<Output = ()> + Send + 'static> {
        let when = self
            .inner
            .epoch
            .checked_add(Duration::from_nanos(at.as_nanos()))?;
        Some(tokio::time::sleep_until(when))
    }
}

impl std::fmt::Debug for TokioClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioClock")
            .field("pending", &self.inner.timers.len())
            .finish()
    }
}
