//! Sharded child lists: threads deriving from one parent at once do not
//! share a cache line (with `cfg(cancel_tree_shards)`: std, 64-bit).
//!
//! A parent's own child list is guarded by the lock bit in its state word,
//! and each child holds a reference counted in that word. That is one cache
//! line every derive and every drop writes twice: two threads deriving from
//! one parent would pass it back and forth on every operation. So the first
//! time a derive finds the parent's lock taken by another thread, it installs
//! a [`Shards`] array on the parent: [`SHARDS`] more child lists, each on its
//! own cache line with its own lock and its own count of the references its
//! children hold on the parent. Each thread links its children into its own
//! shard (round-robin by thread), so in the steady state a derive and a drop
//! touch only that thread's shard line and the child's own line.
//!
//! ## Counts and the collapse
//!
//! The parent's word counts everything else (contexts, handles, walks,
//! waiters, children in its own list) plus one reference held by the shard
//! array itself (`SHARDS_REF`). A shard's count lives in the shard's word and
//! changes only under the shard's lock. A release that would leave only the
//! shard array's reference (nobody can derive a new child any more) makes
//! its releaser the owner of the *collapse*, and its very next step claims
//! it: it clears `SHARDS_REF`, and the array's reference becomes its own.
//! Between the two the word is frozen: no one else holds a reference, and
//! a walker that finds the parent in a list (or a timer that pops it)
//! waits rather than take one, so no second releaser can reach that state
//! and free the parent under the owner. Then, shard by shard under each
//! shard's lock, the owner moves the count into the parent's word and marks
//! the shard collapsed, and finally drops that reference. Releases stay one
//! `fetch_sub`. A child of a collapsed shard gives its reference back to the
//! parent's word directly. The parent is freed when that word reaches zero,
//! as always, and frees the array with it.
//!
//! A walk (cancel) drains every shard like the parent's own list: it sets the
//! parent's `CANCELLED` first, and a derive checks it under the shard lock, so
//! each new child is either seen by the walk or born cancelled.

use core::cell::Cell;

use alloc::boxed::Box;

use crate::raw::list::Head;
use crate::raw::sync::{AtomicUsize, Ordering};
use crate::tree::node::Scope;
use crate::tree::release::Parent;
use crate::tree::state_word::{self, HAS_KIDS, IMMORTAL, Released};

/// Shards per contended parent (1 KiB: one 128-byte line pair each).
#[cfg(not(cancel_tree_loom))]
pub(crate) const SHARDS: usize = 8;
/// Under loom, two: every shard is drained with the same code, and each one
/// multiplies the interleavings a model must explore.
#[cfg(cancel_tree_loom)]
pub(crate) const SHARDS: usize = 2;

const S_LOCKED: usize = 1;
const S_COLLAPSED: usize = 2;
const S_ONE: usize = 4;
/// Under loom a freed array is kept with this in every shard word, and
/// locking a shard checks for it (a late access fails the model).
#[cfg(cancel_tree_loom)]
const S_POISON: usize = usize::MAX;

/// One extra child list of a parent, on its own cache lines.
#[repr(C, align(128))]
pub(crate) struct Shard {
    /// `S_LOCKED`, `S_COLLAPSED`, and the count (`S_ONE` each) of references
    /// on the parent held by children of this shard. Changed only under the
    /// lock (which is its low bit), so unlocking is a store.
    word: AtomicUsize,
    /// The children; guarded by the lock.
    pub(crate) head: Head<Scope>,
}

/// The shard array of a parent.
pub(crate) struct Shards {
    pub(crate) shard: [Shard; SHARDS],
}

/// Proof that a shard's lock is held; the word's value is kept here and
/// stored back (without the lock bit) on drop.
pub(crate) struct ShardGuard<'a> {
    shard: &'a Shard,
    word: usize,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            word: AtomicUsize::new(0),
            head: Head::new(),
        }
    }

    /// Takes the shard's lock.
    pub(crate) fn lock(&self) -> ShardGuard<'_> {
        let mut spins = 0;
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            #[cfg(cancel_tree_loom)]
            assert_ne!(cur, S_POISON, "a freed shard array was used");
            if cur & S_LOCKED == 0 {
                match self.word.compare_exchange_weak(
                    cur,
                    cur | S_LOCKED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        return ShardGuard {
                            shard: self,
                            word: cur,
                        };
                    }
                    Err(actual) => cur = actual,
                }
            } else {
                crate::raw::sync::backoff(&mut spins);
                cur = self.word.load(Ordering::Relaxed);
            }
        }
    }
}

impl ShardGuard<'_> {
    pub(crate) fn collapsed(&self) -> bool {
        self.word & S_COLLAPSED != 0
    }

    /// A child of this shard takes its reference on the parent.
    pub(crate) fn count_child(&mut self) {
        debug_assert!(!self.collapsed());
        self.word += S_ONE;
    }

    /// A child of this (not collapsed) shard gives its reference back.
    pub(crate) fn uncount_child(&mut self) {
        debug_assert!(!self.collapsed() && self.word >= S_ONE);
        self.word -= S_ONE;
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        self.shard.word.store(self.word, Ordering::Release);
    }
}

