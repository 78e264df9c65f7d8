//! Deadline scopes and clock roots: `with_deadline`, `with_timeout`,
//! `background_with_clock`, and how a due deadline reaches its context.
//!
//! A deadline scope is a cancellation scope followed by its timer entry,
//! its clock and the cause it ends with: one allocation, written in place
//! field by field. It is queued on its clock's
//! [`Timers`](crate::Timers) only if its deadline is earlier than its
//! parent's (otherwise it is a plain `with_cancel` child, as in Go) and
//! still in the future (otherwise it is born `DeadlineExceeded`). It leaves
//! the queue as soon as it ends (cancel, parent cancel, or firing) or is
//! freed. Its entry's [`EntryHooks`] are how the clock layer, which knows
//! nothing of contexts, claims and ends it.

#[cfg(feature = "alloc")]
use alloc::boxed::Box;
#[cfg(feature = "alloc")]
use core::ptr;

use crate::clock::contract::Clock;
use crate::clock::timer_queue::{EntryHooks, TimerEntry};
use crate::tree::cancel::cancel;
use crate::tree::node::{Header, NodePtr, Scope, is_heap, scope_of};
use crate::tree::release;
use crate::tree::state_word::{self, CANCELLED};
#[cfg(feature = "alloc")]
use crate::tree::state_word::{REF_ONE, Word};
use crate::{Cause, Error, Instant};

#[repr(C)]
pub(crate) struct DeadlineScope {
    pub(crate) scope: Scope,
    pub(crate) timer: TimerEntry,
    /// The tree's clock; alive as long as the tree's root, which this node
    /// keeps alive through its parent chain. A null data pointer means no
    /// clock: such a node is never queued.
    pub(crate) clock: *const dyn Clock,
    /// The cause when the deadline passes.
    pub(crate) cause: Cause,
}

/// How the timer queue claims and ends a deadline scope.
pub(crate) static HOOKS: EntryHooks = EntryHooks {
    claim: claim_entry,
    expire: expire_entry,
};

impl DeadlineScope {
    /// A deadline scope (not yet attached) under `parent`, ending at `at`
    /// with `cause` on `clock` (null: never fires).
    #[cfg_attr(cancel_tree_loom, allow(dead_code))]
    pub(crate) fn new(
        initial_word: usize,
        parent: NodePtr,
        at: Instant,
        clock: *const dyn Clock,
        cause: Cause,
    ) -> DeadlineScope {
        DeadlineScope {
            scope: Scope::new(initial_word, parent),
            timer: TimerEntry::new(at, &HOOKS),
            clock,
            cause,
        }
    }
}

/// The fixed part of a clock root; the clock follows it.
#[repr(C)]
pub(crate) struct ClockRootHeader {
    hdr: Header,
    clock: *const dyn Clock,
    free: unsafe fn(*const ClockRootHeader),
}

#[cfg(feature = "alloc")]
#[repr(C)]
struct ClockRoot<C> {
    head: ClockRootHeader,
    clock: C,
}

/// A root node whose subtree uses `clock` (one reference, the caller's).
#[cfg(feature = "alloc")]
pub(crate) fn new_clock_root<C: Clock>(clock: C) -> NodePtr {
    unsafe fn free<C>(h: *const ClockRootHeader) {
        // SAFETY: made by `Box::new(ClockRoot<C>)` below; no references left.
        #[cfg(not(cancel_tree_loom))]
        unsafe {
            drop(Box::from_raw(h.cast::<ClockRoot<C>>().cast_mut()))
        }
        // Loom: the clock is dropped, the block kept with its word poisoned
        // (see `state_word::checked`).
        // SAFETY: as above; nobody uses the root any more.
        #[cfg(cancel_tree_loom)]
        unsafe {
            ptr::drop_in_place(&raw mut (*h.cast::<ClockRoot<C>>().cast_mut()).clock);
            (*h).hdr.word.poison();
        }
    }
    let raw = Box::into_raw(Box::new(ClockRoot {
        head: ClockRootHeader {
            hdr: Header {
                word: Word::new(state_word::KIND_CLOCK_ROOT | REF_ONE),
                parent: crate::tree::node::BACKGROUND,
            },
            clock: ptr::null::<C>() as *const dyn Clock,
            free: free::<C>,
        },
        clock,
    }));
    // SAFETY: fresh allocation; the clock field never moves (heap).
    unsafe {
        (*raw).head.clock = &raw const (*raw).clock as *const dyn Clock;
    }
    raw.cast_const().cast()
}

