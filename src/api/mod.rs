//! The public API: thin handles over the tree machinery.
//!
//! * `context`: [`Context`](crate::Context), a handle to one node.
//! * `cancel_handle`: [`CancelHandle`](crate::CancelHandle), the right to
//!   cancel a scope.
//! * `done`, `run`: the wait futures.
//! * `after_func`: the [`AfterFunc`](crate::AfterFunc) handle.
//! * `ext`: combinators for futures and streams.
//! * `local`: heap-free scopes for firmware.
//! * `blocking`: blocking waits (std).
//! * `group`: task groups (Go's errgroup): in-task, spawned, threads.

#[cfg(feature = "alloc")]
pub(crate) mod after_func;
#[cfg(all(
    feature = "std",
    not(all(target_family = "wasm", target_os = "unknown"))
))]
pub(crate) mod blocking;
#[cfg(feature = "alloc")]
pub(crate) mod cancel_handle;
// Threads, sleeps and a 10 s watchdog: not under Miri.
#[cfg(all(test, cancel_tree_shards, not(cancel_tree_loom), not(miri)))]
mod collapse_tests;
#[cfg(feature = "alloc")]
pub(crate) mod context;
pub(crate) mod done;
#[cfg(feature = "alloc")]
pub(crate) mod ext;
#[cfg(feature = "alloc")]
pub(crate) mod group;
#[cfg(not(cancel_tree_loom))]
pub(crate) mod local;
#[cfg(feature = "alloc")]
pub(crate) mod run;
