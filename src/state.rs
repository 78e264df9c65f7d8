//! The state machine: one atomic word per node.
//!
//! ```text
//!  bit  0..=2  KIND         immutable: which node layout this is
//!  bit  3      LOCKED       (std) spin-lock bit guarding the node's lists
//!  bit  4      CANCELLED    set once, never cleared
//!  bit  5      ERR_DEADLINE err() is DeadlineExceeded (else Canceled)
//!  bit  6      CAUSE_CUSTOM the node's `cause` cell holds a custom cause
//!  bit  7      CAUSE_DEADLINE  (not custom) cause() is DeadlineExceeded
//!  bit  8      WALKING      a cancel walk is still flagging this subtree
//!  bit  9      LINKED       the node is in its parent scope's child list
//!  bit 10      IMMORTAL     never freed (saturated count, static or local)
//!  bit 11      ATTACHED     a `LocalScope` has joined its parent
//!  bit 12      HAS_KIDS     a child was ever linked (sticky)
//!  bit 13      HAS_WAITERS  a waiter was ever linked (sticky)
//!  bit 14..    refs         strong references (REF_ONE each)
//! ```
//!
//! With `cfg(cancel_tree_shards)` (std, 64-bit) bits 14..=17 hold the shard
//! a child is linked in, bit 18 is `SHARDS_REF`, and refs start at bit 19.
//!
//! `is_cancelled()` and `err()` are one `Acquire` load of this word. The
//! transition live -> cancelled happens once, under the node's lock, in the
//! same RMW that releases the lock, after the cause has been written: a reader
//! that sees `CANCELLED` therefore also sees the cause (no window in which
//! `cause()` lags `err()`).
//!
//! The lock protects the node's child list, waiter list and `cause` cell.
//! With `std` it is a spin lock on `LOCKED` (critical sections are O(1): a
//! link, an unlink, a pop). Without `std` it is a `critical-section`
//! (interrupts masked on single-core MCUs), so `cancel` from an interrupt
//! handler can never spin on a lock held by the code it interrupted.
//!
//! ## Lock-free endings (with `std`)
//!
//! `HAS_KIDS` / `HAS_WAITERS` are set (under the lock) before the first
//! child / waiter is linked and never cleared. A node whose word shows
//! neither, nor `LOCKED`, has empty lists at that instant, and anyone who
//! links later holds the lock and checks `CANCELLED` first. So a plain leaf
//! is ended by one compare-and-swap of its word ([`Word::try_end_leaf`]),
//! with no lock, when the cause needs no cell (a kind, not a custom value).
//! A node that does have lists is flagged by one compare-and-swap too
//! ([`Word::try_end_inner`]: the end bits, `WALKING` and the walk's
//! reference together); its lists are then drained under its lock.
//!
//! Without `std` these attempts always answer `Busy` and everything takes
//! the critical section: on a multi-core MCU another core could run a
//! lock-free path while a holder is inside the section, which would need the
//! holder to set `LOCKED` too, two more RMWs per section (each its own
//! nested critical section on cores without CAS), and the firmware measured
//! that as 2.4x longer masked sections on a Cortex-M0.

use crate::Error;
#[cfg(not(cancel_tree_loom))]
use crate::sync::AtomicUsize;
use crate::sync::{Ordering, fence};
#[cfg(cancel_tree_loom)]
use checked::CheckedAtomic as AtomicUsize;

pub(crate) const KIND_MASK: usize = 0b111;
pub(crate) const KIND_CANCEL: usize = 0;
pub(crate) const KIND_DEADLINE: usize = 1;
pub(crate) const KIND_VALUE: usize = 2;
pub(crate) const KIND_WITHOUT: usize = 3;
pub(crate) const KIND_CLOCK_ROOT: usize = 4;

