//! The same four scenarios on every executor we claim to support:
//!
//! * (a) a task awaiting `done()` is woken when another task cancels;
//! * (b) `ctx.run(fut)` ends with `Err` when a sibling task cancels, and `fut`
//!   is dropped by then;
//! * (c) a timeout fires and is observed through `done()` by two tasks (on
//!   the default `StdClock`, and on the runtime's own clock where the crate
//!   has an adapter: `TokioClock` — also with paused time — `AsyncIoClock`,
//!   `EmbassyClock`);
//! * (d) a plain OS thread cancels and the waiting task is woken;
//! * (e) an in-task `Group` awaited in a task: a member fails when another
//!   task signals it, which cancels the other members; the wait returns
//!   that error after all of them;
//! * (f) a `SpawnGroup` spawning its members on the executor (where there is
//!   a `Spawn` for it: tokio, smol, the thread pool, embassy): the same
//!   failure, then `collect` returns every result in the order added.
//!
//! Executors: tokio current-thread and multi-thread, smol's
//! `async-executor` on `async-io`, futures' `ThreadPool`,
//! `futures::executor::block_on`, `pollster`, and embassy-executor's std
//! executor. The scenarios are written once, generic over [`Rt`] (how to
//! spawn a sibling task); block-on executors have no spawner, so there a
//! "task" is a branch of a `join` in the one task they run.
//!
//! Every scenario runs under a watchdog: a lost wake-up fails the test after
//! a minute instead of hanging it.
//!
//! The clock adapters' variants need their features (`--all-features`).
#![cfg(feature = "std")]

use std::future::{Future, poll_fn};
use std::panic::resume_unwind;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::task::Poll;
use std::thread;
use std::time::Duration;

use cancel_tree::{Cause, Context, Error, Group, Spawn, SpawnGroup};
use futures::channel::oneshot;
use futures::future::join;

/// How long a scenario may take before the test calls it hung.
const WATCHDOG: Duration = Duration::from_secs(60);

/// A short real-time timeout for scenario (c) on wall clocks.
const SHORT: Duration = Duration::from_millis(50);

/// A spawned task's result, as a future.
type Join<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the scenarios need from an executor: spawning a sibling task.
trait Rt: Clone + 'static {
    /// Starts `fut` as a task of its own (or, on a block-on executor, returns
    /// it to be joined); the result resolves to its output.
    fn spawn<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Join<T>;
}

// ---------------------------------------------------------------------------
// Helpers, executor-agnostic.

/// Polls `fut` once, registering the task's waker; `Some` if it was ready.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    poll_fn(|cx| match Pin::new(&mut *fut).poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// An executor-agnostic sleep: a thread sends on a oneshot after `d`. Used
/// to let the waiting task go idle (its executor parked) before a cancel.
async fn sleep(d: Duration) {
    let (tx, rx) = oneshot::channel();
    thread::spawn(move || {
        thread::sleep(d);
        let _ = tx.send(());
    });
    rx.await.expect("the sleeping thread sends");
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `f` on a thread of its own and fails if it takes longer than
/// [`WATCHDOG`]; a panic in `f` is re-raised here.
fn watchdog(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(()) => worker.join().expect("the scenario thread finished"),
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("scenario still running after {WATCHDOG:?}: a lost wake-up?")
        }
    }
}

// ---------------------------------------------------------------------------
// The scenarios, written once.

/// (a) A task awaiting `done()` on a grandchild is woken when another task
/// cancels an ancestor, and sees the ancestor's cause.
async fn cancel_from_another_task<R: Rt>(rt: R) {
    let root = Context::background();
    let (parent, handle) = root.with_cancel();
    let (child, _child_handle) = parent.with_cancel();
    let (registered_tx, registered_rx) = oneshot::channel();

    let waiter = rt.spawn({
        let child = child.clone();
        async move {
            let mut done = pin!(child.done());
            assert_eq!(poll_once(&mut done).await, None, "live before the cancel");
            registered_tx.send(()).expect("the canceller listens");
            done.await
        }
    });
    let canceller = rt.spawn(async move {
        registered_rx.await.expect("the waiter registered");
        sleep(Duration::from_millis(20)).await; // let the waiter's task go idle
        handle.cancel_with(Cause::msg("stop"));
    });

    let (err, ()) = join(waiter, canceller).await;
    assert_eq!(err, Error::Canceled);
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(child.cause().expect("cancelled").to_string(), "stop");
    assert_eq!(parent.err(), Some(Error::Canceled));
    assert!(!root.is_cancelled(), "cancellation never goes up");
}

