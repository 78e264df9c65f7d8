//! The clock layer: the [`Clock`](contract::Clock) contract, the queue of
//! pending deadlines each clock stores ([`Timers`](timer_queue::Timers)),
//! and the clocks the crate ships: [`ManualClock`](manual::ManualClock),
//! `StdClock` (std), `JsClock` (js) and the runtime adapters, which share
//! one driver loop; and which of them is the default clock on each target.
//!
//! This layer knows nothing of contexts: a queued entry says, through the
//! hooks it carries, how to claim and end whatever owns it.

pub(crate) mod contract;
#[cfg(feature = "alloc")]
pub(crate) mod manual;
// Not on wasm32-unknown-unknown, whose std has neither a clock
// (`std::time::Instant::now` panics) nor threads.
#[cfg(all(
    feature = "std",
    not(cancel_tree_loom),
    not(all(target_family = "wasm", target_os = "unknown"))
))]
pub(crate) mod std_clock;
pub(crate) mod timer_queue;

#[cfg(all(
    not(cancel_tree_loom),
    any(feature = "tokio", feature = "async-io", feature = "embassy-time")
))]
mod driven;

#[cfg(all(not(cancel_tree_loom), feature = "async-io"))]
pub(crate) mod async_io;
#[cfg(all(not(cancel_tree_loom), feature = "embassy-time"))]
pub(crate) mod embassy;
#[cfg(all(not(cancel_tree_loom), feature = "tokio"))]
pub(crate) mod tokio;
// Only where a JavaScript host loads the module (the `js` feature's
// dependency is declared for these targets only).
#[cfg(all(
    not(cancel_tree_loom),
    feature = "js",
    target_family = "wasm",
    target_os = "unknown"
))]
pub(crate) mod js;

/// The clock of trees under `Context::background()`: `StdClock` with `std`;
/// on wasm32-unknown-unknown `JsClock` with `js`; otherwise none (deadlines
/// are reported but never fire). `docs/wasm.md` says why per target.
pub(crate) fn default_clock() -> Option<&'static dyn contract::Clock> {
    #[cfg(all(
        feature = "std",
        not(cancel_tree_loom),
        not(all(target_family = "wasm", target_os = "unknown"))
    ))]
    let clock: Option<&'static dyn contract::Clock> = Some(&std_clock::STD_CLOCK);
    #[cfg(all(
        not(cancel_tree_loom),
        feature = "js",
        target_family = "wasm",
        target_os = "unknown"
    ))]
    let clock: Option<&'static dyn contract::Clock> = Some(&js::JS_CLOCK);
    #[cfg(not(all(
        not(cancel_tree_loom),
        any(
            all(
                feature = "std",
                not(all(target_family = "wasm", target_os = "unknown"))
            ),
            all(feature = "js", target_family = "wasm", target_os = "unknown")
        )
    )))]
    let clock = None;
    clock
}
