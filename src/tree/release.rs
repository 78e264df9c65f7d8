//! Reference counting and the free path: dropping a reference, and freeing
//! every node whose last reference that was, iteratively (a 10M-deep chain
//! frees on a small stack).
//!
//! A node is freed by the thread whose release took its count to zero
//! (state word, invariant 6). Freeing a scope first takes it out of its
//! parent's child list, under that list's lock, even if `LINKED` looks clear:
//! a walker that popped it may still be inspecting it under that lock, and
//! taking the lock waits for that to finish.

use core::ptr;

use crate::tree::children::{self, ChildList};
use crate::tree::node::{NodePtr, Scope, is_heap, scope_of};
use crate::tree::state_word::Released;

/// Adds a strong reference to `node` (no-op for sentinels).
///
/// # Safety
/// `node` is a sentinel or a node the caller holds a reference on.
#[inline]
pub(crate) unsafe fn acquire(node: NodePtr) {
    if is_heap(node) {
        // SAFETY: caller holds a reference, so the node is alive.
        unsafe { (*node).word.acquire_ref() }
    }
}

/// Drops a strong reference on `node`, freeing it and, iteratively, every
/// ancestor whose last reference that was.
///
/// # Safety
/// The caller owns one reference on `node`, which it gives up.
pub(crate) unsafe fn release(node: NodePtr) {
    if !is_heap(node) {
        return;
    }
    // SAFETY: (caller) our reference keeps the node alive until this call.
    let (released, seen) = unsafe { (*node).word.release_ref() };
    match released {
        Released::Kept => {}
        // SAFETY: that was the last reference; `seen` is its word.
        Released::Last => unsafe { free_last(node, seen) },
        // SAFETY: the release made us the collapse owner.
        #[cfg(cancel_tree_shards)]
        Released::Collapse => unsafe { finish(Parent::Collapse(node)) },
    }
}

/// The last release of `node` (word `seen`): frees it and what that frees in
/// turn. Out of line, so that the common release (others remain) stays a
/// decrement and a compare.
///
/// # Safety
/// No references remain on `node`.
#[inline(never)]
unsafe fn free_last(node: NodePtr, seen: usize) {
    #[cfg_attr(not(feature = "alloc"), allow(unused_mut))]
    let mut pending = Pending::new();
    // SAFETY: (caller).
    #[cfg(feature = "alloc")]
    let next = unsafe { free(node, seen, &mut pending) };
    #[cfg(not(feature = "alloc"))]
    let next = {
        let _ = seen;
        Parent::Dead(node)
    };
    // SAFETY: what freeing left to settle.
    unsafe { finish_with(next, pending) }
}

/// Parent references that freed merged scopes still hold (`tree::merge`);
/// nothing without `alloc`.
#[cfg(feature = "alloc")]
use crate::tree::merge::Pending;
#[cfg(not(feature = "alloc"))]
pub(crate) struct Pending;
#[cfg(not(feature = "alloc"))]
impl Pending {
    const fn new() -> Pending {
        Pending
    }
    fn next_parent(&mut self) -> Option<NodePtr> {
        None
    }
}

/// What freeing a node did with its reference on its parent.
pub(crate) enum Parent {
    /// Still held: give it up.
    Held(NodePtr),
    /// Given up, and it was the last one: the parent must be freed.
    Dead(NodePtr),
    /// Given up; others remain.
    Gone,
    /// Given up, leaving only the parent's shard array's reference: the
    /// caller owns the collapse of that array (state word, invariant 8),
    /// which keeps the parent alive meanwhile.
    #[cfg(cancel_tree_shards)]
    Collapse(NodePtr),
}

impl Parent {
    /// What is left to do after dropping a reference on `node`.
    pub(crate) fn after_release(node: NodePtr, r: Released) -> Parent {
        match r {
            Released::Kept => Parent::Gone,
            Released::Last => Parent::Dead(node),
            #[cfg(cancel_tree_shards)]
            Released::Collapse => Parent::Collapse(node),
        }
    }
}

