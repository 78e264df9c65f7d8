//! The task groups (`Group`, `SpawnGroup`, `ThreadGroup`): Go's errgroup
//! tests in our own words, then the policies this crate chose (results,
//! limits, drop, panics). The same executor-independent checks run on every
//! form where they apply; `tests/runtimes.rs` runs groups on every executor.
//!
//! Every test runs under a watchdog: a lost wake-up fails it after a minute
//! instead of hanging.
#![cfg(feature = "std")]

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::Duration;

use cancel_tree::{Cause, Context, Error, Group, Spawn, SpawnGroup, TaskPanicked, ThreadGroup};
use futures::channel::oneshot;
use futures::executor::block_on;
use futures_lite::future::yield_now;
use tokio::sync::Semaphore;

const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs `f` on a thread of its own; fails if it takes longer than
/// [`WATCHDOG`], re-raises its panic.
fn watchdog<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(r) => r,
            Err(panic) => resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("still running after {WATCHDOG:?}"),
    }
}

/// An error type of our own: `Clone`, so it can be the group's `E`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failed(u32);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} failed", self.0)
    }
}

impl std::error::Error for Failed {}

fn failed_cause(ctx: &Context) -> Option<u32> {
    ctx.cause()?.downcast_ref::<Failed>().map(|f| f.0)
}

/// A thread per task: a spawner that needs no runtime.
struct ThreadPerTask;

impl Spawn for ThreadPerTask {
    fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        thread::spawn(move || block_on(task));
    }
}