/// Frees a clock root.
///
/// # Safety
/// `node` is a clock root with no references left.
#[cfg(feature = "alloc")]
pub(crate) unsafe fn free_clock_root(node: NodePtr) {
    let h = node.cast::<ClockRootHeader>();
    // SAFETY: (caller).
    unsafe { ((*h).free)(h) }
}

/// The clock of the tree `node` is in: the nearest deadline scope's or clock
/// root's, else the target's default (`crate::clock::default_clock`).
///
/// # Safety
/// `node` is a sentinel or alive.
pub(crate) unsafe fn clock_of(mut node: NodePtr) -> Option<*const dyn Clock> {
    while is_heap(node) {
        // SAFETY: ancestors of a live node are alive; kinds are immutable.
        unsafe {
            match state_word::kind((*node).word.load()) {
                state_word::KIND_DEADLINE => {
                    let c = (*node.cast::<DeadlineScope>()).clock;
                    return if c.is_null() { None } else { Some(c) };
                }
                state_word::KIND_CLOCK_ROOT => {
                    return Some((*node.cast::<ClockRootHeader>()).clock);
                }
                _ => node = (*node).parent,
            }
        }
    }
    default_clock()
}

fn default_clock() -> Option<*const dyn Clock> {
    crate::clock::default_clock().map(|c| c as *const dyn Clock)
}

/// The nearest deadline of the scope chain starting at `scope`.
///
/// # Safety
/// `scope` is null or alive.
pub(crate) unsafe fn deadline_of(mut scope: *const Scope) -> Option<Instant> {
    // A merged scope on the way contributes its other parents' earliest.
    #[cfg_attr(not(feature = "alloc"), allow(unused_mut))]
    let mut merged: Option<Instant> = None;
    let earliest = |a: Option<Instant>, b: Instant| Some(a.map_or(b, |a| a.min(b)));
    while !scope.is_null() {
        // SAFETY: a live scope's ancestors are alive; kinds are immutable.
        unsafe {
            match state_word::kind((*scope).hdr.word.load()) {
                state_word::KIND_DEADLINE => {
                    return earliest(merged, (*scope.cast::<DeadlineScope>()).timer.at);
                }
                #[cfg(feature = "alloc")]
                state_word::KIND_MERGE => {
                    let m = scope.cast::<crate::tree::merge::MergeScope>();
                    if let Some(d) = (*m).others_deadline {
                        merged = earliest(merged, d);
                    }
                }
                _ => {}
            }
            scope = scope_of((*scope).hdr.parent);
        }
    }
    merged
}

/// Gives back a fresh scope's two references (a context's and a handle's)
/// if the set-up unwinds (a panicking clock), cancelling it first as a
/// dropped handle would.
#[cfg(feature = "alloc")]
struct FreshPair(*const Scope);

#[cfg(feature = "alloc")]
impl Drop for FreshPair {
    fn drop(&mut self) {
        // SAFETY: the pair's two references, given up once (the guard is
        // forgotten on success).
        unsafe {
            cancel(self.0, Error::Canceled, &Cause::from(Error::Canceled));
            release::release(self.0.cast());
            release::release(self.0.cast());
        }
    }
}

