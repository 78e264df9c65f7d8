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
//! See `docs/design.md` in the repository for the state machine, the lists,
//! the memory orderings and the proofs.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod cause;
mod error;
mod instant;
mod sync;

#[cfg(feature = "alloc")]
mod after_func;
#[cfg(feature = "alloc")]
mod arc;
#[cfg(feature = "std")]
mod blocking;
// Parts of this module serve only the heap (`alloc`) API.
#[cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]
mod cancel;
// Parts of this module serve only the heap (`alloc`) API.
#[cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]
mod clock;
#[cfg(feature = "alloc")]
mod context;
#[cfg(feature = "alloc")]
mod node_cache;
#[cfg(cancel_tree_shards)]
mod shards;
// Parts of this module serve only the heap (`alloc`) API.
#[cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]
mod deadline;
#[cfg(feature = "alloc")]
mod ext;
#[cfg(feature = "http")]
pub mod grpc;
#[cfg(feature = "alloc")]
mod handle;
#[cfg(all(feature = "tokio-util", not(cancel_tree_loom)))]
mod interop;
#[cfg(not(cancel_tree_loom))]
mod local;
// Parts of this module serve only the heap (`alloc`) API.
#[cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]
mod node;
#[cfg(feature = "alloc")]
mod run;
// Parts of this module serve only the heap (`alloc`) API.
#[cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]
mod state;
// Parts of this module serve only the heap (`alloc`) API.
#[cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]
mod timer;
// Parts of this module serve only the heap (`alloc`) API.
#[cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]
mod waiters;

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
    node_cache::trim();
}

pub use cause::Cause;
pub use error::Error;
pub use instant::Instant;

#[cfg(feature = "alloc")]
pub use after_func::AfterFunc;
#[cfg(all(not(cancel_tree_loom), feature = "async-io"))]
pub use clock::AsyncIoClock;
pub use clock::Clock;
#[cfg(all(not(cancel_tree_loom), feature = "embassy-time"))]
pub use clock::EmbassyClock;
#[cfg(feature = "alloc")]
pub use clock::ManualClock;
#[cfg(all(feature = "std", not(cancel_tree_loom)))]
pub use clock::StdClock;
#[cfg(all(not(cancel_tree_loom), feature = "tokio"))]
pub use clock::TokioClock;
#[cfg(feature = "alloc")]
pub use context::Context;
#[cfg(feature = "alloc")]
pub use ext::{CancelGuard, FutureExt, StreamExt, TakeUntilCancelled, WithContext};
#[cfg(feature = "alloc")]
pub use handle::CancelHandle;
#[cfg(all(feature = "tokio-util", not(cancel_tree_loom)))]
pub use interop::TokenCancelled;
#[cfg(not(cancel_tree_loom))]
pub use local::{LocalScope, ScopeRef, StaticScope};
#[cfg(feature = "alloc")]
pub use run::Run;
pub use timer::Timers;
pub use waiters::Done;
#[cfg(feature = "alloc")]
pub use waiters::DoneOwned;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