#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) const LOCKED: usize = 1 << 3;
pub(crate) const CANCELLED: usize = 1 << 4;
pub(crate) const ERR_DEADLINE: usize = 1 << 5;
pub(crate) const CAUSE_CUSTOM: usize = 1 << 6;
pub(crate) const CAUSE_DEADLINE: usize = 1 << 7;
pub(crate) const WALKING: usize = 1 << 8;
pub(crate) const LINKED: usize = 1 << 9;
pub(crate) const IMMORTAL: usize = 1 << 10;
#[cfg_attr(cancel_tree_loom, allow(dead_code))]
pub(crate) const ATTACHED: usize = 1 << 11;
pub(crate) const HAS_KIDS: usize = 1 << 12;
pub(crate) const HAS_WAITERS: usize = 1 << 13;

/// The shard of its parent's child list a child is linked in (0: the
/// parent's own list; k: shard k - 1), fixed before the child is shared.
#[cfg(cancel_tree_shards)]
pub(crate) const SHARD_SHIFT: u32 = 14;
#[cfg(cancel_tree_shards)]
pub(crate) const SHARD_MASK: usize = 0b1111 << SHARD_SHIFT;
/// The node's shard array (see `shards`) holds one of its references.
#[cfg(cancel_tree_shards)]
pub(crate) const SHARDS_REF: usize = 1 << 18;

#[cfg(cancel_tree_shards)]
pub(crate) const REF_SHIFT: u32 = 19;

/// `true` if the word shows a shard array's reference.
#[inline(always)]
const fn has_shards_ref(word: usize) -> bool {
    #[cfg(cancel_tree_shards)]
    return word & SHARDS_REF != 0;
    #[cfg(not(cancel_tree_shards))]
    {
        let _ = word;
        false
    }
}

/// `true` if only the shard array's reference is left: a collapse owner
/// is about to clear `SHARDS_REF`, and nobody may take a reference before
/// (see [`Released::Collapse`]).
#[inline(always)]
const fn collapse_pending(word: usize) -> bool {
    has_shards_ref(word) && refs(word) == 1
}
#[cfg(not(cancel_tree_shards))]
pub(crate) const REF_SHIFT: u32 = 14;
pub(crate) const REF_ONE: usize = 1 << REF_SHIFT;
/// Past this many references a node becomes immortal instead of risking an
/// overflow (2^43 on 64-bit targets with shards, 2^48 on 64-bit without,
/// 2^16 on 32-bit targets); the count field holds four times as many.
const REF_SATURATE: usize = 1 << (usize::BITS - REF_SHIFT - 2);

/// The bits that record how a node ended.
pub(crate) const END_BITS: usize = CANCELLED | ERR_DEADLINE | CAUSE_CUSTOM | CAUSE_DEADLINE;

#[inline(always)]
pub(crate) const fn refs(word: usize) -> usize {
    word >> REF_SHIFT
}

#[inline(always)]
pub(crate) const fn kind(word: usize) -> usize {
    word & KIND_MASK
}

#[inline(always)]
pub(crate) const fn err_of(word: usize) -> Option<Error> {
    if word & CANCELLED == 0 {
        None
    } else if word & ERR_DEADLINE != 0 {
        Some(Error::DeadlineExceeded)
    } else {
        Some(Error::Canceled)
    }
}

/// The end bits for an ending with `err`, whose cause is `cause_kind` (when
/// the cause is one of the two kinds) or custom.
pub(crate) const fn end_bits(err: Error, cause_kind: Option<Error>) -> usize {
    let mut bits = CANCELLED;
    if matches!(err, Error::DeadlineExceeded) {
        bits |= ERR_DEADLINE;
    }
    match cause_kind {
        None => bits |= CAUSE_CUSTOM,
        Some(Error::DeadlineExceeded) => bits |= CAUSE_DEADLINE,
        Some(Error::Canceled) => {}
    }
    bits
}

/// The atomic word of one node.
pub(crate) struct Word(AtomicUsize);

/// Under loom, freed nodes are not returned to the allocator: their word is
/// overwritten with [`POISON`](checked::POISON) and left in place (their
/// contents, a value, a cause or a clock, are dropped), and every operation
/// on a word asserts it did not find that value. That covers every node
/// with a state word: scopes, deadline scopes, value nodes, `without_cancel`
/// headers and clock roots (`after_func` registrations have no state word
/// and are really freed). A model in which
/// some thread touches a node after it was freed (the use-after-free the
/// shard collapse once had) then fails instead of passing silently.
#[cfg(cancel_tree_loom)]
mod checked {
    use crate::sync::{AtomicUsize, Ordering};