/// A deadline scope at `at` under the context `(node, scope)`, counting a
/// context and a handle (Go's `WithDeadlineCause`). `now`: the clock
/// reading a timeout was computed from, so the clock is read once per
/// derivation (`None`: read it here).
///
/// # Safety
/// The caller holds a reference on `node`; `scope` is its nearest scope.
#[cfg(feature = "alloc")]
pub(crate) unsafe fn with_deadline(
    node: NodePtr,
    scope: *const Scope,
    at: Instant,
    cause: Cause,
    now: Option<Instant>,
) -> *const Scope {
    // SAFETY: (caller).
    if unsafe { deadline_of(scope) }.is_some_and(|d| d <= at) {
        // The parent ends first: the child just follows it (Go).
        // SAFETY: (caller).
        return unsafe { crate::tree::attach::new_cancel_scope(node, scope) };
    }
    // SAFETY: (caller).
    let clock = unsafe { clock_of(node) };
    #[allow(clippy::let_unit_value)] // `()` without shard arrays
    // SAFETY: (caller).
    let hint = unsafe { crate::tree::attach::shard_hint(node, scope) };
    // Built in place, field by field, rather than assembled on the stack and
    // copied (see docs/benchmarks.md).
    let mut ds = Box::<DeadlineScope>::new_uninit();
    let p = ds.as_mut_ptr();
    // SAFETY: `p` points to the box's uninitialised block, of the right
    // layout; each field is written exactly once, and nothing between the
    // writes can panic (a panic would only leak the block).
    let ds: *const DeadlineScope = unsafe {
        (&raw mut (*p).scope).write(Scope::new(state_word::KIND_DEADLINE | (2 * REF_ONE), node));
        (&raw mut (*p).timer).write(TimerEntry::new(at, &HOOKS));
        (&raw mut (*p).clock).write(clock.unwrap_or_else(crate::clock::contract::no_clock));
        (&raw mut (*p).cause).write(cause);
        Box::into_raw(ds.assume_init())
    };
    let s: *const Scope = ds.cast();
    // SAFETY: fresh node; (caller) for the rest.
    unsafe { crate::tree::attach::attach(node, scope, s, hint) };
    let pair = FreshPair(s);
    if let Some(clock) = clock {
        // SAFETY: the clock lives as long as the tree (see `DeadlineScope`);
        // the pair holds references on the node, which is attached.
        unsafe {
            let clock = &*clock;
            arm(ds, clock, now.unwrap_or_else(|| clock.now()));
        }
    }
    // The clock was the only user code; the caller builds the pair.
    core::mem::forget(pair);
    s
}

/// Queues an attached deadline scope on its clock, or ends it at once if
/// its deadline is not after `now`. A scope born cancelled is left alone.
///
/// # Safety
/// `ds` is alive and not queued, the caller holds a reference on it (or, for
/// a `LocalScope`, owns it pinned), and `clock` is its clock.
pub(crate) unsafe fn arm(ds: *const DeadlineScope, clock: &dyn Clock, now: Instant) {
    let s: *const Scope = ds.cast();
    // SAFETY: (caller).
    unsafe {
        if (*s).hdr.word.load() & CANCELLED != 0 {
            return; // born cancelled by the parent
        }
        if (*ds).timer.at <= now {
            cancel(s, Error::DeadlineExceeded, &(*ds).cause);
            return;
        }
        // The node outlives its queue entry (removed before it is freed).
        clock.timers().insert(&raw const (*ds).timer, clock, now);
        if (*s).hdr.word.load() & CANCELLED != 0 {
            // Cancelled by the parent between attaching and queueing: its
            // walk may have missed the entry, so remove it now.
            dequeue(ds);
        }
    }
}

/// The deadline scope around a timer entry.
///
/// # Safety
/// `entry` is the `timer` field of a live `DeadlineScope`.
unsafe fn owner(entry: *const TimerEntry) -> *const DeadlineScope {
    let offset = core::mem::offset_of!(DeadlineScope, timer);
    // SAFETY: (caller) stepping back by the field's offset stays in the same
    // allocation; the entry pointer was derived from the whole node.
    unsafe { entry.byte_sub(offset).cast::<DeadlineScope>() }
}

