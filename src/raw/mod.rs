//! Raw primitives, the bottom layer: they know nothing of contexts.
//!
//! * [`sync`]: the atomics and cells (loom, portable-atomic or core).
//! * [`lock`]: the lock back-end (a bit in a word with `std`, a critical
//!   section without), chosen in that one module.
//! * [`list`]: the one intrusive doubly-linked list.
//! * `arc`: a small `Arc` on the crate's atomics (alloc).
//! * `panic`: running user callbacks without losing the tree's consistency.

#[cfg(feature = "alloc")]
pub(crate) mod arc;
pub(crate) mod list;
pub(crate) mod lock;
pub(crate) mod panic;
pub(crate) mod sync;