/// A task that finishes once `gate` gives it a permit.
fn gated(gate: &Arc<Semaphore>) -> impl Future<Output = Result<(), Cause>> + Send + 'static {
    let gate = gate.clone();
    async move {
        gate.acquire().await.expect("never closed").forget();
        Ok(())
    }
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future>(fut: F) -> std::task::Poll<F::Output> {
    let mut fut = std::pin::pin!(fut);
    fut.as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Go's errgroup tests, in our words.

/// Go's TestZeroGroup: a task, then a wait, again and again on one group:
/// every wait returns the first error the group ever saw.
#[test]
fn each_wait_returns_the_first_error_ever() {
    let cases: [&[Option<u32>]; 5] = [
        &[],
        &[None],
        &[Some(1)],
        &[Some(1), None],
        &[Some(1), None, Some(2)],
    ];
    watchdog(move || {
        for errs in cases {
            // In-task.
            block_on(async {
                let mut group = Group::<(), Failed>::new(&Context::background());
                let mut first = None;
                for e in errs {
                    group
                        .add(async move { e.map_or(Ok(()), |n| Err(Failed(n))) })
                        .await;
                    first = first.or(*e);
                    assert_eq!(group.wait().await, first.map_or(Ok(()), |n| Err(Failed(n))));
                }
            });
            // Spawned.
            block_on(async {
                let group = SpawnGroup::<_, (), Failed>::new(&Context::background(), ThreadPerTask);
                let mut first = None;
                for e in errs {
                    group
                        .add(async move { e.map_or(Ok(()), |n| Err(Failed(n))) })
                        .await;
                    first = first.or(*e);
                    assert_eq!(group.wait().await, first.map_or(Ok(()), |n| Err(Failed(n))));
                }
            });
            // Threads.
            thread::scope(|s| {
                let group = ThreadGroup::<(), Failed>::new(s, &Context::background());
                let mut first = None;
                for e in errs {
                    group.spawn(move |_| e.map_or(Ok(()), |n| Err(Failed(n))));
                    first = first.or(*e);
                    assert_eq!(group.wait(), first.map_or(Ok(()), |n| Err(Failed(n))));
                }
            });
        }
    });
}

/// Go's TestWithContext: all tasks first, then one wait: it returns the
/// first error, the context is cancelled afterwards (also when no task
/// failed), and its cause is that error.
#[test]
fn wait_returns_the_first_error_and_cancels_the_context() {
    let cases: [(&[Option<u32>], Option<u32>); 4] = [
        (&[], None),
        (&[None], None),
        (&[Some(1)], Some(1)),
        (&[Some(1), None, Some(2)], Some(1)),
    ];
    watchdog(move || {
        for (errs, want) in cases {
            let check = |ctx: &Context, got: Result<(), Failed>| {
                assert_eq!(got, want.map_or(Ok(()), |n| Err(Failed(n))));
                assert_eq!(ctx.err(), Some(Error::Canceled), "cancelled after wait");
                match want {
                    Some(n) => assert_eq!(failed_cause(ctx), Some(n)),
                    None => assert_eq!(ctx.cause().unwrap(), Error::Canceled),
                }
            };
            // In-task: tasks run in the order added, so `Failed(1)` is first.
            block_on(async {
                let mut group = Group::new(&Context::background());
                for e in errs {
                    group
                        .add(async move { e.map_or(Ok(()), |n| Err(Failed(n))) })
                        .await;
                }
                let got = group.wait().await;
                check(group.context(), got);
            });
            // Threads: a later error waits until the first is recorded, so
            // "first" is well defined here too.
            thread::scope(|s| {
                let group = ThreadGroup::new(s, &Context::background());
                for e in errs {
                    let first_done = group.context().clone();
                    group.spawn(move |_| match e {
                        Some(1) | None => e.map_or(Ok(()), |n| Err(Failed(n))),
                        Some(n) => {
                            first_done.wait();
                            Err(Failed(*n))
                        }
                    });
                }
                let got = group.wait();
                check(group.context(), got);
            });
        }
    });
}

/// Go's TestGoLimit: with a limit of 10, never more than 10 tasks run,
/// across 1,025 tasks that each yield while counted.
#[test]
fn the_limit_bounds_running_tasks() {
    const LIMIT: usize = 10;
    let tasks = if cfg!(miri) { 30 } else { 1025 };
    watchdog(move || {
        let active = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let work = || async {
            let n = active.fetch_add(1, SeqCst) + 1;
            most.fetch_max(n, SeqCst);
            yield_now().await; // give the others a chance to start
            active.fetch_sub(1, SeqCst);
            Ok::<_, Cause>(())
        };
        block_on(async {
            let mut group = Group::new(&Context::background());
            group.set_limit(Some(LIMIT));
            for _ in 0..tasks {
                group.add(work()).await;
                assert!(group.len() <= LIMIT);
            }
            group.wait().await.unwrap();
        });
        assert!(most.load(SeqCst) <= LIMIT, "in-task: {most:?} ran at once");
        assert_eq!(most.swap(0, SeqCst), LIMIT, "the limit was reached");

        // Spawned on a thread per task, so the tasks really overlap.
        let active = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        block_on(async {
            let group = SpawnGroup::new(&Context::background(), ThreadPerTask);
            group.set_limit(Some(LIMIT));
            for _ in 0..tasks / 10 {
                let (active, most) = (active.clone(), most.clone());
                group
                    .add(async move {
                        let n = active.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(n, SeqCst);
                        thread::yield_now();
                        active.fetch_sub(1, SeqCst);
                        Ok::<_, Cause>(())
                    })
                    .await;
                assert!(group.len() <= LIMIT);
            }
            group.wait().await.unwrap();
        });
        assert!(most.load(SeqCst) <= LIMIT, "spawned: {most:?} ran at once");

        let active = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        thread::scope(|s| {
            let group = ThreadGroup::new(s, &Context::background());
            group.set_limit(Some(4));
            for _ in 0..40 {
                let (active, most) = (&active, &most);
                group.spawn(move |_| {
                    let n = active.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(n, SeqCst);
                    thread::yield_now();
                    active.fetch_sub(1, SeqCst);
                    Ok::<_, Cause>(())
                });
                assert!(group.len() <= 4);
            }
            group.wait().unwrap();
        });
        assert!(most.load(SeqCst) <= 4, "threads: {most:?} ran at once");
    });
}

/// Go's TestTryGo: `try_` succeeds up to the limit and fails beyond it;
/// succeeds again once the tasks finished; follows a changed limit; with a
/// limit of 0 it always fails.
#[test]
fn try_add_fails_exactly_when_full() {
    const N: usize = 42;
    watchdog(|| {
        // In-task: tasks do not run until the group is polled, so the
        // group stays full until `wait`.
        block_on(async {
            let mut group = Group::<(), Cause>::new(&Context::background());
            group.set_limit(Some(N));
            for i in 0..N {
                assert!(group.try_add(async { Ok(()) }).is_ok(), "try {i} fails");
            }
            assert!(group.try_add(async { Ok(()) }).is_err(), "full");
            group.wait().await.unwrap();
            assert!(group.try_add(async { Ok(()) }).is_ok(), "free again");
            group.wait().await.unwrap();
            group.set_limit(Some(1));
            assert!(group.try_add(async { Ok(()) }).is_ok());
            assert!(group.try_add(async { Ok(()) }).is_err());
            group.wait().await.unwrap();
            group.set_limit(Some(0));
            for _ in 0..1 << 10 {
                assert!(group.try_add(async { Ok(()) }).is_err());
            }
            group.wait().await.unwrap();
        });

        // Spawned: the tasks block until released.
        block_on(async {
            let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), ThreadPerTask);
            group.set_limit(Some(N));
            let gate = Arc::new(Semaphore::new(0));
            for i in 0..N {
                let task = gated(&gate);
                assert!(group.try_add(task).is_ok(), "try {i} fails");
            }
            assert!(group.try_add(async { Ok(()) }).is_err(), "full");
            gate.add_permits(N);
            group.wait().await.unwrap();
            assert!(group.try_add(async { Ok(()) }).is_ok(), "free again");
            group.wait().await.unwrap();
            group.set_limit(Some(1));
            assert!(group.try_add(gated(&gate)).is_ok());
            assert!(group.try_add(async { Ok(()) }).is_err());
            gate.add_permits(1);
            group.wait().await.unwrap();
            group.set_limit(Some(0));
            for _ in 0..1 << 10 {
                assert!(group.try_add(async { Ok(()) }).is_err());
            }
            group.wait().await.unwrap();
        });

        // Threads.
        let gate = Barrier::new(N + 1);
        thread::scope(|s| {
            let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
            group.set_limit(Some(N));
            for i in 0..N {
                let gate = &gate;
                let ok = group.try_spawn(move |_| {
                    gate.wait();
                    Ok(())
                });
                assert!(ok.is_ok(), "try {i} fails");
            }
            assert!(group.try_spawn(|_| Ok(())).is_err(), "full");
            gate.wait();
            group.wait().unwrap();
            assert!(group.try_spawn(|_| Ok(())).is_ok(), "free again");
            group.wait().unwrap();
            group.set_limit(Some(0));
            for _ in 0..1 << 10 {
                assert!(group.try_spawn(|_| Ok(())).is_err());
            }
            group.wait().unwrap();
        });
    });
}

