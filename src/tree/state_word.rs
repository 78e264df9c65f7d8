//! The state word: one atomic `usize` per node, holding everything about the
//! node that changes (and its kind, which does not).
//!
//! ```text
//!  bit  0..=2  KIND           immutable: which node layout this is
//!  bit  3      LOCKED         the node's lock (with `std`; see raw::lock)
//!  bit  4      CANCELLED      set once, never cleared
//!  bit  5      ERR_DEADLINE   err() is DeadlineExceeded (else Canceled)
//!  bit  6      CAUSE_CUSTOM   the node's cause cell holds a custom cause
//!  bit  7      CAUSE_DEADLINE (not custom) cause() is DeadlineExceeded
//!  bit  8      WALKING        a cancel walk is still flagging this subtree
//!  bit  9      LINKED         the node is in its parent scope's child list
//!  bit 10      IMMORTAL       never freed (saturated count, static or local)
//!  bit 11      ATTACHED       a `LocalScope` has joined its parent
//!  bit 12      HAS_KIDS       a child was ever linked (sticky)
//!  bit 13      HAS_WAITERS    a waiter was ever linked (sticky)
//!  bit 14..    refs           strong references (REF_ONE each)
//! ```
//!
//! With `cfg(cancel_tree_shards)` (std, 64-bit) bits 14..=17 hold the shard
//! a child is linked in, bit 18 is `SHARDS_REF`, and refs start at bit 19.
//!
//! # Invariants
//!
//! The rest of the tree cites these as "state word, invariant N".
//!
//! 1. **Kind.** `KIND` (and, with shards, the shard bits) are fixed before
//!    the node is shared and never change.
//! 2. **One ending.** `CANCELLED` and the other end bits are set at most
//!    once, by one `Release` RMW, after the cause cell was written, and are
//!    never cleared. A reader that loads `CANCELLED` with `Acquire` sees the
//!    final cause (no window in which `cause()` lags `err()`).
//! 3. **The lock guards the lists.** The node's child list, waiter list and
//!    cause cell change only under its lock. `CANCELLED` changes either under
//!    the lock or, with `std`, by a lock-free ending that saw `LOCKED` clear
//!    (invariant 4); so while the lock is held, `CANCELLED` does not change.
//! 4. **Empty means empty.** `HAS_KIDS` / `HAS_WAITERS` are set, at the
//!    latest by the RMW that releases the lock under which the first child
//!    / waiter was linked, and never cleared. A word that shows neither, nor
//!    `LOCKED`, belongs to a node whose lists are empty at that instant, or
//!    hold only a `Done` in the waiter list's slot that has not yet set the
//!    bit. Whoever links later either takes the lock and checks `CANCELLED`
//!    first, or is such a slot `Done` (`waiter_list`, rule 4), which sets
//!    `HAS_WAITERS` with an `AcqRel` `fetch_or`
//!    ([`Word::mark_waiters_lock_free`]) after it entered and checks the
//!    `CANCELLED` and `LOCKED` that RMW returns: an ending that did not see
//!    the bit is seen there. That is what lets a
//!    lock-free ending ([`Word::try_end_leaf`], [`Word::try_end_inner`])
//!    skip the lock. Because that `fetch_or` may come at any time,
//!    `HAS_WAITERS` is never set by an unlocking `fetch_xor` or `fetch_add`
//!    (which would clear or carry it): a lock holder sets it with a
//!    `fetch_or` of its own ([`Guard::mark`]).
//! 5. **`LINKED`** changes only under the lock of the list the node is in
//!    (its parent scope's own list, or one of its shards).
//! 6. **References.** Every `Context`, `CancelHandle`, child, after_func
//!    registration and handle, cancel walk in progress and claimed timer
//!    holds one reference. A count that reached zero never rises again
//!    ([`Word::try_acquire_ref`] refuses), and the thread that took it to zero
//!    frees the node. Past `REF_SATURATE` a node becomes `IMMORTAL` (a leak
//!    instead of an overflow).
//! 7. **`WALKING`** is set with `CANCELLED` by the walk that ended the node,
//!    and cleared once that walk has flagged the node's whole subtree.
//! 8. **Shards** (std, 64-bit). `SHARDS_REF` marks the reference the node's
//!    shard array holds. When a release leaves only that one, the releaser
//!    owns the array's collapse ([`Released::Collapse`]) and nobody else may
//!    take a reference until it claims it, at once.
//!
//! Orderings: the end bits pair `Release` (the ending RMW) with `Acquire`
//! (every `load`); references are taken `Relaxed` (the taker already holds
//! one, or holds the lock of a list the node is in) and dropped `Release`,
//! with an `Acquire` fence before a free; everything else meets in the lock.

