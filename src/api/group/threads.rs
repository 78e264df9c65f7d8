//! [`ThreadGroup`]: the blocking task group (std), one scoped thread per
//! task: the closest thing to Go's goroutines.

use alloc::vec::Vec;
use core::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::Scope;

use crate::Cause;
use crate::api::cancel_handle::CancelHandle;
use crate::api::context::Context;
use crate::api::group::ending::{Ended, call_caught};
use crate::api::group::ledger::Ledger;

/// A task group whose tasks are closures, each on its own scoped thread
/// (`std::thread::scope`): Go's `errgroup.WithContext` for blocking code.
/// Tasks may borrow anything that outlives the scope.
///
/// Each task gets the group's context and returns `Result<T, E>`; the
/// first `Err(e)` cancels the context with `e` as its cause.
/// [`wait`](ThreadGroup::wait) blocks until every task has finished,
/// cancels the context and returns the first error;
/// [`collect`](ThreadGroup::collect) returns every result instead, in the
/// order the tasks were spawned.
///
/// ```
/// use cancel_tree::{Cause, Context, ThreadGroup};
/// use std::time::Duration;
///
/// let files = ["a.txt", "b.txt", "missing.txt"];
/// let sizes = std::thread::scope(|s| {
///     let group = ThreadGroup::new(s, &Context::background());
///     for name in &files {
///         group.spawn(move |ctx| {
///             if name.starts_with("missing") {
///                 return Err(Cause::msg(format!("{name}: not found")));
///             }
///             // Stop early once a sibling failed.
///             match ctx.wait_timeout(Duration::from_secs(5)) {
///                 Some(_) => Err(Cause::msg("abandoned")),
///                 None => Ok(name.len()),
///             }
///         });
///     }
///     group.wait()
/// });
/// assert_eq!(sizes.unwrap_err().to_string(), "missing.txt: not found");
/// ```
///
/// # Limit
///
/// [`set_limit(Some(n))`](ThreadGroup::set_limit): at most `n` tasks run at
/// once; [`spawn`](ThreadGroup::spawn) blocks until a slot frees (Go's `Go`),
/// [`try_spawn`](ThreadGroup::try_spawn) hands the closure back. Changing the
/// limit never stops a running task: a lower limit admits nothing until fewer
/// tasks run, a higher one wakes a blocked `spawn` at once. As with Go's
/// `SetLimit`, running tasks that wait for a task not yet admitted (the group
/// being full) wait forever: add the tasks others depend on first.
///
/// # Drop
///
/// Dropping the group cancels its context and returns at once. The threads
/// are joined where every scoped thread is: at the end of the
/// `std::thread::scope` call.
///
/// # Panics
///
/// A panicking task is caught on its thread: the context is cancelled with
/// a [`TaskPanicked`](crate::TaskPanicked) cause, and `wait`/`collect`
/// resume the panic once every task has finished (so
/// `std::thread::scope` does not panic for it). A panic nobody waits for is
/// dropped with the group (the panic hook has reported it already).
pub struct ThreadGroup<'scope, 'env: 'scope, T = (), E = Cause> {
    scope: &'scope Scope<'scope, 'env>,
    shared: Arc<Shared<T, E>>,
}

struct Shared<T, E> {
    ctx: Context,
    handle: CancelHandle,
    ledger: Mutex<Ledger<T, E>>,
    /// Signalled when a task finishes or the limit rises.
    changed: Condvar,
}

impl<T, E> Shared<T, E> {
    /// The ledger; no code that can panic runs under this lock, but a
    /// poisoned lock is still consistent, so take it anyway.
    fn ledger(&self) -> MutexGuard<'_, Ledger<T, E>> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T, E: Clone + Into<Cause>> Shared<T, E> {
    fn finish(&self, key: usize, ended: Ended<Result<T, E>>) {
        /// Frees the slot even if the cancel below unwinds.
        struct Release<'s, T, E>(&'s Shared<T, E>);
        impl<T, E> Drop for Release<'_, T, E> {
            fn drop(&mut self) {
                self.0.ledger().release();
                self.0.changed.notify_all();
            }
        }
        let cause = self.ledger().record(key, ended);
        let _release = Release(self);
        // Before the slot is freed: `wait` never returns before the first
        // error's cancel.
        if let Some(cause) = cause {
            self.handle.cancel_with(cause);
        }
    }
}