/// (b) `ctx.run(fut)` in one task is ended by a sibling task's cancel; the
/// inner future had started and is dropped by the time `run` resolves.
async fn run_cancelled_by_sibling<R: Rt>(rt: R) {
    let (ctx, handle) = Context::background().with_cancel();
    assert_eq!(ctx.run(async { 7 }).await, Ok(7), "a live context runs fut");

    let dropped = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = oneshot::channel();
    let worker = rt.spawn({
        let ctx = ctx.clone();
        let flag = DropFlag(dropped.clone());
        let dropped = dropped.clone();
        async move {
            let res = ctx
                .run(async move {
                    let _flag = flag;
                    started_tx.send(()).expect("the canceller listens");
                    std::future::pending::<()>().await;
                    unreachable!("pending never completes");
                })
                .await;
            // `run` dropped the inner future before resolving.
            (res, dropped.load(Ordering::SeqCst))
        }
    });
    let canceller = rt.spawn(async move {
        started_rx.await.expect("the inner future started");
        sleep(Duration::from_millis(20)).await;
        handle.cancel();
    });

    let ((res, dropped_when_resolved), ()) = join(worker, canceller).await;
    assert_eq!(res, Err(Error::Canceled));
    assert!(
        dropped_when_resolved,
        "the inner future is dropped on cancel"
    );
    // An always-ready future on a cancelled context still does not run.
    assert_eq!(ctx.run(async { 7 }).await, Err(Error::Canceled));
}

/// (c) A timeout under `root` fires by itself and both the awaiting task and
/// a sibling task observe it through `done()`. Returns how much time passed
/// on `root`'s clock.
async fn timeout_fires<R: Rt>(rt: R, root: Context, timeout: Duration) -> Duration {
    let start = root.now();
    let (ctx, _handle) = root.with_timeout(timeout);
    let deadline = ctx.deadline().expect("a timeout sets a deadline");
    assert!(deadline >= start.saturating_add(timeout));
    assert_eq!(ctx.err(), None);

    let observer = rt.spawn(ctx.done_owned());
    let (mine, theirs) = join(ctx.done(), observer).await;
    assert_eq!(mine, Error::DeadlineExceeded);
    assert_eq!(theirs, Error::DeadlineExceeded);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.cause().expect("ended"), Error::DeadlineExceeded);
    assert!(!root.is_cancelled());
    let now = root.now();
    assert!(
        now >= deadline,
        "fired at {now:?}, before its deadline {deadline:?}"
    );
    now - start
}

/// (d) A plain OS thread drops the handle (which cancels) while a task waits
/// in `done()`; the task is woken.
async fn cancel_from_os_thread<R: Rt>(rt: R) {
    let (ctx, handle) = Context::background().with_cancel();
    let (registered_tx, registered_rx) = mpsc::channel::<()>();
    let canceller = thread::spawn(move || {
        registered_rx.recv().expect("the waiter registered");
        thread::sleep(Duration::from_millis(20)); // the task's executor parks
        drop(handle); // dropping a handle cancels
    });

    let waiter = rt.spawn({
        let ctx = ctx.clone();
        async move {
            let mut done = pin!(ctx.done());
            assert_eq!(poll_once(&mut done).await, None, "live before the cancel");
            registered_tx.send(()).expect("the thread listens");
            done.await
        }
    });
    assert_eq!(waiter.await, Error::Canceled);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    // The thread is past its cancel (or about to return from it).
    canceller.join().expect("the cancelling thread");
}

