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
//! parent's walk meeting a child that cancelled itself) waits, with `std`,
//! until `WALKING` clears: phase 1 runs no user code and never blocks (but
//! for the one RMW a shard-array collapse owner does right after its
//! decrement, see `state::Released::Collapse`), so the wait is short and
//! cannot deadlock, and it keeps the promise that when any
//! `cancel()` returns every descendant reports cancelled. Without `std` there
//! is no waiting (an interrupt handler must not wait for the code it
//! interrupted): a losing `cancel()` returns at once, and the winning walk
//! finishes when the interrupted code resumes.

use core::ptr;

use crate::Cause;
use crate::Error;
use crate::node::{self, NodePtr, Scope};
use crate::state::{self, CANCELLED, LINKED, TryEnd, WALKING};
use crate::waiters::{self, Waiter};

/// Cancels the scope `s` with `err` and `cause`. Returns `true` if this call
/// ended the scope, `false` if it had already ended.
///
/// # Safety
/// The caller holds a reference on `s` for the whole call.
pub(crate) unsafe fn cancel(s: *const Scope, err: Error, cause: &Cause) -> bool {
    // SAFETY: the caller's reference keeps `s` alive.
    let scope = unsafe { &*s };
    let bits = state::end_bits(err, cause.as_error());
    // Fastest path: a scope that never had children or waiters, ended by a
    // cause that needs no cell, is the whole subtree: one compare-and-swap.
    if cause.as_error().is_some() {
        match scope.hdr.word.try_end_leaf(bits, false, 0) {
            TryEnd::Ended => {
                // SAFETY: the caller's reference keeps the node alive.
                unsafe { crate::deadline::dequeue_if_deadline(s) };
                return true;
            }
            TryEnd::AlreadyEnded => {
                wait_walk(scope);
                return false;
            }
            TryEnd::Busy => {}
        }
    }
    let guard = scope.hdr.word.lock();
    if guard.load() & CANCELLED != 0 {
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
        unsafe { crate::deadline::dequeue_if_deadline(s) };
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
            work = (*x).next.with(|n| *n);
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
            x = (*x).prev.with(|p| *p);
        }
    }

    // Phase 2: notify.
    let mut notifier = Notifier {
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

/// How many children a walk flags per hold of their parent's list lock. With
/// `std`, 64: fewer lock round trips, and other threads wait at most 64
/// flags. Without `std` the lock is a critical section (interrupts masked on
/// a single core), so every child gets its own short section, as interrupt
/// latency matters more there than walk throughput (`docs/embedded.md`).
#[cfg(feature = "std")]
const BATCH: usize = 64;
#[cfg(not(feature = "std"))]
const BATCH: usize = 1;

/// One child list of a scope: its own, or one of its shards.
#[derive(Clone, Copy)]
enum List<'a> {
    Own(&'a Scope),
    #[cfg(cancel_tree_shards)]
    Shard(&'a crate::shards::Shard),
}

/// The held lock of a [`List`] (held for its `Drop`, which unlocks).
#[allow(dead_code)]
enum ListGuard<'a> {
    Own(crate::state::Guard<'a>),
    #[cfg(cancel_tree_shards)]
    Shard(crate::shards::ShardGuard<'a>),
}

impl<'a> List<'a> {
    fn lock(self) -> ListGuard<'a> {
        match self {
            List::Own(x) => ListGuard::Own(x.hdr.word.lock()),
            #[cfg(cancel_tree_shards)]
            List::Shard(sh) => ListGuard::Shard(sh.lock()),
        }
    }

    fn head(self) -> &'a crate::sync::UnsafeCell<*const Scope> {
        match self {
            List::Own(x) => &x.children,
            #[cfg(cancel_tree_shards)]
            List::Shard(sh) => &sh.head,
        }
    }
}

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
    let _shards = unsafe { flag_list(List::Own(x), bits, cause, work, chain, deferred) };
    #[cfg(cancel_tree_shards)]
    {
        let shards = _shards;
        if !shards.is_null() {
            // SAFETY: the array lives as long as `x`.
            for sh in unsafe { &(*shards).shard } {
                // SAFETY: (caller).
                let _ = unsafe { flag_list(List::Shard(sh), bits, cause, work, chain, deferred) };
            }
        }
    }
}

