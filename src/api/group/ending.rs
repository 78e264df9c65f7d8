//! How a group task ends, and the two causes a group cancels with when a
//! task ends without returning: [`TaskPanicked`] and [`TaskDropped`].
//!
//! With `std` a task's panic is caught where the task runs (the in-task
//! group's poll, the spawned task's wrapper, the scoped thread), so the
//! group can cancel the siblings and resume the panic from its wait.
//! Without `std` nothing can catch a panic: it unwinds out of whoever polled
//! the task, and the group's `Drop` cancels the context on the way.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context as TaskContext, Poll};

#[cfg(feature = "std")]
use alloc::boxed::Box;
#[cfg(feature = "std")]
use alloc::string::String;

/// A caught panic's payload.
#[cfg(feature = "std")]
pub(crate) type Payload = Box<dyn core::any::Any + Send + 'static>;

/// How one task ended.
pub(crate) enum Ended<O> {
    /// It returned this.
    Returned(O),
    /// It panicked (the payload is resumed by the group's wait).
    #[cfg(feature = "std")]
    Panicked(Payload),
    /// Its executor dropped it before it finished (spawned groups only).
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    Dropped,
}

/// Polls `fut` once, catching a panic (with `std`).
#[inline]
pub(crate) fn poll_caught<F: Future + ?Sized>(
    fut: Pin<&mut F>,
    cx: &mut TaskContext<'_>,
) -> Poll<Ended<F::Output>> {
    #[cfg(feature = "std")]
    {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ended::Returned(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Ended::Panicked(payload)),
        }
    }
    #[cfg(not(feature = "std"))]
    fut.poll(cx).map(Ended::Returned)
}

/// Runs `f`, catching a panic (with `std`).
#[cfg(feature = "std")]
pub(crate) fn call_caught<R>(f: impl FnOnce() -> R) -> Ended<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Ended::Returned(v),
        Err(payload) => Ended::Panicked(payload),
    }
}

/// The cause a group cancels its context with when one of its tasks
/// panics (with `std`, where the panic can be caught). The siblings see
/// this cause; the group's wait resumes the panic itself once every task
/// has finished.
///
/// ```
/// use cancel_tree::{Cause, Context, TaskPanicked, ThreadGroup};
///
/// std::thread::scope(|s| {
///     let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
///     group.spawn(|_| panic!("disk on fire"));
///     group.spawn(|ctx| {
///         ctx.wait(); // a sibling, stopped by the panic
///         let cause = ctx.cause().unwrap();
///         let p = cause.downcast_ref::<TaskPanicked>().unwrap();
///         assert_eq!(p.message(), Some("disk on fire"));
///         Ok(())
///     });
///     let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.wait()));
///     let payload = resumed.unwrap_err();
///     assert_eq!(payload.downcast_ref::<&str>(), Some(&"disk on fire"));
/// });
/// ```
#[cfg(feature = "std")]
#[derive(Clone, PartialEq, Eq)]
pub struct TaskPanicked {
    message: Option<String>,
}

#[cfg(feature = "std")]
impl TaskPanicked {
    pub(crate) fn new(payload: &Payload) -> TaskPanicked {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            Some(String::from(*s))
        } else {
            payload.downcast_ref::<String>().cloned()
        };
        TaskPanicked { message }
    }

    /// The panic's message, if its payload was a string (what `panic!`
    /// with a message produces).
    ///
    /// ```
    /// # use cancel_tree::{Context, TaskPanicked, ThreadGroup};
    /// std::thread::scope(|s| {
    ///     let group = ThreadGroup::<(), cancel_tree::Cause>::new(s, &Context::background());
    ///     group.spawn(|_| std::panic::panic_any(7_u32));
    ///     let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.wait()));
    ///     let cause = group.context().cause().unwrap();
    ///     assert_eq!(cause.downcast_ref::<TaskPanicked>().unwrap().message(), None);
    /// });
    /// ```
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

#[cfg(feature = "std")]
impl fmt::Display for TaskPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "a group task panicked: {m}"),
            None => f.write_str("a group task panicked"),
        }
    }
}

#[cfg(feature = "std")]
impl fmt::Debug for TaskPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskPanicked")
            .field("message", &self.message)
            .finish()
    }
}

#[cfg(feature = "std")]
impl core::error::Error for TaskPanicked {}

/// The cause a [`SpawnGroup`](crate::SpawnGroup) cancels its context with
/// when its executor drops one of its tasks before the task finished (the
/// executor shut down). The group's wait then panics with this value as
/// the message: the task has no result, and waiting for it would never end.
///
/// ```
/// use cancel_tree::TaskDropped;
/// assert_eq!(
///     TaskDropped.to_string(),
///     "a group task was dropped by its executor before it finished"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDropped;

impl fmt::Display for TaskDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a group task was dropped by its executor before it finished")
    }
}

impl core::error::Error for TaskDropped {}
