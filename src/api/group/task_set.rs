//! `TaskSet`: the futures an in-task [`Group`](crate::Group) polls itself.
//!
//! Each task is **one allocation**: a [`Header`] followed by the future. The
//! header is also the task's waker, so a wake queues exactly that task and
//! the group polls only the tasks that were woken (not every task on every
//! wake-up). Nothing is spawned; the futures may borrow from the caller
//! (`'a`), because the set drops every future before it goes, and after
//! that a waker still held elsewhere keeps only the header's memory alive
//! (the future's type is never touched again).
//!
//! # The ready list
//!
//! A woken task is pushed on the set's ready list (the crate's intrusive
//! list, under the list's [`Locked`]) and the group's waker is taken and
//! woken. `poll_ready` registers the group's waker, then takes the whole
//! list at once (one batch) and polls each task of it; a task woken during
//! the batch lands on the list for the next poll, so one busy task cannot
//! starve the others, and the group yields to its executor between batches.
//!
//! # Invariants
//!
//! 1. **State.** A header's `state` is read and written under the ready
//!    list's lock. `IDLE`: in no list; a wake queues it. `QUEUED`: on the
//!    ready list or in the owner's current batch; wakes do nothing. `DONE`:
//!    its future is gone; wakes do nothing. Only `IDLE -> QUEUED` (a wake),
//!    `QUEUED -> IDLE` (the owner, right before polling it) and
//!    `* -> DONE` (the owner, before dropping the future) happen.
//! 2. **References.** `refs` counts: the owner's (while the task is in its
//!    slot), the ready list's (while `QUEUED`, carried into the batch), and
//!    one per `Waker`. The task's memory is freed by whoever drops the last
//!    one; the owner's is dropped only after the future is, so the future
//!    is always gone first.
//! 3. **Owner-only.** The future, the slots and a batch's links are touched
//!    only by the holder of `&mut TaskSet`. A batched item's `next` link is
//!    read before the item goes back to `IDLE` (after which a wake may link
//!    it again).
//! 4. **Closed.** Once the set is dropped its list is closed: wakes queue
//!    nothing, and the set released the list's references on its way out.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::future::Future;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context as TaskContext, Poll, RawWaker, RawWakerVTable, Waker};

use crate::api::group::ending::{Ended, poll_caught};
use crate::api::group::locked::Locked;
use crate::raw::arc::Arc;
use crate::raw::list::{Head, Linked, Links};
use crate::raw::sync::{AtomicUsize, Ordering, UnsafeCell, acquire_after_last_release};

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const DONE: u8 = 2;

/// The top bit of `refs`: set once the count saturates (wakers leaked in a
/// loop), after which the task is never freed rather than freed early. As
/// in `raw::arc`.
const IMMORTAL: usize = 1 << (usize::BITS - 1);

/// The type-independent front of every task allocation.
#[repr(C)]
struct Header {
    /// Ready-list links (invariants 1 and 3).
    links: Links<Header>,
    /// `IDLE`, `QUEUED` or `DONE` (invariant 1).
    state: UnsafeCell<u8>,
    /// Invariant 2.
    refs: AtomicUsize,
    /// The ready list this task queues itself on.
    ready: Arc<Locked<Ready>>,
    /// The task's slot in the owner's `slots`; fixed at insertion.
    index: usize,
    /// Frees the whole allocation (the future already dropped).
    dealloc: unsafe fn(NonNull<Header>),
}

/// One allocation per task: the header, then the future.
#[repr(C)]
struct Task<F> {
    header: Header,
    /// Owner-only (invariant 3); dropped in place by `drop_future`.
    future: UnsafeCell<ManuallyDrop<F>>,
}

// SAFETY: `links` is the `links` field of the header `p` points to,
// projected from `p` itself.
unsafe impl Linked for Header {
    unsafe fn links(p: *const Header) -> *const Links<Header> {
        // SAFETY: (caller) `p` points to a live header.
        unsafe { &raw const (*p).links }
    }
}

