//! [`JsClock`]: deadlines on the JavaScript host's timers, for
//! wasm32-unknown-unknown in a browser, a worker or node (feature `js`).
//!
//! Time is `performance.now()`; the alarm is one `setTimeout` at a time,
//! whose callback fires the clock's queue. Everything JavaScript (the
//! callback, the pending timeout's handle) lives in a thread-local, because
//! JS values belong to the thread that made them; the queue is a `static`,
//! so the clock itself is a `Copy` handle that is `Send + Sync` without any
//! `unsafe`.

// The thread-local JS state assumes one thread: with wasm threads each
// worker has its own event loop and its own `performance.now()` origin,
// while the queue would be shared.
#[cfg(target_feature = "atomics")]
compile_error!(
    "cancel-tree's `js` feature (JsClock) supports single-threaded wasm only: \
     build without the `atomics` target feature, or use `Context::background_with_clock` \
     with a clock of your own"
);

use core::cell::{Cell, OnceCell};
use core::time::Duration;

use wasm_bindgen::JsValue;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;

use crate::Instant;
use crate::clock::contract::Clock;
use crate::clock::timer_queue::Timers;

#[wasm_bindgen]
extern "C" {
    /// Milliseconds since the realm's time origin; monotonic. `catch`: a
    /// host without the `performance` global throws instead of returning.
    #[wasm_bindgen(js_namespace = performance, js_name = now, catch)]
    fn performance_now() -> Result<f64, JsValue>;

    /// Wall-clock milliseconds: the fallback where `performance` is missing.
    #[wasm_bindgen(js_namespace = Date, js_name = now)]
    fn date_now() -> f64;

    /// The handle is a number in browsers and a `Timeout` object in node;
    /// it is only ever passed back to `clearTimeout`. `catch`: a host
    /// without timers (an audio worklet) throws.
    #[wasm_bindgen(js_name = setTimeout, catch)]
    fn set_timeout(callback: &Closure<dyn Fn()>, ms: i32) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(handle: &JsValue);
}

/// A clock on the JavaScript host's timers (feature `js`, on
/// wasm32-unknown-unknown): the default clock of trees under
/// [`Context::background`](crate::Context::background) there.
///
/// * [`now`](Clock::now) is `performance.now()` (milliseconds since the
///   page, worker or node process started, with the host's resolution:
///   microseconds in node, 5 µs to 100 µs in browsers), never decreasing.
/// * The alarm is one `setTimeout` at a time; its callback calls
///   [`Timers::fire`], so contexts whose deadline passed are cancelled from
///   the host's event loop, in a task of their own: their wakers and
///   `after_func` closures run there. A deadline fires no earlier than due,
///   and as late as the host's timer slack and a busy event loop make it.
///
/// There is one `JsClock` per wasm instance: all copies are the same clock.
/// It needs `setTimeout`, `clearTimeout` and `performance.now()`: browsers,
/// web workers, node 16 or later, deno and bun have them. Where
/// `performance` is missing, time is `Date.now()` held back so it never
/// decreases; where `setTimeout` is missing, deadlines never fire (nothing
/// panics).
///
/// A pending deadline is a pending timeout, so it keeps a node process
/// alive until it fires or its context ends (dropped or cancelled contexts
/// leave the queue at once, and `clearTimeout` runs when none is left).
///
/// The module must run on one thread (no `atomics` target feature): JS
/// values, and so the timeout's handle, belong to one thread.
///
/// ```no_run
/// use cancel_tree::{Context, Error, JsClock};
/// use std::time::Duration;
///
/// # async fn request() {}
/// async fn fetch_with_timeout() -> Result<(), Error> {
///     // JsClock is already the default clock of `background()` here;
///     // `background_with_clock(JsClock)` says so explicitly.
///     let root = Context::background_with_clock(JsClock);
///     let (ctx, _cancel) = root.with_timeout(Duration::from_millis(250));
///     ctx.run(request()).await // Err(DeadlineExceeded) after 250 ms
/// }
///
/// // In the browser: wasm_bindgen_futures::spawn_local(async { fetch_with_timeout().await; });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JsClock;

/// The clock's queue; its alarm is the thread's pending timeout.
static TIMERS: Timers = Timers::new();

/// The one `JsClock`, for [`default_clock`](crate::clock::default_clock).
pub(crate) static JS_CLOCK: JsClock = JsClock;

/// What the clock keeps of the JavaScript host.
struct Host {
    /// The nanoseconds `now` returned last: it never returns less.
    last: Cell<u64>,
    /// Where time comes from, decided at the first reading.
    source: Cell<Source>,
    /// The `setTimeout` callback: made once and kept for the thread's life
    /// (dropping it would make a pending timeout throw when it runs).
    callback: OnceCell<Closure<dyn Fn()>>,
    /// The pending timeout's handle, if any.
    timeout: Cell<Option<JsValue>>,
}

#[derive(Clone, Copy)]
enum Source {
    Unknown,
    Performance,
    /// `Date.now()` minus its first reading.
    Date {
        epoch_ms: f64,
    },
}

std::thread_local! {
    static HOST: Host = const {
        Host {
            last: Cell::new(0),
            source: Cell::new(Source::Unknown),
            callback: OnceCell::new(),
            timeout: Cell::new(None),
        }
    };
}

impl Host {
    fn read_ms(&self) -> f64 {
        match self.source.get() {
            // It worked once, so it keeps working; a failure reads as 0,
            // which `last` holds back.
            Source::Performance => performance_now().unwrap_or(0.0),
            Source::Date { epoch_ms } => date_now() - epoch_ms,
            Source::Unknown => match performance_now() {
                Ok(ms) => {
                    self.source.set(Source::Performance);
                    ms
                }
                Err(_) => {
                    self.source.set(Source::Date {
                        epoch_ms: date_now(),
                    });
                    0.0
                }
            },
        }
    }
}

/// Milliseconds to nanoseconds; negative and NaN readings give 0 (the cast
/// saturates).
fn ms_to_nanos(ms: f64) -> u64 {
    (ms * 1_000_000.0) as u64
}

/// The `setTimeout` delay for `d`: whole milliseconds rounded up (a timer
/// is never early by our rounding), at most `i32::MAX` ms (about 24.8
/// days). Hosts run a larger delay at once, and a timeout that comes early
/// finds nothing due and re-arms for the rest.
fn delay_ms(d: Duration) -> i32 {
    i32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
}

/// The `setTimeout` callback: the pending timeout has run, so forget its
/// handle, then fire (which re-arms for the next deadline).
fn on_timeout() {
    HOST.with(|h| h.timeout.take());
    TIMERS.fire(&JsClock);
}

impl Clock for JsClock {
    fn now(&self) -> Instant {
        HOST.with(|h| {
            let nanos = ms_to_nanos(h.read_ms()).max(h.last.get());
            h.last.set(nanos);
            Instant::from_nanos(nanos)
        })
    }

    fn timers(&self) -> &Timers {
        &TIMERS
    }

    fn set_alarm(&self, at: Option<Instant>) {
        // Calls JavaScript but never back into the crate: `setTimeout`
        // only queues the callback, which runs later from the event loop.
        HOST.with(|h| {
            if let Some(old) = h.timeout.take() {
                clear_timeout(&old);
            }
            let Some(at) = at else { return };
            let delay = delay_ms(at.saturating_duration_since(self.now()));
            let callback = h.callback.get_or_init(|| Closure::new(on_timeout));
            // Without `setTimeout` there is no alarm: deadlines never fire.
            h.timeout.set(set_timeout(callback, delay).ok());
        });
    }
}