use crate::Error;
use crate::raw::lock::{self, IN_WORD};
use crate::raw::sync::{Ordering, acquire_after_last_release};

pub(crate) const KIND_MASK: usize = 0b111;
pub(crate) const KIND_CANCEL: usize = 0;
pub(crate) const KIND_DEADLINE: usize = 1;
pub(crate) const KIND_VALUE: usize = 2;
pub(crate) const KIND_WITHOUT: usize = 3;
pub(crate) const KIND_CLOCK_ROOT: usize = 4;
pub(crate) const KIND_MERGE: usize = 5;

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
#[cfg(not(cancel_tree_shards))]
pub(crate) const REF_SHIFT: u32 = 14;
pub(crate) const REF_ONE: usize = 1 << REF_SHIFT;
/// Past this many references a node becomes immortal instead of risking an
/// overflow (2^43 on 64-bit targets with shards, 2^48 on 64-bit without,
/// 2^16 on 32-bit targets); the count field holds four times as many.
const REF_SATURATE: usize = 1 << (usize::BITS - REF_SHIFT - 2);

/// The bits that record how a node ended.
pub(crate) const END_BITS: usize = CANCELLED | ERR_DEADLINE | CAUSE_CUSTOM | CAUSE_DEADLINE;

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

/// `true` if only the shard array's reference is left: its collapse owner
/// is about to claim it, and nobody may take a reference before
/// (invariant 8).
#[inline(always)]
const fn collapse_pending(word: usize) -> bool {
    has_shards_ref(word) && refs(word) == 1
}

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

#[cfg(not(cancel_tree_loom))]
type Atomic = crate::raw::sync::AtomicUsize;
#[cfg(cancel_tree_loom)]
type Atomic = checked::CheckedAtomic;

/// The atomic word of one node.
pub(crate) struct Word(Atomic);

/// Under loom, freed nodes are not returned to the allocator: their word is
/// overwritten with [`POISON`](checked::POISON) and left in place (their
/// contents, a value, a cause or a clock, are dropped), and every operation
/// on a word asserts it did not find that value. That covers every node
/// with a state word: scopes, deadline scopes, value nodes, `without_cancel`
/// headers and clock roots (`after_func` registrations have no state word
/// and are really freed). A model in which some thread touches a node after
/// it was freed then fails instead of passing silently.
#[cfg(cancel_tree_loom)]
mod checked {
    use crate::raw::sync::{AtomicUsize, Ordering};

    /// A kind no node has, and no references.
    pub(crate) const POISON: usize = super::KIND_MASK;

