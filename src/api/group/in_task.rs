//! [`Group`]: the in-task task group. Its tasks are futures it polls
//! itself, inside whichever task awaits it: nothing is spawned, so tasks may
//! borrow from the caller and it runs on any executor, without `std`.

use alloc::vec::Vec;
use core::fmt;
use core::future::{Future, poll_fn};
use core::pin::Pin;
use core::task::{Context as TaskContext, Poll, ready};

use crate::Cause;
use crate::api::cancel_handle::CancelHandle;
use crate::api::context::Context;
use crate::api::group::ledger::Ledger;
use crate::api::group::task_set::TaskSet;

/// A task group that runs its tasks inside the task awaiting it: Go's
/// `errgroup.WithContext`, as a future.
///
/// * [`Group::new`] derives the group's [context](Group::context) from a
///   parent; hand clones of it to the tasks.
/// * [`add`](Group::add) / [`try_add`](Group::try_add) add a task: a
///   future returning `Result<T, E>`. The first task to return `Err(e)`
///   cancels the group's context with `e` as its [cause](Context::cause)
///   (so siblings can stop and a handler can downcast it).
/// * [`wait`](Group::wait) (or `.await` on the group itself) runs the
///   tasks until **every** task has finished, cancels the context (as Go's
///   `Wait` does) and returns the first error; [`collect`](Group::collect)
///   does the same and returns every task's result instead, in the order
///   the tasks were added.
///
/// Tasks run only while the group is polled: during `wait`, `collect`,
/// `.await` on the group, and `add` while it waits for a free slot. They
/// are polled only when woken (each task is its own waker), and each task
/// costs one allocation: the task itself.
///
/// ```
/// use cancel_tree::{Cause, Context, Group};
///
/// # futures::executor::block_on(async {
/// let urls = ["a", "b", "bad", "c"];
/// let parent = Context::background();
/// let mut group = Group::new(&parent);
/// for url in &urls {
///     let ctx = group.context().clone();
///     // Tasks may borrow (`url` points into `urls`).
///     group
///         .add(async move {
///             if *url == "bad" {
///                 return Err(Cause::msg(format!("fetching {url} failed")));
///             }
///             ctx.done().await; // the failure cancels the siblings
///             Ok(())
///         })
///         .await;
/// }
/// let err = group.wait().await.unwrap_err();
/// assert_eq!(err.to_string(), "fetching bad failed");
/// assert!(group.context().is_cancelled());
/// # });
/// ```
///
/// # Errors
///
/// `E` is any `Clone` error that converts into a [`Cause`]: your own error
/// type, or [`Cause`] itself (the default) for errors that are not `Clone`
/// (`io::Error`, ...): `?` converts any error into a `Cause`, and
/// [`Cause::downcast_ref`] gets it back. The first error stays the group's
/// for its whole life: a later `wait` returns it again (as Go's does).
///
/// # Limit
///
/// [`set_limit(Some(n))`](Group::set_limit) lets at most `n` tasks run at once;
/// `add` then waits (running the group's tasks meanwhile) until one finishes,
/// and `try_add` hands the task back. The limit may change while tasks run:
/// tasks already running keep running (lowering it admits no new task until
/// fewer than the new limit run), and raising it admits at once. As with Go's
/// `SetLimit`, running tasks that wait for a task not yet admitted (the group
/// being full) wait forever: add the tasks others depend on first.
///
/// # Drop
///
/// Dropping the group cancels its context, then drops every unfinished
/// task in place. It does not wait for them (nothing can block in async
/// code): a task stops at the `.await` it was suspended at, and its
/// destructors run right there.
///
/// # Panics
///
/// With `std`, a panicking task is caught: the group's context is cancelled
/// with a [`TaskPanicked`](crate::TaskPanicked) cause, the other tasks run
/// to their end as usual, and then `wait`/`collect` resume the panic (the
/// first one, if several tasks panic). A panic nobody waits for is dropped
/// with the group (the panic hook has reported it when it happened). Without
/// `std` panics cannot be caught: one unwinds out of the group's poll, and
/// the group's drop cancels the context.
pub struct Group<'a, T = (), E = Cause> {
    ctx: Context,
    handle: CancelHandle,
    tasks: TaskSet<'a, Result<T, E>>,
    ledger: Ledger<T, E>,
}

// The group is never pinned structurally: tasks live in their own
// allocations, results and errors are moved freely.
impl<T, E> Unpin for Group<'_, T, E> {}