    /// A kind no node has, and no references.
    pub(crate) const POISON: usize = super::KIND_MASK;

    #[track_caller]
    fn live(w: usize) -> usize {
        assert!(
            super::kind(w) != super::kind(POISON),
            "a freed node's state word was used"
        );
        w
    }

    /// `AtomicUsize` that checks every value it reads.
    pub(crate) struct CheckedAtomic(AtomicUsize);

    /// The read-modify-writes, each checking the value it replaced.
    macro_rules! checked_rmw {
        ($($op:ident),*) => {$(
            #[track_caller]
            pub(crate) fn $op(&self, v: usize, o: Ordering) -> usize {
                live(self.0.$op(v, o))
            }
        )*};
    }

    impl CheckedAtomic {
        pub(crate) fn new(v: usize) -> Self {
            Self(AtomicUsize::new(v))
        }
        pub(crate) fn poison(&self) {
            live(self.0.swap(POISON, Ordering::Relaxed));
        }
        #[track_caller]
        pub(crate) fn load(&self, o: Ordering) -> usize {
            live(self.0.load(o))
        }
        pub(crate) fn store(&self, v: usize, o: Ordering) {
            self.0.store(v, o);
        }
        checked_rmw!(fetch_add, fetch_sub, fetch_or, fetch_and, fetch_xor);
        #[track_caller]
        pub(crate) fn compare_exchange_weak(
            &self,
            cur: usize,
            new: usize,
            ok: Ordering,
            err: Ordering,
        ) -> Result<usize, usize> {
            self.0
                .compare_exchange_weak(live(cur), new, ok, err)
                .map_err(live)
        }
    }
}

impl Word {
    pub(crate) fn new(initial: usize) -> Word {
        Word(AtomicUsize::new(initial))
    }

    /// Marks a node as freed (loom only; see `checked`).
    #[cfg(cancel_tree_loom)]
    pub(crate) fn poison(&self) {
        self.0.poison();
    }

    /// `new`, usable in statics (not under loom, whose atomics are not const).
    #[cfg(not(cancel_tree_loom))]
    pub(crate) const fn new_const(initial: usize) -> Word {
        Word(AtomicUsize::new(initial))
    }