/// The shared half: the woken tasks and the group's waker.
struct Ready {
    list: Head<Header>,
    waker: Option<Waker>,
    closed: bool,
}

// SAFETY: the list holds pointers to task headers, which are shared through
// their reference counts and touched only under the `Locked` around
// `Ready` (invariants 1 and 2); the rest is `Send`.
unsafe impl Send for Ready {}

/// What the owner keeps per task, type-erased over the future: the task
/// and its own functions for its future's type.
struct Slot<O> {
    task: NonNull<Header>,
    poll: unsafe fn(NonNull<Header>, &mut TaskContext<'_>) -> Poll<Ended<O>>,
    drop_future: unsafe fn(NonNull<Header>),
    key: usize,
}

impl<F: Future> Task<F> {
    /// # Safety
    /// `h` is a `Task<F>` whose future is alive; the caller owns the set
    /// (invariant 3).
    unsafe fn poll(h: NonNull<Header>, cx: &mut TaskContext<'_>) -> Poll<Ended<F::Output>> {
        let task = h.cast::<Task<F>>();
        // SAFETY: (caller) the future is alive and only we touch it; it is
        // never moved out of its allocation (dropped in place), so pinning
        // it is sound.
        unsafe {
            (*task.as_ptr())
                .future
                .with_mut(|f| poll_caught(Pin::new_unchecked(&mut **f), cx))
        }
    }

    /// # Safety
    /// As for `poll`; the future is not used again.
    unsafe fn drop_future(h: NonNull<Header>) {
        let task = h.cast::<Task<F>>();
        // SAFETY: (caller) alive, ours, and dropped exactly once.
        unsafe {
            (*task.as_ptr())
                .future
                .with_mut(|f| ManuallyDrop::drop(&mut *f))
        }
    }