impl Shards {
    fn new() -> Shards {
        Shards {
            shard: core::array::from_fn(|_| Shard::new()),
        }
    }
}

/// The calling thread's shard index.
#[cfg(not(cancel_tree_loom))]
pub(crate) fn index() -> usize {
    static NEXT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
    std::thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX
        .try_with(|i| {
            if i.get() == usize::MAX {
                i.set(NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed) % SHARDS);
            }
            i.get()
        })
        .unwrap_or(0)
}

/// The calling thread's shard index (loom: per model thread, so the models
/// see two threads in two shards).
#[cfg(cancel_tree_loom)]
pub(crate) fn index() -> usize {
    loom::lazy_static! {
        static ref NEXT: AtomicUsize = AtomicUsize::new(0);
    }
    loom::thread_local! {
        static INDEX: Cell<usize> = Cell::new(usize::MAX);
    }
    INDEX.with(|i| {
        if i.get() == usize::MAX {
            i.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        i.get()
    })
}

/// The parent's shard array, if installed (`Acquire`: its shards are
/// initialised).
#[inline]
pub(crate) fn of(parent: &Scope) -> *const Shards {
    parent.shards.load(Ordering::Acquire)
}

/// Installs a shard array on `parent` (or finds the one another thread just
/// installed). Null if the parent cannot have one (an immortal static or
/// local scope, whose memory its owner manages).
///
/// The array is published under the parent's own lock, with `HAS_KIDS`: a
/// walk reads the pointer under that lock after flagging the parent, so
/// either it sees the array and drains it, or the installer came after the
/// flag and every derive into the array sees `CANCELLED`.
///
/// The caller holds a reference on `parent`.
pub(crate) fn install(parent: &Scope) -> *const Shards {
    let cur = of(parent);
    if !cur.is_null() || parent.hdr.word.load() & IMMORTAL != 0 {
        return cur;
    }
    let new: *mut Shards = Box::into_raw(Box::new(Shards::new()));
    let mut guard = parent.hdr.word.lock();
    let cur = of(parent);
    if !cur.is_null() || guard.seen() & IMMORTAL != 0 {
        drop(guard);
        // SAFETY: ours was never published.
        unsafe { drop(Box::from_raw(new)) };
        return cur;
    }
    guard.mark(HAS_KIDS);
    parent.shards.store(new, Ordering::Release);
    parent.hdr.word.take_shards_ref();
    drop(guard);
    new
}

/// Collapses the shard array of `p` (see the module docs): the caller got
/// [`Released::Collapse`](crate::tree::state_word::Released::Collapse), so its
/// decrement left only the array's reference, it owns the collapse, and its
/// claim turned that reference into its own, which is dropped here.
///
/// # Safety
/// `p` is alive and the caller owns the collapse as described above.
pub(crate) unsafe fn collapse(p: *const Scope) -> Parent {
    // SAFETY: (caller) the former array's reference keeps `p` alive.
    let scope = unsafe { &*p };
    let shards = of(scope);
    debug_assert!(!shards.is_null());
    // SAFETY: installed before SHARDS_REF was set, freed only with `p`.
    for shard in unsafe { &(*shards).shard } {
        let mut g = shard.lock();
        // Move the count under the shard's lock, before its children can see
        // the shard collapsed and release on the word directly.
        let n = g.word / S_ONE;
        if n > 0 {
            scope.hdr.word.add_refs(n);
        }
        g.word = (g.word % S_ONE) | S_COLLAPSED;
        drop(g);
    }
    // The array's reference, now ours.
    match scope.hdr.word.release_ref().0 {
        Released::Last => Parent::Dead(p.cast()),
        _ => Parent::Gone,
    }
}

/// Frees the shard array of a scope being freed.
///
/// # Safety
/// No references remain on `scope`.
pub(crate) unsafe fn free(scope: &Scope) {
    let shards = scope.shards.load(Ordering::Acquire);
    if !shards.is_null() {
        // SAFETY: made by `Box::into_raw` in `install`; every child is gone.
        #[cfg(not(cancel_tree_loom))]
        unsafe {
            drop(Box::from_raw(shards))
        };
        // SAFETY: as above; under loom the array is poisoned and kept.
        #[cfg(cancel_tree_loom)]
        for shard in unsafe { &(*shards).shard } {
            shard.word.store(S_POISON, Ordering::Relaxed);
        }
    }
}

/// The shard a child is linked in (`None`: its parent's own list).
#[inline]
pub(crate) fn shard_of(word: usize) -> Option<usize> {
    match (word & state_word::SHARD_MASK) >> state_word::SHARD_SHIFT {
        0 => None,
        k => Some(k - 1),
    }
}

/// The word bits recording that a child is in shard `k`.
#[inline]
pub(crate) fn shard_bits(k: usize) -> usize {
    (k + 1) << state_word::SHARD_SHIFT
}
