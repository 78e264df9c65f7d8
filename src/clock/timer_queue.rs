//! The timer queue: pending deadlines of one clock, in a hierarchical timing
//! wheel of intrusive slot lists.
//!
//! Each deadline node carries its own links ([`TimerEntry`]), so queueing
//! never allocates and the queue's memory is its fixed wheel plus its live
//! entries.
//!
//! # The wheel
//!
//! Time is the `u64` of nanoseconds of an [`Instant`]. The wheel has
//! [`LEVELS`] levels of [`SLOTS`] slots; slot `i` of level `l` holds the
//! entries whose deadline has `i` in bits `5l .. 5l + 5` and agrees with
//! the wheel's own time, `elapsed`, on every bit above those. So an entry
//! sits on the level of the highest bit where its deadline and `elapsed`
//! differ, and level 0's slots hold exact deadlines. Each level keeps a
//! bitmap of its non-empty slots.
//!
//! `elapsed` only moves forward, and never past a non-empty slot's start:
//! `fire` moves it to the start of the earliest non-empty slot (the lowest
//! level with a bit set, its lowest bit) and then *drains* that slot, one
//! entry per lock hold: an entry whose deadline is `elapsed` (or earlier) is
//! ended, any other moves down to the level of its new highest differing
//! bit. With nothing due, `fire` moves `elapsed` up to `now`.
//!
//! # Invariants
//!
//! 1. **One lock.** Every cell of the wheel and the links and place of
//!    every queued entry are touched only with the queue's lock held.
//! 2. **Queued entries are alive.** An entry's owner removes it under the
//!    lock before freeing it (the hooks' contract), so a link followed
//!    under the lock reaches a live entry.
//! 3. **Slots are in the future.** Except for the slot being drained and
//!    level 0's current slot (entries due now), every non-empty slot of
//!    level `l` has an index above `elapsed`'s index at `l`, and its
//!    entries' deadlines are after `elapsed`. So the earliest non-empty slot
//!    is the lowest bit of the lowest non-empty level, and its start is no
//!    later than the earliest deadline in the wheel.
//! 4. **Bitmaps are exact.** A slot's bit is set if and only if its list is
//!    not empty, and a level's bit in the summary if and only if one of its
//!    slots' is.
//!
//! # Cost
//!
//! | operation | work under the lock |
//! |---|---|
//! | insert (arm) | O(1): one level computation, one push, one bit |
//! | remove (cancel or drop before it fires) | O(1): one unlink, one bit |
//! | fire, per lock hold | O(`LEVELS`) bitmap tests, then one entry: ended or moved down a level |
//!
//! No lock hold depends on how many deadlines are pending: an entry moves
//! down at most `LEVELS - 1` times before it ends, each move in its own
//! lock hold, so the number of holds grows with the entries ended but the
//! longest one does not. The price: a clock's alarm is asked for the start
//! of the earliest slot, which for a far deadline comes before the deadline
//! itself; `fire` then only moves entries closer, and asks again. And the
//! wheel is a fixed `LEVELS * SLOTS` list heads per clock (1.7 KiB with
//! 32-bit pointers, 3.3 KiB with 64-bit ones). docs/design.md says why a
//! wheel, and why these sizes.
//!
//! The queue is guarded by one lock ([`Lock`]: a spin lock with `std`, a
//! critical section without), so a clock may call [`Timers::fire`] from its
//! alarm interrupt. The queue knows nothing of what owns an entry: each
//! entry carries [`EntryHooks`], and `fire` takes a due entry out, lets its
//! owner claim it under the lock (the tree takes a reference on the deadline
//! node; that may wait, with the lock held, for the one RMW a shard-array
//! collapse owner does right after its decrement), releases the lock, then
//! lets the owner expire. So no owner code that may take other locks or run
//! user callbacks runs under the queue's lock.

use core::fmt;

use crate::Instant;
use crate::clock::contract::Clock;
use crate::raw::list::{Head, Linked, Links};
use crate::raw::lock::Lock;
use crate::raw::sync::UnsafeCell;

/// Bits of a deadline per level.
const BITS: u32 = 5;
/// Slots per level (one bit each in the level's `u32` bitmap).
const SLOTS: usize = 1 << BITS;
/// Levels: enough for every bit of a `u64` (the top one uses four).
const LEVELS: usize = 64_usize.div_ceil(BITS as usize);
/// `place` of an entry in no slot.
const NOWHERE: u16 = u16::MAX;
/// `drain` when no slot is being drained.
const NOT_DRAINING: u8 = u8::MAX;

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
    /// Called with the queue's lock held, for an entry `fire` just took out:
    /// takes whatever keeps the owner alive once the lock is released.
    /// `false`: the owner is being freed (its free path takes the queue's
    /// lock to remove the entry before freeing, so it waits for this call),
    /// and the entry is skipped.
    pub(crate) claim: unsafe fn(*const TimerEntry) -> bool,
    /// Called without the lock after a successful `claim`: ends the owner
    /// and gives back what `claim` took.
    pub(crate) expire: unsafe fn(*const TimerEntry),
}

/// One pending deadline: its slot links, inside the owner's allocation (so
/// queueing never allocates). Links and place are guarded by the queue's
/// lock (invariant 1).
pub(crate) struct TimerEntry {
    links: Links<TimerEntry>,
    /// The deadline. Immutable.
    pub(crate) at: Instant,
    hooks: &'static EntryHooks,
    /// `level * SLOTS + slot`, or `NOWHERE`.
    place: UnsafeCell<u16>,
}