    /// # Safety
    /// `h` came from `Box::<Task<F>>::into_raw` in `insert`, its last
    /// reference is gone and its future was dropped (invariant 2).
    unsafe fn dealloc(h: NonNull<Header>) {
        // SAFETY: (caller). Dropping the box drops the header (its `Arc`)
        // and frees the memory; the future is `ManuallyDrop`, so no code of
        // `F` runs (its borrows may have ended by now).
        drop(unsafe { Box::from_raw(h.cast::<Task<F>>().as_ptr()) });
    }
}

/// Takes another reference (invariant 2).
fn acquire(h: &Header) {
    // Relaxed: a new reference is made from an existing one, which keeps
    // the task alive; nothing is published.
    let prev = h.refs.fetch_add(1, Ordering::Relaxed);
    if prev >= IMMORTAL / 2 {
        h.refs.fetch_or(IMMORTAL, Ordering::Relaxed);
    }
}

/// Drops one reference, freeing the task if it was the last.
///
/// # Safety
/// The caller owns the reference it gives up.
unsafe fn release(h: NonNull<Header>) {
    // SAFETY: (caller) our reference keeps the header alive until here.
    let refs = unsafe { &(*h.as_ptr()).refs };
    // Release: our uses of the task happen before the last owner frees it
    // (pairs with the acquire below, on the thread that frees).
    if refs.fetch_sub(1, Ordering::Release) != 1 {
        return;
    }
    acquire_after_last_release(refs);
    // SAFETY: the last reference is gone, so the owner's is too and the
    // future was dropped first (invariant 2).
    unsafe { ((*h.as_ptr()).dealloc)(h) }
}

/// Queues the task on its ready list (if `IDLE` and the list is open) and
/// wakes the group.
///
/// # Safety
/// The caller holds a reference on the task.
unsafe fn enqueue(h: NonNull<Header>) {
    // SAFETY: (caller) alive.
    let hdr = unsafe { h.as_ref() };
    let group = hdr.ready.with(|ready| {
        if ready.closed {
            return None; // invariant 4
        }
        let was_idle = hdr.state.with_mut(|s| {
            // SAFETY: the list's lock is held (invariant 1).
            let s = unsafe { &mut *s };
            let idle = *s == IDLE;
            if idle {
                *s = QUEUED;
            }
            idle
        });
        if !was_idle {
            return None;
        }
        acquire(hdr); // the list's reference (invariant 2)
        // SAFETY: lock held; the task is alive (we hold a reference, and
        // now the list does) and `IDLE` meant it was in no list.
        unsafe { ready.list.push_front(h.as_ptr()) };
        ready.waker.take()
    });
    // Outside the lock: a waker is user code.
    if let Some(w) = group {
        w.wake();
    }
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_waker, wake_waker, wake_by_ref_waker, drop_waker);

// The waker functions: `p` is a task header on which the waker holds a
// reference (or, for the borrowed waker of a poll, on which the owner does).

unsafe fn clone_waker(p: *const ()) -> RawWaker {
    // SAFETY: (waker contract) `p` is a live header.
    acquire(unsafe { &*p.cast::<Header>() });
    RawWaker::new(p, &WAKER_VTABLE)
}

unsafe fn wake_waker(p: *const ()) {
    // SAFETY: (waker contract) this waker's reference, used then given up.
    unsafe {
        wake_by_ref_waker(p);
        drop_waker(p);
    }
}

unsafe fn wake_by_ref_waker(p: *const ()) {
    // SAFETY: (waker contract) the waker holds a reference.
    unsafe { enqueue(NonNull::new_unchecked(p.cast_mut().cast())) }
}

unsafe fn drop_waker(p: *const ()) {
    // SAFETY: (waker contract) the waker's own reference, given up once.
    unsafe { release(NonNull::new_unchecked(p.cast_mut().cast())) }
}

/// A waker for the task at `h` that does not own a reference: valid while
/// the caller's reference is (clones take their own).
///
/// # Safety
/// The caller holds a reference on `h` for as long as the waker is used.
unsafe fn borrowed_waker(h: NonNull<Header>) -> ManuallyDrop<Waker> {
    // SAFETY: the vtable's functions keep the `RawWaker` contract (each
    // waker owns one reference, they are thread-safe); `ManuallyDrop` keeps
    // this one from giving up a reference it does not own.
    ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(h.as_ptr().cast(), &WAKER_VTABLE)) })
}

/// One reference on a task (invariant 2), given up when dropped: the list's,
/// carried by a batched task, or the owner's, in a slot's drop.
struct Reference(NonNull<Header>);

impl Drop for Reference {
    fn drop(&mut self) {
        // SAFETY: whoever made this value owned the reference it holds.
        unsafe { release(self.0) }
    }
}

/// The tasks taken from the ready list in one go (invariant 3). If the
/// owner unwinds mid-batch, the rest go back on the list, still `QUEUED`
/// and carrying their references, for the set's `Drop` to release.
struct Batch<'q> {
    ready: &'q Locked<Ready>,
    next: *const Header,
}