impl<'a, T, E> Group<'a, T, E>
where
    E: Clone + Into<Cause>,
{
    /// An empty group whose context is a new child of `parent`.
    ///
    /// ```
    /// use cancel_tree::{Cause, Context, Group};
    /// let (parent, stop) = Context::background().with_cancel();
    /// let group = Group::<(), Cause>::new(&parent);
    /// stop.cancel();
    /// assert!(group.context().is_cancelled(), "a child of the parent");
    /// ```
    pub fn new(parent: &Context) -> Group<'a, T, E> {
        let (ctx, handle) = parent.with_cancel();
        Group {
            ctx,
            handle,
            tasks: TaskSet::new(),
            ledger: Ledger::new(),
        }
    }

    /// The group's context: cancelled by the first failure, by `wait`, or
    /// when the group is dropped (and when its parent is).
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, Group};
    /// let group = Group::<(), Cause>::new(&Context::background());
    /// let for_a_task = group.context().clone();
    /// drop(group);
    /// assert!(for_a_task.is_cancelled());
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The limit on tasks running at once (`None`: no limit, the default).
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, Group};
    /// let mut group = Group::<(), Cause>::new(&Context::background());
    /// assert_eq!(group.limit(), None);
    /// group.set_limit(Some(4));
    /// assert_eq!(group.limit(), Some(4));
    /// ```
    pub fn limit(&self) -> Option<usize> {
        self.ledger.limit()
    }

    /// Sets the limit on tasks running at once (`None`: no limit). Running
    /// tasks are never stopped: after lowering it, no task is admitted
    /// until fewer than the new limit run. `Some(0)` admits nothing:
    /// `try_add` hands every task back (and `add` panics, see there).
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, Group};
    /// let mut group = Group::<(), Cause>::new(&Context::background());
    /// group.set_limit(Some(1));
    /// assert!(group.try_add(async { Ok(()) }).is_ok());
    /// assert!(group.try_add(async { Ok(()) }).is_err(), "full");
    /// group.set_limit(None);
    /// assert!(group.try_add(async { Ok(()) }).is_ok());
    /// ```
    pub fn set_limit(&mut self, limit: Option<usize>) {
        self.ledger.set_limit(limit);
    }

    /// Tasks added and not yet finished.
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, Group};
    /// # futures::executor::block_on(async {
    /// let mut group = Group::<(), Cause>::new(&Context::background());
    /// group.add(async { Ok(()) }).await;
    /// assert_eq!(group.len(), 1); // it runs when the group is awaited
    /// group.wait().await.unwrap();
    /// assert_eq!(group.len(), 0);
    /// # });
    /// ```
    pub fn len(&self) -> usize {
        self.ledger.running()
    }

    /// `true` if no task is unfinished.
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, Group};
    /// let group = Group::<(), Cause>::new(&Context::background());
    /// assert!(group.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `task` if the limit allows another running task; otherwise
    /// hands it back in `Err` (Go's `TryGo`). It first runs when the group
    /// is next polled.
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, Group};
    /// let mut group = Group::<u8, Cause>::new(&Context::background());
    /// group.set_limit(Some(1));
    /// assert!(group.try_add(async { Ok(1) }).is_ok());
    /// let Err(second) = group.try_add(async { Ok(2) }) else { panic!("full") };
    /// group.set_limit(Some(2));
    /// assert!(group.try_add(second).is_ok(), "handed back, added later");
    /// ```
    pub fn try_add<F>(&mut self, task: F) -> Result<(), F>
    where
        F: Future<Output = Result<T, E>> + Send + 'a,
    {
        if !self.ledger.has_room() {
            return Err(task);
        }
        let key = self.ledger.admit();
        self.tasks.insert(key, task);
        Ok(())
    }

    /// Adds `task`, first waiting for a free slot if the group is at its
    /// limit (Go's `Go`); while it waits it runs the group's tasks, so
    /// slots do free up. Without a limit it is ready at once.
    ///
    /// # Panics
    ///
    /// If the limit is `Some(0)`: no slot could ever free up, and nothing
    /// else can raise the limit while `add` holds the group, so waiting
    /// would never end.
    ///
    /// ```
    /// use cancel_tree::{Cause, Context, Group};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// # futures::executor::block_on(async {
    /// let running = AtomicUsize::new(0);
    /// let mut group = Group::<(), Cause>::new(&Context::background());
    /// group.set_limit(Some(2));
    /// for _ in 0..10 {
    ///     let running = &running;
    ///     group
    ///         .add(async move {
    ///             assert!(running.fetch_add(1, Ordering::SeqCst) < 2);
    ///             futures_lite::future::yield_now().await; // let the others run
    ///             running.fetch_sub(1, Ordering::SeqCst);
    ///             Ok(())
    ///         })
    ///         .await;
    /// }
    /// group.wait().await.unwrap();
    /// # });
    /// ```
    pub async fn add<F>(&mut self, task: F)
    where
        F: Future<Output = Result<T, E>> + Send + 'a,
    {
        let mut task = Some(task);
        poll_fn(|cx| self.poll_add(cx, &mut task)).await;
    }

    fn poll_add<F>(&mut self, cx: &mut TaskContext<'_>, task: &mut Option<F>) -> Poll<()>
    where
        F: Future<Output = Result<T, E>> + Send + 'a,
    {
        assert!(
            self.ledger.limit() != Some(0),
            "Group::add with a limit of 0 could never admit the task"
        );
        if !self.ledger.has_room() {
            // Run the tasks; any that finishes frees a slot.
            let _ = self.drive(cx);
        }
        if !self.ledger.has_room() {
            return Poll::Pending; // `drive` registered the waker
        }
        if let Some(task) = task.take() {
            let key = self.ledger.admit();
            self.tasks.insert(key, task);
        }
        Poll::Ready(())
    }

    /// Runs the tasks until every one has finished, then cancels the
    /// group's context and returns the first error any task returned (ever,
    /// not only in this round), or resumes the first panic. The results are
    /// dropped as they come. The group can be used again afterwards; its
    /// context stays cancelled (as in Go).
    ///
    /// ```
    /// # use cancel_tree::{Context, Error, Group};
    /// # futures::executor::block_on(async {
    /// let mut group = Group::new(&Context::background());
    /// group.add(async { Err(Error::DeadlineExceeded) }).await;
    /// group.add(async { Ok(()) }).await;
    /// assert_eq!(group.wait().await, Err(Error::DeadlineExceeded));
    /// assert_eq!(group.context().cause().unwrap(), Error::DeadlineExceeded);
    /// # });
    /// ```
    pub async fn wait(&mut self) -> Result<(), E> {
        poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// Like [`wait`](Group::wait), but returns every task's result instead:
    /// one per task added since the last `wait` or `collect`, in the order
    /// they were added.
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, Group};
    /// # futures::executor::block_on(async {
    /// let mut group = Group::new(&Context::background());
    /// for n in [3_u32, 0, 5] {
    ///     group
    ///         .add(async move { 60_u32.checked_div(n).ok_or_else(|| Cause::msg("divide by zero")) })
    ///         .await;
    /// }
    /// let results = group.collect().await;
    /// assert_eq!(results[0].as_ref().ok(), Some(&20));
    /// assert_eq!(results[1].as_ref().unwrap_err().to_string(), "divide by zero");
    /// assert_eq!(results[2].as_ref().ok(), Some(&12));
    /// # });
    /// ```
    pub async fn collect(&mut self) -> Vec<Result<T, E>> {
        poll_fn(|cx| self.poll_collect(cx)).await
    }

    /// Polls the woken tasks; `Ready` once none is left.
    fn drive(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Group {
            tasks,
            ledger,
            handle,
            ..
        } = self;
        tasks.poll_ready(cx, |key, ended| {
            let cause = ledger.record(key, ended);
            ledger.release();
            if let Some(cause) = cause {
                handle.cancel_with(cause);
            }
        })
    }

    fn poll_wait(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), E>> {
        ready!(self.drive(cx));
        self.ledger.discard_results();
        self.finish_round();
        Poll::Ready(self.ledger.first_error())
    }

    fn poll_collect(&mut self, cx: &mut TaskContext<'_>) -> Poll<Vec<Result<T, E>>> {
        ready!(self.drive(cx));
        let results = self.ledger.take_results();
        self.finish_round();
        Poll::Ready(results)
    }

    /// Every task has finished: cancel (as Go's `Wait` does), then resume
    /// the first panic if there was one.
    fn finish_round(&mut self) {
        self.handle.cancel();
        if let Some(abnormal) = self.ledger.take_abnormal() {
            abnormal.raise();
        }
    }
}

/// Awaiting the group itself is [`wait`](Group::wait).
///
/// ```
/// # use cancel_tree::{Context, Error, Group};
/// # futures::executor::block_on(async {
/// let mut group = Group::<(), Error>::new(&Context::background());
/// group.add(async { Ok(()) }).await;
/// assert_eq!(group.await, Ok(()));
/// # });
/// ```
impl<T, E> Future for Group<'_, T, E>
where
    E: Clone + Into<Cause>,
{
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), E>> {
        self.get_mut().poll_wait(cx)
    }
}

impl<T, E> Drop for Group<'_, T, E> {
    fn drop(&mut self) {
        // Cancel first, so the tasks' destructors (run when `tasks` drops,
        // right after this) see a cancelled context.
        self.handle.cancel();
    }
}

impl<T, E> fmt::Debug for Group<'_, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("context", &self.ctx)
            .field("running", &self.ledger.running())
            .field("limit", &self.ledger.limit())
            .finish()
    }
}
