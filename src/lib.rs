//! # cancel-tree
//!
//! Go's `context` package for Rust: trees of cancellation contexts with
//! deadlines and values, that wake tasks on any executor and run on any
//! target, from multi-core servers to Cortex-M firmware.
//!
//! ```
//! use cancel_tree::{Context, Error};
//!
//! let root = Context::background();
//! let (ctx, cancel) = root.with_cancel();
//! let (child, _child_cancel) = ctx.with_cancel();
//! let _stop = child.after_func(|| println!("child ended"));
//! cancel.cancel_with(cancel_tree::Cause::msg("shutting down"));
//! assert_eq!(child.err(), Some(Error::Canceled));
//! assert_eq!(child.cause().unwrap().to_string(), "shutting down");
//! ```
//!
//! * **Hot path**: [`Context::is_cancelled`] and [`Context::err`] are one
//!   atomic load.
//! * **Waiting never allocates**: a [`Done`] future holds its own waiter,
//!   linked into the context's intrusive list.
//! * **Go semantics**: first cancellation wins, causes propagate, a child of a
//!   cancelled parent is born cancelled, dropping a [`CancelHandle`] cancels.
//! * **Any target**: `#![no_std]` with `alloc`; `portable-atomic` for cores
//!   without compare-and-swap; `cancel` is safe from interrupt handlers.
//!
//! See `docs/design.md` in the repository for the map of the source, the
//! state machine, the lists, the memory orderings and the proofs.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    docsrs,
    doc(auto_cfg(hide(cancel_tree_loom, cancel_tree_shards, cancel_tree_tsan)))
)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

// Layers, top to bottom; each imports only from the layers below it
// (`.ci/layers.py` checks it).
mod api;
mod interop;
// Parts of these serve only the heap (`alloc`) API.
#[cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]
mod clock;
mod raw;
#[cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]
mod tree;
mod types;

/// Returns the freed context nodes this thread keeps for reuse to the global
/// allocator.
///
/// With `std`, each thread keeps up to 32 freed `with_cancel` nodes (one
/// 64-byte block each, at most 2 KiB per thread) so that its next children
/// skip the allocator; a thread's blocks are returned when it exits. Call
/// this to return them earlier, for example before counting heap bytes.
///
/// ```
/// let (parent, _cancel) = cancel_tree::Context::background().with_cancel();
/// drop(parent.with_cancel()); // its node is now cached by this thread
/// cancel_tree::trim_thread_cache(); // and now back with the allocator
/// ```
#[cfg(feature = "std")]
pub fn trim_thread_cache() {
    tree::node_cache::trim();
}

pub use types::cause::Cause;
pub use types::error::Error;
pub use types::instant::Instant;

#[cfg(all(not(cancel_tree_loom), feature = "async-io"))]
pub use clock::async_io::AsyncIoClock;
pub use clock::contract::Clock;
#[cfg(all(not(cancel_tree_loom), feature = "embassy-time"))]
pub use clock::embassy::EmbassyClock;
#[cfg(all(
    not(cancel_tree_loom),
    feature = "js",
    target_family = "wasm",
    target_os = "unknown"
))]
pub use clock::js::JsClock;
#[cfg(feature = "alloc")]
pub use clock::manual::ManualClock;
#[cfg(all(
    feature = "std",
    not(cancel_tree_loom),
    not(all(target_family = "wasm", target_os = "unknown"))
))]
pub use clock::std_clock::StdClock;
pub use clock::timer_queue::Timers;
#[cfg(all(not(cancel_tree_loom), feature = "tokio"))]
pub use clock::tokio::TokioClock;

#[cfg(feature = "alloc")]
pub use api::after_func::AfterFunc;
#[cfg(feature = "alloc")]
pub use api::cancel_handle::CancelHandle;
#[cfg(feature = "alloc")]
pub use api::context::Context;
pub use api::done::Done;
#[cfg(feature = "alloc")]
pub use api::done::DoneOwned;
#[cfg(feature = "alloc")]
pub use api::ext::{CancelGuard, FutureExt, StreamExt, TakeUntilCancelled, WithContext};
#[cfg(feature = "std")]
pub use api::ext::{CancelOnPanic, Panicked};
#[cfg(all(feature = "futures", not(cancel_tree_loom)))]
pub use api::group::spawn::FuturesSpawn;
#[cfg(feature = "alloc")]
pub use api::group::spawn::Spawn;
#[cfg(feature = "alloc")]
pub use api::group::{ending::TaskDropped, in_task::Group, spawned::SpawnGroup};
#[cfg(feature = "std")]
pub use api::group::{ending::TaskPanicked, threads::ThreadGroup};
#[cfg(not(cancel_tree_loom))]
pub use api::local::{LocalScope, ScopeRef, StaticScope};
#[cfg(feature = "alloc")]
pub use api::run::Run;

#[cfg(feature = "http")]
pub use interop::grpc;
#[cfg(all(feature = "tokio-util", not(cancel_tree_loom)))]
pub use interop::tokio_util::TokenCancelled;

/// Hooks for the loom models in `tests/loom.rs`; compiled only under
/// `--cfg cancel_tree_loom`, never part of the API.
#[cfg(cancel_tree_loom)]
#[doc(hidden)]
pub mod __loom_hooks {
    /// Gives `ctx`'s scope its shard array now, as the first contended
    /// derive would.
    #[cfg(cancel_tree_shards)]
    pub fn install_shards(ctx: &crate::Context) {
        ctx.install_shards_for_tests();
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