// SAFETY: `links` projects from `p` itself, so the result keeps the
// provenance of the whole entry (the hooks step back from it to the owner).
unsafe impl Linked for TimerEntry {
    #[inline(always)]
    unsafe fn links(p: *const TimerEntry) -> *const Links<TimerEntry> {
        // SAFETY: (caller) `p` is a live entry.
        unsafe { &raw const (*p).links }
    }
}

impl TimerEntry {
    pub(crate) fn new(at: Instant, hooks: &'static EntryHooks) -> TimerEntry {
        TimerEntry {
            links: Links::new(),
            at,
            hooks,
            place: UnsafeCell::new(NOWHERE),
        }
    }

    /// # Safety
    /// Queue lock held; `e` alive.
    unsafe fn place(e: *const TimerEntry) -> u16 {
        // SAFETY: (caller) invariant 1.
        unsafe { (*e).place.with(|p| *p) }
    }

    /// # Safety
    /// Queue lock held; `e` alive.
    unsafe fn set_place(e: *const TimerEntry, v: u16) {
        // SAFETY: (caller) invariant 1.
        unsafe { (*e).place.with_mut(|p| *p = v) }
    }
}

/// One level of the wheel.
struct Level {
    /// Bit `i` set: slot `i` is not empty (invariant 4).
    occupied: UnsafeCell<u32>,
    slots: [Head<TimerEntry>; SLOTS],
}

impl Level {
    crate::raw::sync::const_unless_loom! {
        fn new() -> Level {
            Level {
                occupied: UnsafeCell::new(0),
                slots: new_slots(),
            }
        }
    }

    /// # Safety
    /// Queue lock held.
    unsafe fn occupied(&self) -> u32 {
        // SAFETY: (caller) invariant 1.
        self.occupied.with(|o| unsafe { *o })
    }

    /// # Safety
    /// Queue lock held.
    unsafe fn set_occupied(&self, v: u32) {
        // SAFETY: (caller) invariant 1.
        self.occupied.with_mut(|o| unsafe { *o = v })
    }
}

#[cfg(not(cancel_tree_loom))]
const fn new_slots() -> [Head<TimerEntry>; SLOTS] {
    [const { Head::new() }; SLOTS]
}
#[cfg(cancel_tree_loom)]
fn new_slots() -> [Head<TimerEntry>; SLOTS] {
    core::array::from_fn(|_| Head::new())
}

#[cfg(not(cancel_tree_loom))]
const fn new_levels() -> [Level; LEVELS] {
    [const { Level::new() }; LEVELS]
}
#[cfg(cancel_tree_loom)]
fn new_levels() -> [Level; LEVELS] {
    core::array::from_fn(|_| Level::new())
}

/// `t`'s slot index at `level`. On 32-bit cores a 64-bit shift by a
/// variable amount is a library call (ARMv6-M), so there each level shifts
/// by a constant instead.
#[inline(always)]
fn index(t: u64, level: usize) -> usize {
    if cfg!(target_pointer_width = "64") {
        return ((t >> (BITS as usize * level)) as usize) & (SLOTS - 1);
    }
    macro_rules! by_level {
        ($($l:literal)*) => {
            match level {
                $($l => t >> (BITS as usize * $l),)*
                _ => t >> (BITS as usize * (LEVELS - 1)),
            }
        };
    }
    (by_level!(0 1 2 3 4 5 6 7 8 9 10 11) as usize) & (SLOTS - 1)
}

/// The level where an entry due at `at` sits when the wheel is at `elapsed`
/// (`at > elapsed`): that of their highest differing bit.
#[inline(always)]
fn level_for(at: u64, elapsed: u64) -> usize {
    // `| 1` changes nothing (they differ) but tells the compiler the level
    // is below LEVELS.
    let high = 63 - ((at ^ elapsed) | 1).leading_zeros();
    high as usize / BITS as usize
}

/// Per level, the mask that clears the bits below it: `at & START[l]` is
/// the start of `at`'s slot at level `l`.
const START: [u64; LEVELS] = {
    let mut m = [0; LEVELS];
    let mut l = 0;
    while l < LEVELS {
        m[l] = !((1u64 << (BITS as usize * l)) - 1);
        l += 1;
    }
    m
};

/// The queue of pending deadlines of one [`Clock`].
///
/// The crate keeps the queue; a clock only stores one and hands it out from
/// [`Clock::timers`], and calls [`fire`](Timers::fire) when its alarm goes
/// off. See [`Clock`] for the whole contract.
pub struct Timers {
    lock: Lock,
    levels: [Level; LEVELS],
    /// Bit `l` set: level `l` has a non-empty slot (invariant 4).
    nonempty: UnsafeCell<u16>,
    /// The wheel's time in nanoseconds (invariant 3).
    elapsed: UnsafeCell<u64>,
    /// The level whose current slot is being drained, or `NOT_DRAINING`;
    /// set only while that slot is not empty (`unlink` ends it).
    drain: UnsafeCell<u8>,
    len: UnsafeCell<usize>,
    /// The alarm last requested from the clock (`None`: none pending).
    armed: UnsafeCell<Option<Instant>>,
}

// SAFETY: every cell is only touched under `lock` (invariant 1).
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

/// What the next lock hold of `fire` does.
enum Step {
    /// End or move down this entry, taken from a due slot.
    Take(*const TimerEntry),
    /// Nothing is due before this time (`None`: nothing pending).
    Idle(Option<Instant>),
}

impl Timers {
    crate::raw::sync::const_unless_loom! {
        /// An empty queue.
        pub fn new() -> Timers {
            Timers {
                lock: Lock::new(),
                levels: new_levels(),
                nonempty: UnsafeCell::new(0),
                elapsed: UnsafeCell::new(0),
                drain: UnsafeCell::new(NOT_DRAINING),
                len: UnsafeCell::new(0),
                armed: UnsafeCell::new(None),
            }
        }
    }

