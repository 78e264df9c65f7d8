//! The clock layer: the [`Clock`](contract::Clock) contract, the queue of
//! pending deadlines each clock stores ([`Timers`](timer_queue::Timers)),
//! and the clocks the crate ships: [`ManualClock`](manual::ManualClock),
//! `StdClock` (std) and the runtime adapters, which share one driver loop;
//! and which of them is the default clock on each target.
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

/// The clock of trees under `Context::background()`: `StdClock` with `std`
/// (but not on wasm32-unknown-unknown, whose std has no clock); otherwise
/// none (deadlines are reported but never fire).
pub(crate) fn default_clock() -> Option<&'static dyn contract::Clock> {
    #[cfg(all(
        feature = "std",
        not(cancel_tree_loom),
        not(all(target_family = "wasm", target_os = "unknown"))
    ))]
    let clock: Option<&'static dyn contract::Clock> = Some(&std_clock::STD_CLOCK);
    #[cfg(not(all(
        feature = "std",
        not(cancel_tree_loom),
        not(all(target_family = "wasm", target_os = "unknown"))
    )))]
    let clock = None;
    clock
}
