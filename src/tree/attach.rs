//! Attaching a fresh child scope under its parent: linked into the parent
//! scope's own child list (the common case, inlined into the caller), into
//! the calling thread's shard of it (std, 64-bit, when another thread holds
//! the parent's lock), or born cancelled if the parent already ended.
//!
//! A derive takes the parent's lock with one `fetch_or`, and releases it and
//! takes the child's reference on the parent with one `fetch_add` of
//! `REF_ONE - LOCKED` ([`Guard::unlock_and_acquire_ref`]); the word seen when
//! locking says whether the parent is cancelled and whether `HAS_KIDS` is
//! set, so nothing is loaded in between. The parent's shard pointer, which
//! routes the child, is read before the child is built
//! ([`shard_hint`]); a stale null only sends the child to the own list,
//! which is always correct.
//!
//! Children of a scope that can never be cancelled (roots, `without_cancel`,
//! a clock root) are not linked anywhere.

use crate::tree::children;
use crate::tree::node::{NodePtr, Scope};
use crate::tree::state_word::{self, CANCELLED, Guard, HAS_KIDS, REF_ONE};

/// What [`shard_hint`] read: the parent's shard array (null: none yet).
#[cfg(cancel_tree_shards)]
pub(crate) type ShardHint = *const crate::tree::shards::Shards;
/// What [`shard_hint`] read (no shard arrays in this build).
#[cfg(not(cancel_tree_shards))]
pub(crate) type ShardHint = ();

/// Where a child of the context `(node, scope)` will be linked: the
/// scope's shard array if it has one, read *before* the child is built, so
/// the load does not queue behind the child's fresh stores.
///
/// # Safety
/// The caller holds a reference on `node`; `scope` is its nearest scope.
#[inline(always)]
pub(crate) unsafe fn shard_hint(node: NodePtr, scope: *const Scope) -> ShardHint {
    #[cfg(cancel_tree_shards)]
    if !scope.is_null() && node == scope.cast() {
        // SAFETY: (caller) the scope is alive.
        return crate::tree::shards::of(unsafe { &*scope });
    }
    #[cfg(cancel_tree_shards)]
    return core::ptr::null();
    #[cfg(not(cancel_tree_shards))]
    let _ = (node, scope);
}

/// A fresh `with_cancel` scope, counting a context and a handle, attached
/// under the context `(node, scope)`.
///
/// # Safety
/// The caller holds a reference on `node`; `scope` is its nearest scope.
#[cfg(feature = "alloc")]
#[inline(always)]
pub(crate) unsafe fn new_cancel_scope(node: NodePtr, scope: *const Scope) -> *const Scope {
    // SAFETY: (caller).
    unsafe {
        new_scope(
            node,
            scope,
            Scope::new(state_word::KIND_CANCEL | (2 * REF_ONE), node),
        )
    }
}

/// Moves `fresh` (a scope whose word counts the context and the handle) to
/// the heap and attaches it under the context `(node, scope)`.
///
/// # Safety
/// As for [`new_cancel_scope`]; `fresh`'s parent is `node`.
#[cfg(feature = "alloc")]
#[inline(always)]
pub(crate) unsafe fn new_scope(node: NodePtr, scope: *const Scope, fresh: Scope) -> *const Scope {
    #[allow(clippy::let_unit_value)] // `()` without shard arrays
    // SAFETY: (caller).
    let hint = unsafe { shard_hint(node, scope) };
    let s: *const Scope = crate::tree::node_cache::boxed(fresh);
    // SAFETY: fresh node, not shared yet; (caller) for the rest.
    unsafe { attach(node, scope, s, hint) };
    s
}

/// Takes the child's reference on `node` and links the fresh scope `s`
/// under `scope` (or copies its ending). When `node` is that scope, the
/// reference is taken as the lock is released. `hint` is [`shard_hint`],
/// read before `s` was built.
///
/// # Safety
/// `s` is alive and not shared yet; the caller holds a reference on `node`,
/// whose nearest scope is `scope`.
#[inline(always)]
pub(crate) unsafe fn attach(node: NodePtr, scope: *const Scope, s: *const Scope, hint: ShardHint) {
    let acquire = !scope.is_null() && node == scope.cast();
    if !acquire {
        // SAFETY: (caller) we hold a reference on `node`.
        unsafe { crate::tree::release::acquire(node) };
        if scope.is_null() {
            return;
        }
    }
    // The common case, inlined: the parent's own list (no shard array) and
    // its lock free at the first try.
    #[cfg(cancel_tree_shards)]
    let own_list = hint.is_null();
    #[cfg(not(cancel_tree_shards))]
    let own_list = true;
    // SAFETY: the scope is alive while `node` is.
    let parent = unsafe { &*scope };
    if own_list {
        if let Some(guard) = parent.hdr.word.try_lock() {
            // SAFETY: (caller); the lock is held.
            unsafe { link_locked(parent, guard, s, acquire) };
            return;
        }
    }
    // SAFETY: (caller).
    unsafe { attach_contended(parent, s, acquire, hint) }
}

