//! Where a scope's children are: its own child list, or (std, 64-bit) one
//! of the shard lists it gets when two threads derive from it at once. The
//! choice for a linked child is made here, once ([`ChildList::of`]), from
//! the shard bits in the child's word; the attach, cancel and free paths all
//! go through it.

use crate::raw::list::Head;
use crate::tree::node::Scope;
use crate::tree::state_word::{self, LINKED};

/// One child list of a scope: its own, or one of its shards.
#[derive(Clone, Copy)]
pub(crate) enum ChildList<'a> {
    Own(&'a Scope),
    #[cfg(cancel_tree_shards)]
    Shard(&'a crate::tree::shards::Shard),
}

/// The held lock of a [`ChildList`] (held for its `Drop`, which unlocks).
#[allow(dead_code)]
pub(crate) enum ListGuard<'a> {
    Own(state_word::Guard<'a>),
    #[cfg(cancel_tree_shards)]
    Shard(crate::tree::shards::ShardGuard<'a>),
}

impl<'a> ChildList<'a> {
    /// The list a child of `parent` whose word is `child_word` is linked in
    /// (its shard bits are fixed: state word, invariant 1).
    ///
    /// # Safety
    /// `parent` is the scope the child was linked under, and is alive.
    #[inline]
    pub(crate) unsafe fn of(parent: &'a Scope, child_word: usize) -> ChildList<'a> {
        #[cfg(cancel_tree_shards)]
        if let Some(k) = crate::tree::shards::shard_of(child_word) {
            // SAFETY: the parent's array was installed before the child was
            // linked in it, and lives as long as the parent.
            return ChildList::Shard(unsafe { &(*crate::tree::shards::of(parent)).shard[k] });
        }
        let _ = child_word;
        ChildList::Own(parent)
    }

    /// Takes the list's lock.
    #[inline]
    pub(crate) fn lock(self) -> ListGuard<'a> {
        match self {
            ChildList::Own(x) => ListGuard::Own(x.hdr.word.lock()),
            #[cfg(cancel_tree_shards)]
            ChildList::Shard(sh) => ListGuard::Shard(sh.lock()),
        }
    }

    /// The list's head (guarded by the list's lock).
    #[inline]
    pub(crate) fn head(self) -> &'a Head<Scope> {
        match self {
            ChildList::Own(x) => &x.children,
            #[cfg(cancel_tree_shards)]
            ChildList::Shard(sh) => &sh.head,
        }
    }
}

/// Links a fresh child at the front of `head` and marks it `LINKED`.
///
/// # Safety
/// The caller holds the lock of that list; `child` is alive, in no list,
/// and not yet visible to any other thread (so `LINKED` is a plain store).
#[inline(always)]
pub(crate) unsafe fn link(head: &Head<Scope>, child: *const Scope) {
    // SAFETY: (caller) list invariants 1-3.
    unsafe {
        head.push_front(child);
        (*child).hdr.word.set_unshared(LINKED);
    }
}

/// Takes `child` out of `list` if it is still in it (its `LINKED` bit,
/// read under the list's lock, says so: state word, invariant 5), and
/// returns its word as read there.
///
/// With `clear`, `LINKED` is cleared in the same hold. That is required
/// whenever another thread may still hold a reference on `child` (a walk
/// that leaves its parent, a `LocalScope` owner dropping it while a firing
/// timer or a walk holds one): such a holder may come to this list later,
/// and a stale `LINKED` would make it unlink `child` a second time, through
/// links that now point at nodes the list gave away. Only the free path
/// (no references left, so nobody reads the bit again) may skip it.
///
/// # Safety
/// The caller holds `list`'s lock, and `child` was linked in `list` (or in
/// no list) and is alive.
#[inline(always)]
pub(crate) unsafe fn unlink_if_linked(
    list: ChildList<'_>,
    child: *const Scope,
    clear: bool,
) -> usize {
    // SAFETY: (caller).
    unsafe {
        let word = &(*child).hdr.word;
        let now = word.load();
        if now & LINKED != 0 {
            list.head().unlink(child);
            if clear {
                word.clear(LINKED);
            }
        }
        now
    }
}
