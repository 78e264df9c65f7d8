//! [`SpawnGroup`]: the task group whose tasks run on an executor, as
//! `'static` tasks handed over through [`Spawn`].
//!
//! The group and its tasks share one `Shared`: the group's context and
//! cancel handle, and the [`Ledger`] with the waiters under a [`Locked`].
//! A task's wrapper records how it ended (or that its executor dropped it)
//! in the ledger, cancels if it was the first failure, and only then frees
//! its slot and wakes the waiters.

use alloc::vec::Vec;
use core::fmt;
use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::Poll;

use crate::Cause;
use crate::api::cancel_handle::CancelHandle;
use crate::api::context::Context;
use crate::api::group::ending::{Ended, poll_caught};
use crate::api::group::ledger::Ledger;
use crate::api::group::locked::Locked;
use crate::api::group::spawn::Spawn;
use crate::api::group::waiters::{Ticket, Waiters, Woken};
use crate::raw::arc::Arc;

/// A task group whose tasks are spawned on an executor: Go's
/// `errgroup.WithContext` for `'static` futures, on any executor that
/// implements [`Spawn`] (tokio, smol's async-executor and the futures
/// crate's executors have implementations behind features).
///
/// The same model as the in-task [`Group`](crate::Group): the first task to
/// return `Err(e)` cancels the group's [context](SpawnGroup::context) with
/// `e` as its cause; [`wait`](SpawnGroup::wait) waits until every task has
/// finished, cancels the context and returns the first error;
/// [`collect`](SpawnGroup::collect) returns every result, in the order the
/// tasks were added. Tasks run in parallel on the executor whether or not
/// anyone waits. Every method takes `&self`, so the group can be shared
/// (in an `Arc`, say) with tasks that add more tasks, as Go's can.
///
/// ```
/// # #[cfg(feature = "tokio")] {
/// use cancel_tree::{Cause, Context, SpawnGroup};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let group = SpawnGroup::new(&Context::background(), tokio::runtime::Handle::current());
/// for n in 0..4_u64 {
///     let ctx = group.context().clone();
///     group
///         .add(async move {
///             if n == 2 {
///                 return Err(Cause::msg("task 2 failed"));
///             }
///             ctx.done().await; // until the failure cancels the group
///             Ok(n)
///         })
///         .await;
/// }
/// let err = group.wait().await.unwrap_err();
/// assert_eq!(err.to_string(), "task 2 failed");
/// # });
/// # }
/// ```
///
/// # Limit
///
/// [`set_limit(Some(n))`](SpawnGroup::set_limit): at most `n` tasks run at once;
/// [`add`](SpawnGroup::add) waits for a free slot and
/// [`try_add`](SpawnGroup::try_add) hands the task back. Changing the limit
/// never stops a running task: a lower limit admits nothing until fewer tasks
/// run, a higher one wakes waiting `add`s at once. `Some(0)` pauses admission
/// until someone raises it. As with Go's `SetLimit`, running tasks that wait for
/// a task not yet admitted (the group being full) wait forever: add the tasks
/// others depend on first.
///
/// # Drop
///
/// Dropping the group cancels its context and returns at once: it does not
/// wait for the tasks (it cannot block in async code), which keep running
/// on the executor until they finish; a task that honours its context
/// (`ctx.done()`, `ctx.run(..)`, ...) ends soon after. Their results are
/// then dropped.
///
/// # Panics
///
/// With `std`, a task's panic is caught in the task: the context is
/// cancelled with a [`TaskPanicked`](crate::TaskPanicked) cause, and the
/// next `wait`/`collect` resumes the panic once every task has finished. A
/// task that its executor drops unfinished cancels the context with
/// [`TaskDropped`](crate::TaskDropped), and `wait`/`collect` then panic
/// with that message (the task has no result to give).
pub struct SpawnGroup<S, T = (), E = Cause> {
    spawner: S,
    shared: Arc<Shared<T, E>>,
}

struct Shared<T, E> {
    ctx: Context,
    handle: CancelHandle,
    state: Locked<State<T, E>>,
}