    #[track_caller]
    pub(crate) fn live(w: usize) -> usize {
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
        /// The unchecked atomic, for the lock (whose result is checked).
        pub(crate) fn raw(&self) -> &AtomicUsize {
            &self.0
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
        checked_rmw!(fetch_add, fetch_sub, fetch_or, fetch_and);
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

/// Checks a value read from a word (loom: not a freed node's).
#[inline(always)]
#[track_caller]
fn seen_live(w: usize) -> usize {
    #[cfg(cancel_tree_loom)]
    return checked::live(w);
    #[cfg(not(cancel_tree_loom))]
    w
}

impl Word {
    crate::raw::sync::const_unless_loom! {
        pub(crate) fn new(initial: usize) -> Word {
            Word(Atomic::new(initial))
        }
    }

    /// The atomic itself, for the lock back-end.
    #[inline(always)]
    fn atomic(&self) -> &crate::raw::sync::AtomicUsize {
        #[cfg(cancel_tree_loom)]
        return self.0.raw();
        #[cfg(not(cancel_tree_loom))]
        &self.0
    }

    /// Marks a node as freed (loom only; see `checked`).
    #[cfg(cancel_tree_loom)]
    pub(crate) fn poison(&self) {
        self.0.poison();
    }

    /// The word, with `Acquire`: pairs with the ending RMW (invariant 2).
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
    /// back, so the count never overflows (invariant 6).
    #[inline(always)]
    fn saturate_if(&self, prev: usize) {
        if refs(prev) >= REF_SATURATE {
            self.0.fetch_or(IMMORTAL, Ordering::Relaxed);
            self.0.fetch_sub(REF_ONE, Ordering::Relaxed);
        }
    }

    /// Adds a reference unless the count is already zero (the node is being
    /// freed: invariant 6). Used by walkers and timers that find a node in a
    /// list or queue.
    ///
    /// A node whose only reference is its shard array's is waiting for its
    /// collapse owner's claim, the RMW right after the owner's decrement
    /// (invariant 8); this waits for it (one instruction, unless the owner
    /// was preempted between the two).
    pub(crate) fn try_acquire_ref(&self) -> bool {
        let mut spins = 0;
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if refs(cur) == 0 {
                return false;
            }
            if collapse_pending(cur) {
                crate::raw::sync::backoff(&mut spins);
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

    /// Drops a reference and says what the caller must do next; also
    /// returns the word as it was just before. Its kind and shard bits are
    /// fixed (invariant 1), so a freer need not load the word again right
    /// after the locked decrement.
    #[inline]
    pub(crate) fn release_ref(&self) -> (Released, usize) {
        // Taken before the decrement: after it, the node may be gone (see
        // `Released::from_prev`).
        let word: *const Word = self;
        // Release: pairs with the Acquire before the free (invariant 6).
        let prev = self.0.fetch_sub(REF_ONE, Ordering::Release);
        (Released::from_prev(word, prev), prev)
    }

    /// The collapse owner's claim, right after its decrement (invariant 8):
    /// clears `SHARDS_REF`, which turns the array's reference into the
    /// owner's and lets walkers take references again.
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

    /// Sets bits on a node no other thread can see yet (no RMW needed). On
    /// a shared node this plain store could erase a slot `Done`'s lock-free
    /// `HAS_WAITERS` (invariant 4): a lost wake-up.
    #[inline]
    pub(crate) fn set_unshared(&self, bits: usize) {
        let cur = self.0.load(Ordering::Relaxed);
        debug_assert_eq!(cur & HAS_WAITERS, 0, "set_unshared on a node with waiters");
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
        let mut spins = 0;
        while refs(self.0.load(Ordering::Acquire)) != 0 {
            crate::raw::sync::backoff(&mut spins);
        }
    }

    /// Sets `HAS_WAITERS` for a `Done` that just entered the waiter list's
    /// slot without the lock, and returns the word as it was (invariant 4;
    /// `waiter_list`, rule 4). `AcqRel`: the `Release` half pairs with the
    /// `Acquire` of every later RMW of the word (a lock, a lock-free ending;
    /// all RMWs, so the release sequence reaches them), which then sees the
    /// slot item. The `Acquire` half (pairing with the `Release` of an
    /// ending RMW whose `CANCELLED` this may return) is not load-bearing:
    /// on either bit the caller takes the lock, whose own `Acquire` orders
    /// what it reads next; it is kept so the returned word may be trusted
    /// on its own.
    #[inline(always)]
    pub(crate) fn mark_waiters_lock_free(&self) -> usize {
        self.0.fetch_or(HAS_WAITERS, Ordering::AcqRel)
    }

    /// Clears bits (with `AcqRel`).
    #[inline]
    pub(crate) fn clear(&self, bits: usize) -> usize {
        self.0.fetch_and(!bits, Ordering::AcqRel)
    }

    /// Takes the node's lock (invariant 3).
    #[inline]
    pub(crate) fn lock(&self) -> Guard<'_> {
        let (raw, seen) = lock::Guard::lock(self.atomic());
        Guard {
            word: self,
            raw: Some(raw),
            seen: seen_live(seen),
            marks: 0,
        }
    }

    /// [`lock`](Word::lock) without waiting: `None` if another thread
    /// holds the lock (never `None` for a critical section).
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<Guard<'_>> {
        let (raw, seen) = lock::Guard::try_lock(self.atomic())?;
        Some(Guard {
            word: self,
            raw: Some(raw),
            seen: seen_live(seen),
            marks: 0,
        })
    }

    /// Ends a plain leaf without its lock: one compare-and-swap from `seen`
    /// (a value of the word the caller just loaded) that sets `bits` (end
    /// bits whose cause needs no cell) if the word shows no lock, no lists
    /// ever (invariant 4), and no ending yet. With `release`, the same step
    /// drops one reference, which must not be the last (`Busy` instead).
    /// `clear` bits are cleared in the same step (a walker's `LINKED`).
    ///
    /// `Release` on success publishes everything before it (as
    /// [`Guard::unlock_with`] does); `Acquire` pairs with the unlock of
    /// whoever touched the node last, so a registrar that linked under the
    /// lock is seen as `Busy`. Without a lock bit (no `std`) nothing can be
    /// ended beside a lock holder: always `Busy`.
    #[inline]
    pub(crate) fn try_end_leaf(
        &self,
        seen: usize,
        bits: usize,
        release: bool,
        clear: usize,
    ) -> TryEnd {
        debug_assert_eq!(bits & !(END_BITS & !CAUSE_CUSTOM), 0);
        if !IN_WORD {
            return TryEnd::Busy;
        }
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
    /// lock; whoever links to them meanwhile sees `CANCELLED` first
    /// (invariant 4). Orderings as for [`try_end_leaf`](Word::try_end_leaf).
    #[inline]
    pub(crate) fn try_end_inner(&self, bits: usize, clear: usize) -> TryEnd {
        debug_assert_eq!(bits & !(END_BITS & !CAUSE_CUSTOM), 0);
        if !IN_WORD {
            return TryEnd::Busy;
        }
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

/// Proof that a node's lock is held; unlocks on drop.
pub(crate) struct Guard<'a> {
    word: &'a Word,
    /// `None` once an unlocking method has released it.
    raw: Option<lock::Guard<'a, LOCKED>>,
    seen: usize,
    /// Sticky bits ([`mark`](Guard::mark)) the unlock sets.
    marks: usize,
}

impl Guard<'_> {
    /// The word as seen when the lock was taken. Its end bits are still
    /// true while the lock is held (invariant 3); its count may not be.
    #[inline(always)]
    pub(crate) fn seen(&self) -> usize {
        self.seen
    }

    /// The sticky `HAS_KIDS` / `HAS_WAITERS` bits for a first child / waiter
    /// linked under this lock (invariant 4): set by the RMW that unlocks, at
    /// the instant the lock is released, so anyone who sees `LOCKED` clear
    /// sees them, and no RMW of its own is spent. (Nothing that reads them
    /// can act while the lock is held.) Only a lock bit needs them; without
    /// one nothing reads them, and they are not set.
    ///
    /// `HAS_WAITERS` is the exception: a `Done` entering the waiter list's
    /// slot may set it lock-free at any moment (invariant 4), which the
    /// unlock's `fetch_xor` would undo. It is set at once, by a `fetch_or`
    /// of its own (once per node: the first waiter linked under a lock).
    #[inline]
    pub(crate) fn mark(&mut self, bits: usize) {
        debug_assert_eq!(bits & !(HAS_KIDS | HAS_WAITERS), 0);
        if IN_WORD {
            let new = bits & !self.seen;
            if new & HAS_WAITERS != 0 {
                // Relaxed: published by our unlock's Release, which follows
                // it in the word's modification order; nothing acts on it
                // while the lock is held.
                self.word.0.fetch_or(HAS_WAITERS, Ordering::Relaxed);
                self.seen |= HAS_WAITERS;
            }
            self.marks |= new & HAS_KIDS;
        }
    }

    /// The raw guard, for an unlocking method (once).
    #[inline(always)]
    fn take(&mut self) -> lock::Guard<'_, LOCKED> {
        match self.raw.take() {
            Some(raw) => raw,
            None => unreachable!("a guard unlocks once"),
        }
    }

    /// Sets `bits` with `Release` (everything written under the lock so far
    /// is visible to whoever sees them: invariant 2), then releases the
    /// lock. `bits` must be among `END_BITS | WALKING` and not yet set;
    /// they only change under this lock, so one `fetch_xor` both sets them
    /// and clears `LOCKED`.
    #[inline]
    pub(crate) fn unlock_with(self, bits: usize) {
        debug_assert_eq!(bits & !(END_BITS | WALKING), 0);
        debug_assert_eq!(self.seen & bits, 0);
        let mut this = self;
        let marks = this.marks;
        this.take()
            .unlock_with(|w, lock| seen_live(w.fetch_xor(bits | lock | marks, Ordering::Release)));
    }

    /// Releases the lock and takes a new child's reference in the same
    /// step: one `fetch_add` of `REF_ONE - LOCKED` (`LOCKED` is set, so the
    /// subtraction clears exactly that bit). The caller holds another
    /// reference, so the count is not zero.
    ///
    /// On 64-bit targets the count is not checked against `REF_SATURATE`
    /// here: every child reference comes with a live child allocation of at
    /// least 56 bytes, and the count field has room for three times
    /// `REF_SATURATE` more references (3 * 2^43 with shards), which would
    /// take over a pebibyte of live children; a clone past the limit still
    /// makes the node immortal. The check would be a branch on the atomic's
    /// result on the hottest path (see docs/benchmarks.md). 32-bit targets
    /// (2^16 before saturation) keep it.
    #[inline]
    pub(crate) fn unlock_and_acquire_ref(self) {
        let mut this = self;
        let word = this.word;
        let marks = this.marks;
        // The marks are clear, so adding them sets them.
        let prev = this.take().unlock_with(|w, lock| {
            seen_live(w.fetch_add((REF_ONE + marks).wrapping_sub(lock), Ordering::Release))
        });
        #[cfg(target_pointer_width = "64")]
        let _ = (word, prev);
        #[cfg(not(target_pointer_width = "64"))]
        word.saturate_if(prev);
    }

    /// Releases the lock and drops one reference in the same step.
    #[inline]
    pub(crate) fn unlock_and_release(self) -> Released {
        let mut this = self;
        // Taken before the decrement (see `Released::from_prev`).
        let word: *const Word = this.word;
        debug_assert_eq!(this.marks, 0, "nothing is linked on the way to a release");
        let prev = this
            .take()
            .unlock_with(|w, lock| seen_live(w.fetch_sub(lock + REF_ONE, Ordering::Release)));
        Released::from_prev(word, prev)
    }
}

impl Drop for Guard<'_> {
    /// Unlocks, setting the marked bits in the same RMW.
    #[inline]
    fn drop(&mut self) {
        let Some(raw) = self.raw.take() else { return };
        let marks = self.marks;
        if marks != 0 {
            // The marks are clear (`mark`), so xor sets them.
            raw.unlock_with(|w, lock| seen_live(w.fetch_xor(lock | marks, Ordering::Release)));
        }
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
    ///
    /// `word` is the node's word as a raw pointer, taken before the
    /// decrement, and dereferenced only where the caller still owns the
    /// node: after a decrement that leaves others, the node may be freed at
    /// once (by the last holder, or, for a `LocalScope`, by its owner, which
    /// waits for the count to reach zero), so not even a reference to it may
    /// be made then.
    fn from_prev(word: *const Word, prev: usize) -> Released {
        #[cfg(cancel_tree_shards)]
        if refs(prev) == 2 && prev & SHARDS_REF != 0 {
            // The very next step, so that nobody waits on the frozen word
            // while this thread runs anything else (a cause's `Drop` may
            // cancel, and so wait for a walk that waits for this claim).
            // SAFETY: the array's reference remains and nobody else may drop
            // it before this claim (invariant 8): the node is alive.
            unsafe { (*word).claim_shards_ref() };
            return Released::Collapse;
        }
        if refs(prev) != 1 || prev & IMMORTAL != 0 {
            return Released::Kept;
        }
        // Pairs with the Release of every other releaser, so that all their
        // uses of the node happen before the free.
        // SAFETY: that was the last reference of a node that is not
        // immortal: only this thread may free it, and it has not yet.
        acquire_after_last_release(unsafe { (*word).atomic() });
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

#[cfg(all(test, not(cancel_tree_loom)))]
mod tests {
    use super::*;

    const LIVE_LEAF: usize = KIND_CANCEL | (2 * REF_ONE);

    #[test]
    fn err_and_end_bits_agree() {
        assert_eq!(err_of(0), None);
        let c = end_bits(Error::Canceled, Some(Error::Canceled));
        assert_eq!(err_of(c), Some(Error::Canceled));
        assert_eq!(c & CAUSE_CUSTOM, 0);
        let d = end_bits(Error::DeadlineExceeded, Some(Error::DeadlineExceeded));
        assert_eq!(err_of(d), Some(Error::DeadlineExceeded));
        assert_ne!(d & CAUSE_DEADLINE, 0);
        let custom = end_bits(Error::Canceled, None);
        assert_ne!(custom & CAUSE_CUSTOM, 0);
        assert_eq!(
            end_bits(Error::Canceled, Some(Error::DeadlineExceeded)) & ERR_DEADLINE,
            0
        );
    }

    #[test]
    fn lock_then_unlock_with_sets_the_end_once() {
        let w = Word::new(LIVE_LEAF);
        let g = w.lock();
        assert_eq!(g.seen() & CANCELLED, 0);
        if IN_WORD {
            assert!(w.try_lock().is_none(), "held");
            assert_eq!(w.load() & LOCKED, LOCKED);
        }
        g.unlock_with(CANCELLED | WALKING);
        assert_eq!(
            w.load() & (LOCKED | CANCELLED | WALKING),
            CANCELLED | WALKING
        );
        w.clear(WALKING);
        assert_eq!(w.load(), LIVE_LEAF | CANCELLED);
        // Without a lock bit nothing ends lock-free: always the locked path.
        let want = if IN_WORD {
            TryEnd::AlreadyEnded
        } else {
            TryEnd::Busy
        };
        assert_eq!(w.try_end_leaf(w.load(), CANCELLED, false, 0), want);
    }

    #[test]
    fn child_reference_taken_with_the_unlock() {
        let w = Word::new(LIVE_LEAF);
        w.lock().unlock_and_acquire_ref();
        assert_eq!(w.load(), KIND_CANCEL | (3 * REF_ONE));
        assert_eq!(w.lock().unlock_and_release(), Released::Kept);
        assert_eq!(w.load(), LIVE_LEAF);
    }

    #[test]
    fn the_last_release_says_free_and_a_dead_count_stays_dead() {
        let w = Word::new(LIVE_LEAF);
        assert_eq!(w.release_ref().0, Released::Kept);
        assert!(w.sole_reference());
        let (r, prev) = w.release_ref();
        assert_eq!(r, Released::Last);
        assert_eq!(refs(prev), 1);
        assert!(!w.try_acquire_ref(), "a count at zero never rises");
    }

    #[test]
    fn lock_free_leaf_ending() {
        if !IN_WORD {
            let w = Word::new(LIVE_LEAF);
            assert_eq!(w.try_end_leaf(w.load(), CANCELLED, false, 0), TryEnd::Busy);
            return;
        }
        // A plain leaf: one CAS, dropping a reference at the same time.
        let w = Word::new(LIVE_LEAF);
        assert_eq!(w.try_end_leaf(w.load(), CANCELLED, true, 0), TryEnd::Ended);
        assert_eq!(w.load(), KIND_CANCEL | REF_ONE | CANCELLED);
        // The last reference is never dropped this way.
        let w = Word::new(KIND_CANCEL | REF_ONE);
        assert_eq!(w.try_end_leaf(w.load(), CANCELLED, true, 0), TryEnd::Busy);
        // A node that ever had a child or a waiter, or is locked, is busy.
        for bits in [HAS_KIDS, HAS_WAITERS] {
            let w = Word::new(LIVE_LEAF | bits);
            assert_eq!(w.try_end_leaf(w.load(), CANCELLED, false, 0), TryEnd::Busy);
        }
        let w = Word::new(LIVE_LEAF);
        let g = w.lock();
        assert_eq!(w.try_end_leaf(w.load(), CANCELLED, false, 0), TryEnd::Busy);
        drop(g);
        // A walker clears LINKED in the same step.
        let w = Word::new(LIVE_LEAF | LINKED);
        assert_eq!(
            w.try_end_leaf(w.load(), CANCELLED, false, LINKED),
            TryEnd::Ended
        );
        assert_eq!(w.load() & (LINKED | CANCELLED), CANCELLED);
    }

    #[test]
    fn lock_free_inner_ending_takes_the_walks_reference() {
        let w = Word::new(LIVE_LEAF | HAS_KIDS | LINKED);
        if !IN_WORD {
            assert_eq!(w.try_end_inner(CANCELLED, LINKED), TryEnd::Busy);
            return;
        }
        assert_eq!(w.try_end_inner(CANCELLED, LINKED), TryEnd::Ended);
        let now = w.load();
        assert_eq!(now & (CANCELLED | WALKING | LINKED), CANCELLED | WALKING);
        assert_eq!(refs(now), 3);
        assert_eq!(w.try_end_inner(CANCELLED, 0), TryEnd::AlreadyEnded);
        // A node being freed is left to its free path.
        let dying = Word::new(KIND_CANCEL);
        assert_eq!(dying.try_end_inner(CANCELLED, 0), TryEnd::Busy);
    }

    #[test]
    fn mark_sets_sticky_bits_once() {
        let w = Word::new(LIVE_LEAF);
        let mut g = w.lock();
        g.mark(HAS_KIDS);
        g.mark(HAS_KIDS);
        drop(g);
        let expect = if IN_WORD { HAS_KIDS } else { 0 };
        assert_eq!(w.load() & HAS_KIDS, expect);
    }

    #[test]
    fn has_waiters_survives_a_lock_free_mark_during_a_hold() {
        // A slot registrant's `fetch_or` may land while a lock holder links
        // the first listed waiter (invariant 4): the unlock must not undo it.
        let w = Word::new(LIVE_LEAF);
        let mut g = w.lock();
        g.mark(HAS_WAITERS);
        let prev = w.mark_waiters_lock_free();
        drop(g);
        let expect = if IN_WORD { HAS_WAITERS } else { 0 };
        assert_eq!(prev & HAS_WAITERS, expect, "the hold set it at once");
        assert_eq!(w.load() & (HAS_WAITERS | LOCKED), HAS_WAITERS);
        // And the other order: the lock-free mark first, seen stale.
        let w = Word::new(LIVE_LEAF);
        let mut g = w.lock();
        w.mark_waiters_lock_free();
        g.mark(HAS_WAITERS);
        drop(g);
        assert_eq!(w.load() & (HAS_WAITERS | LOCKED), HAS_WAITERS);
    }

    #[test]
    fn references_saturate_into_immortal() {
        let w = Word::new(KIND_CANCEL | (REF_SATURATE * REF_ONE));
        w.acquire_ref();
        let now = w.load();
        assert_ne!(now & IMMORTAL, 0);
        assert_eq!(refs(now), REF_SATURATE, "the reference was taken back");
        let w = Word::new(KIND_CANCEL | REF_ONE | IMMORTAL);
        assert_eq!(w.release_ref().0, Released::Kept, "immortal: never freed");
    }
}