/// Go lets `Go` follow `Wait` on the same group: the task runs (under the
/// context `Wait` cancelled) and the next wait covers it.
#[test]
fn adding_after_wait_runs_under_the_cancelled_context() {
    watchdog(|| {
        block_on(async {
            let mut group = Group::<u8, Cause>::new(&Context::background());
            group.add(async { Ok(1) }).await;
            group.wait().await.unwrap();
            let ctx = group.context().clone();
            group
                .add(async move { Ok(u8::from(ctx.is_cancelled())) })
                .await;
            assert_eq!(group.len(), 1);
            let results = group.collect().await;
            assert_eq!(results.len(), 1, "only the task added since the wait");
            assert_eq!(
                results[0].as_ref().ok(),
                Some(&1),
                "it saw the cancelled context"
            );
        });
        block_on(async {
            let group = SpawnGroup::<_, bool, Cause>::new(&Context::background(), ThreadPerTask);
            group.wait().await.unwrap();
            let ctx = group.context().clone();
            group.add(async move { Ok(ctx.is_cancelled()) }).await;
            let results = group.collect().await;
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].as_ref().ok(), Some(&true));
        });
        thread::scope(|s| {
            let group = ThreadGroup::<bool, Cause>::new(s, &Context::background());
            group.wait().unwrap();
            group.spawn(|ctx| Ok(ctx.is_cancelled()));
            let results = group.collect();
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].as_ref().ok(), Some(&true));
        });
    });
}

