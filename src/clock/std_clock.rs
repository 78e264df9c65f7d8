//! [`StdClock`]: the default clock with `std`, and its timer thread.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::Instant;
use crate::clock::contract::Clock;
use crate::clock::timer_queue::Timers;

/// The default clock (`std`): monotonic time since the first use of the
/// clock in this process, with deadlines fired by one timer thread for the
/// whole process.
///
/// The thread (`cancel-tree-timer`) starts the first time a deadline is
/// queued, and never if none is; it sleeps on a condition variable until
/// the queue next needs it: the earliest pending deadline, or for a far one
/// a few earlier wake-ups while the timer wheel brings it closer (no
/// polling). Accuracy: a deadline fires
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
/// On wasm without threads (wasm32-wasip1) no thread can be started: time
/// works, and due deadlines are fired by the blocking waits
/// ([`Context::wait`](crate::Context::wait),
/// [`wait_timeout`](crate::Context::wait_timeout)) while they sleep, or by
/// your own loop calling `StdClock.timers().fire(&StdClock)` (see
/// [`Timers::next_deadline`] for when). StdClock does not exist on
/// wasm32-unknown-unknown, whose std has no clock (see `docs/wasm.md`).
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
    /// The timer thread runs (never set without threads).
    #[cfg_attr(
        all(target_family = "wasm", not(target_feature = "atomics")),
        allow(dead_code)
    )]
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
        #[cfg(not(all(target_family = "wasm", not(target_feature = "atomics"))))]
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

/// Without threads (wasm32-wasip1) nothing but the one thread can fire the
/// clock: a blocking wait calls this to sleep until the alarm or for
/// `limit`, whichever is sooner (at most [`MAX_SLEEP`]), and then fires
/// what is due.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
pub(crate) fn sleep_and_fire(limit: Option<Duration>) {
    let now = StdClock.now();
    let at = state().at;
    let mut sleep = MAX_SLEEP;
    if let Some(at) = at {
        sleep = sleep.min(at - now);
    }
    if let Some(limit) = limit {
        sleep = sleep.min(limit);
    }
    if !sleep.is_zero() {
        std::thread::sleep(sleep);
    }
    if at.is_some_and(|at| StdClock.now() >= at) {
        SERVICE.timers.fire(&StdClock);
    }
}

#[cfg(not(all(target_family = "wasm", not(target_feature = "atomics"))))]
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
