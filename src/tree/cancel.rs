//! The cancel walk: flag a whole subtree, then notify its waiters.
//!
//! `cancel(s)` runs in two phases, both iterative and allocation-free:
//!
//! 1. **Flag.** Under `s`'s lock: if already cancelled, lose (see below).
//!    Otherwise write the cause, set `CANCELLED | WALKING`. Then pop the
//!    children of every flagged scope one at a time; each child is flagged
//!    while both its parent's and its own lock are held (lock order is always
//!    parent before child), a reference is taken on it, and it is pushed on a
//!    work list threaded through its now unused sibling links. No user code
//!    runs in this phase. When it ends every descendant reports cancelled.
//!    Then `s` leaves its own parent's list and `WALKING` is cleared on every
//!    flagged node.
//! 2. **Notify.** For `s` and every flagged descendant, pop waiters one at a
//!    time under the lock, and wake them / run `after_func` closures with no
//!    lock held. Then drop the walk's references.
//!
//! A cancel that finds its scope already cancelled (a concurrent cancel, a
//! parent's walk meeting a child that cancelled itself) waits, when the lock
//! is a bit in the word (`std`), until `WALKING` clears (state word,
//! invariant 7): phase 1 runs no user code and never blocks (but for the one
//! RMW a shard-array collapse owner does right after its decrement: state
//! word, invariant 8), so the wait is short and cannot deadlock, and it keeps
//! the promise that when any `cancel()` returns every descendant reports
//! cancelled. With a critical section there is no waiting (an interrupt
//! handler must not wait for the code it interrupted): a losing `cancel()`
//! returns at once, and the winning walk finishes when the interrupted code
//! resumes.

use core::ptr;

use crate::raw::lock::IN_WORD;
use crate::raw::panic::Panics;
use crate::tree::children::{self, ChildList};
use crate::tree::node::{NodePtr, Scope, scope_of};
use crate::tree::release;
use crate::tree::state_word::{self, CANCELLED, HAS_WAITERS, LINKED, TryEnd, WALKING};
use crate::tree::waiter_list::{self, Waiter};
use crate::{Cause, Error};

/// Merged scopes a walk claimed, cancelled after it (`tree::merge`);
/// nothing without `alloc`.
#[cfg(feature = "alloc")]
use crate::tree::merge::Forward;
#[cfg(not(feature = "alloc"))]
struct Forward;
#[cfg(not(feature = "alloc"))]
impl Forward {
    const fn new() -> Forward {
        Forward
    }
    fn is_empty(&self) -> bool {
        true
    }
    fn pop(&mut self) -> Option<(*const Scope, Error, Cause)> {
        None
    }
}

/// Cancels the scope `s` with `err` and `cause`. Returns `true` if this call
/// ended the scope, `false` if it had already ended.
///
/// Merged scopes reached through a parent other than their first (see
/// `tree::merge`) are queued by the walk and cancelled here, one after the
/// other, before this returns: a chain of them never nests.
///
/// # Safety
/// The caller holds a reference on `s` for the whole call.
#[inline]
pub(crate) unsafe fn cancel(s: *const Scope, err: Error, cause: &Cause) -> bool {
    // SAFETY: (caller).
    if let Some(ended) = unsafe { end_leaf(s, err, cause) } {
        return ended;
    }
    // SAFETY: (caller).
    unsafe { cancel_locked(s, err, cause) }
}

/// Fastest path: a scope that never had children or waiters, ended by a
/// cause that needs no cell, is the whole subtree: one compare-and-swap.
/// `None`: take the lock.
///
/// # Safety
/// As for [`cancel`].
#[inline(always)]
unsafe fn end_leaf(s: *const Scope, err: Error, cause: &Cause) -> Option<bool> {
    cause.as_error()?;
    // SAFETY: (caller) our reference keeps `s` alive.
    let scope = unsafe { &*s };
    let seen = scope.hdr.word.load();
    match scope
        .hdr
        .word
        .try_end_leaf(seen, state_word::end_bits(err, cause.as_error()), false, 0)
    {
        TryEnd::Ended => {
            scope.record_location(cause);
            // SAFETY: the caller's reference keeps the node alive.
            unsafe { crate::tree::deadline::dequeue_if_deadline(s) };
            Some(true)
        }
        TryEnd::AlreadyEnded => {
            wait_walk(scope);
            Some(false)
        }
        TryEnd::Busy => None,
    }
}