/// Links `s` into `parent`'s own list, or makes it born-cancelled, then
/// unlocks (taking the child's reference on `parent` in the same step with
/// `acquire`).
///
/// # Safety
/// `s` is alive and not shared yet; `guard` holds `parent`'s lock.
#[inline(always)]
unsafe fn link_locked(parent: &Scope, mut guard: Guard<'_>, s: *const Scope, acquire: bool) {
    let w = guard.seen();
    // SAFETY: (caller); the lock is held.
    unsafe {
        if w & CANCELLED != 0 {
            (*s).inherit_end(parent, w);
        } else {
            // Before the first child (state word, invariant 4).
            guard.mark(HAS_KIDS);
            children::link(&parent.children, s);
        }
    }
    if acquire {
        guard.unlock_and_acquire_ref();
    } else {
        drop(guard);
    }
}

/// [`attach`] when the parent has a shard array, or the fast path found its
/// lock taken: out of line, to keep the common path small.
///
/// # Safety
/// As for [`link_locked`], without the guard.
#[cold]
#[inline(never)]
unsafe fn attach_contended(parent: &Scope, s: *const Scope, acquire: bool, hint: ShardHint) {
    #[cfg(not(cancel_tree_shards))]
    let () = hint;
    // Here either the array is installed (`hint`), or the fast path found
    // the parent's lock taken by another thread: install it.
    #[cfg(cancel_tree_shards)]
    // SAFETY: (caller).
    if acquire && unsafe { attach_sharded(parent, s, hint) } {
        return;
    }
    // No array possible (an immortal parent), or a child of a value node
    // (no shards): wait for the own list's lock.
    let guard = parent.hdr.word.lock();
    // SAFETY: (caller); the lock is held.
    unsafe { link_locked(parent, guard, s, acquire) };
}

/// Links a fresh child `s` (whose parent node is `parent`) into the calling
/// thread's shard of `parent`, taking its reference there, or makes it
/// born-cancelled. `shards` is the parent's array as just read; when it is
/// null the caller found the parent's own lock taken (another thread is
/// deriving or dropping a child right now), and the array is installed.
/// Returns `false` (nothing done) when the parent cannot have one (an
/// immortal scope): use the parent's own list then.
///
/// # Safety
/// `s` is alive and not shared yet; the caller holds a reference on `parent`.
#[cfg(cancel_tree_shards)]
unsafe fn attach_sharded(
    parent: &Scope,
    s: *const Scope,
    mut shards: *const crate::tree::shards::Shards,
) -> bool {
    use crate::tree::shards;
    if shards.is_null() {
        shards = shards::install(parent);
        if shards.is_null() {
            return false;
        }
    }
    let k = shards::index();
    // SAFETY: the array lives as long as the parent.
    let shard = unsafe { &(*shards).shard[k] };
    let mut guard = shard.lock();
    // The caller's reference on the parent keeps the array's own reference
    // from being the last, so the array cannot have collapsed; checked
    // anyway, as counting into a collapsed shard would corrupt the count.
    if guard.collapsed() {
        debug_assert!(false, "derive into a collapsed shard");
        return false;
    }
    let w = parent.hdr.word.load();
    // SAFETY: `s` is fresh and unshared until linked below; the shard's
    // lock guards its list.
    unsafe {
        (*s).hdr.word.set_unshared(shards::shard_bits(k));
        if w & CANCELLED != 0 {
            (*s).inherit_end(parent, w);
        } else {
            children::link(&shard.head, s);
        }
    }
    guard.count_child();
    drop(guard);
    true
}

/// Attaches a heap-free scope (a `LocalScope`, which holds no reference on
/// its parent) under `parent`, once: `false` if it was attached before.
/// Callers serialise on the parent's lock, under which `ATTACHED` is set.
///
/// # Safety
/// `me` is alive, pinned, and its parent is `parent`, which outlives it.
#[cfg(not(cancel_tree_loom))]
pub(crate) unsafe fn attach_local(parent: &Scope, me: *const Scope) -> bool {
    let guard = parent.hdr.word.lock();
    // SAFETY: (caller) alive; under the parent's lock nobody else can reach
    // `me` until it is linked.
    unsafe {
        if (*me).hdr.word.load() & state_word::ATTACHED != 0 {
            return false;
        }
        (*me).hdr.word.set_unshared(state_word::ATTACHED);
        link_locked(parent, guard, me, false);
    }
    true
}