/// Moved into a task's thread; if the thread never runs it (it could not be
/// started), its drop records the task as dropped.
struct Finish<T, E: Clone + Into<Cause>> {
    shared: Arc<Shared<T, E>>,
    key: usize,
    done: bool,
}

impl<T, E: Clone + Into<Cause>> Drop for Finish<T, E> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.finish(self.key, Ended::Dropped);
        }
    }
}

impl<'scope, 'env, T, E> ThreadGroup<'scope, 'env, T, E>
where
    T: Send + 'scope,
    E: Clone + Into<Cause> + Send + 'scope,
{
    /// An empty group in `scope`, whose context is a new child of `parent`.
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, ThreadGroup};
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
    ///     assert!(group.is_empty());
    /// });
    /// ```
    pub fn new(scope: &'scope Scope<'scope, 'env>, parent: &Context) -> Self {
        let (ctx, handle) = parent.with_cancel();
        ThreadGroup {
            scope,
            shared: Arc::new(Shared {
                ctx,
                handle,
                ledger: Mutex::new(Ledger::new()),
                changed: Condvar::new(),
            }),
        }
    }

    /// The group's context: cancelled by the first failure, by `wait`, or
    /// when the group is dropped (and when its parent is).
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, ThreadGroup};
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
    ///     let ctx = group.context().clone();
    ///     drop(group);
    ///     assert!(ctx.is_cancelled());
    /// });
    /// ```
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// The limit on tasks running at once (`None`: no limit, the default).
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, ThreadGroup};
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
    ///     group.set_limit(Some(3));
    ///     assert_eq!(group.limit(), Some(3));
    /// });
    /// ```
    pub fn limit(&self) -> Option<usize> {
        self.shared.ledger().limit()
    }

    /// Sets the limit on tasks running at once (`None`: no limit). Running
    /// tasks are never stopped; `Some(0)` admits nothing (`try_spawn`
    /// hands every closure back, and `spawn` panics, see there).
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, ThreadGroup};
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
    ///     group.set_limit(Some(0));
    ///     assert!(group.try_spawn(|_| Ok(())).is_err());
    ///     group.set_limit(None);
    ///     assert!(group.try_spawn(|_| Ok(())).is_ok());
    /// });
    /// ```
    pub fn set_limit(&self, limit: Option<usize>) {
        if self.shared.ledger().set_limit(limit) {
            self.shared.changed.notify_all();
        }
    }

    /// Tasks spawned and not yet finished.
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, ThreadGroup};
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
    ///     group.spawn(|ctx| {
    ///         ctx.wait();
    ///         Ok(())
    ///     });
    ///     assert_eq!(group.len(), 1);
    ///     drop(group); // cancels: the task ends
    /// });
    /// ```
    pub fn len(&self) -> usize {
        self.shared.ledger().running()
    }

    /// `true` if no task is unfinished.
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, ThreadGroup};
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
    ///     assert!(group.is_empty());
    /// });
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `task` on a new scoped thread, first blocking until a slot is
    /// free if the group is at its limit (Go's `Go`).
    ///
    /// # Panics
    ///
    /// If the limit is `Some(0)`: no slot could ever free up (the group
    /// lives on this thread's stack, so no other thread can raise it),
    /// and blocking would never end. Also if the OS cannot start a thread,
    /// as `std::thread::Scope::spawn` does; the group then counts the task
    /// as dropped (see [`TaskDropped`](crate::TaskDropped)).
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, ThreadGroup};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let active = AtomicUsize::new(0);
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
    ///     group.set_limit(Some(2));
    ///     for _ in 0..8 {
    ///         let active = &active;
    ///         group.spawn(move |_| {
    ///             assert!(active.fetch_add(1, Ordering::SeqCst) < 2);
    ///             std::thread::yield_now();
    ///             active.fetch_sub(1, Ordering::SeqCst);
    ///             Ok(())
    ///         });
    ///     }
    ///     group.wait().unwrap();
    /// });
    /// ```
    pub fn spawn<F>(&self, task: F)
    where
        F: FnOnce(&Context) -> Result<T, E> + Send + 'scope,
    {
        let key = {
            let mut ledger = self.shared.ledger();
            assert!(
                ledger.limit() != Some(0),
                "ThreadGroup::spawn with a limit of 0 could never start the task"
            );
            while !ledger.has_room() {
                ledger = self
                    .shared
                    .changed
                    .wait(ledger)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            ledger.admit()
        };
        self.start(key, task);
    }

    /// Runs `task` on a new scoped thread if the limit allows another
    /// running task; otherwise hands it back in `Err` (Go's `TryGo`).
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, ThreadGroup};
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
    ///     group.set_limit(Some(1));
    ///     let waits = |ctx: &Context| {
    ///         ctx.wait();
    ///         Ok(())
    ///     };
    ///     assert!(group.try_spawn(waits).is_ok());
    ///     assert!(group.try_spawn(|_| Ok(())).is_err(), "full");
    /// });
    /// ```
    pub fn try_spawn<F>(&self, task: F) -> Result<(), F>
    where
        F: FnOnce(&Context) -> Result<T, E> + Send + 'scope,
    {
        let key = {
            let mut ledger = self.shared.ledger();
            if !ledger.has_room() {
                return Err(task);
            }
            ledger.admit()
        };
        self.start(key, task);
        Ok(())
    }

    /// Blocks until every task has finished, then cancels the group's
    /// context and returns the first error any task returned (ever, not
    /// only since the last wait), or resumes the first panic. The results
    /// are dropped. The group can be used again afterwards; its context
    /// stays cancelled (as in Go).
    ///
    /// ```
    /// # use cancel_tree::{Context, Error, ThreadGroup};
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), Error>::new(s, &Context::background());
    ///     assert_eq!(group.wait(), Ok(()), "no tasks: at once");
    ///     group.spawn(|_| Err(Error::DeadlineExceeded));
    ///     assert_eq!(group.wait(), Err(Error::DeadlineExceeded));
    ///     assert!(group.context().is_cancelled());
    /// });
    /// ```
    pub fn wait(&self) -> Result<(), E> {
        self.until_idle(|ledger| {
            ledger.discard_results();
            ledger.first_error()
        })
    }

    /// Like [`wait`](ThreadGroup::wait), but returns every task's result
    /// instead: one per task spawned since the last `wait` or `collect`, in
    /// the order they were spawned.
    ///
    /// ```
    /// # use cancel_tree::{Cause, Context, ThreadGroup};
    /// let inputs = ["1", "x", "3"];
    /// let parsed = std::thread::scope(|s| {
    ///     let group = ThreadGroup::new(s, &Context::background());
    ///     for input in &inputs {
    ///         group.spawn(move |_| input.parse::<u32>().map_err(Cause::new));
    ///     }
    ///     group.collect()
    /// });
    /// assert_eq!(parsed[0].as_ref().ok(), Some(&1));
    /// assert!(parsed[1].is_err());
    /// assert_eq!(parsed[2].as_ref().ok(), Some(&3));
    /// ```
    pub fn collect(&self) -> Vec<Result<T, E>> {
        self.until_idle(Ledger::take_results)
    }

    fn until_idle<R>(&self, take: impl FnOnce(&mut Ledger<T, E>) -> R) -> R {
        let (out, abnormal) = {
            let mut ledger = self.shared.ledger();
            while ledger.running() != 0 {
                ledger = self
                    .shared
                    .changed
                    .wait(ledger)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            (take(&mut ledger), ledger.take_abnormal())
        };
        self.shared.handle.cancel();
        if let Some(abnormal) = abnormal {
            abnormal.raise();
        }
        out
    }

    fn start<F>(&self, key: usize, task: F)
    where
        F: FnOnce(&Context) -> Result<T, E> + Send + 'scope,
    {
        let mut finish = Finish {
            shared: self.shared.clone(),
            key,
            done: false,
        };
        self.scope.spawn(move || {
            let ended = call_caught(|| task(&finish.shared.ctx));
            finish.done = true;
            finish.shared.finish(finish.key, ended);
        });
    }
}

impl<T, E> Drop for ThreadGroup<'_, '_, T, E> {
    fn drop(&mut self) {
        self.shared.handle.cancel();
    }
}

impl<T, E> fmt::Debug for ThreadGroup<'_, '_, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ledger = self.shared.ledger();
        f.debug_struct("ThreadGroup")
            .field("context", &self.shared.ctx)
            .field("running", &ledger.running())
            .field("limit", &ledger.limit())
            .finish()
    }
}