/// [`cancel`] past its lock-free attempt: the walk, then the merged scopes
/// it queued.
///
/// # Safety
/// As for [`cancel`].
#[inline(never)]
unsafe fn cancel_locked(s: *const Scope, err: Error, cause: &Cause) -> bool {
    let mut queue = Queue(Forward::new());
    // SAFETY: (caller).
    let ended = unsafe { walk(s, err, cause, &mut queue.0) };
    if !queue.0.is_empty() {
        let mut panics = Panics::default();
        queue.drain(&mut panics);
        panics.resume();
    }
    ended
}

/// The merged scopes a walk queued; drained by [`cancel`], or by `Drop` if
/// a callback's panic unwinds out of the walk first (that panic goes on;
/// later ones are dropped), so every claimed scope is cancelled and released.
struct Queue(Forward);

impl Queue {
    /// Cancels every queued merged scope (and what their walks queue in
    /// turn), keeping callbacks' panics in `panics`.
    fn drain(&mut self, panics: &mut Panics) {
        /// The claim's reference on a popped scope, given back when dropped:
        /// also if a callback's panic unwinds out of its cancel (without
        /// `std` panics are not caught).
        struct Claim(*const Scope);
        impl Drop for Claim {
            fn drop(&mut self) {
                // SAFETY: the claim's reference, given up once (its release
                // may run user `Drop`).
                unsafe { release::release(self.0.cast()) }
            }
        }
        while let Some((m, err, cause)) = self.0.pop() {
            let claim = Claim(m);
            let forward = &mut self.0;
            // SAFETY: the claim's reference keeps `m` alive until released
            // below.
            panics.call(|| unsafe {
                if end_leaf(m, err, &cause).is_none() {
                    walk(m, err, &cause, forward);
                }
            });
            panics.call(move || drop(claim));
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            self.drain(&mut Panics::default());
        }
    }
}

/// The locked part of one cancel: end `s` under its lock and walk its
/// subtree, queueing on `forward` the merged scopes the walk claims
/// ([`cancel`] drains them).
///
/// # Safety
/// As for [`cancel`].
unsafe fn walk(s: *const Scope, err: Error, cause: &Cause, forward: &mut Forward) -> bool {
    // SAFETY: the caller's reference keeps `s` alive.
    let scope = unsafe { &*s };
    let bits = state_word::end_bits(err, cause.as_error());
    let guard = scope.hdr.word.lock();
    if guard.seen() & CANCELLED != 0 {
        drop(guard);
        wait_walk(scope);
        return false;
    }
    scope.write_cause(cause);
    // Fast path: a scope with no children and no waiters is the whole
    // subtree; ending it is the flag (no walk, no WALKING, no references),
    // plus leaving the clock's queue for a deadline scope. It stays in its
    // parent's list until freed (a parent walk that pops it sees it ended
    // and moves on).
    // SAFETY: both heads are guarded by the lock we hold.
    if unsafe { is_leaf(scope) } {
        guard.unlock_with(bits);
        // SAFETY: the caller's reference keeps the node alive.
        unsafe { crate::tree::deadline::dequeue_if_deadline(s) };
        return true;
    }
    guard.unlock_with(bits | WALKING);
    // The walk's own reference, released at the end of phase 2.
    scope.hdr.word.acquire_ref();

    // Phase 1: flag the subtree.
    let mut work: *const Scope = ptr::null();
    let mut chain: *const Scope = ptr::null();
    // Nodes whose reference must be dropped after phase 1 (dropping may run
    // user code: a value's or a cause's `Drop`).
    let mut deferred: *const Scope = ptr::null();
    // SAFETY: `scope` is alive and flagged; the lists hold live nodes.
    unsafe {
        flag_children(scope, bits, cause, &mut work, &mut chain, &mut deferred);
        while !work.is_null() {
            let x = work;
            work = (*x).siblings.next();
            flag_children(&*x, bits, cause, &mut work, &mut chain, &mut deferred);
        }
        // The subtree is flagged: leave the parent's list (a parent walk that
        // already popped us waited on WALKING, or finds us gone).
        leave_parent(s);
    }
    scope.hdr.word.clear(WALKING);
    let mut x = chain;
    while !x.is_null() {
        // SAFETY: the walk holds a reference on every node in the chain.
        unsafe {
            (*x).hdr.word.clear(WALKING);
            x = (*x).siblings.prev();
        }
    }

    // Phase 2: notify.
    let mut notifier = Notifier {
        forward,
        current: s,
        chain,
        deferred,
        panics: Panics::default(),
    };
    notifier.run();
    let panics = core::mem::take(&mut notifier.panics);
    drop(notifier);
    panics.resume();
    true
}

