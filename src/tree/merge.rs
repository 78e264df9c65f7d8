//! Merged contexts: one scope with several parents (Go proposal 36503, .NET's
//! linked token sources).
//!
//! A merged scope is an ordinary child of its **first** parent: linked in that
//! parent's child list, ended by its walks, holding a reference on it through
//! `Header::parent`, and finding its clock and values through it first. For
//! every **other** parent it holds a [`MergeLink`]: a reference on that
//! parent's node and an entry in the waiter list of the parent's scope. When
//! such a parent is cancelled, its walk's notify phase pops the entry and,
//! still under the parent's lock, claims the merged scope ([`claim`]): it
//! takes a reference on it (a scope whose count already reached zero is
//! being freed and is skipped) and queues the entry on its [`Forward`]
//! queue. Every walk that pops an entry does so, so each parent's cancel
//! forwards its own ending (an entry is popped once, so its queue link is
//! that walk's). The outermost `cancel` call drains that queue in a loop
//! once its own walk is done, cancelling the merged scope with that
//! parent's error and cause, so a chain of merged scopes is cancelled
//! without nesting, and before that `cancel` returns. The first ending
//! wins, as everywhere.
//!
//! All links live in one allocation beside the node (two in all). When the merged scope
//! is freed it takes each other parent's lock and unlinks its entry if it is
//! still there (a popped entry's canceller either holds a reference, so the
//! scope is not being freed, or found it dying and will not touch it), so a
//! long-lived parent does not grow with merged children that come and go.
//! The references on the other parents are then given up one at a time by
//! the free path's loop ([`Pending`]), so freeing nests no deeper for merged
//! nodes than for any chain.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr;

use crate::raw::sync::UnsafeCell;
use crate::tree::node::{NodePtr, Scope};
use crate::tree::release::{self, Parent};
use crate::tree::state_word::{self, CANCELLED, REF_ONE};
use crate::tree::waiter_list::{KIND_MERGE, LINKED, WaitLink};
use crate::{Cause, Error, Instant};

/// A merged scope: the scope, then what its other parents need.
#[repr(C)]
pub(crate) struct MergeScope {
    pub(crate) scope: Scope,
    /// The earliest deadline among the other parents' (immutable); the
    /// first parent's is found by walking up, as for any child.
    pub(crate) others_deadline: Option<Instant>,
    /// One per other parent, in the order given.
    others: Box<[MergeLink]>,
    /// How many of `others`' parent references are still held; counted down
    /// by the free path (only the freeing thread touches it).
    held: UnsafeCell<usize>,
}

/// A merged scope's entry in one other parent's waiter list.
#[repr(C)]
pub(crate) struct MergeLink {
    /// First, so that the canceller can cast a popped link back.
    link: WaitLink,
    /// The merged scope this entry cancels (set before it is linked).
    merged: *const MergeScope,
    /// A strong reference on the parent node (values are looked up through
    /// it, and it keeps `parent_scope` alive).
    pub(crate) parent: NodePtr,
    /// That node's nearest scope; null if it can never be cancelled (then
    /// the entry is never linked).
    parent_scope: *const Scope,
    /// The next entry of the [`Forward`] queue of the walk that popped this
    /// one (popped once, so owned by that walk).
    forward_next: UnsafeCell<*const MergeLink>,
}