/// No tasks: waiting returns at once, collecting gives nothing, and the
/// context is cancelled all the same.
#[test]
fn zero_tasks() {
    watchdog(|| {
        block_on(async {
            let mut group = Group::<(), Cause>::new(&Context::background());
            assert!(group.is_empty());
            assert!(group.collect().await.is_empty());
            assert!(group.wait().await.is_ok());
            assert!(group.context().is_cancelled());
            let group = Group::<(), Cause>::new(&Context::background());
            assert!(group.await.is_ok(), "awaiting the group itself");
        });
        block_on(async {
            let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), ThreadPerTask);
            assert!(group.collect().await.is_empty());
            assert!(group.wait().await.is_ok());
            assert!(group.context().is_cancelled());
        });
        thread::scope(|s| {
            let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
            assert!(group.collect().is_empty());
            assert!(group.wait().is_ok());
            assert!(group.context().is_cancelled());
        });
    });
}

// ---------------------------------------------------------------------------
// The model: first error, causes, results.

/// The first failure cancels the siblings with that error as the cause;
/// they stop, and the wait returns after all of them.
#[test]
fn the_first_error_cancels_the_siblings_with_itself_as_the_cause() {
    watchdog(|| {
        let stopped = AtomicUsize::new(0);
        block_on(async {
            let (parent, _p) = Context::background().with_cancel();
            let mut group = Group::new(&parent);
            for n in 0..5 {
                let ctx = group.context().clone();
                let stopped = &stopped;
                group
                    .add(async move {
                        if n == 3 {
                            yield_now().await; // the others are waiting by now
                            return Err(Failed(3));
                        }
                        ctx.done().await;
                        assert_eq!(failed_cause(&ctx), Some(3), "siblings see the error");
                        stopped.fetch_add(1, SeqCst);
                        Ok(())
                    })
                    .await;
            }
            assert_eq!(group.wait().await, Err(Failed(3)));
            assert_eq!(stopped.load(SeqCst), 4, "wait returned after every task");
            assert!(!parent.is_cancelled(), "never upwards");
        });

        let stopped = Arc::new(AtomicUsize::new(0));
        block_on(async {
            let group = SpawnGroup::new(&Context::background(), ThreadPerTask);
            for n in 0..5 {
                let ctx = group.context().clone();
                let stopped = stopped.clone();
                group
                    .add(async move {
                        if n == 3 {
                            return Err(Failed(3));
                        }
                        ctx.done().await;
                        assert_eq!(failed_cause(&ctx), Some(3));
                        stopped.fetch_add(1, SeqCst);
                        Ok(())
                    })
                    .await;
            }
            assert_eq!(group.wait().await, Err(Failed(3)));
            assert_eq!(stopped.load(SeqCst), 4);
        });
    });
}

/// With `Cause` as the error type (the default), any error converts with
/// `?` and the handler downcasts it.
#[test]
fn cause_errors_convert_with_question_mark_and_downcast() {
    watchdog(|| {
        block_on(async {
            let mut group = Group::<u32, Cause>::new(&Context::background());
            group
                .add(async {
                    let n: u32 = "not a number".parse()?;
                    Ok(n)
                })
                .await;
            let err = group.wait().await.unwrap_err();
            assert!(err.downcast_ref::<std::num::ParseIntError>().is_some());
            let cause = group.context().cause().unwrap();
            assert!(
                cause.ptr_eq(&err),
                "the context's cause is the error itself"
            );
        });
    });
}

/// `collect` gives every task's result, values and errors, in the order the
/// tasks were added (not the order they finished).
#[test]
fn collect_returns_every_result_in_the_order_added() {
    watchdog(|| {
        block_on(async {
            let mut group = Group::new(&Context::background());
            let (tx, rx) = oneshot::channel::<()>();
            group
                .add(async move {
                    let _ = rx.await; // finishes last
                    Ok(0)
                })
                .await;
            group.add(async { Err(Failed(1)) }).await;
            group
                .add(async move {
                    let _ = tx.send(());
                    Ok(2)
                })
                .await;
            assert_eq!(group.collect().await, [Ok(0), Err(Failed(1)), Ok(2)]);
            assert!(group.collect().await.is_empty(), "taken");
            assert_eq!(group.wait().await, Err(Failed(1)), "the first error stays");
        });
        block_on(async {
            let group = SpawnGroup::new(&Context::background(), ThreadPerTask);
            let (tx, rx) = oneshot::channel::<()>();
            group
                .add(async move {
                    let _ = rx.await;
                    Ok(0)
                })
                .await;
            group.add(async { Err(Failed(1)) }).await;
            group
                .add(async move {
                    let _ = tx.send(());
                    Ok(2)
                })
                .await;
            assert_eq!(group.collect().await, [Ok(0), Err(Failed(1)), Ok(2)]);
        });
        thread::scope(|s| {
            let group = ThreadGroup::new(s, &Context::background());
            let (tx, rx) = mpsc::channel::<()>();
            group.spawn(move |_| {
                let _ = rx.recv();
                Ok(0)
            });
            group.spawn(|_| Err(Failed(1)));
            group.spawn(move |_| {
                let _ = tx.send(());
                Ok(2)
            });
            assert_eq!(group.collect(), [Ok(0), Err(Failed(1)), Ok(2)]);
        });
    });
}

