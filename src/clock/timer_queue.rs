//! The timer queue: pending deadlines of one clock, in an intrusive pairing
//! heap.
//!
//! Each deadline node carries its own heap links ([`TimerEntry`]), so queueing
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
//! The heap is guarded by one lock per queue ([`Lock`]: a spin lock with
//! `std`, a critical section without), so a clock may call [`Timers::fire`]
//! from its alarm interrupt. The queue knows nothing of what owns an entry:
//! each entry carries [`EntryHooks`], and `fire` pops one due entry, lets
//! its owner claim it under the lock (the tree takes a reference on the
//! deadline node; that may wait, with the lock held, for the one RMW a
//! shard-array collapse owner does right after its decrement), releases the
//! lock, then lets the owner expire. So no owner code that may take other
//! locks or run user callbacks runs under the queue's lock.

use core::fmt;
use core::ptr;

use crate::Instant;
use crate::clock::contract::Clock;
use crate::raw::lock::Lock;
use crate::raw::sync::UnsafeCell;

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

/// What the owner of a queued entry does when the entry is due. One
/// `static` per kind of owner.
pub(crate) struct EntryHooks {
    /// Called with the queue's lock held, for an entry `fire` just popped:
    /// takes whatever keeps the owner alive once the lock is released.
    /// `false`: the owner is being freed (its free path takes the queue's
    /// lock to remove the entry before freeing, so it waits for this call),
    /// and the entry is skipped.
    pub(crate) claim: unsafe fn(*const TimerEntry) -> bool,
    /// Called without the lock after a successful `claim`: ends the owner
    /// and gives back what `claim` took.
    pub(crate) expire: unsafe fn(*const TimerEntry),
}

/// One pending deadline: the heap links, inside the owner's allocation (so
/// queueing never allocates). The links are guarded by the queue's lock.
pub(crate) struct TimerEntry {
    child: UnsafeCell<*const TimerEntry>,
    sibling: UnsafeCell<*const TimerEntry>,
    /// The parent if this is a first child, else the previous sibling.
    prev: UnsafeCell<*const TimerEntry>,
    /// The deadline. Immutable.
    pub(crate) at: Instant,
    hooks: &'static EntryHooks,
    queued: UnsafeCell<bool>,
}