impl<'q> Batch<'q> {
    /// The chain `take_all` returned (most recently queued first), turned
    /// around so that tasks are polled in the order they were queued (new
    /// tasks in the order they were added).
    fn new(ready: &'q Locked<Ready>, taken: *const Header) -> Batch<'q> {
        let mut reversed: *const Header = core::ptr::null();
        let mut cur = taken;
        while !cur.is_null() {
            // SAFETY: taken items are alive (the list's references) and
            // their links are ours (invariant 3).
            unsafe {
                let links = &*Header::links(cur);
                let next = links.next();
                links.set_next(reversed);
                reversed = cur;
                cur = next;
            }
        }
        Batch {
            ready,
            next: reversed,
        }
    }

    fn pop(&mut self) -> Option<Reference> {
        let h = NonNull::new(self.next.cast_mut())?;
        // SAFETY: a batched item is alive (the list's reference) and its
        // links are ours until it goes back to `IDLE` (invariant 3).
        self.next = unsafe { (*h.as_ptr()).links.next() };
        Some(Reference(h))
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        while let Some(p) = self.pop() {
            let h = ManuallyDrop::new(p).0;
            // SAFETY: lock held; the item is alive, `QUEUED` and in no list.
            self.ready
                .with(|r| unsafe { r.list.push_front(h.as_ptr()) });
        }
    }
}

impl<O> Drop for Slot<O> {
    /// Marks the task `DONE`, drops its future, gives up the owner's
    /// reference (even if the future's drop panics).
    fn drop(&mut self) {
        let owner = Reference(self.task); // the owner's reference
        // SAFETY: the owner's reference keeps the header alive.
        let hdr = unsafe { self.task.as_ref() };
        hdr.ready.with(|_| {
            // SAFETY: the list's lock is held (invariant 1).
            hdr.state.with_mut(|s| unsafe { *s = DONE })
        });
        // SAFETY: the future is alive (this slot is its only owner) and not
        // used after this.
        unsafe { (self.drop_future)(self.task) };
        drop(owner);
    }
}

/// The set. `O` is every task's output.
pub(crate) struct TaskSet<'a, O> {
    ready: Arc<Locked<Ready>>,
    slots: Vec<Option<Slot<O>>>,
    vacant: Vec<usize>,
    len: usize,
    /// The set owns futures that may borrow for `'a` (drop check).
    _futures: PhantomData<Box<dyn Future<Output = O> + Send + 'a>>,
}

// SAFETY: every future in the set is `Send` (`insert` requires it), the
// outputs are `O: Send`, and the shared half is reached only through the
// reference-counted headers and the lock.
unsafe impl<O: Send> Send for TaskSet<'_, O> {}
// SAFETY: `&TaskSet` reads only `len`; the futures are touched through
// `&mut` alone.
unsafe impl<O: Send> Sync for TaskSet<'_, O> {}