/// (e) An in-task `Group` awaited in a task of the executor. Its members
/// borrow from the task's frame; one fails once a sibling task (on this
/// executor, or a branch of the `join` on a block-on one) signals it, after
/// the others are parked in `done()`; its error cancels them; the wait
/// returns it after all of them finished.
async fn in_task_group<R: Rt>(rt: R) {
    let stopped = AtomicUsize::new(0);
    let (parent, _keep) = Context::background().with_cancel();
    let mut group = Group::new(&parent);
    for _ in 0..3 {
        let ctx = group.context().clone();
        let stopped = &stopped;
        group
            .add(async move {
                assert_eq!(ctx.done().await, Error::Canceled);
                stopped.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
    }
    let (go_tx, go_rx) = oneshot::channel::<()>();
    group
        .add(async move {
            go_rx.await.expect("the signaller sends");
            Err(Cause::msg("member failed"))
        })
        .await;
    let signaller = rt.spawn(async move {
        sleep(Duration::from_millis(20)).await; // the members park first
        go_tx.send(()).expect("the member listens");
    });
    let (res, ()) = join(group.wait(), signaller).await;
    assert_eq!(
        res.expect_err("a member failed").to_string(),
        "member failed"
    );
    assert_eq!(stopped.load(Ordering::SeqCst), 3, "wait waited for all");
    let cause = group.context().cause().expect("cancelled");
    assert_eq!(cause.to_string(), "member failed");
    assert!(!parent.is_cancelled(), "cancellation never goes up");
}

/// (f) A `SpawnGroup` on the executor: the members are tasks of their own;
/// the failing one cancels the rest; `collect` returns every result in the
/// order the members were added. Then a second round under a limit of one.
async fn spawned_group<S: Spawn>(spawner: S) {
    let group = SpawnGroup::new(&Context::background(), spawner);
    for n in 0..3_u32 {
        let ctx = group.context().clone();
        group
            .add(async move {
                ctx.done().await;
                Ok(n)
            })
            .await;
    }
    let (go_tx, go_rx) = oneshot::channel::<()>();
    group
        .add(async move {
            go_rx.await.expect("the test sends");
            Err(Cause::msg("member failed"))
        })
        .await;
    sleep(Duration::from_millis(20)).await; // the members park first
    go_tx.send(()).expect("the member listens");
    let results = group.collect().await;
    let values: Vec<_> = results.iter().map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(values, [Some(0), Some(1), Some(2), None]);
    assert_eq!(
        results[3].as_ref().unwrap_err().to_string(),
        "member failed"
    );
    let cause = group.context().cause().expect("cancelled");
    assert_eq!(cause.to_string(), "member failed");

    group.set_limit(Some(1));
    let running = Arc::new(AtomicUsize::new(0));
    for n in 10..14 {
        let running = running.clone();
        group
            .add(async move {
                assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "limit 1");
                sleep(Duration::from_millis(1)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(n)
            })
            .await;
    }
    let values: Vec<_> = group.collect().await.into_iter().map(Result::ok).collect();
    assert_eq!(values, [Some(10), Some(11), Some(12), Some(13)]);
}

/// The scenarios as `#[test]`s on one executor, through `$runner`.
macro_rules! scenarios {
    ($runner:ident) => {
        #[test]
        fn task_cancels_waiting_task() {
            $runner(cancel_from_another_task);
        }

        #[test]
        fn sibling_cancels_run() {
            $runner(run_cancelled_by_sibling);
        }

        #[test]
        fn timeout_fires_on_std_clock() {
            $runner(|rt| async move {
                let elapsed = timeout_fires(rt, Context::background(), SHORT).await;
                assert!(elapsed >= SHORT);
            });
        }

        #[test]
        fn os_thread_cancels_waiting_task() {
            $runner(cancel_from_os_thread);
        }

        #[test]
        fn in_task_group_first_error_cancels_members() {
            $runner(in_task_group);
        }
    };
}

// ---------------------------------------------------------------------------
// tokio

#[derive(Clone)]
struct TokioRt(tokio::runtime::Handle);

impl Rt for TokioRt {
    fn spawn<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Join<T> {
        let task = self.0.spawn(fut);
        Box::pin(async move {
            match task.await {
                Ok(v) => v,
                Err(e) => resume_unwind(e.into_panic()),
            }
        })
    }
}

/// Builds the runtime on the watchdog's thread and runs the scenario as a
/// spawned task (not in `block_on` itself), so it runs on a worker.
fn on_tokio<F, Fut>(build: fn() -> tokio::runtime::Runtime, scenario: F)
where
    F: FnOnce(TokioRt) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    watchdog(move || {
        let runtime = build();
        let rt = TokioRt(runtime.handle().clone());
        runtime.block_on(async move {
            // Inside the runtime, so a scenario may make a `TokioClock`.
            let main = scenario(rt.clone());
            rt.spawn(main).await;
        });
    });
}

fn on_tokio_current_thread<F, Fut>(scenario: F)
where
    F: FnOnce(TokioRt) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_tokio(
        || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
        },
        scenario,
    );
}