struct State<T, E> {
    ledger: Ledger<T, E>,
    /// `add`s waiting for a free slot.
    room: Waiters,
    /// `wait`s and `collect`s waiting for every task to finish.
    idle: Waiters,
}

/// Which list a waiting future is in.
#[derive(Clone, Copy)]
enum List {
    Room,
    Idle,
}

impl<T, E> State<T, E> {
    fn list(&mut self, which: List) -> &mut Waiters {
        match which {
            List::Room => &mut self.room,
            List::Idle => &mut self.idle,
        }
    }
}

/// A waiting future's ticket; dropping it leaves the list.
struct Registration<'g, T, E> {
    shared: &'g Shared<T, E>,
    list: List,
    ticket: Option<Ticket>,
}

impl<T, E> Drop for Registration<'_, T, E> {
    fn drop(&mut self) {
        if self.ticket.is_some() {
            let old = self
                .shared
                .state
                .with(|s| s.list(self.list).cancel(&mut self.ticket));
            drop(old); // outside the lock
        }
    }
}

impl<T, E> State<T, E> {
    /// Frees a finished task's slot; returns whom to wake for it (after the
    /// lock is released).
    fn release(&mut self) -> (Option<Woken>, Option<Woken>) {
        let idle = self.ledger.release();
        let room = (!self.room.is_empty() && self.ledger.has_room()).then(|| self.room.take_all());
        (room, idle.then(|| self.idle.take_all()))
    }
}

fn wake((room, idle): (Option<Woken>, Option<Woken>)) {
    if let Some(w) = room {
        w.wake();
    }
    if let Some(w) = idle {
        w.wake();
    }
}

impl<T, E: Clone + Into<Cause>> Shared<T, E> {
    /// Records the end of task `key`, cancels if it is the group's first
    /// failure, then frees its slot and wakes whoever waits for that.
    fn finish(&self, key: usize, ended: Ended<Result<T, E>>) {
        /// Frees the slot even if the cancel below unwinds (a panicking
        /// `after_func`), so waiters never wait for a task that is gone.
        struct Release<'s, T, E>(&'s Shared<T, E>);
        impl<T, E> Drop for Release<'_, T, E> {
            fn drop(&mut self) {
                wake(self.0.state.with(State::release));
            }
        }
        // The common case, nothing to cancel: record and free under one
        // hold of the lock.
        let (cause, woken) = self.state.with(|s| match s.ledger.record(key, ended) {
            None => (None, Some(s.release())),
            cause => (cause, None),
        });
        if let Some(woken) = woken {
            wake(woken);
        }
        if let Some(cause) = cause {
            let _release = Release(self);
            // Before the slot is freed: a waiter that sees every task
            // finished also sees the context cancelled with the first error.
            self.handle.cancel_with(cause);
        }
    }
}

/// Owned by a spawned task; if the task is dropped before it finished (its
/// executor shut down), its drop records that.
struct Finish<T, E: Clone + Into<Cause>> {
    shared: Arc<Shared<T, E>>,
    key: usize,
    done: bool,
}

impl<T, E: Clone + Into<Cause>> Finish<T, E> {
    fn done(mut self, ended: Ended<Result<T, E>>) {
        self.done = true;
        self.shared.finish(self.key, ended);
    }
}

impl<T, E: Clone + Into<Cause>> Drop for Finish<T, E> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.finish(self.key, Ended::Dropped);
        }
    }
}