impl<'a, O> TaskSet<'a, O> {
    pub(crate) fn new() -> TaskSet<'a, O> {
        TaskSet {
            ready: Arc::new(Locked::new(Ready {
                list: Head::new(),
                waker: None,
                closed: false,
            })),
            slots: Vec::new(),
            vacant: Vec::new(),
            len: 0,
            _futures: PhantomData,
        }
    }

    /// Tasks in the set (not yet finished).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `fut` under `key` (handed back with its output). It is polled
    /// for the first time by the next `poll_ready`.
    pub(crate) fn insert<F>(&mut self, key: usize, fut: F)
    where
        F: Future<Output = O> + Send + 'a,
    {
        let index = match self.vacant.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let task = Box::new(Task {
            header: Header {
                links: Links::new(),
                state: UnsafeCell::new(QUEUED),
                refs: AtomicUsize::new(2), // the owner's and the list's
                ready: self.ready.clone(),
                index,
                dealloc: Task::<F>::dealloc,
            },
            future: UnsafeCell::new(ManuallyDrop::new(fut)),
        });
        // SAFETY: `into_raw` is never null; the pointer covers the whole
        // task (the header is its first field, `repr(C)`).
        let h = unsafe { NonNull::new_unchecked(Box::into_raw(task)) }.cast::<Header>();
        // SAFETY: lock held; the task is alive, `QUEUED`, in no list.
        self.ready
            .with(|r| unsafe { r.list.push_front(h.as_ptr()) });
        self.slots[index] = Some(Slot {
            task: h,
            poll: Task::<F>::poll,
            drop_future: Task::<F>::drop_future,
            key,
        });
        self.len += 1;
    }

    /// Polls every task woken since the last call (and every new one),
    /// once, calling `on_end` with the key and ending of each that
    /// finished. `Ready` when the set is empty; otherwise `Pending`, with
    /// `cx`'s waker registered (or already woken, if a task was woken
    /// during this batch).
    pub(crate) fn poll_ready(
        &mut self,
        cx: &mut TaskContext<'_>,
        mut on_end: impl FnMut(usize, Ended<O>),
    ) -> Poll<()> {
        // Register, then take the batch: a wake after this finds either
        // the waker or, for a task already listed, our batch.
        let registered = self.ready.with(|r| {
            if !r.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return None;
            }
            // SAFETY: lock held.
            Some(unsafe { r.list.take_all() })
        });
        let first = match registered {
            Some(first) => first,
            None => {
                let new = cx.waker().clone(); // user code: outside the lock
                let (first, old) = self.ready.with(|r| {
                    // SAFETY: lock held.
                    let first = unsafe { r.list.take_all() };
                    (first, r.waker.replace(new))
                });
                drop(old); // user code too
                first
            }
        };
        let mut batch = Batch::new(&self.ready, first);
        while let Some(popped) = batch.pop() {
            let h = popped.0;
            // SAFETY: the batch's reference keeps the header alive.
            let hdr = unsafe { h.as_ref() };
            let live = self.ready.with(|_| {
                hdr.state.with_mut(|s| {
                    // SAFETY: lock held (invariant 1).
                    let s = unsafe { &mut *s };
                    let live = *s == QUEUED;
                    if live {
                        *s = IDLE;
                    }
                    live
                })
            });
            if !live {
                continue; // DONE: finished after it was woken
            }
            let index = hdr.index;
            // A task that is not `DONE` is in its slot (only a slot's drop
            // marks it `DONE`).
            let Some(slot) = self.slots.get(index).and_then(Option::as_ref) else {
                continue;
            };
            // SAFETY: the owner's and the batch's references keep the task
            // alive during the poll.
            let waker = unsafe { borrowed_waker(h) };
            let mut task_cx = TaskContext::from_waker(&waker);
            // SAFETY: the slot's functions are for this task's future, which is
            // alive; we own the set.
            let polled = unsafe { (slot.poll)(h, &mut task_cx) };
            if let Poll::Ready(ended) = polled {
                if let Some(slot) = self.slots[index].take() {
                    self.vacant.push(index);
                    self.len -= 1;
                    let key = slot.key;
                    drop(slot); // DONE, future dropped, owner's reference
                    on_end(key, ended);
                }
            }
        }
        drop(batch);
        if self.len == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl<O> Drop for TaskSet<'_, O> {
    fn drop(&mut self) {
        // Close first, so wakes from the futures' drops queue nothing.
        let (first, waker) = self.ready.with(|r| {
            r.closed = true;
            // SAFETY: lock held.
            let first = unsafe { r.list.take_all() };
            (first, r.waker.take())
        });
        // The list's references (no user code runs here).
        let mut rest = Batch {
            ready: &self.ready,
            next: first,
        };
        while let Some(popped) = rest.pop() {
            drop(popped);
        }
        drop(rest);
        drop(waker);
        // Every future, then the owner's references; a panicking future
        // drop still lets the others drop (the slots' own drop glue).
        self.slots.clear();
    }
}

#[cfg(all(test, not(cancel_tree_loom)))]
mod tests {
    use super::*;
    use core::future::poll_fn;
    use core::sync::atomic::{AtomicBool, AtomicUsize as Counter, Ordering::SeqCst};
    use std::sync::Mutex;

    /// A waker parked by a task, for the test to wake.
    type Stash = Mutex<Option<Waker>>;

    fn take(stash: &Stash) -> Waker {
        stash
            .lock()
            .unwrap()
            .take()
            .expect("the task parked a waker")
    }