/// Settles a parent reference, freeing every node whose last reference goes,
/// iteratively.
///
/// # Safety
/// `Held`: the caller owns that reference. `Dead`: no references remain.
/// `Collapse`: the caller owns that collapse.
pub(crate) unsafe fn finish(next: Parent) {
    // SAFETY: (caller).
    unsafe { finish_with(next, Pending::new()) }
}

/// [`finish`], then every parent reference that freed merged scopes hold.
///
/// # Safety
/// As for [`finish`]; `pending` holds only retired merged scopes.
#[cfg_attr(not(feature = "alloc"), allow(unused_mut, clippy::never_loop))]
unsafe fn finish_with(mut next: Parent, mut pending: Pending) {
    loop {
        let node = match next {
            Parent::Gone => match pending.next_parent() {
                Some(p) => {
                    next = Parent::Held(p);
                    continue;
                }
                None => return,
            },
            Parent::Held(node) => {
                if !is_heap(node) {
                    next = Parent::Gone;
                    continue;
                }
                // SAFETY: (caller) a reference keeps the node alive until this
                // call.
                next = Parent::after_release(node, unsafe { (*node).word.release_ref().0 });
                continue;
            }
            #[cfg(cancel_tree_shards)]
            Parent::Collapse(node) => {
                // SAFETY: the release that returned `Collapse` made us the
                // collapse owner; the array's reference keeps the node alive
                // and nobody else can drop it.
                next = unsafe { crate::tree::shards::collapse(node.cast()) };
                continue;
            }
            Parent::Dead(node) => node,
        };
        #[cfg(feature = "alloc")]
        {
            // SAFETY: we hold the last reference (see above); only a walker
            // holding the lock of the list the node is in can still reach
            // it, and `free` takes that lock.
            next = unsafe { free(node, (*node).word.load(), &mut pending) };
        }
        // Without `alloc` every node is static or local (IMMORTAL), so a
        // last reference is never seen here.
        #[cfg(not(feature = "alloc"))]
        {
            let _ = (node, &mut pending);
            debug_assert!(false, "a non-heap node reached a zero count");
            return;
        }
    }
}

/// Settles the parent reference if dropping a freed node's contents (a
/// value, a cause: user code) panics.
pub(crate) struct SettleOnUnwind(pub(crate) Parent);

impl SettleOnUnwind {
    /// Defuses the guard, returning what it held.
    pub(crate) fn defuse(self) -> Parent {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the value is moved out once.
        unsafe { ptr::read(&this.0) }
    }
}

impl Drop for SettleOnUnwind {
    fn drop(&mut self) {
        let next = core::mem::replace(&mut self.0, Parent::Gone);
        // SAFETY: only reached while unwinding out of `free`, when the freed
        // node's parent reference still has to be settled.
        unsafe { finish(next) }
    }
}

/// Frees one node whose reference count reached zero, and says what became
/// of its reference on its parent. `word` is any value the node's word has
/// had since it was shared (only the kind and shard bits, fixed by then,
/// are used): the last release passes the value its decrement returned,
/// which saves loading the word right after that locked step.
///
/// # Safety
/// No references remain on `node`.
#[cfg(feature = "alloc")]
unsafe fn free(node: NodePtr, word: usize, pending: &mut Pending) -> Parent {
    use crate::tree::node::ValueHeader;
    use crate::tree::state_word;
    match state_word::kind(word) {
        state_word::KIND_CANCEL => {
            let scope = node.cast::<Scope>();
            // SAFETY: our node is a scope that no one else references.
            unsafe {
                let (parent, now) = detach(scope, true, word);
                let guard = SettleOnUnwind(parent);
                // `now` was loaded under the lock of the list the scope was
                // in, and no reference remains: nothing can set the bit
                // after it.
                (*scope).drop_cause(now);
                #[cfg(cancel_tree_shards)]
                crate::tree::shards::free(&*scope);
                crate::tree::node_cache::free(scope);
                guard.defuse()
            }
        }
        // SAFETY: the kind says this is a deadline node.
        state_word::KIND_DEADLINE => unsafe { crate::tree::deadline::free(node.cast(), word) },
        state_word::KIND_VALUE => {
            let vh = node.cast::<ValueHeader>();
            // SAFETY: the kind says this is a value node made by
            // `new_value_node`, whose `free` matches its type; the parent
            // pointer is immutable.
            unsafe {
                let guard = SettleOnUnwind(Parent::Held((*node).parent));
                ((*vh).free)(vh);
                guard.defuse()
            }
        }
        state_word::KIND_WITHOUT => {
            // SAFETY: made by `Box::new(Header)` in `new_without_cancel_node`.
            unsafe {
                let parent = (*node).parent;
                #[cfg(not(cancel_tree_loom))]
                drop(alloc::boxed::Box::from_raw(node.cast_mut()));
                // Loom: kept, poisoned (see `state_word::checked`).
                #[cfg(cancel_tree_loom)]
                (*node).word.poison();
                Parent::Held(parent)
            }
        }
        // SAFETY: the kind says this is a merged scope.
        state_word::KIND_MERGE => unsafe { crate::tree::merge::retire(node.cast(), word, pending) },
        state_word::KIND_CLOCK_ROOT => {
            // SAFETY: the kind says this is a clock root (no parent).
            unsafe { crate::tree::deadline::free_clock_root(node) };
            Parent::Gone
        }
        _ => unreachable!("corrupt node kind"),
    }
}