fn on_tokio_multi_thread<F, Fut>(scenario: F)
where
    F: FnOnce(TokioRt) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_tokio(
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a multi-thread runtime")
        },
        scenario,
    );
}

mod tokio_current_thread {
    use super::*;

    scenarios!(on_tokio_current_thread);

    #[cfg(feature = "tokio")]
    #[test]
    fn spawned_group_on_the_runtime() {
        on_tokio_current_thread(|rt| spawned_group(rt.0));
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn timeout_fires_on_tokio_clock_in_paused_time() {
        on_tokio(
            || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()
                    .expect("a paused runtime")
            },
            |rt| async move {
                let clock = cancel_tree::TokioClock::new();
                let timeout = Duration::from_secs(30);
                let t0 = tokio::time::Instant::now();
                let elapsed =
                    timeout_fires(rt, Context::background_with_clock(clock), timeout).await;
                // Paused time auto-advanced to the deadline, not (much) past.
                assert!(elapsed >= timeout, "{elapsed:?}");
                assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
                assert!(t0.elapsed() >= timeout, "tokio's clock moved with it");
            },
        );
    }
}

mod tokio_multi_thread {
    use super::*;

    scenarios!(on_tokio_multi_thread);

    #[cfg(feature = "tokio")]
    #[test]
    fn spawned_group_on_the_runtime() {
        on_tokio_multi_thread(|rt| spawned_group(rt.0));
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn timeout_fires_on_tokio_clock() {
        on_tokio_multi_thread(|rt| async move {
            let root = Context::background_with_clock(cancel_tree::TokioClock::new());
            let elapsed = timeout_fires(rt, root, SHORT).await;
            assert!(elapsed >= SHORT);
        });
    }
}

// ---------------------------------------------------------------------------
// smol: async-executor on async-io

#[derive(Clone)]
struct SmolRt(Arc<async_executor::Executor<'static>>);

impl Rt for SmolRt {
    fn spawn<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Join<T> {
        Box::pin(self.0.spawn(fut))
    }
}

/// An executor run by two threads (the watchdog's and one more), as smol
/// apps do; the scenario is a task on it.
fn on_smol<F, Fut>(scenario: F)
where
    F: FnOnce(SmolRt) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    watchdog(move || {
        let ex = Arc::new(async_executor::Executor::new());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let helper = thread::spawn({
            let ex = ex.clone();
            move || async_io::block_on(ex.run(stop_rx))
        });
        let rt = SmolRt(ex.clone());
        let main = ex.spawn(scenario(rt));
        async_io::block_on(ex.run(main));
        drop(stop_tx);
        let _ = helper.join().expect("the helper thread");
    });
}

mod smol_executor {
    use super::*;

    scenarios!(on_smol);

    #[cfg(feature = "async-executor")]
    #[test]
    fn spawned_group_on_the_executor() {
        on_smol(|rt| spawned_group(rt.0));
    }

    #[cfg(feature = "async-io")]
    #[test]
    fn timeout_fires_on_async_io_clock() {
        on_smol(|rt| {
            let (clock, driver) = cancel_tree::AsyncIoClock::new();
            rt.0.spawn(driver).detach();
            async move {
                let root = Context::background_with_clock(clock);
                let elapsed = timeout_fires(rt, root, SHORT).await;
                assert!(elapsed >= SHORT);
            }
        });
    }
}

// ---------------------------------------------------------------------------
// futures' ThreadPool

#[derive(Clone)]
struct PoolRt(futures::executor::ThreadPool);

impl Rt for PoolRt {
    fn spawn<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Join<T> {
        use futures::task::SpawnExt;
        // A panic in the task resumes when the handle is awaited.
        Box::pin(
            self.0
                .spawn_with_handle(fut)
                .expect("the pool accepts tasks"),
        )
    }
}

fn on_thread_pool<F, Fut>(scenario: F)
where
    F: FnOnce(PoolRt) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    watchdog(move || {
        let pool = futures::executor::ThreadPool::builder()
            .pool_size(2)
            .create()
            .expect("a thread pool");
        let rt = PoolRt(pool);
        let main = rt.spawn(scenario(rt.clone()));
        futures::executor::block_on(main);
    });
}