    /// A waker that counts its wakes.
    fn counting_waker() -> (std::sync::Arc<Counter>, Waker) {
        struct W(std::sync::Arc<Counter>);
        impl std::task::Wake for W {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        let n = std::sync::Arc::new(Counter::new(0));
        (n.clone(), Waker::from(std::sync::Arc::new(W(n))))
    }

    fn drain<O>(set: &mut TaskSet<'_, O>, cx: &mut TaskContext<'_>) -> (Poll<()>, Vec<(usize, O)>) {
        let mut out = Vec::new();
        let p = set.poll_ready(cx, |k, e| match e {
            Ended::Returned(v) => out.push((k, v)),
            _ => unreachable!("no task panics or is dropped here"),
        });
        (p, out)
    }

    #[test]
    fn ready_tasks_finish_in_one_poll_in_the_order_added_and_may_borrow() {
        let data = [10, 20, 30];
        let mut set = TaskSet::new();
        for (i, d) in data.iter().enumerate() {
            set.insert(i, async move { *d + 1 });
        }
        assert_eq!(set.len(), 3);
        let mut cx = TaskContext::from_waker(Waker::noop());
        let (p, out) = drain(&mut set, &mut cx);
        assert!(p.is_ready());
        assert_eq!(out, [(0, 11), (1, 21), (2, 31)]);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn only_woken_tasks_are_polled_again() {
        let polls = [Counter::new(0), Counter::new(0)];
        let stashes = [Stash::default(), Stash::default()];
        let mut set = TaskSet::new();
        for i in 0..2 {
            let (polls, stashes) = (&polls, &stashes);
            set.insert(
                i,
                poll_fn(move |cx| {
                    if polls[i].fetch_add(1, SeqCst) == 2 {
                        return Poll::Ready(i);
                    }
                    *stashes[i].lock().unwrap() = Some(cx.waker().clone());
                    Poll::Pending
                }),
            );
        }
        let count = || [polls[0].load(SeqCst), polls[1].load(SeqCst)];
        let mut cx = TaskContext::from_waker(Waker::noop());
        assert!(drain(&mut set, &mut cx).0.is_pending());
        assert_eq!(count(), [1, 1]);
        assert!(drain(&mut set, &mut cx).0.is_pending());
        assert_eq!(count(), [1, 1], "nobody was woken");
        take(&stashes[1]).wake();
        assert!(drain(&mut set, &mut cx).0.is_pending());
        assert_eq!(count(), [1, 2]);
        // Two wakes before a poll queue the task once.
        let w = take(&stashes[1]);
        w.wake_by_ref();
        w.wake();
        take(&stashes[0]).wake();
        let (p, out) = drain(&mut set, &mut cx);
        assert!(p.is_pending());
        assert_eq!(count(), [2, 3]);
        assert_eq!(out, [(1, 1)]);
        drop(set); // task 0 is still pending: its future is dropped here
    }

    #[test]
    fn a_wake_wakes_the_group_once_per_registration() {
        let (wakes, group_waker) = counting_waker();
        let mut cx = TaskContext::from_waker(&group_waker);
        let stash = Stash::default();
        let mut set = TaskSet::new();
        set.insert(
            0,
            poll_fn(|cx| {
                *stash.lock().unwrap() = Some(cx.waker().clone());
                Poll::<()>::Pending
            }),
        );
        assert!(drain(&mut set, &mut cx).0.is_pending());
        let w = take(&stash);
        w.wake_by_ref();
        w.wake_by_ref();
        assert_eq!(
            wakes.load(SeqCst),
            1,
            "the second wake found the task queued"
        );
        assert!(drain(&mut set, &mut cx).0.is_pending());
        take(&stash).wake();
        assert_eq!(wakes.load(SeqCst), 2);
        drop(w);
    }

    #[test]
    fn a_task_that_wakes_itself_waits_for_the_next_batch() {
        let polls = Counter::new(0);
        let mut set = TaskSet::new();
        set.insert(
            0,
            poll_fn(|cx| {
                polls.fetch_add(1, SeqCst);
                cx.waker().wake_by_ref(); // always busy
                Poll::Pending
            }),
        );
        set.insert(1, async { 5 });
        let (wakes, group_waker) = counting_waker();
        let mut cx = TaskContext::from_waker(&group_waker);
        let (p, out) = drain(&mut set, &mut cx);
        assert!(p.is_pending());
        assert_eq!(polls.load(SeqCst), 1, "polled once per batch");
        assert_eq!(out, [(1, 5)]);
        assert_eq!(
            wakes.load(SeqCst),
            1,
            "the group was woken for the next batch"
        );
        let _ = drain(&mut set, &mut cx);
        assert_eq!(polls.load(SeqCst), 2);
    }

    #[test]
    fn wakers_outliving_the_set_are_inert_and_free_the_task() {
        struct Flag<'f>(&'f AtomicBool);
        impl Drop for Flag<'_> {
            fn drop(&mut self) {
                self.0.store(true, SeqCst);
            }
        }
        let dropped = AtomicBool::new(false);
        let stash = Stash::default();
        let waker;
        {
            let mut set = TaskSet::new();
            let flag = Flag(&dropped);
            let stash = &stash;
            set.insert(
                0,
                poll_fn(move |cx| {
                    let _keep = &flag;
                    *stash.lock().unwrap() = Some(cx.waker().clone());
                    Poll::<()>::Pending
                }),
            );
            let mut cx = TaskContext::from_waker(Waker::noop());
            assert!(drain(&mut set, &mut cx).0.is_pending());
            waker = take(stash);
            waker.wake_by_ref(); // queued when the set goes
        }
        assert!(dropped.load(SeqCst), "the set dropped the future");
        waker.wake_by_ref(); // closed: nothing happens
        let clone = waker.clone();
        drop(waker);
        clone.wake(); // the last reference frees the task (Miri checks)
    }