/// How many children a walk flags per hold of their parent's list lock.
/// With a lock bit, 64: fewer lock round trips, and other threads wait at
/// most 64 flags. With a critical section (interrupts masked on a single
/// core) every child gets its own short section, as interrupt latency
/// matters more there than walk throughput (`docs/embedded.md`).
const BATCH: usize = if IN_WORD { 64 } else { 1 };

/// Pops and flags every child of the flagged scope `x`: its own list, then
/// its shards (read under its lock, see `shards::install`).
///
/// # Safety
/// `x` is alive, flagged, and the caller holds a reference on it.
unsafe fn flag_children(
    x: &Scope,
    bits: usize,
    cause: &Cause,
    work: &mut *const Scope,
    chain: &mut *const Scope,
    deferred: &mut *const Scope,
) {
    // SAFETY: (caller).
    #[cfg_attr(not(cancel_tree_shards), allow(clippy::let_unit_value))]
    let _shards = unsafe { flag_list(ChildList::Own(x), bits, cause, work, chain, deferred) };
    #[cfg(cancel_tree_shards)]
    {
        let shards = _shards;
        if !shards.is_null() {
            // SAFETY: the array lives as long as `x`.
            for sh in unsafe { &(*shards).shard } {
                // SAFETY: (caller).
                let _ =
                    unsafe { flag_list(ChildList::Shard(sh), bits, cause, work, chain, deferred) };
            }
        }
    }
}

/// The shard array pointer of a scope (nothing without shards).
#[cfg(cancel_tree_shards)]
type ShardsPtr = *const crate::tree::shards::Shards;
#[cfg(not(cancel_tree_shards))]
type ShardsPtr = ();