    /// Pending deadlines.
    pub fn len(&self) -> usize {
        let _g = self.lock.lock();
        // SAFETY: lock held.
        unsafe { self.count() }
    }

    /// `true` if no deadline is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the queue next needs [`fire`](Timers::fire): no later than the
    /// earliest pending deadline, and exactly it when that deadline is near
    /// (`None`: nothing is pending). For a far deadline it is the earlier
    /// time at which the queue moves that deadline closer; firing then ends
    /// nothing early. This is what `fire` passes to [`Clock::set_alarm`].
    pub fn next_deadline(&self) -> Option<Instant> {
        let _g = self.lock.lock();
        // SAFETY: lock held.
        unsafe { self.next_event() }
    }

    /// # Safety
    /// Lock held (for all the private accessors below).
    unsafe fn count(&self) -> usize {
        // SAFETY: (caller) invariant 1.
        self.len.with(|l| unsafe { *l })
    }

    unsafe fn add_count(&self, d: isize) {
        // SAFETY: (caller) invariant 1.
        self.len
            .with_mut(|l| unsafe { *l = (*l).wrapping_add_signed(d) })
    }

    unsafe fn elapsed(&self) -> u64 {
        // SAFETY: (caller) invariant 1.
        self.elapsed.with(|e| unsafe { *e })
    }

    unsafe fn set_elapsed(&self, t: u64) {
        // SAFETY: (caller) invariant 1.
        self.elapsed.with_mut(|e| unsafe { *e = t })
    }

    unsafe fn drain(&self) -> u8 {
        // SAFETY: (caller) invariant 1.
        self.drain.with(|d| unsafe { *d })
    }

    unsafe fn set_drain(&self, level: u8) {
        // SAFETY: (caller) invariant 1.
        self.drain.with_mut(|d| unsafe { *d = level })
    }

    unsafe fn set_armed(&self, at: Option<Instant>) {
        // SAFETY: (caller) invariant 1.
        self.armed.with_mut(|a| unsafe { *a = at })
    }

    /// Links `e` into the slot its deadline has at the wheel's time, and
    /// returns when that slot is due.
    ///
    /// # Safety
    /// Lock held; `e` alive and in no slot.
    unsafe fn link(&self, e: *const TimerEntry) -> u64 {
        // SAFETY: (caller).
        unsafe {
            let at = (*e).at.as_nanos();
            let elapsed = self.elapsed();
            let (level, slot, due) = if at <= elapsed {
                // Due already (a clock that went back, or a deadline that
                // came due while it moved down): level 0's current slot,
                // which `fire` drains first.
                (0, index(elapsed, 0), elapsed)
            } else {
                let level = level_for(at, elapsed);
                (level, index(at, level), at & START[level])
            };
            let lv = &self.levels[level];
            lv.slots[slot].push_front(e);
            lv.set_occupied(lv.occupied() | (1 << slot));
            self.nonempty.with_mut(|n| *n |= 1 << level);
            TimerEntry::set_place(e, (level * SLOTS + slot) as u16);
            due
        }
    }

    /// Unlinks a queued `e` from its slot (invariant 4 kept).
    ///
    /// # Safety
    /// Lock held; `e` alive and in a slot.
    unsafe fn unlink(&self, e: *const TimerEntry) {
        // SAFETY: (caller).
        unsafe {
            let place = usize::from(TimerEntry::place(e));
            let (lv, slot) = (&self.levels[place / SLOTS], place & (SLOTS - 1));
            lv.slots[slot].unlink(e);
            if lv.slots[slot].is_empty() {
                let occupied = lv.occupied() & !(1 << slot);
                lv.set_occupied(occupied);
                if occupied == 0 {
                    self.nonempty.with_mut(|n| *n &= !(1 << (place / SLOTS)));
                }
                if usize::from(self.drain()) == place / SLOTS
                    && slot == index(self.elapsed(), place / SLOTS)
                {
                    self.set_drain(NOT_DRAINING);
                }
            }
            TimerEntry::set_place(e, NOWHERE);
        }
    }

    /// The earliest non-empty slot (invariant 3): its level and its start
    /// (the wheel's time for level 0's current slot).
    ///
    /// # Safety
    /// Lock held.
    unsafe fn earliest(&self) -> Option<(usize, u64)> {
        // SAFETY: (caller).
        unsafe {
            let levels = self.nonempty.with(|n| *n);
            if levels == 0 {
                return None;
            }
            let level = levels.trailing_zeros() as usize;
            let lv = &self.levels[level];
            let slot = lv.occupied().trailing_zeros() as usize;
            // Every entry of the slot has the slot's bits from the level
            // up (invariant 3), so any of them gives its start.
            let first = lv.slots[slot & (SLOTS - 1)].first();
            let start = (*first).at.as_nanos() & START[level];
            Some((level, start.max(self.elapsed())))
        }
    }

    /// When the queue next needs `fire`: now if a slot is being drained,
    /// else the start of the earliest slot.
    ///
    /// # Safety
    /// Lock held.
    unsafe fn next_event(&self) -> Option<Instant> {
        // SAFETY: (caller).
        unsafe {
            if self.drain() != NOT_DRAINING {
                return Some(Instant::from_nanos(self.elapsed()));
            }
            self.earliest().map(|(_, at)| Instant::from_nanos(at))
        }
    }