/// Builds a merged scope under its first parent `(node, scope)` and the
/// `others`, counting a context and a handle: attached to the first parent,
/// linked into the others' waiter lists, or born cancelled by the first of
/// them (in order) that has already ended.
///
/// # Safety
/// The caller holds a reference on `node` and on every node in `others`;
/// each pair's scope is its node's nearest scope.
pub(crate) unsafe fn new(
    node: NodePtr,
    scope: *const Scope,
    others: impl IntoIterator<Item = (NodePtr, *const Scope)>,
) -> *const Scope {
    /// The links built so far: their parent references are given back if
    /// the caller's iterator (user code) panics before the node owns them.
    struct Taken(Vec<MergeLink>);
    impl Drop for Taken {
        fn drop(&mut self) {
            for l in self.0.drain(..) {
                // SAFETY: the reference taken below, given up once.
                unsafe { release::release(l.parent) };
            }
        }
    }
    let mut others_deadline: Option<Instant> = None;
    let others = others.into_iter();
    // Exact for slices and arrays, so the boxed slice below is not a copy.
    let mut links = Taken(Vec::with_capacity(others.size_hint().0));
    for (n, s) in others {
        // SAFETY: (caller) `s` is alive while `n` is.
        if let Some(d) = unsafe { crate::tree::deadline::deadline_of(s) } {
            others_deadline = Some(others_deadline.map_or(d, |o| o.min(d)));
        }
        // SAFETY: (caller) we hold a reference on `n`; the link takes one.
        unsafe { release::acquire(n) };
        links.0.push(MergeLink {
            link: WaitLink::new(KIND_MERGE),
            merged: ptr::null(),
            parent: n,
            parent_scope: s,
            forward_next: UnsafeCell::new(ptr::null()),
        });
    }
    let links = core::mem::take(&mut links.0);
    let held = links.len();
    let m: *mut MergeScope = Box::into_raw(Box::new(MergeScope {
        scope: Scope::new(state_word::KIND_MERGE | (2 * REF_ONE), node),
        others_deadline,
        others: links.into_boxed_slice(),
        held: UnsafeCell::new(held),
    }));
    // SAFETY: fresh and unshared, so `m` is the only pointer to it; the
    // links' memory is stable (boxed).
    unsafe {
        for l in (*m).others.iter_mut() {
            l.merged = m;
        }
    }
    let m = m.cast_const();
    let s: *const Scope = m.cast();
    // SAFETY: (caller); `s` is fresh.
    unsafe {
        #[allow(clippy::let_unit_value)] // `()` without shard arrays
        let hint = crate::tree::attach::shard_hint(node, scope);
        crate::tree::attach::attach(node, scope, s, hint);
    }
    // SAFETY: `m` is alive (we hold its two references).
    for l in unsafe { (*m).others.iter() } {
        if l.parent_scope.is_null() {
            continue; // that parent can never end
        }
        // SAFETY: our link's reference keeps the parent scope alive.
        let parent = unsafe { &*l.parent_scope };
        let mut guard = parent.hdr.word.lock();
        let w = guard.seen();
        if w & CANCELLED != 0 {
            drop(guard);
            let err = state_word::err_of(w).unwrap_or(Error::Canceled);
            // The parent ended before us: so do we (unless an earlier one
            // already ended us; the first ending wins).
            // SAFETY: we hold references on `s`; nothing here runs user
            // code (the fresh scope has no waiters).
            unsafe { crate::tree::cancel::cancel(s, err, &parent.read_cause(w)) };
            continue;
        }
        // SAFETY: `s` is alive.
        if unsafe { (*s).hdr.word.load() } & CANCELLED != 0 {
            continue; // already ended: nothing to forward
        }
        // Derived from the whole link: `claim` casts it back.
        let link: *const WaitLink = (l as *const MergeLink).cast();
        // SAFETY: the lock is held; the link lives in `m`'s allocation,
        // which is freed only after the link leaves this list (`retire`).
        unsafe { parent.push_waiter(&mut guard, link) };
    }
    s
}

/// Claims the merged scope of a link the caller just popped: `None` if it is
/// being freed (its free path then waits on the lock the caller holds to
/// find the link popped, and never touches it again). Otherwise a reference
/// is taken for the caller, who queues the link on its [`Forward`].
///
/// # Safety
/// The caller holds the lock of the scope whose list the `KIND_MERGE` link
/// `link` was just popped from.
pub(crate) unsafe fn claim(link: *const WaitLink) -> Option<*const MergeLink> {
    let l = link.cast::<MergeLink>();
    // No reference is given back here: it could be the last, and freeing
    // needs the lock the caller holds.
    // SAFETY: (caller) the link is alive until its merged scope is freed,
    // which waits for this lock; `MergeLink` is repr(C), link first.
    unsafe { (*(*l).merged).scope.hdr.word.try_acquire_ref().then_some(l) }
}

/// The entries a cancel walk popped and claimed, whose merged scopes are
/// cancelled once the walk is done: a stack threaded through the entries
/// (each is on at most one, by the walk that popped it).
pub(crate) struct Forward(*const MergeLink);

impl Forward {
    pub(crate) const fn new() -> Forward {
        Forward(ptr::null())
    }

    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_null()
    }

    /// Queues a claimed entry.
    ///
    /// # Safety
    /// `l` came from [`claim`] (the merged scope's reference goes with it).
    pub(crate) unsafe fn push(&mut self, l: *const MergeLink) {
        // SAFETY: (caller) popped by this walk, so the cell is ours.
        unsafe { (*l).forward_next.with_mut(|n| *n = self.0) };
        self.0 = l;
    }

    /// The next queued merged scope (its claim's reference goes to the
    /// caller), with the ending of the parent whose entry it was.
    pub(crate) fn pop(&mut self) -> Option<(*const Scope, Error, Cause)> {
        if self.0.is_null() {
            return None;
        }
        let l = self.0;
        // SAFETY: queued, so claimed by us: the claim's reference keeps the
        // merged scope, its links, and (through the link's reference) the
        // parent scope alive; that parent has ended (its walk popped `l`).
        unsafe {
            self.0 = (*l).forward_next.with(|n| *n);
            let parent = &*(*l).parent_scope;
            let w = parent.hdr.word.load();
            let err = state_word::err_of(w).unwrap_or(Error::Canceled);
            Some(((*l).merged.cast(), err, parent.read_cause(w)))
        }
    }
}