/// Pops and flags every child in one list of a flagged scope. For the
/// scope's own list, returns its shard array pointer as read under the lock
/// hold that found the list empty (see `shards::install`; null for a shard).
///
/// Children whose ending needs no lock (see [`state_word::Word::try_end_leaf`])
/// are flagged in batches under one hold of the list's lock, each with a
/// single compare-and-swap that also clears its `LINKED`; the rest take both
/// locks.
///
/// # Safety
/// The list's scope is alive, flagged, and the caller holds a reference on
/// it.
unsafe fn flag_list(
    list: ChildList<'_>,
    bits: usize,
    cause: &Cause,
    work: &mut *const Scope,
    chain: &mut *const Scope,
    deferred: &mut *const Scope,
) -> ShardsPtr {
    let lock_free = cause.as_error().is_some();
    let head = list.head();
    'hold: loop {
        let gx = list.lock();
        let mut batch = 0;
        let (d, gx) = loop {
            // SAFETY: we hold the list's lock.
            let d = unsafe { head.pop_front() };
            if d.is_null() {
                #[cfg(cancel_tree_shards)]
                return match list {
                    ChildList::Own(x) => crate::tree::shards::of(x),
                    ChildList::Shard(_) => core::ptr::null(),
                };
                #[cfg(not(cancel_tree_shards))]
                return;
            }
            if !lock_free {
                break (d, gx);
            }
            // SAFETY: `d` was listed under the lock, which we still hold; a
            // dying `d` cannot be freed before it takes that lock
            // (`release::detach`).
            let child = unsafe { &*d };
            let word = &child.hdr.word;
            let seen = word.load();
            let mut ended = state_word::kind(seen) == state_word::KIND_CANCEL
                && word.try_end_leaf(seen, bits, false, LINKED) == TryEnd::Ended;
            if ended {
                // Under the list's lock, which the child's free path takes.
                child.record_location(cause);
            } else if word.try_end_inner(bits, LINKED) == TryEnd::Ended {
                child.record_location(cause);
                // Flagged with WALKING and a reference for the walk: its own
                // lists are drained later. `d` is off every list, so its
                // sibling links are ours now.
                // SAFETY: see above.
                unsafe { push_work(d, work, chain) };
                ended = true;
            }
            if !ended {
                break (d, gx);
            }
            batch += 1;
            if batch == BATCH {
                drop(gx);
                continue 'hold;
            }
        };
        // The locked path: a custom cause to write, a node being freed or
        // already ended, or a lock held by someone else.
        // SAFETY: as above.
        let child = unsafe { &*d };
        child.hdr.word.clear(LINKED);
        let gd = child.hdr.word.lock();
        let w = gd.seen();
        if w & CANCELLED != 0 {
            // `d` ended on its own; its own walk may still be flagging below.
            let alive = child.hdr.word.try_acquire_ref();
            drop(gd);
            drop(gx);
            if alive {
                wait_walk(child);
                // Releasing may free `d` and run user `Drop` code, which must
                // not happen while our subtree is still WALKING (it could
                // cancel a node of it and wait on us): defer to phase 2.
                // `d` is off every list and we hold a reference, so its
                // `next` link is ours.
                // SAFETY: see above.
                unsafe { child.siblings.set_next(*deferred) };
                *deferred = d;
            }
            continue;
        }
        // SAFETY: d's lock is held.
        if state_word::kind(w) == state_word::KIND_CANCEL && unsafe { is_leaf(child) } {
            // A plain leaf: flagging it is all there is to do, under both
            // locks; no reference, no second visit. Its free path takes the
            // list's lock, so it outlives this.
            child.write_cause(cause);
            gd.unlock_with(bits);
            drop(gx);
            continue;
        }
        if !child.hdr.word.try_acquire_ref() {
            // Dying: no references means no children, waiters or handles.
            drop(gd);
            drop(gx);
            continue;
        }
        child.write_cause(cause);
        gd.unlock_with(bits | WALKING);
        drop(gx);
        // SAFETY: `d` is off every list and we hold a reference.
        unsafe { push_work(d, work, chain) };
    }
}

/// Puts a flagged node (off every list, a walk reference held) on the
/// walk's work list and chain, threaded through its sibling links.
///
/// # Safety
/// As stated: the sibling links of `d` belong to the walk.
unsafe fn push_work(d: *const Scope, work: &mut *const Scope, chain: &mut *const Scope) {
    // SAFETY: (caller) the links are ours (list invariant 3).
    unsafe {
        (*d).siblings.set_next(*work);
        (*d).siblings.set_prev(*chain);
    }
    *work = d;
    *chain = d;
}

/// `true` if `scope` has no children and no waiters.
///
/// # Safety
/// The caller holds `scope`'s lock.
unsafe fn is_leaf(scope: &Scope) -> bool {
    #[cfg(cancel_tree_shards)]
    if !crate::tree::shards::of(scope).is_null() {
        return false;
    }
    // SAFETY: both heads are guarded by the lock (caller).
    unsafe { scope.children.is_empty() && scope.waiters.is_empty() }
}