    /// Decides the next lock hold of `fire`: takes an entry out of the slot
    /// being drained (or level 0's current one), first moving the wheel's
    /// time to the earliest slot if that is due at `now`; or says nothing
    /// is due (and moves the wheel's time up to `now`).
    ///
    /// # Safety
    /// Lock held.
    unsafe fn step(&self, now: u64) -> Step {
        // SAFETY: (caller).
        unsafe {
            loop {
                let elapsed = self.elapsed();
                let drain = self.drain();
                let level = if drain != NOT_DRAINING {
                    usize::from(drain)
                } else {
                    match self.earliest() {
                        Some((0, at)) if at == elapsed => 0,
                        Some((level, at)) if at <= now => {
                            // Move to that slot, then drain it (level 0's:
                            // it is now the current slot).
                            self.set_elapsed(at);
                            if level != 0 {
                                self.set_drain(level as u8);
                            }
                            continue;
                        }
                        next => {
                            // Every slot starts after `now`, so moving the
                            // wheel to `now` keeps invariant 3.
                            if now > elapsed {
                                self.set_elapsed(now);
                            }
                            return Step::Idle(next.map(|(_, at)| Instant::from_nanos(at)));
                        }
                    }
                };
                // Not empty: the level-0 arm found it occupied, and a drained
                // slot that empties ends its drain (`unlink`).
                let e = self.levels[level].slots[index(elapsed, level)].first();
                debug_assert!(!e.is_null());
                self.unlink(e);
                return Step::Take(e);
            }
        }
    }

    /// Ends every pending deadline that is due at `clock.now()`, earliest
    /// first (equal deadlines in no set order: a merged context below two
    /// of them takes the cause of whichever ends first), then asks the
    /// clock for an alarm when the queue next needs it ([`Clock::set_alarm`];
    /// see [`next_deadline`](Timers::next_deadline)) and returns that time.
    ///
    /// Call it from the clock's alarm (a thread, a task, an interrupt
    /// handler). Spurious or late calls are harmless. The contexts are
    /// cancelled on the calling thread: their wakers and `after_func`
    /// closures run here, with no lock of the queue held. Each lock hold
    /// ends or moves one entry, so an interrupt waits at most that long
    /// however many deadlines are pending.
    pub fn fire(&self, clock: &dyn Clock) -> Option<Instant> {
        let now = clock.now().as_nanos();
        loop {
            let guard = self.lock.lock();
            // SAFETY: lock held.
            let entry = match unsafe { self.step(now) } {
                Step::Take(e) => e,
                Step::Idle(next) => {
                    // SAFETY: lock held.
                    unsafe { self.set_armed(next) };
                    clock.set_alarm(next);
                    drop(guard);
                    return next;
                }
            };
            // SAFETY: lock held; `entry` was queued, so alive (invariant 2).
            let due = unsafe { (*entry).at.as_nanos() <= self.elapsed() };
            if !due {
                // Not yet: down to the level of its next differing bit.
                // SAFETY: lock held; just unlinked.
                unsafe { self.link(entry) };
                drop(guard);
                continue;
            }
            // SAFETY: lock held.
            unsafe { self.add_count(-1) };
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

    /// Records and requests the alarm for when the queue next needs it.
    fn rearm(&self, clock: &dyn Clock) {
        let guard = self.lock.lock();
        // SAFETY: lock held.
        unsafe {
            let next = self.next_event();
            self.set_armed(next);
            clock.set_alarm(next);
        }
        drop(guard);
    }

    /// Queues `node`, which is due after `now` (a reading of `clock`); if
    /// it is the new earliest, arms the clock's alarm.
    ///
    /// # Safety
    /// `node` is alive, not queued, and stays alive until removed or fired.
    pub(crate) unsafe fn insert(&self, node: *const TimerEntry, clock: &dyn Clock, now: Instant) {
        let guard = self.lock.lock();
        // SAFETY: lock held; `node` alive and unqueued (caller).
        unsafe {
            // An empty wheel may jump to `now` (nothing to pass over), so a
            // clock left idle does not wake for slots long past.
            // (No entry means no drain either: `unlink` ends it.)
            if self.count() == 0 && now.as_nanos() > self.elapsed() {
                self.set_elapsed(now.as_nanos());
            }
            let due = Instant::from_nanos(self.link(node));
            self.add_count(1);
            let armed = self.armed.with(|a| *a);
            if armed.is_none_or(|a| due < a) {
                self.set_armed(Some(due));
                clock.set_alarm(Some(due));
            }
        }
        drop(guard);
    }

    /// `true` if `entry` is queued (for tests).
    #[cfg(all(test, not(cancel_tree_loom)))]
    fn contains(&self, entry: &TimerEntry) -> bool {
        let _g = self.lock.lock();
        // SAFETY: lock held.
        unsafe { TimerEntry::place(entry) != NOWHERE }
    }

    /// Removes `node` if it is queued; `true` if it was. Never touches the
    /// clock: an alarm for a removed deadline just finds nothing due.
    ///
    /// # Safety
    /// `node` is alive.
    pub(crate) unsafe fn remove(&self, node: *const TimerEntry) -> bool {
        let guard = self.lock.lock();
        // SAFETY: lock held; `node` alive (caller).
        let queued = unsafe { TimerEntry::place(node) != NOWHERE };
        if queued {
            // SAFETY: as above; queued, so in the wheel.
            unsafe {
                self.unlink(node);
                self.add_count(-1);
            }
        }
        drop(guard);
        queued
    }
}

#[cfg(all(test, not(cancel_tree_loom)))]
mod tests {
    use core::cell::RefCell;
    use std::boxed::Box;
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
            unsafe { self.timers.insert(entry, self, self.now()) }
        }
        fn fire_at(&self, t: u64) -> Option<Instant> {
            self.now.store(t, Ordering::SeqCst);
            self.timers.fire(self)
        }
        fn last_alarm(&self) -> Option<Option<Instant>> {
            self.alarms.lock().unwrap().last().copied()
        }
        /// Fires at each requested alarm until `until`, as a clock would;
        /// returns how many fires that took.
        fn follow_alarms(&self, until: u64) -> usize {
            let mut fires = 0;
            while let Some(at) = self.timers.next_deadline() {
                if at.as_nanos() > until {
                    break;
                }
                assert!(
                    at.as_nanos() >= self.now.load(Ordering::SeqCst),
                    "an alarm in the past"
                );
                self.fire_at(at.as_nanos());
                fires += 1;
                assert!(fires < 10_000, "alarms make no progress");
            }
            fires
        }
    }