/// Removes a dying scope from its parent scope's child list. With
/// `give_up_ref`, the scope's reference on its parent node goes too, in the
/// same atomic step as the unlock when that node is the scope it was listed
/// in; the result says what became of it (`Held` without `give_up_ref`).
///
/// `word` is any value of the scope's word since it was shared (only its
/// shard bits are used). Also returns the word as loaded under the lock of
/// the list it was in, after any walker that popped it let go. For a scope
/// with no references left (the free path) no walker can touch it after
/// that, so that value's `CAUSE_CUSTOM` is final; a `LocalScope` owner
/// still holds a reference and must load again after
/// `release_owner_and_wait`.
///
/// # Safety
/// `scope` has no references left (or is a `LocalScope` its owner is
/// dropping, which holds no reference on its parent: `give_up_ref` false).
#[inline(always)]
pub(crate) unsafe fn detach(
    scope: *const Scope,
    give_up_ref: bool,
    word: usize,
) -> (Parent, usize) {
    // SAFETY: the scope is alive; its parent pointer is immutable and the
    // parent is alive (we still hold our reference on it).
    let parent = unsafe { (*scope).hdr.parent };
    // SAFETY: as above.
    let parent_scope = unsafe { scope_of(parent) };
    if parent_scope.is_null() {
        // Never linked (the parent cannot be cancelled): no walker can
        // reach the scope.
        // SAFETY: the scope is alive.
        return (Parent::Held(parent), unsafe { (*scope).hdr.word.load() });
    }
    // SAFETY: the parent scope is alive (see above), and the scope was
    // linked under it.
    let list = unsafe { ChildList::of(&*parent_scope, word) };
    match list {
        #[cfg(cancel_tree_shards)]
        ChildList::Shard(shard) => {
            // Only heap children whose parent node is the scope are sharded,
            // and each holds a reference counted in its shard.
            debug_assert!(give_up_ref && parent == parent_scope.cast());
            let mut guard = shard.lock();
            // SAFETY: the shard's lock is held; the scope is alive.
            let now = unsafe { children::unlink_if_linked(list, scope, !give_up_ref) };
            if guard.collapsed() {
                // Our count moved to the parent's word.
                drop(guard);
                // SAFETY: our reference keeps the parent alive until this call.
                let released = unsafe { (*parent).word.release_ref().0 };
                return (Parent::after_release(parent, released), now);
            }
            guard.uncount_child();
            drop(guard);
            (Parent::Gone, now)
        }
        ChildList::Own(ps) => {
            let guard = ps.hdr.word.lock();
            // SAFETY: the parent's lock is held; the scope is alive. A
            // `LocalScope` (no `give_up_ref`) may still be held by a firing
            // timer or a walk, which will look at `LINKED` again.
            let now = unsafe { children::unlink_if_linked(list, scope, !give_up_ref) };
            if give_up_ref && parent == parent_scope.cast() {
                (
                    Parent::after_release(parent, guard.unlock_and_release()),
                    now,
                )
            } else {
                drop(guard);
                (Parent::Held(parent), now)
            }
        }
    }
}