/// Unlinks the cancelled scope `s` from its parent scope's child list.
///
/// # Safety
/// The caller holds a reference on `s`.
unsafe fn leave_parent(s: *const Scope) {
    // SAFETY: `s` is alive; its parent is alive because `s` holds it.
    let parent = unsafe { scope_of((*s).hdr.parent) };
    if parent.is_null() {
        return;
    }
    // SAFETY: as above; `s` was linked under `parent`.
    let list = unsafe { ChildList::of(&*parent, (*s).hdr.word.load()) };
    let guard = list.lock();
    // SAFETY: the list's lock is held; `s` is alive. Others may hold
    // references on `s`: clear `LINKED` too.
    unsafe { children::unlink_if_linked(list, s, true) };
    drop(guard);
}

/// Waits until no walk is flagging below `scope` (with a lock bit only:
/// see the module docs).
fn wait_walk(scope: &Scope) {
    if !IN_WORD {
        return;
    }
    let mut spins = 0;
    while scope.hdr.word.load() & WALKING != 0 {
        crate::raw::sync::backoff(&mut spins);
    }
}

/// Phase 2. Its `Drop` finishes the work, so a panic that escapes a callback
/// (only possible without `std`, where panics are not caught) still notifies
/// the rest and releases every reference.
struct Notifier<'f> {
    /// Where claimed merged scopes go (see [`cancel`]).
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    forward: &'f mut Forward,
    current: *const Scope,
    chain: *const Scope,
    /// References deferred from phase 1 (see `flag_children`).
    deferred: *const Scope,
    panics: Panics,
}

impl Notifier<'_> {
    fn run(&mut self) {
        while !self.deferred.is_null() {
            let d = self.deferred;
            // SAFETY: we hold a reference on every deferred node.
            self.deferred = unsafe { (*d).siblings.next() };
            // SAFETY: the deferred reference.
            unsafe { release::release(d.cast()) };
        }
        while !self.current.is_null() {
            // SAFETY: the walk holds a reference on `current`.
            let x = unsafe { &*self.current };
            // A node that never had a waiter has none to notify (and, being
            // cancelled, can get none now): skip its lock. (The bit is kept
            // with a lock bit only: state word, invariant 4.)
            while !IN_WORD || x.hdr.word.load() & HAS_WAITERS != 0 {
                let guard = x.hdr.word.lock();
                // SAFETY: lock held.
                let link = unsafe { x.pop_waiter() };
                if link.is_null() {
                    break;
                }
                // SAFETY: `link` was listed under the lock we hold, so it is
                // alive; its kind is immutable.
                match unsafe { (*link).kind } {
                    waiter_list::KIND_WAITER => {
                        // SAFETY: lock held, waiter link.
                        let waker = unsafe { Waiter::take_waker(link) };
                        drop(guard);
                        if let Some(w) = waker {
                            self.panics.call(move || w.wake());
                        }
                    }
                    #[cfg(feature = "alloc")]
                    waiter_list::KIND_MERGE => {
                        // Claimed under the lock (or found dying).
                        // SAFETY: lock held; a merge link we popped.
                        let merged = unsafe { crate::tree::merge::claim(link) };
                        drop(guard);
                        if let Some(l) = merged {
                            // Cancelled with `x`'s ending when drained.
                            // SAFETY: claimed: queued with its reference.
                            unsafe { self.forward.push(l) };
                        }
                    }
                    #[cfg(feature = "alloc")]
                    _ => {
                        drop(guard);
                        // SAFETY: an after_func link we popped (claimed).
                        unsafe { crate::tree::after_func::fire(link, &mut self.panics) };
                    }
                    // Without `alloc` there are no after_func registrations.
                    #[cfg(not(feature = "alloc"))]
                    _ => drop(guard),
                }
            }
            // A timeout that ended leaves its clock's queue now.
            // SAFETY: the walk holds a reference on `current`.
            unsafe { crate::tree::deadline::dequeue_if_deadline(self.current) };
            let done = self.current;
            self.current = self.chain;
            if !self.chain.is_null() {
                // SAFETY: the walk holds a reference on every chain node.
                self.chain = unsafe { (*self.chain).siblings.prev() };
            }
            // SAFETY: the walk's reference on `done`.
            unsafe { release::release(done as NodePtr) };
        }
    }
}

impl Drop for Notifier<'_> {
    fn drop(&mut self) {
        self.run();
    }
}
