//! The timer queue: pending deadlines of one clock, in an intrusive pairing
//! heap.
//!
//! Each deadline node carries its own heap links ([`TimerNode`]), so queueing
//! never allocates and the queue's memory is exactly its live entries.
//!
//! | operation | cost |
//! |---|---|
//! | insert | O(1) |
//! | earliest | O(1) |
//! | remove any entry (cancel or drop before it fires) | O(log n) amortised |
//! | pop the earliest (fire) | O(log n) amortised |
//!
//! Every operation is iterative (the two-pass pairing merge threads its
//! stack through the sibling links), so a million pending deadlines are
//! fine on a small stack.
//!
//! The heap is guarded by one lock per queue, the same kind as a node's
//! (`state::Word`): a spin lock with `std`, a critical section without, so a
//! clock may call [`Timers::fire`] from its alarm interrupt. The lock is never
//! held while a context is cancelled: `fire` pops one due entry, takes a
//! reference on its node, releases the lock, then cancels. (Taking that
//! reference may wait, with the lock held, for the one RMW a shard-array
//! collapse owner does right after its decrement; the owner needs no lock
//! for it.)

use core::fmt;
use core::ptr;

use crate::Instant;
use crate::clock::Clock;
use crate::state::Word;
use crate::sync::UnsafeCell;

/// Re-arms the clock if `fire` unwinds.
struct Rearm<'a> {
    timers: &'a Timers,
    clock: &'a dyn Clock,
}

impl Drop for Rearm<'_> {
    fn drop(&mut self) {
        self.timers.rearm(self.clock);
    }
}

/// Heap links inside a deadline node; guarded by the queue's lock.
pub(crate) struct TimerNode {
    child: UnsafeCell<*const TimerNode>,
    sibling: UnsafeCell<*const TimerNode>,
    /// The parent if this is a first child, else the previous sibling.
    prev: UnsafeCell<*const TimerNode>,
    queued: UnsafeCell<bool>,
    /// The deadline. Immutable.
    pub(crate) at: Instant,
}

impl TimerNode {
    pub(crate) fn new(at: Instant) -> TimerNode {
        TimerNode {
            child: UnsafeCell::new(ptr::null()),
            sibling: UnsafeCell::new(ptr::null()),
            prev: UnsafeCell::new(ptr::null()),
            queued: UnsafeCell::new(false),
            at,
        }
    }
}

// Accessors for the link cells. Each is unsafe: the caller holds the queue
// lock and `n` is alive (queued nodes are removed under that lock before
// they are freed).
macro_rules! cell {
    ($get:ident, $set:ident, $field:ident, $ty:ty) => {
        /// # Safety
        /// Queue lock held; `n` alive.
        unsafe fn $get(n: *const TimerNode) -> $ty {
            // SAFETY: (caller) lock held and node alive.
            unsafe { (*n).$field.with(|p| *p) }
        }
        /// # Safety
        /// Queue lock held; `n` alive.
        unsafe fn $set(n: *const TimerNode, v: $ty) {
            // SAFETY: (caller) lock held and node alive.
            unsafe { (*n).$field.with_mut(|p| *p = v) }
        }
    };
}
cell!(child, set_child, child, *const TimerNode);
cell!(sibling, set_sibling, sibling, *const TimerNode);
cell!(prev, set_prev, prev, *const TimerNode);
cell!(queued, set_queued, queued, bool);

/// The queue of pending deadlines of one [`Clock`].
///
/// The crate keeps the queue; a clock only stores one and hands it out from
/// [`Clock::timers`], and calls [`fire`](Timers::fire) when its alarm goes
/// off. See [`Clock`] for the whole contract.
pub struct Timers {
    lock: Word,
    root: UnsafeCell<*const TimerNode>,
    len: UnsafeCell<usize>,
    /// The alarm last requested from the clock (`None`: none pending).
    armed: UnsafeCell<Option<Instant>>,
}

// SAFETY: every cell is only touched under `lock`.
unsafe impl Send for Timers {}
// SAFETY: as above.
unsafe impl Sync for Timers {}