    #[inline(always)]
    pub(crate) fn load(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Adds a reference. Saturates (the node becomes immortal) instead of
    /// overflowing.
    #[inline]
    pub(crate) fn acquire_ref(&self) {
        let prev = self.0.fetch_add(REF_ONE, Ordering::Relaxed);
        self.saturate_if(prev);
    }

    /// After adding a reference to a word that was `prev`: past
    /// `REF_SATURATE` the node becomes immortal and the reference is taken
    /// back, so the count never overflows.
    #[inline(always)]
    fn saturate_if(&self, prev: usize) {
        if refs(prev) >= REF_SATURATE {
            self.0.fetch_or(IMMORTAL, Ordering::Relaxed);
            self.0.fetch_sub(REF_ONE, Ordering::Relaxed);
        }
    }

    /// Adds a reference unless the count is already zero (the node is being
    /// freed). Used by walkers that find a node in a list.
    ///
    /// A node whose only reference is its shard array's is waiting for its
    /// collapse owner's claim, the RMW right after the owner's decrement
    /// (see [`Released::Collapse`]); this waits for it (one instruction,
    /// unless the owner was preempted between the two).
    pub(crate) fn try_acquire_ref(&self) -> bool {
        #[cfg(cancel_tree_shards)]
        let mut spins = 0;
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if refs(cur) == 0 {
                return false;
            }
            #[cfg(cancel_tree_shards)]
            if collapse_pending(cur) {
                crate::sync::backoff(&mut spins);
                cur = self.0.load(Ordering::Relaxed);
                continue;
            }
            if refs(cur) >= REF_SATURATE {
                return true; // immortal in practice; no need to count
            }
            match self.0.compare_exchange_weak(
                cur,
                cur + REF_ONE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Drops a reference and says what the caller must do next.
    #[inline]
    pub(crate) fn release_ref(&self) -> Released {
        self.release_ref_seen().0
    }

    /// [`release_ref`](Word::release_ref), also returning the word as it
    /// was just before (its kind and shard bits are fixed, so a freer need
    /// not load the word again right after the locked decrement).
    #[inline]
    pub(crate) fn release_ref_seen(&self) -> (Released, usize) {
        let prev = self.0.fetch_sub(REF_ONE, Ordering::Release);
        (Released::from_prev(self, prev), prev)
    }

    /// The collapse owner's claim, right after its decrement (see
    /// [`Released::Collapse`]): clears `SHARDS_REF`, which turns the array's
    /// reference into the owner's and lets walkers take references again.
    #[cfg(cancel_tree_shards)]
    pub(crate) fn claim_shards_ref(&self) {
        let prev = self.0.fetch_and(!SHARDS_REF, Ordering::AcqRel);
        debug_assert!(prev & SHARDS_REF != 0 && refs(prev) >= 1);
    }

    /// Adds `n` references (the counts of a collapsing shard array).
    #[cfg(cancel_tree_shards)]
    pub(crate) fn add_refs(&self, n: usize) {
        self.0.fetch_add(n * REF_ONE, Ordering::Relaxed);
    }

    /// The shard array takes its reference (once, by its installer, who
    /// holds another reference, so the count is not zero).
    #[cfg(cancel_tree_shards)]
    pub(crate) fn take_shards_ref(&self) {
        self.0.fetch_add(REF_ONE | SHARDS_REF, Ordering::Relaxed);
    }

    /// Sets bits on a node no other thread can see yet (no RMW needed).
    #[inline]
    pub(crate) fn set_unshared(&self, bits: usize) {
        let cur = self.0.load(Ordering::Relaxed);
        self.0.store(cur | bits, Ordering::Relaxed);
    }

    /// For a node whose memory its owner frees (a `LocalScope`): drops the
    /// owner's reference, then waits until every other holder (a cancel walk,
    /// a firing timer) has dropped theirs. Those holders found the node in a
    /// list or queue it has already left, so the count only goes down. On a
    /// single core this never spins: an interrupt handler holding a
    /// reference runs to completion before the owner resumes.
    #[cfg_attr(cancel_tree_loom, allow(dead_code))]
    pub(crate) fn release_owner_and_wait(&self) {
        self.0.fetch_sub(REF_ONE, Ordering::AcqRel);
        #[cfg(any(feature = "std", cancel_tree_loom))]
        let mut spins = 0;
        while refs(self.0.load(Ordering::Acquire)) != 0 {
            #[cfg(any(feature = "std", cancel_tree_loom))]
            crate::sync::backoff(&mut spins);
            #[cfg(not(any(feature = "std", cancel_tree_loom)))]
            core::hint::spin_loop();
        }
    }

    /// Clears bits (with `AcqRel`).
    #[inline]
    pub(crate) fn clear(&self, bits: usize) -> usize {
        self.0.fetch_and(!bits, Ordering::AcqRel)
    }

    /// Takes the node's lock.
    #[inline]
    pub(crate) fn lock(&self) -> Guard<'_> {
        #[cfg(not(feature = "std"))]
        {
            // Guards are scoped values, dropped in the reverse order of their
            // creation: the nesting order critical-section requires.
            // SAFETY: the matching `release` runs in `Guard::drop`.
            let restore = unsafe { critical_section::acquire() };
            Guard {
                word: self,
                restore,
            }
        }
        #[cfg(feature = "std")]
        self.lock_seen().0
    }
}

impl Word {
    /// Takes the lock for linking a child that will hold a reference on
    /// this node, and returns the word as it is under the lock. With `std`
    /// that is one `fetch_or` (spinning while another thread holds the
    /// lock), and [`Guard::unlock_and_acquire_ref`] then releases the lock
    /// and takes the child's reference in one `fetch_add`: two RMWs and no
    /// plain load of the word, which measured 1.2 ns (7 %) faster per child
    /// create + drop than a load and a compare-and-swap that took both at
    /// once. Without std: the critical section.
    #[inline]
    pub(crate) fn lock_seen(&self) -> (Guard<'_>, usize) {
        #[cfg(feature = "std")]
        {
            let mut spins = 0;
            loop {
                if let Some(locked) = self.try_lock_seen() {
                    return locked;
                }
                while self.0.load(Ordering::Relaxed) & LOCKED != 0 {
                    crate::sync::backoff(&mut spins);
                }
            }
        }
        #[cfg(not(feature = "std"))]
        {
            let g = self.lock();
            let w = g.load();
            (g, w)
        }
    }

    /// [`lock_seen`](Word::lock_seen) without waiting: `None` if another
    /// thread holds the lock. Without `std` the lock is a critical section,
    /// which this takes (never `None`).
    #[inline]
    pub(crate) fn try_lock_seen(&self) -> Option<(Guard<'_>, usize)> {
        #[cfg(feature = "std")]
        {
            let prev = self.0.fetch_or(LOCKED, Ordering::Acquire);
            if prev & LOCKED == 0 {
                Some((Guard { word: self }, prev | LOCKED))
            } else {
                None
            }
        }
        #[cfg(not(feature = "std"))]
        Some(self.lock_seen())
    }

    /// Sets the sticky `HAS_KIDS` / `HAS_WAITERS` bits (an RMW once per node;
    /// `seen`, the word as seen under the lock, says whether they are set
    /// already). With `std` only. The caller holds the node's lock, so no
    /// lock-free ending can happen until it is released, and these bits
    /// change only under it.
    #[inline]
    pub(crate) fn mark_locked(&self, bits: usize, seen: usize) {
        debug_assert_eq!(bits & !(HAS_KIDS | HAS_WAITERS), 0);
        // Without `std` nothing reads them (no lock-free endings), and an RMW
        // is a nested critical section on cores without CAS: skip it.
        #[cfg(feature = "std")]
        {
            debug_assert_ne!(seen & LOCKED, 0);
            if seen & bits != bits {
                self.0.fetch_or(bits, Ordering::Relaxed);
            }
        }
        #[cfg(not(feature = "std"))]
        let _ = (bits, seen);
    }

    /// Ends a plain leaf without its lock: one compare-and-swap that sets
    /// `bits` (end bits whose cause needs no cell) if the word shows no lock,
    /// no lists ever, and no ending yet. With `release`, the same step drops
    /// one reference, which must not be the last (returns `Busy` instead).
    ///
    /// `Release` on success publishes everything before it (as `unlock_with`
    /// does); `Acquire` pairs with the unlock of whoever touched the node
    /// last, so a registrar that linked under the lock is seen as `Busy`.
    ///
    /// `clear` bits are cleared in the same step (a walker's `LINKED`).
    #[inline]
    pub(crate) fn try_end_leaf(&self, bits: usize, release: bool, clear: usize) -> TryEnd {
        self.try_end_leaf_seen(self.0.load(Ordering::Relaxed), bits, release, clear)
    }

    /// [`try_end_leaf`](Word::try_end_leaf) starting from `seen`, a value
    /// of the word the caller just loaded (saves loading it again).
    #[inline]
    pub(crate) fn try_end_leaf_seen(
        &self,
        seen: usize,
        bits: usize,
        release: bool,
        clear: usize,
    ) -> TryEnd {
        debug_assert_eq!(bits & !(END_BITS & !CAUSE_CUSTOM), 0);
        #[cfg(not(feature = "std"))]
        {
            let _ = (seen, release, clear);
            return TryEnd::Busy;
        }
        #[cfg_attr(not(feature = "std"), allow(unreachable_code))]
        let delta = if release { REF_ONE } else { 0 };
        let mut cur = seen;
        loop {
            if cur & CANCELLED != 0 {
                return TryEnd::AlreadyEnded;
            }
            if cur & (LOCKED | HAS_KIDS | HAS_WAITERS) != 0
                || (release && refs(cur) < 2 && cur & IMMORTAL == 0)
                || (release && has_shards_ref(cur))
            {
                return TryEnd::Busy;
            }
            match self.0.compare_exchange_weak(
                cur,
                ((cur | bits) & !clear) - delta,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return TryEnd::Ended,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Flags a node for a walk without its lock: one compare-and-swap that
    /// sets `bits | WALKING` and takes a reference for the walk, if the word
    /// shows no lock, no ending yet, and a live count (a node at zero is
    /// being freed: `Busy`). The node's lists are drained later, under its
    /// lock; whoever links to them meanwhile sees `CANCELLED` first.
    #[inline]
    pub(crate) fn try_end_inner(&self, bits: usize, clear: usize) -> TryEnd {
        debug_assert_eq!(bits & !(END_BITS & !CAUSE_CUSTOM), 0);
        #[cfg(not(feature = "std"))]
        {
            let _ = clear;
            return TryEnd::Busy;
        }
        #[cfg_attr(not(feature = "std"), allow(unreachable_code))]
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if cur & CANCELLED != 0 {
                return TryEnd::AlreadyEnded;
            }
            if cur & LOCKED != 0
                || refs(cur) == 0
                || refs(cur) >= REF_SATURATE
                || collapse_pending(cur)
            {
                return TryEnd::Busy;
            }
            match self.0.compare_exchange_weak(
                cur,
                ((cur | bits | WALKING) & !clear) + REF_ONE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return TryEnd::Ended,
                Err(actual) => cur = actual,
            }
        }
    }

    /// `true` if the caller's reference is the only one (for a handle about
    /// to drop: nothing else can observe the node then).
    #[inline]
    pub(crate) fn sole_reference(&self) -> bool {
        let w = self.0.load(Ordering::Acquire);
        refs(w) == 1 && w & IMMORTAL == 0
    }
}

/// Proof that a node's lock is held; releases it on drop.
pub(crate) struct Guard<'a> {
    word: &'a Word,
    #[cfg(not(feature = "std"))]
    restore: critical_section::RestoreState,
}

impl Guard<'_> {
    /// The word as seen under the lock.
    #[inline]
    pub(crate) fn load(&self) -> usize {
        self.word.load()
    }

    /// Sets `bits` with `Release` (everything written under the lock so far
    /// is visible to whoever sees them), then releases the lock.
    ///
    /// `bits` must be among `END_BITS | WALKING` and not yet set: those bits
    /// only change under this lock, so with `std` one `fetch_xor` both sets
    /// them and clears `LOCKED`.
    #[inline]
    pub(crate) fn unlock_with(self, bits: usize) {
        debug_assert_eq!(bits & !(END_BITS | WALKING), 0);
        debug_assert_eq!(self.word.0.load(Ordering::Relaxed) & bits, 0);
        #[cfg(feature = "std")]
        self.word.0.fetch_xor(bits | LOCKED, Ordering::Release);
        #[cfg(not(feature = "std"))]
        self.word.0.fetch_or(bits, Ordering::Release);
        self.forget();
    }

    /// Releases the lock and takes a new child's reference in the same step
    /// (with `std` one `fetch_add` of `REF_ONE - LOCKED`: `LOCKED` is set, so
    /// the subtraction clears exactly that bit). The caller holds another
    /// reference, so the count is not zero.
    ///
    /// On 64-bit targets the count is not checked against `REF_SATURATE`
    /// here: every child reference comes with a live child allocation of at
    /// least 56 bytes, and the count field has room for three times
    /// `REF_SATURATE` more references (3 * 2^43 with shards), which would
    /// take over a pebibyte of live children. A clone past the limit
    /// still makes the node immortal. The check is a branch on the result of
    /// the atomic add, and it measured 0.5 ns of a 17 ns child create + drop.
    /// 32-bit targets (2^16 before saturation) keep it.
    #[inline]
    pub(crate) fn unlock_and_acquire_ref(self) {
        let word = self.word;
        #[cfg(feature = "std")]
        {
            self.forget();
            let prev = word
                .0
                .fetch_add(REF_ONE.wrapping_sub(LOCKED), Ordering::Release);
            #[cfg(target_pointer_width = "64")]
            let _ = prev;
            #[cfg(not(target_pointer_width = "64"))]
            word.saturate_if(prev);
        }
        #[cfg(not(feature = "std"))]
        {
            word.acquire_ref();
            drop(self);
        }
    }

    /// Releases the lock and drops one reference in the same step.
    #[inline]
    pub(crate) fn unlock_and_release(self) -> Released {
        let word = self.word;
        #[cfg(feature = "std")]
        {
            let prev = word.0.fetch_sub(LOCKED + REF_ONE, Ordering::Release);
            self.forget();
            Released::from_prev(word, prev)
        }
        #[cfg(not(feature = "std"))]
        {
            self.forget();
            let prev = word.0.fetch_sub(REF_ONE, Ordering::Release);
            Released::from_prev(word, prev)
        }
    }

    /// Ends the guard after its word already cleared `LOCKED`.
    #[inline]
    fn forget(self) {
        #[cfg(not(feature = "std"))]
        // SAFETY: `restore` came from the `acquire` in `Word::lock`, and this
        // is the only release for it (the guard is forgotten below).
        unsafe {
            critical_section::release(self.restore)
        };
        core::mem::forget(self);
    }
}

/// What dropping a reference left the caller to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub(crate) enum Released {
    /// Other references remain.
    Kept,
    /// That was the last one: free the node (the `Acquire` synchronisation
    /// with every other releaser is done).
    Last,
    /// Only the shard array's reference remained, and the caller, whose
    /// decrement got there, owns the collapse (`shards::collapse`). Between
    /// that decrement and the claim that follows it at once (clearing
    /// `SHARDS_REF`: the array's reference becomes the caller's), the word
    /// is frozen: nobody else holds a reference, and walkers that find the
    /// node wait instead of taking one ([`Word::try_acquire_ref`]), so no
    /// second releaser can reach this state and collapse (and free) the
    /// node under the owner.
    #[cfg(cancel_tree_shards)]
    Collapse,
}

impl Released {
    #[inline]
    fn from_prev(word: &Word, prev: usize) -> Released {
        #[cfg(cancel_tree_shards)]
        if refs(prev) == 2 && prev & SHARDS_REF != 0 {
            // The very next step, so that nobody waits on the frozen word
            // while this thread runs anything else (a cause's `Drop` may
            // cancel, and so wait for a walk that waits for this claim).
            word.claim_shards_ref();
            return Released::Collapse;
        }
        if refs(prev) != 1 || prev & IMMORTAL != 0 {
            return Released::Kept;
        }
        // Pairs with the Release of every other releaser, so that all their
        // uses of the node happen before the free. A fence (free on x86,
        // ~1 ns per free measured); ThreadSanitizer does not model fences,
        // so its CI run (`--cfg cancel_tree_tsan`) loads the final value with
        // Acquire instead: the same guarantee through the release sequence.
        #[cfg(not(cancel_tree_tsan))]
        {
            let _ = word;
            fence(Ordering::Acquire);
        }
        #[cfg(cancel_tree_tsan)]
        word.0.load(Ordering::Acquire);
        Released::Last
    }
}

/// What a lock-free ending attempt found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TryEnd {
    /// This call ended the node.
    Ended,
    /// The node had already ended.
    AlreadyEnded,
    /// The lock is held or the node has (had) lists: take the locked path.
    Busy,
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "std")]
        self.word.0.fetch_and(!LOCKED, Ordering::Release);
        #[cfg(not(feature = "std"))]
        // SAFETY: `restore` came from the `acquire` in `Word::lock`, and this
        // is the only release for it.
        unsafe {
            critical_section::release(self.restore)
        }
    }
}