/// [`EntryHooks::claim`]: takes a reference on the node, unless it is being
/// freed (its free path then waits on the queue's lock to dequeue it).
///
/// # Safety
/// Called by the queue, under its lock, for an entry it just popped: every
/// queued entry is a live `DeadlineScope`'s (the only place one is built
/// with these hooks).
unsafe fn claim_entry(entry: *const TimerEntry) -> bool {
    // SAFETY: (caller).
    unsafe { (*owner(entry)).scope.hdr.word.try_acquire_ref() }
}

/// [`EntryHooks::expire`]: ends the node with `DeadlineExceeded` and its
/// fire cause, then drops the claim's reference.
///
/// # Safety
/// After a successful [`claim_entry`], whose reference this gives up.
unsafe fn expire_entry(entry: *const TimerEntry) {
    struct Release(*const DeadlineScope);
    impl Drop for Release {
        fn drop(&mut self) {
            // SAFETY: the reference from `claim_entry`, even on unwind.
            unsafe { release::release(self.0.cast()) }
        }
    }
    // SAFETY: (caller).
    let ds = unsafe { owner(entry) };
    let _release = Release(ds);
    // SAFETY: we hold a reference.
    unsafe { cancel(ds.cast(), Error::DeadlineExceeded, &(*ds).cause) };
}

/// Takes a deadline scope out of its clock's queue, if it has a clock;
/// `true` if it was queued.
///
/// # Safety
/// `ds` is alive.
pub(crate) unsafe fn dequeue(ds: *const DeadlineScope) -> bool {
    // SAFETY: the clock is written before the node is shared and never
    // after, and outlives the node.
    unsafe {
        let clock = (*ds).clock;
        !clock.is_null() && (*clock).timers().remove(&raw const (*ds).timer)
    }
}

/// Frees a deadline node; `word` as for the free path (only the shard bits
/// are used).
///
/// # Safety
/// No references remain on `ds`.
#[cfg(feature = "alloc")]
pub(crate) unsafe fn free(ds: *const DeadlineScope, word: usize) -> release::Parent {
    // SAFETY: (caller) last reference.
    unsafe {
        // A node that ended has left the queue already: whoever ended it
        // (its cancel, a parent walk's notify phase, the firing timer, or
        // `arm` when a parent walk raced the insert) dequeued it while
        // holding a reference, so before this free.
        if (*ds).scope.hdr.word.load() & CANCELLED == 0 {
            dequeue(ds);
        } else if cfg!(debug_assertions) {
            // The queue would keep a pointer to freed memory otherwise.
            assert!(!dequeue(ds), "an ended deadline node was still queued");
        }
        let (parent, now) = release::detach(ds.cast(), true, word);
        let guard = release::SettleOnUnwind(parent);
        (*ds).scope.drop_cause(now);
        #[cfg(cancel_tree_shards)]
        crate::tree::shards::free(&(*ds).scope);
        #[cfg(not(cancel_tree_loom))]
        drop(Box::from_raw(ds.cast_mut()));
        // Loom: poisoned and kept, so a late access is caught; the cause
        // (user code in its `Drop`) is dropped as a free would.
        #[cfg(cancel_tree_loom)]
        {
            ptr::drop_in_place(&raw mut (*ds.cast_mut()).cause);
            (*ds).scope.hdr.word.poison();
        }
        guard.defuse()
    }
}

/// Dequeues `scope` if it is a deadline scope (the cancel walk calls this
/// for every node it ended, so a cancelled timeout leaves the queue at once).
///
/// # Safety
/// `scope` is alive.
pub(crate) unsafe fn dequeue_if_deadline(scope: *const Scope) {
    // SAFETY: (caller); the kind is immutable.
    unsafe {
        if state_word::kind((*scope).hdr.word.load()) == state_word::KIND_DEADLINE {
            dequeue(scope.cast());
        }
    }
}