/// In-task tasks borrow from the caller's frame: no `'static`, no `Arc`.
#[test]
fn in_task_tasks_borrow_from_the_caller() {
    let words = vec![String::from("alpha"), String::from("beta")];
    let mut total = 0;
    block_on(async {
        let mut group = Group::new(&Context::background());
        for w in &words {
            group.add(async move { Ok::<_, Cause>(w.len()) }).await;
        }
        total = group.collect().await.into_iter().map(Result::unwrap).sum();
    });
    assert_eq!(total, 9);
}

/// A cancelled parent cancels the group's context, with the parent's cause.
#[test]
fn the_parent_cancels_the_group() {
    watchdog(|| {
        block_on(async {
            let (parent, stop) = Context::background().with_cancel();
            let mut group = Group::<(), Cause>::new(&parent);
            let ctx = group.context().clone();
            group
                .add(async move {
                    ctx.done().await;
                    Ok(())
                })
                .await;
            stop.cancel_with(Failed(9));
            assert!(group.wait().await.is_ok(), "no task failed");
            assert_eq!(failed_cause(group.context()), Some(9));
        });
    });
}

// ---------------------------------------------------------------------------
// Limits.

/// Changing the limit while tasks run: lowering never stops a running task
/// and admits nothing new until fewer run; raising admits waiting adds at
/// once.
#[test]
fn changing_the_limit_while_tasks_run() {
    watchdog(|| {
        block_on(async {
            let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), ThreadPerTask);
            group.set_limit(Some(3));
            let gate = Arc::new(Semaphore::new(0));
            for _ in 0..3 {
                group.add(gated(&gate)).await;
            }
            group.set_limit(Some(1));
            assert_eq!(group.len(), 3, "lowering stops nobody");
            assert!(group.try_add(async { Ok(()) }).is_err());
            gate.add_permits(2);
            // One still runs: at the new limit, still full.
            while group.len() > 1 {
                yield_now().await;
            }
            assert!(group.try_add(async { Ok(()) }).is_err());

            // An `add` waiting for a slot is admitted when the limit rises.
            let admitted = AtomicBool::new(false);
            let adder = async {
                group.add(async { Ok(()) }).await;
                admitted.store(true, SeqCst);
            };
            let raiser = async {
                // The adder is parked by now (it was polled first).
                yield_now().await;
                assert!(!admitted.load(SeqCst));
                group.set_limit(Some(2));
            };
            futures::join!(adder, raiser);
            assert!(admitted.load(SeqCst));
            gate.add_permits(1);
            group.wait().await.unwrap();
        });

        // In-task: a lower limit is obeyed by the next add.
        block_on(async {
            let running = AtomicUsize::new(0);
            let mut group = Group::<(), Cause>::new(&Context::background());
            group.set_limit(Some(4));
            for _ in 0..4 {
                let running = &running;
                group
                    .add(async move {
                        running.fetch_add(1, SeqCst);
                        yield_now().await;
                        yield_now().await;
                        running.fetch_sub(1, SeqCst);
                        Ok(())
                    })
                    .await;
            }
            group.set_limit(Some(1));
            group.add(async { Ok(()) }).await;
            assert!(group.len() <= 1, "add waited until fewer than 1 ran");
            group.wait().await.unwrap();
        });
    });
}

#[test]
#[should_panic(expected = "limit of 0")]
fn in_task_add_with_a_limit_of_zero_panics_instead_of_hanging() {
    block_on(async {
        let mut group = Group::<(), Cause>::new(&Context::background());
        group.set_limit(Some(0));
        group.add(async { Ok(()) }).await;
    });
}