impl TimerEntry {
    pub(crate) fn new(at: Instant, hooks: &'static EntryHooks) -> TimerEntry {
        TimerEntry {
            child: UnsafeCell::new(ptr::null()),
            sibling: UnsafeCell::new(ptr::null()),
            prev: UnsafeCell::new(ptr::null()),
            at,
            hooks,
            queued: UnsafeCell::new(false),
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
        unsafe fn $get(n: *const TimerEntry) -> $ty {
            // SAFETY: (caller) lock held and node alive.
            unsafe { (*n).$field.with(|p| *p) }
        }
        /// # Safety
        /// Queue lock held; `n` alive.
        unsafe fn $set(n: *const TimerEntry, v: $ty) {
            // SAFETY: (caller) lock held and node alive.
            unsafe { (*n).$field.with_mut(|p| *p = v) }
        }
    };
}
cell!(child, set_child, child, *const TimerEntry);
cell!(sibling, set_sibling, sibling, *const TimerEntry);
cell!(prev, set_prev, prev, *const TimerEntry);
cell!(queued, set_queued, queued, bool);

/// The queue of pending deadlines of one [`Clock`].
///
/// The crate keeps the queue; a clock only stores one and hands it out from
/// [`Clock::timers`], and calls [`fire`](Timers::fire) when its alarm goes
/// off. See [`Clock`] for the whole contract.
pub struct Timers {
    lock: Lock,
    root: UnsafeCell<*const TimerEntry>,
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
    crate::raw::sync::const_unless_loom! {
        /// An empty queue.
        pub fn new() -> Timers {
            Timers {
                lock: Lock::new(),
                root: UnsafeCell::new(ptr::null()),
                len: UnsafeCell::new(0),
                armed: UnsafeCell::new(None),
            }
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
            let entry = unsafe { self.pop_root() };
            // SAFETY: the entry was queued, so its owner is alive; the hooks
            // contract: an owner being freed waits for this lock.
            let claimed = unsafe { ((*entry).hooks.claim)(entry) };
            drop(guard);
            if claimed {
                // If cancelling panics (an `after_func` closure, resumed on
                // this thread), re-arm for what is left before unwinding, so
                // one bad callback never stops the clock's later deadlines.
                let rearm = Rearm {
                    timers: self,
                    clock,
                };
                // SAFETY: claimed above, so the owner is alive.
                unsafe { ((*entry).hooks.expire)(entry) };
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
    pub(crate) unsafe fn insert(&self, node: *const TimerEntry, clock: &dyn Clock) {
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

    /// `true` if `entry` is queued (for tests).
    #[cfg(all(test, not(cancel_tree_loom)))]
    fn contains(&self, entry: &TimerEntry) -> bool {
        let _g = self.lock.lock();
        // SAFETY: lock held.
        unsafe { queued(entry) }
    }

    /// Removes `node` if it is queued. Never touches the clock: an alarm for
    /// a removed deadline just finds nothing due.
    ///
    /// # Safety
    /// `node` is alive.
    pub(crate) unsafe fn remove(&self, node: *const TimerEntry) {
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
    unsafe fn pop_root(&self) -> *const TimerEntry {
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
unsafe fn meld(a: *const TimerEntry, b: *const TimerEntry) -> *const TimerEntry {
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
unsafe fn merge_pairs(first: *const TimerEntry) -> *const TimerEntry {
    if first.is_null() {
        return ptr::null();
    }
    // SAFETY: (caller) all nodes in the list are alive and ours to relink.
    unsafe {
        // Pass 1: meld pairs left to right, stacking results through
        // `sibling` (last pair on top).
        let mut stack: *const TimerEntry = ptr::null();
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

#[cfg(all(test, not(cancel_tree_loom)))]
mod tests {
    use core::cell::RefCell;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::vec::Vec;

    use super::*;

    /// An owner of an entry: records its id when it expires.
    #[repr(C)]
    struct Owner<'a> {
        entry: TimerEntry,
        id: u32,
        claimable: bool,
        log: &'a RefCell<Vec<u32>>,
    }

    static HOOKS: EntryHooks = EntryHooks { claim, expire };

    unsafe fn claim(e: *const TimerEntry) -> bool {
        // SAFETY: every entry in these tests is the first field of an Owner.
        unsafe { (*e.cast::<Owner<'_>>()).claimable }
    }

    unsafe fn expire(e: *const TimerEntry) {
        // SAFETY: as above; the owner outlives the queue's use of it.
        unsafe {
            let o = &*e.cast::<Owner<'_>>();
            o.log.borrow_mut().push(o.id);
        }
    }

    fn owner(log: &RefCell<Vec<u32>>, id: u32, at: u64) -> Owner<'_> {
        Owner {
            entry: TimerEntry::new(Instant::from_nanos(at), &HOOKS),
            id,
            claimable: true,
            log,
        }
    }

    #[derive(Default)]
    struct TestClock {
        now: AtomicU64,
        timers: Timers,
        alarms: Mutex<Vec<Option<Instant>>>,
    }

    impl Clock for TestClock {
        fn now(&self) -> Instant {
            Instant::from_nanos(self.now.load(Ordering::SeqCst))
        }
        fn timers(&self) -> &Timers {
            &self.timers
        }
        fn set_alarm(&self, at: Option<Instant>) {
            self.alarms.lock().unwrap().push(at);
        }
    }

    impl TestClock {
        fn insert(&self, o: &Owner<'_>) {
            // Derived from the whole owner (as the tree derives it from the
            // whole node): the hooks cast it back to the owner.
            let entry = (o as *const Owner<'_>).cast::<TimerEntry>();
            // SAFETY: every owner outlives its clock's use of it: each test
            // drains or removes its entries before the owners go.
            unsafe { self.timers.insert(entry, self) }
        }
        fn fire_at(&self, t: u64) -> Option<Instant> {
            self.now.store(t, Ordering::SeqCst);
            self.timers.fire(self)
        }
        fn last_alarm(&self) -> Option<Option<Instant>> {
            self.alarms.lock().unwrap().last().copied()
        }
    }

    #[test]
    fn fires_due_entries_earliest_first_and_arms_for_the_next() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let owners =
            [(1, 50), (2, 10), (3, 30), (4, 10), (5, 40)].map(|(id, at)| owner(&log, id, at));
        owners.iter().for_each(|o| clock.insert(o));
        assert_eq!(clock.timers.len(), 5);
        assert_eq!(clock.timers.next_deadline(), Some(Instant::from_nanos(10)));
        assert_eq!(clock.fire_at(30), Some(Instant::from_nanos(40)));
        let fired = log.borrow().clone();
        assert_eq!(fired.len(), 3);
        let mut first_two = [fired[0], fired[1]];
        first_two.sort();
        assert_eq!(first_two, [2, 4], "the two equal deadlines fire first");
        assert_eq!(fired[2], 3);
        assert_eq!(clock.last_alarm(), Some(Some(Instant::from_nanos(40))));
        assert_eq!(clock.timers.len(), 2);
        assert_eq!(clock.fire_at(1_000), None, "nothing left: alarm cleared");
        assert_eq!(log.borrow()[2..], [3, 5, 1]);
        assert!(clock.timers.is_empty());
        assert_eq!(clock.last_alarm(), Some(None));
    }

    #[test]
    fn insert_arms_only_for_an_earlier_deadline() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let (a, b, c) = (owner(&log, 1, 50), owner(&log, 2, 60), owner(&log, 3, 40));
        clock.insert(&a);
        clock.insert(&b);
        assert_eq!(
            *clock.alarms.lock().unwrap(),
            [Some(Instant::from_nanos(50))]
        );
        clock.insert(&c);
        assert_eq!(clock.last_alarm(), Some(Some(Instant::from_nanos(40))));
        // Removing never touches the clock: the alarm finds nothing due.
        // SAFETY: queued owners, alive.
        unsafe { clock.timers.remove(&c.entry) };
        assert_eq!(clock.alarms.lock().unwrap().len(), 2);
        assert_eq!(clock.fire_at(40), Some(Instant::from_nanos(50)));
        assert!(log.borrow().is_empty());
        clock.fire_at(u64::MAX);
    }

    #[test]
    fn removing_any_entry_keeps_the_rest_in_order() {
        const N: u32 = 200;
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        // Increasing order, then one pop: the pairing heap's worst shape.
        let owners: Vec<_> = (0..N).map(|i| owner(&log, i, 100 + u64::from(i))).collect();
        owners.iter().for_each(|o| clock.insert(o));
        clock.fire_at(100);
        assert_eq!(*log.borrow(), [0]);
        for o in owners.iter().filter(|o| o.id % 3 == 1) {
            assert!(clock.timers.contains(&o.entry));
            // SAFETY: alive; removing twice is a no-op.
            unsafe {
                clock.timers.remove(&o.entry);
                clock.timers.remove(&o.entry);
            }
            assert!(!clock.timers.contains(&o.entry));
        }
        clock.fire_at(u64::MAX);
        let want: Vec<u32> = (0..N).filter(|i| i % 3 != 1).collect();
        assert_eq!(*log.borrow(), want);
        assert!(clock.timers.is_empty());
    }

    #[test]
    fn an_owner_being_freed_is_skipped() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let mut dying = owner(&log, 1, 10);
        dying.claimable = false;
        let live = owner(&log, 2, 10);
        clock.insert(&dying);
        clock.insert(&live);
        clock.fire_at(10);
        assert_eq!(*log.borrow(), [2]);
        assert!(!clock.timers.contains(&dying.entry), "popped all the same");
    }

    #[test]
    fn far_future_deadlines_wait_for_the_end_of_time() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let end = owner(&log, 1, u64::MAX);
        clock.insert(&end);
        assert_eq!(clock.fire_at(u64::MAX - 1), Some(Instant::MAX));
        assert!(log.borrow().is_empty());
        clock.fire_at(u64::MAX);
        assert_eq!(*log.borrow(), [1]);
    }

    #[test]
    fn a_clock_that_jumps_back_fires_nothing_early() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let a = owner(&log, 1, 500);
        clock.insert(&a);
        clock.fire_at(499);
        clock.fire_at(10); // a misbehaving clock: harmless
        assert!(log.borrow().is_empty());
        clock.fire_at(500);
        assert_eq!(*log.borrow(), [1]);
    }
}