    #[test]
    fn fires_due_entries_earliest_first_and_arms_no_later_than_the_next() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let owners =
            [(1, 50), (2, 10), (3, 30), (4, 10), (5, 40)].map(|(id, at)| owner(&log, id, at));
        owners.iter().for_each(|o| clock.insert(o));
        assert_eq!(clock.timers.len(), 5);
        let first = clock.timers.next_deadline().unwrap();
        assert!(first <= Instant::from_nanos(10), "{first:?}");
        let next = clock.fire_at(30).unwrap();
        assert!(next > Instant::from_nanos(30) && next <= Instant::from_nanos(40));
        assert_eq!(clock.last_alarm(), Some(Some(next)));
        let fired = log.borrow().clone();
        assert_eq!(fired.len(), 3);
        let mut first_two = [fired[0], fired[1]];
        first_two.sort();
        assert_eq!(first_two, [2, 4], "the two equal deadlines fire first");
        assert_eq!(fired[2], 3);
        assert_eq!(clock.timers.len(), 2);
        // Following the alarms reaches each deadline exactly.
        clock.follow_alarms(39);
        assert_eq!(log.borrow().len(), 3, "nothing early");
        assert_eq!(clock.timers.next_deadline(), Some(Instant::from_nanos(40)));
        clock.follow_alarms(u64::MAX);
        assert_eq!(log.borrow()[3..], [5, 1]);
        assert_eq!(
            clock.now.load(Ordering::SeqCst),
            50,
            "the last fire was at 50"
        );
        assert!(clock.timers.is_empty());
        assert_eq!(
            clock.last_alarm(),
            Some(None),
            "nothing left: alarm cleared"
        );
    }

    #[test]
    fn insert_arms_only_for_an_earlier_slot() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let (a, b, c) = (owner(&log, 1, 50), owner(&log, 2, 60), owner(&log, 3, 40));
        clock.insert(&a);
        let first = clock.last_alarm().unwrap().unwrap();
        assert!(first <= Instant::from_nanos(50));
        clock.insert(&b); // same slot as `a`: no new alarm
        assert_eq!(clock.alarms.lock().unwrap().len(), 1);
        clock.timers.fire(&clock); // at 0: nothing due, the wheel stays
        clock.fire_at(35); // the wheel moves to 35: 40 is now exact
        clock.insert(&c);
        assert_eq!(clock.last_alarm(), Some(Some(Instant::from_nanos(40))));
        let alarms = clock.alarms.lock().unwrap().len();
        // Removing never touches the clock: the alarm finds nothing due.
        // SAFETY: queued owners, alive.
        unsafe { clock.timers.remove(&c.entry) };
        assert_eq!(clock.alarms.lock().unwrap().len(), alarms);
        let next = clock.fire_at(40).unwrap();
        assert!(next <= Instant::from_nanos(50));
        assert!(log.borrow().is_empty());
        clock.fire_at(u64::MAX);
        assert_eq!(*log.borrow(), [1, 2]);
    }

    #[test]
    fn removing_any_entry_keeps_the_rest_in_order() {
        const N: u32 = 200;
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
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
    fn removing_entries_of_the_slot_being_drained() {
        // Entries of one far slot; a removal from inside `expire` (as a
        // cancel walk would do) while `fire` drains that slot.
        #[repr(C)]
        struct Remover<'a> {
            entry: TimerEntry,
            victims: Vec<*const TimerEntry>,
            timers: &'a Timers,
            log: &'a RefCell<Vec<u64>>,
        }
        static HOOKS: EntryHooks = EntryHooks {
            claim: |_| true,
            expire: |e| {
                // SAFETY: every entry is the first field of a live Remover.
                let r = unsafe { &*e.cast::<Remover<'_>>() };
                r.log.borrow_mut().push(r.entry.at.as_nanos());
                for &v in &r.victims {
                    // SAFETY: the victims are alive.
                    unsafe { r.timers.remove(v) };
                }
            },
        };
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let base = 5u64 << 20; // all in one level-4 slot
        // Raw pointers to the whole owners (the hooks step back to them).
        let rs: Vec<*mut Remover<'_>> = (0..8)
            .map(|i| {
                Box::into_raw(Box::new(Remover {
                    entry: TimerEntry::new(Instant::from_nanos(base + i), &HOOKS),
                    victims: Vec::new(),
                    timers: &clock.timers,
                    log: &log,
                }))
            })
            .collect();
        let victims = rs[1..]
            .iter()
            .step_by(2)
            .map(|&r| r.cast_const().cast())
            .collect();
        let first = rs[0];
        // SAFETY: a live box, not yet shared with the queue.
        unsafe { (*first).victims = victims };
        for &r in &rs {
            // SAFETY: the boxes outlive the queue's use of them.
            unsafe {
                clock
                    .timers
                    .insert(r.cast_const().cast(), &clock, clock.now())
            };
        }
        clock.fire_at(base + 100);
        assert_eq!(*log.borrow(), [base, base + 2, base + 4, base + 6]);
        assert!(clock.timers.is_empty());
        for r in rs {
            // SAFETY: from `Box::into_raw`, no longer queued.
            drop(unsafe { Box::from_raw(r) });
        }
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
        assert!(
            !clock.timers.contains(&dying.entry),
            "taken out all the same"
        );
        assert!(clock.timers.is_empty());
    }

    #[test]
    fn far_future_deadlines_wait_for_the_end_of_time() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let end = owner(&log, 1, u64::MAX);
        let near_end = owner(&log, 2, u64::MAX - 1);
        let top = owner(&log, 3, 1 << 63);
        [&end, &near_end, &top].iter().for_each(|o| clock.insert(o));
        let fires = clock.follow_alarms(u64::MAX - 2);
        assert_eq!(*log.borrow(), [3]);
        assert!(
            fires <= 2 * LEVELS,
            "{fires} fires to cross the whole range"
        );
        assert!(clock.timers.next_deadline().unwrap() <= Instant::from_nanos(u64::MAX - 1));
        clock.fire_at(u64::MAX - 1);
        assert_eq!(*log.borrow(), [3, 2]);
        clock.follow_alarms(u64::MAX);
        assert_eq!(*log.borrow(), [3, 2, 1]);
        assert!(clock.timers.is_empty());
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

    #[test]
    fn a_clock_that_jumps_far_ahead_fires_everything_due_in_one_call() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let owners: Vec<_> = (0..64u32)
            .map(|i| owner(&log, i, 1u64 << i.min(63)))
            .collect();
        owners.iter().rev().for_each(|o| clock.insert(o));
        assert_eq!(clock.fire_at(u64::MAX), None);
        assert_eq!(*log.borrow(), (0..64).collect::<Vec<_>>(), "earliest first");
    }

    #[test]
    fn an_idle_wheel_jumps_to_now_on_insert() {
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        clock.now.store(1 << 40, Ordering::SeqCst);
        let a = owner(&log, 1, (1 << 40) + 5);
        clock.insert(&a);
        assert_eq!(
            clock.timers.next_deadline(),
            Some(Instant::from_nanos((1 << 40) + 5)),
            "exact: not the start of a slot passed long ago"
        );
        clock.fire_at(u64::MAX);
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// `fired`, the `(id, deadline)` pairs one `fire` call ended in order,
    /// came earliest first; entries queued already overdue (`overdue`) end
    /// at once, in no particular order.
    fn assert_earliest_first(seed: u64, fired: &[(usize, u64)], overdue: &[usize]) {
        let in_time: Vec<u64> = fired
            .iter()
            .filter(|f| !overdue.contains(&f.0))
            .map(|f| f.1)
            .collect();
        assert!(
            in_time.windows(2).all(|w| w[0] <= w[1]),
            "seed {seed}: not earliest first: {fired:?}"
        );
    }

    /// The wheel against a reference (a list of pending deadlines): random
    /// inserts (equal, near, far, at the end of time), removals, fires at
    /// random times (forward, far ahead, back), and fires at the alarms.
    /// After every step: the same entries fired, earliest first, none early,
    /// none late; the same entries pending; the alarm no later than the
    /// earliest pending deadline.
    #[test]
    fn agrees_with_a_reference_model() {
        #[repr(C)]
        struct Entry {
            entry: TimerEntry,
            id: usize,
            log: *const RefCell<Vec<(usize, u64)>>,
        }
        static HOOKS: EntryHooks = EntryHooks {
            claim: |_| true,
            expire: |e| {
                // SAFETY: every entry here is the first field of a live Entry.
                let e = unsafe { &*e.cast::<Entry>() };
                // SAFETY: the log outlives the entries.
                unsafe { (*e.log).borrow_mut().push((e.id, e.entry.at.as_nanos())) };
            },
        };
        // Fewer under Miri, which checks every access of the same paths.
        let (seeds, steps): (u64, usize) = if cfg!(miri) { (2, 150) } else { (40, 400) };
        for seed in 1..=seeds {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let log = RefCell::new(Vec::new());
            let clock = TestClock::default();
            // Raw pointers to the whole entries (the hooks step back to them).
            let mut entries: Vec<*const Entry> = Vec::new();
            // Reference: pending (id, at); the queue's time (latest now).
            let mut pending: Vec<(usize, u64)> = Vec::new();
            let mut time = 0u64;
            let mut overdue = Vec::new();
            for _ in 0..steps {
                let mut fired_now = true;
                match rng.below(10) {
                    0..=3 => {
                        let now = clock.now.load(Ordering::SeqCst);
                        // After `now`, as `arm` queues (or, the first
                        // case, already due: a clock that went back).
                        let after = |d: u64| now.saturating_add(1).saturating_add(d);
                        let at = match rng.below(7) {
                            0 => now.min(time).saturating_sub(rng.below(3)),
                            1 => after(rng.below(40)),
                            2 => after(rng.below(1 << 20)),
                            3 => after(rng.next() >> rng.below(64)),
                            4 => u64::MAX - rng.below(3),
                            5 => pending.first().map_or(after(0), |p| p.1.max(after(0))),
                            _ => after(rng.below(5000)),
                        };
                        if pending.is_empty() {
                            time = time.max(now); // an empty wheel jumps to `now`
                        }
                        let id = entries.len();
                        let e: *const Entry = Box::into_raw(Box::new(Entry {
                            entry: TimerEntry::new(Instant::from_nanos(at), &HOOKS),
                            id,
                            log: &log,
                        }));
                        // SAFETY: boxed, alive until the end of the seed.
                        unsafe { clock.timers.insert(e.cast(), &clock, clock.now()) };
                        entries.push(e);
                        if at <= time {
                            overdue.push(id); // due at once, in no order
                        }
                        pending.push((id, at));
                        fired_now = false;
                    }
                    4 | 5 if !pending.is_empty() => {
                        let k = rng.below(pending.len() as u64) as usize;
                        let (id, _) = pending.swap_remove(k);
                        // SAFETY: alive.
                        unsafe { clock.timers.remove(entries[id].cast()) };
                        fired_now = false;
                    }
                    6 if rng.below(2) == 0 => {
                        // Time passes; the alarm has not gone off yet.
                        let now = clock.now.load(Ordering::SeqCst);
                        let t = now.saturating_add(rng.next() >> rng.below(64));
                        clock.now.store(t, Ordering::SeqCst);
                        fired_now = false;
                    }
                    6 => {
                        // Fire at the alarm, as the clock would.
                        if let Some(at) = clock.timers.next_deadline() {
                            let now = clock.now.load(Ordering::SeqCst).max(at.as_nanos());
                            clock.fire_at(now);
                            time = time.max(now);
                        }
                    }
                    _ => {
                        let now = clock.now.load(Ordering::SeqCst);
                        let t = match rng.below(5) {
                            0 => now.saturating_sub(rng.below(1000)), // back
                            1 => now.saturating_add(rng.next() >> rng.below(64)),
                            2 => u64::MAX,
                            _ => now.saturating_add(rng.below(3000)),
                        };
                        clock.fire_at(t);
                        time = time.max(t);
                    }
                }
                // What fired is exactly what the reference says was due.
                let fired: Vec<(usize, u64)> = log.borrow_mut().drain(..).collect();
                assert_earliest_first(seed, &fired, &overdue);
                for &(id, at) in &fired {
                    assert!(at <= time, "seed {seed}: {id} fired early");
                    let k = pending.iter().position(|p| p.0 == id);
                    assert!(
                        k.is_some(),
                        "seed {seed}: {id} fired twice or after removal"
                    );
                    pending.swap_remove(k.unwrap());
                }
                if fired_now {
                    assert!(
                        pending.iter().all(|p| p.1 > time),
                        "seed {seed}: a due entry was left"
                    );
                }
                assert_eq!(clock.timers.len(), pending.len(), "seed {seed}");
                if let Some(min) = pending.iter().map(|p| p.1).min() {
                    let next = clock.timers.next_deadline().expect("pending");
                    assert!(
                        next.as_nanos() <= min.max(time),
                        "seed {seed}: alarm {next:?} after a deadline {min} (time {time})"
                    );
                } else {
                    assert_eq!(clock.timers.next_deadline(), None, "seed {seed}");
                }
            }
            clock.fire_at(u64::MAX);
            let left = log.borrow().len();
            assert_eq!(left, pending.len(), "seed {seed}: the end of time ends all");
            assert!(clock.timers.is_empty());
            for e in entries {
                // SAFETY: from `Box::into_raw`, no longer queued.
                drop(unsafe { Box::from_raw(e.cast_mut()) });
            }
        }
    }

    #[test]
    fn an_entry_moves_down_at_most_once_per_level() {
        // Every fire call ends or moves one entry per lock hold; an entry
        // due at the end of time, alone, is moved at most LEVELS - 1 times
        // and needs at most LEVELS alarms.
        let log = RefCell::new(Vec::new());
        let clock = TestClock::default();
        let a = owner(&log, 1, u64::MAX - 12345);
        clock.insert(&a);
        let fires = clock.follow_alarms(u64::MAX);
        assert_eq!(*log.borrow(), [1]);
        assert!(fires <= LEVELS, "{fires} alarms");
    }

    /// The reference-model test above never inserts or removes while a
    /// slot is being drained (its `expire` only logs). Here `expire` itself
    /// inserts and removes at random, as a cancel walk or a callback
    /// deriving a new timeout would, so changes land between the lock holds
    /// of one `fire` call: inserts into the slot being drained's level and
    /// below, removals that empty the slot being drained, overdue inserts
    /// (a stale `now`). Same checks as the reference model.
    #[test]
    fn agrees_with_a_reference_model_with_changes_during_fire() {
        use core::cell::Cell;

        #[repr(C)]
        struct Entry {
            entry: TimerEntry,
            id: usize,
            world: *const World<'static>,
        }
        struct World<'c> {
            clock: &'c TestClock,
            rng: RefCell<Rng>,
            entries: RefCell<Vec<*const Entry>>,
            pending: RefCell<Vec<(usize, u64)>>,
            overdue: RefCell<Vec<usize>>,
            /// Fired in the current `fire` call, in order: (id, at).
            fired: RefCell<Vec<(usize, u64)>>,
            /// The latest `now` any fire used.
            time: Cell<u64>,
            seed: u64,
        }
        impl World<'_> {
            fn insert(&self) {
                let now = self.clock.now.load(Ordering::SeqCst);
                let mut rng = self.rng.borrow_mut();
                let after = |d: u64| now.saturating_add(1).saturating_add(d);
                let at = match rng.below(6) {
                    0 => now.saturating_sub(rng.below(100)).max(1), // stale reading
                    1 => after(rng.below(40)),
                    2 => after(rng.below(1 << 12)),
                    3 => after(rng.next() >> rng.below(64)),
                    4 => u64::MAX - rng.below(3),
                    _ => after(rng.below(300)),
                };
                drop(rng);
                let id = self.entries.borrow().len();
                let e: *const Entry = Box::into_raw(Box::new(Entry {
                    entry: TimerEntry::new(Instant::from_nanos(at), &HOOKS),
                    id,
                    world: (self as *const World<'_>).cast(),
                }));
                self.entries.borrow_mut().push(e);
                // An empty wheel jumps to the clock's `now`, so an entry
                // read stale may be due at once, in no order.
                if at <= self.time.get().max(now) {
                    self.overdue.borrow_mut().push(id);
                }
                self.pending.borrow_mut().push((id, at));
                let arm_now = Instant::from_nanos(now.min(at - 1));
                // SAFETY: boxed, alive until the end of the seed.
                unsafe { self.clock.timers.insert(e.cast(), self.clock, arm_now) };
            }
            fn remove(&self) {
                let mut pending = self.pending.borrow_mut();
                if pending.is_empty() {
                    return;
                }
                let k = self.rng.borrow_mut().below(pending.len() as u64) as usize;
                let (id, _) = pending.swap_remove(k);
                drop(pending);
                let e = self.entries.borrow()[id];
                // SAFETY: alive.
                unsafe { self.clock.timers.remove(e.cast()) };
            }
            fn fire_at(&self, t: u64) {
                self.time.set(self.time.get().max(t));
                self.clock.fire_at(t);
                let fired: Vec<(usize, u64)> = self.fired.borrow_mut().drain(..).collect();
                let seed = self.seed;
                assert_earliest_first(seed, &fired, &self.overdue.borrow());
                let time = self.time.get();
                assert!(
                    self.pending.borrow().iter().all(|p| p.1 > time),
                    "seed {seed}: a due entry was left: {:?} at {time}",
                    self.pending.borrow()
                );
            }
            fn check(&self) {
                let seed = self.seed;
                let pending = self.pending.borrow();
                assert_eq!(self.clock.timers.len(), pending.len(), "seed {seed}");
                let time = self.time.get();
                if let Some(min) = pending.iter().map(|p| p.1).min() {
                    let next = self.clock.timers.next_deadline().expect("pending");
                    // An alarm no later than the clock's time is due at
                    // once (a stale deadline in the current slot).
                    let now = self.clock.now.load(Ordering::SeqCst);
                    assert!(
                        next.as_nanos() <= min.max(time).max(now),
                        "seed {seed}: alarm {next:?} after a deadline {min} (time {time})"
                    );
                } else {
                    assert_eq!(self.clock.timers.next_deadline(), None, "seed {seed}");
                }
            }
        }
        static HOOKS: EntryHooks = EntryHooks {
            claim: |_| true,
            expire: |e| {
                // SAFETY: every entry here is the first field of a live
                // Entry, whose world outlives it.
                let (id, at, w) = unsafe {
                    let e = &*e.cast::<Entry>();
                    (e.id, e.entry.at.as_nanos(), &*e.world)
                };
                let seed = w.seed;
                assert!(at <= w.time.get(), "seed {seed}: {id} fired early");
                let mut pending = w.pending.borrow_mut();
                let k = pending.iter().position(|p| p.0 == id);
                assert!(
                    k.is_some(),
                    "seed {seed}: {id} fired twice or after removal"
                );
                pending.swap_remove(k.unwrap());
                drop(pending);
                w.fired.borrow_mut().push((id, at));
                // Changes between the lock holds of this `fire`.
                let changes = w.rng.borrow_mut().below(3);
                for _ in 0..changes {
                    let insert = w.rng.borrow_mut().below(2) == 0;
                    if insert {
                        w.insert();
                    } else {
                        w.remove();
                    }
                }
            },
        };
        // Fewer under Miri, which checks every access of the same paths.
        let (seeds, steps): (u64, usize) = if cfg!(miri) { (2, 150) } else { (60, 400) };
        for seed in 1..=seeds {
            let clock = TestClock::default();
            let world = World {
                clock: &clock,
                rng: RefCell::new(Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)),
                entries: RefCell::new(Vec::new()),
                pending: RefCell::new(Vec::new()),
                overdue: RefCell::new(Vec::new()),
                fired: RefCell::new(Vec::new()),
                time: Cell::new(0),
                seed,
            };
            for _ in 0..steps {
                let r = world.rng.borrow_mut().below(10);
                match r {
                    0..=3 => world.insert(),
                    4 => world.remove(),
                    5 => {
                        let now = clock.now.load(Ordering::SeqCst);
                        let d = world.rng.borrow_mut().below(2000);
                        clock.now.store(now.saturating_add(d), Ordering::SeqCst);
                    }
                    6 | 7 => {
                        if let Some(at) = clock.timers.next_deadline() {
                            let now = clock.now.load(Ordering::SeqCst).max(at.as_nanos());
                            world.fire_at(now);
                        }
                    }
                    _ => {
                        let now = clock.now.load(Ordering::SeqCst);
                        let mut rng = world.rng.borrow_mut();
                        let t = match rng.below(4) {
                            0 => now.saturating_add(rng.next() >> rng.below(64)),
                            1 => now.saturating_add(1 << rng.below(40)),
                            _ => now.saturating_add(rng.below(3000)),
                        };
                        drop(rng);
                        world.fire_at(t);
                    }
                }
                world.check();
            }
            world.fire_at(u64::MAX);
            assert!(clock.timers.is_empty());
            for e in world.entries.take() {
                // SAFETY: from `Box::into_raw`, no longer queued.
                drop(unsafe { Box::from_raw(e.cast_mut()) });
            }
        }
    }
}