#[test]
#[should_panic(expected = "limit of 0")]
fn thread_spawn_with_a_limit_of_zero_panics_instead_of_hanging() {
    thread::scope(|s| {
        let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
        group.set_limit(Some(0));
        group.spawn(|_| Ok(()));
    });
}

// ---------------------------------------------------------------------------
// Drop.

/// Dropping an in-task group cancels its context, then drops the unfinished
/// tasks in place, whose destructors see the context cancelled.
#[test]
fn dropping_an_in_task_group_cancels_then_drops_its_tasks() {
    let dropped = Arc::new(AtomicBool::new(false));
    let saw_cancelled = Arc::new(AtomicBool::new(false));
    let ctx;
    {
        let mut group = Group::<(), Cause>::new(&Context::background());
        ctx = group.context().clone();
        struct Check(Context, Arc<AtomicBool>);
        impl Drop for Check {
            fn drop(&mut self) {
                self.1.store(self.0.is_cancelled(), SeqCst);
            }
        }
        let check = Check(ctx.clone(), saw_cancelled.clone());
        let flag = DropFlag(dropped.clone());
        assert!(
            group
                .try_add(async move {
                    let _check = check;
                    let _flag = flag;
                    futures::future::pending::<()>().await;
                    Ok(())
                })
                .is_ok()
        );
        // Poll it once, so the task is suspended mid-way.
        assert!(poll_once(group.wait()).is_pending());
        assert!(!ctx.is_cancelled());
    }
    assert!(ctx.is_cancelled(), "drop cancels");
    assert!(dropped.load(SeqCst), "drop drops the unfinished task");
    assert!(saw_cancelled.load(SeqCst), "after cancelling");
}

/// Dropping a spawned group cancels its context and returns at once; its
/// tasks go on until they see the cancellation.
#[test]
fn dropping_a_spawned_group_cancels_and_does_not_wait() {
    watchdog(|| {
        let (done_tx, done_rx) = mpsc::channel();
        let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), ThreadPerTask);
        let ctx = group.context().clone();
        let (started_tx, started_rx) = mpsc::channel();
        let task_ctx = ctx.clone();
        assert!(
            group
                .try_add(async move {
                    started_tx.send(()).unwrap();
                    let err = task_ctx.done().await;
                    done_tx.send(err).unwrap();
                    Ok(())
                })
                .is_ok()
        );
        started_rx.recv().unwrap();
        drop(group); // returns although the task is still running
        assert!(ctx.is_cancelled());
        assert_eq!(done_rx.recv().unwrap(), Error::Canceled, "the task saw it");
    });
}

/// A thread group's drop cancels and returns; the scope joins the threads.
#[test]
fn dropping_a_thread_group_cancels_and_the_scope_joins() {
    let finished = AtomicBool::new(false);
    thread::scope(|s| {
        let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
        group.spawn(|ctx| {
            ctx.wait();
            finished.store(true, SeqCst);
            Ok(())
        });
        drop(group);
    });
    assert!(finished.load(SeqCst), "joined at the end of the scope");
}

// ---------------------------------------------------------------------------
// Panics.

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload.downcast_ref::<&str>().copied()
}

/// A panicking task cancels its siblings with a `TaskPanicked` cause; the
/// wait lets every sibling finish, then resumes the panic.
#[test]
fn a_panic_cancels_the_siblings_and_is_resumed_by_the_wait() {
    watchdog(|| {
        let sibling_done = AtomicBool::new(false);
        let mut group = Group::<(), Cause>::new(&Context::background());
        let resumed = catch_unwind(AssertUnwindSafe(|| {
            block_on(async {
                let ctx = group.context().clone();
                let sibling_done = &sibling_done;
                group
                    .add(async move {
                        ctx.done().await;
                        let cause = ctx.cause().unwrap();
                        let p = cause.downcast_ref::<TaskPanicked>().expect("a panic cause");
                        assert_eq!(p.message(), Some("in-task boom"));
                        sibling_done.store(true, SeqCst);
                        Ok(())
                    })
                    .await;
                group
                    .add(async {
                        yield_now().await;
                        panic!("in-task boom")
                    })
                    .await;
                let _ = group.wait().await;
            })
        }));
        assert_eq!(panic_message(&*resumed.unwrap_err()), Some("in-task boom"));
        assert!(
            sibling_done.load(SeqCst),
            "resumed after the sibling finished"
        );
        // The group stays usable, the panic is not resumed twice.
        assert!(block_on(group.wait()).is_ok());

        let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), ThreadPerTask);
        let ctx = group.context().clone();
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        block_on(group.add(async move {
            ctx.done().await;
            f.store(true, SeqCst);
            Ok(())
        }));
        block_on(group.add(async { panic!("spawned boom") }));
        let resumed = catch_unwind(AssertUnwindSafe(|| block_on(group.collect())));
        assert_eq!(panic_message(&*resumed.unwrap_err()), Some("spawned boom"));
        assert!(flag.load(SeqCst));

        thread::scope(|s| {
            let group = ThreadGroup::<(), Cause>::new(s, &Context::background());
            group.spawn(|_| panic!("thread boom"));
            let resumed = catch_unwind(AssertUnwindSafe(|| group.wait()));
            assert_eq!(panic_message(&*resumed.unwrap_err()), Some("thread boom"));
            let cause = group.context().cause().unwrap();
            assert!(cause.downcast_ref::<TaskPanicked>().is_some());
        }); // the scope does not panic: the group caught it
    });
}