/// The shard array pointer of a scope (nothing without shards).
#[cfg(cancel_tree_shards)]
type ShardsPtr = *const crate::shards::Shards;
#[cfg(not(cancel_tree_shards))]
type ShardsPtr = ();

/// Pops and flags every child in one list of a flagged scope. For the
/// scope's own list, returns its shard array pointer as read under the lock
/// hold that found the list empty (see `shards::install`; null for a shard).
///
/// Children whose ending needs no lock (see [`state::Word::try_end_leaf`])
/// are flagged in batches under one hold of the list's lock, each with a
/// single compare-and-swap that also clears its `LINKED`; the rest take both
/// locks.
///
/// # Safety
/// The list's scope is alive, flagged, and the caller holds a reference on
/// it.
unsafe fn flag_list(
    list: List<'_>,
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
            let d = unsafe { node::pop(head) };
            if d.is_null() {
                #[cfg(cancel_tree_shards)]
                return match list {
                    List::Own(x) => crate::shards::of(x),
                    List::Shard(_) => core::ptr::null(),
                };
                #[cfg(not(cancel_tree_shards))]
                return;
            }
            if !lock_free {
                break (d, gx);
            }
            // SAFETY: `d` was listed under the lock, which we still hold; a
            // dying `d` cannot be freed before it takes that lock
            // (`detach_from_parent`).
            let child = unsafe { &*d };
            let word = &child.hdr.word;
            let mut ended = state::kind(word.load()) == state::KIND_CANCEL
                && word.try_end_leaf(bits, false, LINKED) == TryEnd::Ended;
            if !ended && word.try_end_inner(bits, LINKED) == TryEnd::Ended {
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
        let w = gd.load();
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
                child.next.with_mut(|n| {
                    // SAFETY: see above.
                    unsafe { *n = *deferred }
                });
                *deferred = d;
            }
            continue;
        }
        // SAFETY: d's lock is held.
        if state::kind(w) == state::KIND_CANCEL && unsafe { is_leaf(child) } {
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
    // SAFETY: (caller) the links are ours.
    unsafe {
        (*d).next.with_mut(|n| *n = *work);
        (*d).prev.with_mut(|p| *p = *chain);
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
    if !crate::shards::of(scope).is_null() {
        return false;
    }
    // SAFETY: both heads are guarded by the lock (caller).
    unsafe { scope.children.with(|c| (*c).is_null()) && scope.waiters.with(|w| (*w).is_null()) }
}

/// Unlinks the cancelled scope `s` from its parent scope's child list.
///
/// # Safety
/// The caller holds a reference on `s`.
unsafe fn leave_parent(s: *const Scope) {
    // SAFETY: `s` is alive; its parent is alive because `s` holds it.
    let parent = unsafe { node::scope_of((*s).hdr.parent) };
    if parent.is_null() {
        return;
    }
    // SAFETY: as above.
    let parent = unsafe { &*parent };
    #[cfg(cancel_tree_shards)]
    // SAFETY: `s` is alive and its shard bits are fixed.
    let list = match crate::shards::shard_of(unsafe { (*s).hdr.word.load() }) {
        // SAFETY: the parent's array was installed before `s` was linked in
        // it, and lives as long as the parent.
        Some(k) => List::Shard(unsafe { &(*crate::shards::of(parent)).shard[k] }),
        None => List::Own(parent),
    };
    #[cfg(not(cancel_tree_shards))]
    let list = List::Own(parent);
    let guard = list.lock();
    // SAFETY: under the list's lock, LINKED says whether we are listed.
    unsafe {
        if (*s).hdr.word.load() & state::LINKED != 0 {
            node::unlink(list.head(), s);
            (*s).hdr.word.clear(LINKED);
        }
    }
    drop(guard);
}

/// Waits (std) until no walk is flagging below `scope`.
fn wait_walk(scope: &Scope) {
    #[cfg(any(feature = "std", cancel_tree_loom))]
    {
        let mut spins = 0;
        while scope.hdr.word.load() & WALKING != 0 {
            crate::sync::backoff(&mut spins);
        }
    }
    #[cfg(not(any(feature = "std", cancel_tree_loom)))]
    let _ = scope;
}

/// Phase 2. Its `Drop` finishes the work, so a panic that escapes a callback
/// (only possible without `std`, where panics are not caught) still notifies
/// the rest and releases every reference.
struct Notifier {
    current: *const Scope,
    chain: *const Scope,
    /// References deferred from phase 1 (see `flag_children`).
    deferred: *const Scope,
    panics: Panics,
}

impl Notifier {
    fn run(&mut self) {
        while !self.deferred.is_null() {
            let d = self.deferred;
            // SAFETY: we hold a reference on every deferred node.
            self.deferred = unsafe { (*d).next.with(|n| *n) };
            // SAFETY: the deferred reference.
            unsafe { node::release(d.cast()) };
        }
        while !self.current.is_null() {
            // SAFETY: the walk holds a reference on `current`.
            let x = unsafe { &*self.current };
            // A node that never had a waiter has none to notify (and, being
            // cancelled, can get none now): skip its lock. (The bit is kept
            // with `std` only.)
            while !cfg!(feature = "std") || x.hdr.word.load() & state::HAS_WAITERS != 0 {
                let guard = x.hdr.word.lock();
                // SAFETY: lock held.
                let link = unsafe { x.pop_waiter() };
                if link.is_null() {
                    break;
                }
                // SAFETY: `link` was listed under the lock we hold, so it is
                // alive; its kind is immutable.
                match unsafe { (*link).kind } {
                    waiters::KIND_WAITER => {
                        // SAFETY: lock held, waiter link.
                        let waker = unsafe { Waiter::take_waker(link) };
                        drop(guard);
                        if let Some(w) = waker {
                            self.panics.call(move || w.wake());
                        }
                    }
                    #[cfg(feature = "alloc")]
                    _ => {
                        drop(guard);
                        // SAFETY: an after_func link we popped (claimed).
                        unsafe { crate::after_func::fire(link, &mut self.panics) };
                    }
                    // Without `alloc` there are no after_func registrations.
                    #[cfg(not(feature = "alloc"))]
                    _ => drop(guard),
                }
            }
            // A timeout that ended leaves its clock's queue now.
            // SAFETY: the walk holds a reference on `current`.
            unsafe { crate::deadline::dequeue_if_deadline(self.current) };
            let done = self.current;
            self.current = self.chain;
            if !self.chain.is_null() {
                // SAFETY: the walk holds a reference on every chain node.
                self.chain = unsafe { (*self.chain).prev.with(|p| *p) };
            }
            // SAFETY: the walk's reference on `done`.
            unsafe { node::release(done as NodePtr) };
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.run();
    }
}

/// Runs user callbacks (wakers, `after_func` closures). With `std`, a panic
/// is caught so the walk completes, and the first one is resumed on the
/// cancelling thread once the tree is consistent again.
#[derive(Default)]
pub(crate) struct Panics {
    #[cfg(feature = "std")]
    first: Option<std::boxed::Box<dyn core::any::Any + Send + 'static>>,
}

impl Panics {
    pub(crate) fn call(&mut self, f: impl FnOnce()) {
        #[cfg(feature = "std")]
        {
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                if self.first.is_none() {
                    self.first = Some(payload);
                }
            }
        }
        #[cfg(not(feature = "std"))]
        f();
    }

    /// Re-raises the first caught panic, unless this thread is already
    /// unwinding (a `CancelHandle` dropped during a panic), where a second
    /// panic would abort: then the payload is dropped.
    pub(crate) fn resume(self) {
        #[cfg(feature = "std")]
        if let Some(payload) = self.first {
            if !std::thread::panicking() {
                std::panic::resume_unwind(payload);
            }
        }
    }
}