mod futures_thread_pool {
    use super::*;

    scenarios!(on_thread_pool);

    #[cfg(feature = "futures")]
    #[test]
    fn spawned_group_on_the_pool() {
        on_thread_pool(|rt| spawned_group(cancel_tree::FuturesSpawn(rt.0)));
    }
}

// ---------------------------------------------------------------------------
// Block-on executors: one task; "spawned" futures are branches of a `join`.

#[derive(Clone)]
struct Inline;

impl Rt for Inline {
    fn spawn<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Join<T> {
        Box::pin(fut)
    }
}

fn on_futures_block_on<F, Fut>(scenario: F)
where
    F: FnOnce(Inline) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    watchdog(move || futures::executor::block_on(scenario(Inline)));
}

fn on_pollster<F, Fut>(scenario: F)
where
    F: FnOnce(Inline) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    watchdog(move || pollster::block_on(scenario(Inline)));
}

mod futures_block_on {
    use super::*;

    scenarios!(on_futures_block_on);
}

mod pollster_block_on {
    use super::*;

    scenarios!(on_pollster);
}

// ---------------------------------------------------------------------------
// embassy-executor, std platform

#[derive(Clone, Copy)]
struct EmbassyRt(embassy_executor::Spawner);

impl EmbassyRt {
    /// Spawns `fut` as a task in its own leaked storage (embassy tasks are
    /// `'static`; `#[embassy_executor::task]` cannot be generic).
    fn spawn_detached<F: Future + 'static>(&self, fut: F) {
        let storage: &'static embassy_executor::raw::TaskStorage<F> =
            Box::leak(Box::new(embassy_executor::raw::TaskStorage::new()));
        let token = storage.spawn(|| fut).expect("fresh storage is free");
        self.0.spawn(token);
    }
}

/// The crate has no embassy `Spawn` (embassy's tasks are static pools);
/// a program that leaks a task storage per task, as this test does, can
/// write one.
impl Spawn for EmbassyRt {
    fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_detached(task);
    }
}

impl Rt for EmbassyRt {
    fn spawn<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Join<T> {
        let (tx, rx) = oneshot::channel();
        self.spawn_detached(async move {
            let _ = tx.send(fut.await);
        });
        // If the task panics, the executor's thread unwinds and the watchdog
        // reports it; the receiver is never polled again.
        Box::pin(async move { rx.await.expect("the task sends its output") })
    }
}

/// embassy's std `Executor::run` never returns: run it with `run_until` on
/// the watchdog's thread, and stop once the scenario task has finished.
fn on_embassy<F, Fut>(scenario: F)
where
    F: FnOnce(EmbassyRt) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    watchdog(move || {
        let executor: &'static mut embassy_executor::Executor =
            Box::leak(Box::new(embassy_executor::Executor::new()));
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        executor.run_until(
            move |spawner| {
                let rt = EmbassyRt(spawner);
                let main = scenario(rt);
                rt.spawn_detached(async move {
                    main.await;
                    flag.store(true, Ordering::SeqCst);
                });
            },
            move || finished.load(Ordering::SeqCst),
        );
    });
}

mod embassy_std {
    use super::*;

    scenarios!(on_embassy);

    #[test]
    fn spawned_group_on_the_executor() {
        on_embassy(spawned_group);
    }

    #[cfg(feature = "embassy-time")]
    static CLOCK: cancel_tree::EmbassyClock = cancel_tree::EmbassyClock::new();

    #[cfg(feature = "embassy-time")]
    #[test]
    fn timeout_fires_on_embassy_clock() {
        on_embassy(|rt| {
            // The clock's driver as a task on the same executor.
            rt.spawn_detached(CLOCK.run());
            async move {
                let root = Context::background_with_clock(&CLOCK);
                let elapsed = timeout_fires(rt, root, SHORT).await;
                assert!(elapsed >= SHORT);
            }
        });
    }
}
