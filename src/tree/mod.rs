//! The tree machinery: nodes and their state words, attaching children,
//! the cancel walk, waiters, deadlines, and the free path. Everything here
//! takes node pointers; the public handles in `api` are thin shells over it.
//!
//! * [`state_word`]: the atomic word of every node, its numbered invariants,
//!   and the node lock.
//! * [`node`]: node layouts, the cause cell, value nodes and lookup.
//! * [`children`]: which child list a child is in (own list or shard).
//! * [`attach`]: linking a fresh child under its parent.
//! * [`cancel`]: the cancel walk (flag phase, notify phase).
//! * [`waiter_list`]: the waiter list and the registration protocol.
//! * `after_func`: `after_func` registrations (alloc).
//! * [`deadline`]: deadline scopes, clock roots, and how a due deadline
//!   reaches its context.
//! * `merge` (alloc): merged contexts, a scope with several parents.
//! * [`release`]: reference counting and the iterative free path.
//! * `shards` (std, 64-bit): sharded child lists for contended parents.
//! * `node_cache` (alloc): the per-thread cache of freed scope nodes.

#[cfg(feature = "alloc")]
pub(crate) mod after_func;
pub(crate) mod attach;
pub(crate) mod cancel;
pub(crate) mod children;
pub(crate) mod deadline;
#[cfg(feature = "alloc")]
pub(crate) mod merge;
pub(crate) mod node;
#[cfg(feature = "alloc")]
pub(crate) mod node_cache;
pub(crate) mod release;
#[cfg(cancel_tree_shards)]
pub(crate) mod shards;
pub(crate) mod state_word;
pub(crate) mod waiter_list;