/// The free path of a merged scope with no references left: leaves every
/// other parent's waiter list and the first parent's child list, releases
/// the cause, and hands the node to `pending`, which gives up the other
/// parents' references and then frees it. Returns what became of the first
/// parent's reference.
///
/// # Safety
/// No references remain on `m`; `word` as for the free path.
pub(crate) unsafe fn retire(m: *const MergeScope, word: usize, pending: &mut Pending) -> Parent {
    // SAFETY: (caller) nobody else references `m`; every other parent is
    // alive (we hold references on them).
    unsafe {
        for l in (*m).others.iter() {
            if l.parent_scope.is_null() {
                continue;
            }
            let parent = &*l.parent_scope;
            let guard = parent.hdr.word.lock();
            if l.link.status() == LINKED {
                let link: *const WaitLink = (l as *const MergeLink).cast();
                parent.unlink_waiter(link, crate::tree::waiter_list::IDLE);
            }
            drop(guard);
        }
        let (parent, now) = release::detach(m.cast(), true, word);
        let settle = release::SettleOnUnwind(parent);
        #[cfg(cancel_tree_shards)]
        crate::tree::shards::free(&(*m).scope);
        // On the stack before the cause's `Drop` (user code) runs: if it
        // panics, the caller's `Pending` still gives back the other
        // parents' references and frees the node as it unwinds.
        pending.push(m);
        (*m).scope.drop_cause(now);
        settle.defuse()
    }
}

/// Merged scopes being freed whose other parents' references are still
/// held: a stack threaded through their sibling links (free once a node is
/// off every list: list invariant 3). The free path's loop takes one
/// reference at a time from it, so freeing never recurses.
pub(crate) struct Pending(*const MergeScope);

impl Pending {
    pub(crate) const fn new() -> Pending {
        Pending(ptr::null())
    }

    fn push(&mut self, m: *const MergeScope) {
        // SAFETY: `m` is off every list and ours alone (being freed).
        unsafe { (*m).scope.siblings.set_next(self.0.cast()) };
        self.0 = m;
    }

    /// The next parent reference to give up, freeing merged nodes whose
    /// references are all given up; `None` when there is none.
    #[inline(always)]
    pub(crate) fn next_parent(&mut self) -> Option<NodePtr> {
        if self.0.is_null() {
            return None;
        }
        self.next_parent_slow()
    }

    #[inline(never)]
    fn next_parent_slow(&mut self) -> Option<NodePtr> {
        while !self.0.is_null() {
            let m = self.0;
            // SAFETY: a node on this stack is ours alone until freed here.
            unsafe {
                let held = (*m).held.with(|h| *h);
                if held > 0 {
                    (*m).held.with_mut(|h| *h = held - 1);
                    return Some((*m).others[held - 1].parent);
                }
                self.0 = (*m).scope.siblings.next().cast();
                free(m);
            }
        }
        None
    }
}

impl Drop for Pending {
    /// Gives up what is left if the free path unwinds (a value's or a
    /// cause's `Drop` panicked), so nothing leaks.
    fn drop(&mut self) {
        while let Some(p) = self.next_parent() {
            // SAFETY: a reference the freed node held.
            unsafe { release::release(p) };
        }
    }
}

/// Frees a retired merged node whose parent references are all given up.
///
/// # Safety
/// `m` was retired and nothing references it.
unsafe fn free(m: *const MergeScope) {
    #[cfg(not(cancel_tree_loom))]
    // SAFETY: made by `Box::new` in `new`; (caller).
    unsafe {
        drop(Box::from_raw(m.cast_mut()))
    };
    // Loom: the links are dropped, the node kept with its word poisoned (see
    // `state_word::checked`).
    #[cfg(cancel_tree_loom)]
    // SAFETY: as above.
    unsafe {
        ptr::drop_in_place(&raw mut (*m.cast_mut()).others);
        (*m).scope.hdr.word.poison();
    }
}

/// The other parents of a merged scope, in order (for value lookup).
///
/// # Safety
/// `m` is a live merged scope.
pub(crate) unsafe fn other_parents<'a>(
    m: *const Scope,
) -> impl DoubleEndedIterator<Item = NodePtr> + 'a {
    // SAFETY: (caller); the links are immutable after `new`.
    unsafe { (*m.cast::<MergeScope>()).others.iter().map(|l| l.parent) }
}