impl<S, T, E> SpawnGroup<S, T, E>
where
    S: Spawn,
    T: Send + 'static,
    E: Clone + Into<Cause> + Send + 'static,
{
    /// An empty group whose context is a new child of `parent`, spawning
    /// its tasks through `spawner`.
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// use cancel_tree::{Cause, Context, SpawnGroup};
    /// let ex = async_executor::Executor::new();
    /// let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), &ex);
    /// assert!(group.is_empty());
    /// # }
    /// ```
    pub fn new(parent: &Context, spawner: S) -> SpawnGroup<S, T, E> {
        let (ctx, handle) = parent.with_cancel();
        SpawnGroup {
            spawner,
            shared: Arc::new(Shared {
                ctx,
                handle,
                state: Locked::new(State {
                    ledger: Ledger::new(),
                    room: Waiters::new(),
                    idle: Waiters::new(),
                }),
            }),
        }
    }

    /// The group's context: cancelled by the first failure, by `wait`, or
    /// when the group is dropped (and when its parent is).
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Cause, Context, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), &ex);
    /// let ctx = group.context().clone();
    /// drop(group);
    /// assert!(ctx.is_cancelled());
    /// # }
    /// ```
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// The spawner the group was made with.
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Cause, Context, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), &ex);
    /// assert!(std::ptr::eq(*group.spawner(), &ex));
    /// # }
    /// ```
    pub fn spawner(&self) -> &S {
        &self.spawner
    }

    /// The limit on tasks running at once (`None`: no limit, the default).
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Cause, Context, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), &ex);
    /// group.set_limit(Some(8));
    /// assert_eq!(group.limit(), Some(8));
    /// # }
    /// ```
    pub fn limit(&self) -> Option<usize> {
        self.shared.state.with(|s| s.ledger.limit())
    }

    /// Sets the limit on tasks running at once (`None`: no limit). Running
    /// tasks are never stopped; raising the limit wakes waiting `add`s at
    /// once; `Some(0)` admits nothing until the limit is raised again.
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Cause, Context, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), &ex);
    /// group.set_limit(Some(0));
    /// assert!(group.try_add(async { Ok(()) }).is_err(), "paused");
    /// group.set_limit(None);
    /// assert!(group.try_add(async { Ok(()) }).is_ok());
    /// # }
    /// ```
    pub fn set_limit(&self, limit: Option<usize>) {
        let room = self.shared.state.with(|s| {
            let raised = s.ledger.set_limit(limit);
            raised.then(|| s.room.take_all())
        });
        if let Some(w) = room {
            w.wake();
        }
    }

    /// Tasks added and not yet finished.
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Cause, Context, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), &ex);
    /// assert!(group.try_add(async { Ok(()) }).is_ok());
    /// assert_eq!(group.len(), 1); // `ex` has not run it yet
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.shared.state.with(|s| s.ledger.running())
    }

    /// `true` if no task is unfinished.
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Cause, Context, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), &ex);
    /// assert!(group.is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spawns `task` if the limit allows another running task; otherwise
    /// hands it back in `Err` (Go's `TryGo`).
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Cause, Context, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), &ex);
    /// group.set_limit(Some(1));
    /// assert!(group.try_add(async { Ok(()) }).is_ok());
    /// assert!(group.try_add(async { Ok(()) }).is_err(), "full");
    /// # }
    /// ```
    pub fn try_add<F>(&self, task: F) -> Result<(), F>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let key = self.shared.state.with(|s| {
            if s.ledger.has_room() {
                Some(s.ledger.admit())
            } else {
                None
            }
        });
        match key {
            Some(key) => {
                self.start(key, task);
                Ok(())
            }
            None => Err(task),
        }
    }

    /// Spawns `task`, first waiting for a free slot if the group is at its
    /// limit (Go's `Go`, without blocking the thread).
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Cause, Context, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// # futures::executor::block_on(ex.run(async {
    /// let group = SpawnGroup::new(&Context::background(), &ex);
    /// group.set_limit(Some(2));
    /// for n in 0..6_u32 {
    ///     group.add(async move { Ok::<_, Cause>(n * n) }).await;
    /// }
    /// let squares: Vec<u32> = group.collect().await.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(squares, [0, 1, 4, 9, 16, 25]);
    /// # }));
    /// # }
    /// ```
    pub async fn add<F>(&self, task: F)
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut reg = Registration {
            shared: &self.shared,
            list: List::Room,
            ticket: None,
        };
        let key = poll_fn(|cx| {
            let waker = cx.waker().clone(); // user code: outside the lock
            let (key, old) = self.shared.state.with(|s| {
                if s.ledger.has_room() {
                    (Some(s.ledger.admit()), s.room.cancel(&mut reg.ticket))
                } else {
                    (None, s.room.register(&mut reg.ticket, waker))
                }
            });
            drop(old);
            match key {
                Some(key) => Poll::Ready(key),
                None => Poll::Pending,
            }
        })
        .await;
        drop(reg);
        self.start(key, task);
    }

    /// Waits until every task has finished, then cancels the group's
    /// context and returns the first error any task returned (ever, not
    /// only since the last wait), or resumes the first panic. Finished
    /// tasks' results are dropped. Tasks added while it waits are waited
    /// for too. The group can be used again afterwards; its context stays
    /// cancelled (as in Go).
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Context, Error, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// # futures::executor::block_on(ex.run(async {
    /// let group = SpawnGroup::<_, (), Error>::new(&Context::background(), &ex);
    /// assert_eq!(group.wait().await, Ok(()), "no tasks: at once");
    /// group.add(async { Err(Error::DeadlineExceeded) }).await;
    /// assert_eq!(group.wait().await, Err(Error::DeadlineExceeded));
    /// # }));
    /// # }
    /// ```
    pub async fn wait(&self) -> Result<(), E> {
        self.until_idle(|ledger| {
            ledger.discard_results();
            ledger.first_error()
        })
        .await
    }

    /// Like [`wait`](SpawnGroup::wait), but returns every task's result
    /// instead: one per task added since the last `wait` or `collect`, in
    /// the order they were added. If several `collect`s run at once, the
    /// first to see every task finished gets the results.
    ///
    /// ```
    /// # #[cfg(feature = "async-executor")] {
    /// # use cancel_tree::{Cause, Context, SpawnGroup};
    /// # let ex = async_executor::Executor::new();
    /// # futures::executor::block_on(ex.run(async {
    /// let group = SpawnGroup::new(&Context::background(), &ex);
    /// group.add(async { Ok::<_, Cause>("a") }).await;
    /// group.add(async { Err(Cause::msg("b failed")) }).await;
    /// let results = group.collect().await;
    /// assert_eq!(results[0].as_ref().ok(), Some(&"a"));
    /// assert!(results[1].is_err());
    /// # }));
    /// # }
    /// ```
    pub async fn collect(&self) -> Vec<Result<T, E>> {
        self.until_idle(|ledger| ledger.take_results()).await
    }

    /// Waits until no task runs, takes `take` from the ledger (under the
    /// lock, so no task starts in between), then cancels the context and
    /// resumes a panic.
    async fn until_idle<R>(&self, take: impl Fn(&mut Ledger<T, E>) -> R) -> R {
        let mut reg = Registration {
            shared: &self.shared,
            list: List::Idle,
            ticket: None,
        };
        let (out, abnormal) = poll_fn(|cx| {
            let waker = cx.waker().clone(); // user code: outside the lock
            let (done, old) = self.shared.state.with(|s| {
                if s.ledger.running() == 0 {
                    let out = take(&mut s.ledger);
                    let abnormal = s.ledger.take_abnormal();
                    (Some((out, abnormal)), s.idle.cancel(&mut reg.ticket))
                } else {
                    (None, s.idle.register(&mut reg.ticket, waker))
                }
            });
            drop(old);
            match done {
                Some(done) => Poll::Ready(done),
                None => Poll::Pending,
            }
        })
        .await;
        drop(reg);
        self.shared.handle.cancel();
        if let Some(abnormal) = abnormal {
            abnormal.raise();
        }
        out
    }

    /// Spawns the wrapper that runs `task` and reports its end.
    fn start<F>(&self, key: usize, task: F)
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let finish = Finish {
            shared: self.shared.clone(),
            key,
            done: false,
        };
        self.spawner.spawn_task(async move {
            let finish = finish;
            let ended = {
                let mut task = pin!(task);
                poll_fn(|cx| poll_caught(task.as_mut(), cx)).await
                // `task` is dropped here, before its end is reported.
            };
            finish.done(ended);
        });
    }
}

impl<S, T, E> Drop for SpawnGroup<S, T, E> {
    fn drop(&mut self) {
        self.shared.handle.cancel();
    }
}

impl<S, T, E> fmt::Debug for SpawnGroup<S, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (running, limit) = self
            .shared
            .state
            .with(|s| (s.ledger.running(), s.ledger.limit()));
        f.debug_struct("SpawnGroup")
            .field("context", &self.shared.ctx)
            .field("running", &running)
            .field("limit", &limit)
            .finish()
    }
}