/// A panic nobody waits for goes with the group: dropping it does not
/// panic.
#[test]
fn an_unwaited_panic_is_dropped_with_the_group() {
    watchdog(|| {
        let mut group = Group::<(), Cause>::new(&Context::background());
        assert!(group.try_add(async { panic!("never resumed") }).is_ok());
        assert!(
            group
                .try_add(async { futures::future::pending().await })
                .is_ok()
        );
        assert!(poll_once(group.wait()).is_pending(), "one task never ends");
        let cause = group.context().cause().unwrap();
        assert!(
            cause.downcast_ref::<TaskPanicked>().is_some(),
            "siblings were told"
        );
        drop(group);
    });
}

/// A spawned task its executor drops unfinished (the executor shut down)
/// cancels the group with `TaskDropped`, and the wait panics with that
/// message rather than waiting forever.
#[test]
fn a_task_dropped_by_its_executor_is_reported_not_waited_for() {
    type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    /// An "executor" that keeps its tasks and never runs them.
    #[derive(Clone, Default)]
    struct Hoard(Arc<std::sync::Mutex<Vec<Task>>>);
    impl Spawn for Hoard {
        fn spawn_task<F>(&self, task: F)
        where
            F: Future<Output = ()> + Send + 'static,
        {
            self.0.lock().unwrap().push(Box::pin(task));
        }
    }
    watchdog(|| {
        let hoard = Hoard::default();
        let group = SpawnGroup::<_, (), Cause>::new(&Context::background(), hoard.clone());
        assert!(group.try_add(async { Ok(()) }).is_ok());
        assert_eq!(group.len(), 1);
        hoard.0.lock().unwrap().clear(); // the executor shuts down
        assert_eq!(group.len(), 0);
        let cause = group.context().cause().expect("cancelled");
        assert!(cause.downcast_ref::<cancel_tree::TaskDropped>().is_some());
        let waited = catch_unwind(AssertUnwindSafe(|| block_on(group.wait())));
        let payload = waited.unwrap_err();
        let message = payload.downcast_ref::<String>().expect("a formatted panic");
        assert_eq!(*message, cancel_tree::TaskDropped.to_string());
    });
}

// ---------------------------------------------------------------------------
// Types.

#[test]
fn groups_and_their_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>(_: &T) {}
    let mut group = Group::<u8, Cause>::new(&Context::background());
    send(&group.wait());
    send(&group.add(async { Ok(1) }));
    send(&group);
    let spawned = SpawnGroup::<_, u8, Cause>::new(&Context::background(), ThreadPerTask);
    send_sync(&spawned);
    send(&spawned.wait());
    send(&spawned.add(async { Ok(1) }));
    thread::scope(|s| send_sync(&ThreadGroup::<u8, Cause>::new(s, &Context::background())));
}

#[test]
fn debug_shows_the_counts() {
    let mut group = Group::<(), Cause>::new(&Context::background());
    group.set_limit(Some(2));
    assert!(group.try_add(async { Ok(()) }).is_ok());
    let s = format!("{group:?}");
    assert!(
        s.contains("running: 1") && s.contains("limit: Some(2)"),
        "{s}"
    );
}
