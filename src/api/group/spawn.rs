//! [`Spawn`]: how a [`SpawnGroup`](crate::SpawnGroup) hands its tasks to an
//! executor, and the implementations for tokio, async-executor (smol) and
//! the futures crate's executors (each behind its feature).

use core::future::Future;

/// Something that can run a `'static` task to completion in the background:
/// the one thing a [`SpawnGroup`](crate::SpawnGroup) needs from an executor.
///
/// The task is detached: the group learns that it finished from the task
/// itself. An executor that drops a task before it finished (because it
/// shut down) is noticed too (see [`TaskDropped`](crate::TaskDropped)).
///
/// Implemented for `tokio::runtime::Handle` (feature `tokio`),
/// `async_executor::Executor` and `LocalExecutor` (feature
/// `async-executor`), any `futures::task::Spawn` through `FuturesSpawn`
/// (feature `futures`), and references and `Arc`s of these. For another
/// executor it is one method:
///
/// ```
/// use cancel_tree::Spawn;
/// use std::future::Future;
///
/// /// A thread per task, each running the task with a block-on loop.
/// struct ThreadPerTask;
///
/// impl Spawn for ThreadPerTask {
///     fn spawn_task<F>(&self, task: F)
///     where
///         F: Future<Output = ()> + Send + 'static,
///     {
///         std::thread::spawn(move || futures::executor::block_on(task));
///     }
/// }
/// ```
pub trait Spawn {
    /// Starts `task`; it must be polled until it completes (or dropped, if
    /// the executor goes away first). Not called `spawn`, so that with this
    /// trait in scope `executor.spawn(..)` still means the executor's own
    /// method (an `Arc<Executor>` would otherwise find this one first).
    fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static;
}

impl<S: Spawn + ?Sized> Spawn for &S {
    fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        (**self).spawn_task(task);
    }
}

#[cfg(feature = "std")]
impl<S: Spawn + ?Sized> Spawn for std::sync::Arc<S> {
    fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        (**self).spawn_task(task);
    }
}

/// On the runtime the handle belongs to (`tokio::runtime::Handle::current()`
/// inside one); the `JoinHandle` is dropped, which detaches the task.
#[cfg(all(feature = "tokio", not(cancel_tree_loom)))]
impl Spawn for tokio::runtime::Handle {
    fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(tokio::runtime::Handle::spawn(self, task));
    }
}

/// smol's executor; the `Task` is detached.
#[cfg(all(feature = "async-executor", not(cancel_tree_loom)))]
impl Spawn for async_executor::Executor<'_> {
    fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        async_executor::Executor::spawn(self, task).detach();
    }
}

/// smol's thread-local executor; the `Task` is detached.
#[cfg(all(feature = "async-executor", not(cancel_tree_loom)))]
impl Spawn for async_executor::LocalExecutor<'_> {
    fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        async_executor::LocalExecutor::spawn(self, task).detach();
    }
}

/// Any executor of the futures crate (`ThreadPool`, `LocalPool`'s
/// `LocalSpawner`, ...), through its `futures::task::Spawn`
/// implementation. Each task is boxed into a `FutureObj`, as that trait
/// requires. If the executor refuses the task (it shut down) the task is
/// dropped, and the group sees it as dropped.
///
/// ```
/// use cancel_tree::{Context, FuturesSpawn, SpawnGroup};
/// use futures::executor::{ThreadPool, block_on};
///
/// let pool = ThreadPool::new().unwrap();
/// let group = SpawnGroup::new(&Context::background(), FuturesSpawn(pool));
/// assert!(group.try_add(async { Ok::<_, cancel_tree::Cause>(2 + 2) }).is_ok());
/// assert_eq!(block_on(group.collect()).pop().unwrap().ok(), Some(4));
/// ```
#[cfg(all(feature = "futures", not(cancel_tree_loom)))]
#[derive(Clone, Debug, Default)]
pub struct FuturesSpawn<S>(pub S);

#[cfg(all(feature = "futures", not(cancel_tree_loom)))]
impl<S: futures_task::Spawn> Spawn for FuturesSpawn<S> {
    fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = futures_task::FutureObj::new(alloc::boxed::Box::pin(task));
        // An error means the executor is gone; it dropped the task, and the
        // task's own drop tells the group.
        let _ = self.0.spawn_obj(task);
    }
}