    #[test]
    fn slots_are_reused() {
        let mut set = TaskSet::new();
        let mut cx = TaskContext::from_waker(Waker::noop());
        for round in 0..3 {
            set.insert(round, async move { round });
            let (p, out) = drain(&mut set, &mut cx);
            assert!(p.is_ready());
            assert_eq!(out, [(round, round)]);
        }
        assert_eq!(set.slots.len(), 1);
    }

    #[cfg(feature = "std")]
    #[test]
    fn a_panicking_task_ends_alone() {
        let mut set = TaskSet::new();
        set.insert(0, async { panic!("boom") });
        set.insert(1, async { 1 });
        let mut cx = TaskContext::from_waker(Waker::noop());
        let mut panicked = None;
        let mut returned = None;
        let p = set.poll_ready(&mut cx, |k, e| match e {
            Ended::Panicked(payload) => panicked = Some((k, payload)),
            Ended::Returned(v) => returned = Some((k, v)),
            Ended::Dropped => unreachable!(),
        });
        assert!(p.is_ready());
        let (k, payload) = panicked.unwrap();
        assert_eq!(k, 0);
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        assert_eq!(returned, Some((1, 1)));
    }

    #[test]
    fn wakes_from_other_threads_reach_the_group() {
        let (wakes, group_waker) = counting_waker();
        let mut cx = TaskContext::from_waker(&group_waker);
        let mut set = TaskSet::new();
        let n = if cfg!(miri) { 4 } else { 64 };
        let (tx, rx) = std::sync::mpsc::channel::<Waker>();
        for i in 0..n {
            let mut tx = Some(tx.clone());
            set.insert(
                i,
                poll_fn(move |cx| match tx.take() {
                    // Hand the waker over (and the sender with it, so the
                    // waking thread's loop ends after the last one).
                    Some(tx) => {
                        tx.send(cx.waker().clone()).unwrap();
                        Poll::Pending
                    }
                    None => Poll::Ready(i),
                }),
            );
        }
        drop(tx);
        assert!(drain(&mut set, &mut cx).0.is_pending());
        let waker_thread = std::thread::spawn(move || {
            for w in rx {
                w.wake();
            }
        });
        waker_thread.join().unwrap();
        assert!(wakes.load(SeqCst) >= 1);
        let (p, out) = drain(&mut set, &mut cx);
        assert!(p.is_ready());
        assert_eq!(out.len(), n);
    }
}