impl Default for Timers {
    fn default() -> Timers {
        Timers::new()
    }
}

impl fmt::Debug for Timers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("len", &self.len())
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

impl Timers {
    /// An empty queue.
    #[cfg(not(cancel_tree_loom))]
    pub const fn new() -> Timers {
        Timers {
            lock: Word::new_const(0),
            root: UnsafeCell::new(ptr::null()),
            len: UnsafeCell::new(0),
            armed: UnsafeCell::new(None),
        }
    }

    /// An empty queue.
    #[cfg(cancel_tree_loom)]
    pub fn new() -> Timers {
        Timers {
            lock: Word::new(0),
            root: UnsafeCell::new(ptr::null()),
            len: UnsafeCell::new(0),
            armed: UnsafeCell::new(None),
        }
    }

    /// Pending deadlines.
    pub fn len(&self) -> usize {
        let _g = self.lock.lock();
        // SAFETY: lock held.
        self.len.with(|l| unsafe { *l })
    }

    /// `true` if no deadline is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        let _g = self.lock.lock();
        // SAFETY: lock held; the root is alive while queued.
        unsafe { self.earliest() }
    }

    /// # Safety
    /// Lock held.
    unsafe fn earliest(&self) -> Option<Instant> {
        // SAFETY: (caller) lock held; queued nodes are alive.
        unsafe {
            let root = self.root.with(|r| *r);
            if root.is_null() {
                None
            } else {
                Some((*root).at)
            }
        }
    }

    /// Ends every pending deadline that is due at `clock.now()`, earliest
    /// first, then asks the clock for an alarm at the next one
    /// ([`Clock::set_alarm`]) and returns it.
    ///
    /// Call it from the clock's alarm (a thread, a task, an interrupt
    /// handler). Spurious or late calls are harmless. The contexts are
    /// cancelled on the calling thread: their wakers and `after_func`
    /// closures run here, with no lock of the queue held.
    pub fn fire(&self, clock: &dyn Clock) -> Option<Instant> {
        let now = clock.now();
        loop {
            let guard = self.lock.lock();
            // SAFETY: lock held.
            let next = unsafe { self.earliest() };
            match next {
                Some(at) if at <= now => {}
                _ => {
                    // SAFETY: lock held.
                    self.armed.with_mut(|a| unsafe { *a = next });
                    clock.set_alarm(next);
                    drop(guard);
                    return next;
                }
            }
            // SAFETY: lock held; non-empty.
            let node = unsafe { self.pop_root() };
            // SAFETY: the node was queued, so alive; a dying node (count 0)
            // waits for this lock in its free path before freeing.
            let target = unsafe { crate::deadline::claim(node) };
            drop(guard);
            if let Some(target) = target {
                // If cancelling panics (an `after_func` closure, resumed on
                // this thread), re-arm for what is left before unwinding, so
                // one bad callback never stops the clock's later deadlines.
                let rearm = Rearm {
                    timers: self,
                    clock,
                };
                // SAFETY: `claim` took a reference on the deadline node.
                unsafe { crate::deadline::expire(target) };
                core::mem::forget(rearm);
            }
        }
    }

    /// Records and requests the alarm for the earliest pending deadline.
    fn rearm(&self, clock: &dyn Clock) {
        let guard = self.lock.lock();
        // SAFETY: lock held.
        let next = unsafe { self.earliest() };
        // SAFETY: lock held.
        self.armed.with_mut(|a| unsafe { *a = next });
        clock.set_alarm(next);
        drop(guard);
    }

    /// Queues `node`; if it is the new earliest, arms the clock's alarm.
    ///
    /// # Safety
    /// `node` is alive, not queued, and stays alive until removed or popped.
    pub(crate) unsafe fn insert(&self, node: *const TimerNode, clock: &dyn Clock) {
        let guard = self.lock.lock();
        // SAFETY: lock held; `node` alive (caller).
        unsafe {
            set_queued(node, true);
            let root = self.root.with(|r| *r);
            let root = meld(root, node);
            self.root.with_mut(|r| *r = root);
            self.len.with_mut(|l| *l += 1);
            let at = (*node).at;
            let armed = self.armed.with(|a| *a);
            if armed.is_none_or(|a| at < a) {
                self.armed.with_mut(|a| *a = Some(at));
                clock.set_alarm(Some(at));
            }
        }
        drop(guard);
    }

    /// Removes `node` if it is queued. Never touches the clock: an alarm for
    /// a removed deadline just finds nothing due.
    ///
    /// # Safety
    /// `node` is alive.
    pub(crate) unsafe fn remove(&self, node: *const TimerNode) {
        let guard = self.lock.lock();
        // SAFETY: lock held; `node` alive (caller); queued links are alive.
        unsafe {
            if queued(node) {
                let root = self.root.with(|r| *r);
                if root == node {
                    self.pop_root();
                } else {
                    // Cut `node` out of its parent's child list.
                    let p = prev(node);
                    let s = sibling(node);
                    if child(p) == node {
                        set_child(p, s);
                    } else {
                        set_sibling(p, s);
                    }
                    if !s.is_null() {
                        set_prev(s, p);
                    }
                    set_sibling(node, ptr::null());
                    set_prev(node, ptr::null());
                    let sub = merge_pairs(child(node));
                    set_child(node, ptr::null());
                    let root = meld(root, sub);
                    self.root.with_mut(|r| *r = root);
                    set_queued(node, false);
                    self.len.with_mut(|l| *l -= 1);
                }
            }
        }
        drop(guard);
    }

    /// Removes and returns the earliest node.
    ///
    /// # Safety
    /// Lock held; the heap is not empty.
    unsafe fn pop_root(&self) -> *const TimerNode {
        // SAFETY: (caller).
        unsafe {
            let root = self.root.with(|r| *r);
            let rest = merge_pairs(child(root));
            set_child(root, ptr::null());
            set_queued(root, false);
            self.root.with_mut(|r| *r = rest);
            self.len.with_mut(|l| *l -= 1);
            root
        }
    }
}

/// Melds two heaps (either may be null); returns the new root.
///
/// # Safety
/// Queue lock held; both are detached roots (no sibling, no prev).
unsafe fn meld(a: *const TimerNode, b: *const TimerNode) -> *const TimerNode {
    if a.is_null() {
        return b;
    }
    if b.is_null() {
        return a;
    }
    // SAFETY: (caller) both alive and detached.
    unsafe {
        let (top, under) = if (*b).at < (*a).at { (b, a) } else { (a, b) };
        let first = child(top);
        set_sibling(under, first);
        if !first.is_null() {
            set_prev(first, under);
        }
        set_prev(under, top);
        set_child(top, under);
        top
    }
}

/// Two-pass pairing merge of a sibling list, iteratively; returns the root.
///
/// # Safety
/// Queue lock held; `first` heads a sibling list (or is null) whose nodes are
/// being detached from their parent.
unsafe fn merge_pairs(first: *const TimerNode) -> *const TimerNode {
    if first.is_null() {
        return ptr::null();
    }
    // SAFETY: (caller) all nodes in the list are alive and ours to relink.
    unsafe {
        // Pass 1: meld pairs left to right, stacking results through
        // `sibling` (last pair on top).
        let mut stack: *const TimerNode = ptr::null();
        let mut cur = first;
        while !cur.is_null() {
            let a = cur;
            let b = sibling(a);
            set_prev(a, ptr::null());
            if b.is_null() {
                set_sibling(a, stack);
                stack = a;
                break;
            }
            cur = sibling(b);
            set_sibling(a, ptr::null());
            set_sibling(b, ptr::null());
            set_prev(b, ptr::null());
            let m = meld(a, b);
            set_sibling(m, stack);
            stack = m;
        }
        // Pass 2: meld right to left.
        let mut result = stack;
        let mut rest = sibling(result);
        set_sibling(result, ptr::null());
        while !rest.is_null() {
            let next = sibling(rest);
            set_sibling(rest, ptr::null());
            result = meld(result, rest);
            rest = next;
        }
        set_prev(result, ptr::null());
        result
    }
}
