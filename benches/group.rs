//! Task groups against tokio's `JoinSet` + tokio-util's `CancellationToken`
//! (the usual way to get errgroup behaviour on tokio), on a two-worker
//! tokio runtime:
//!
//! * `group_spawn_join_10k`: 10,000 tasks, each holding its group's context
//!   (or a token clone) and checking it once, spawned and all joined.
//!   `cancel-tree` is a `SpawnGroup` on the runtime's `Handle`,
//!   `cancel-tree-in-task` an in-task `Group` (one task polls all of them),
//!   `tokio-util` a `JoinSet` of tasks holding token clones.
//! * `group_first_error_1k`: 1,000 tasks parked on cancellation and one
//!   that fails when told; the time from the failing task's `Err` (or its
//!   `token.cancel()`, for the `JoinSet`) to the moment the waiter has every
//!   task back: every sibling observed the cancellation and finished.
//!
//! Run with `cargo bench --bench group --features tokio`; results are in
//! `docs/benchmarks.md`.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cancel_tree::{Cause, Context, Group, SpawnGroup};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const SPAWNED: usize = 10_000;
const SIBLINGS: usize = 1_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime")
}

#[derive(Debug)]
struct Boom;

fn spawn_join(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("group_spawn_join_10k");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("cancel-tree", |b| {
        b.iter(|| {
            rt.block_on(async {
                let group = SpawnGroup::new(&Context::background(), Handle::current());
                for _ in 0..SPAWNED {
                    let ctx = group.context().clone();
                    let added = group.try_add(async move {
                        black_box(ctx.is_cancelled());
                        Ok::<(), Cause>(())
                    });
                    debug_assert!(added.is_ok());
                }
                group.wait().await.expect("no task fails");
            })
        })
    });
    g.bench_function("cancel-tree-in-task", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut group = Group::new(&Context::background());
                for _ in 0..SPAWNED {
                    let ctx = group.context().clone();
                    let added = group.try_add(async move {
                        black_box(ctx.is_cancelled());
                        Ok::<(), Cause>(())
                    });
                    debug_assert!(added.is_ok());
                }
                group.wait().await.expect("no task fails");
            })
        })
    });
    g.bench_function("tokio-util", |b| {
        b.iter(|| {
            rt.block_on(async {
                let token = CancellationToken::new();
                let mut set = JoinSet::new();
                for _ in 0..SPAWNED {
                    let token = token.clone();
                    set.spawn(async move {
                        black_box(token.is_cancelled());
                        Ok::<(), Boom>(())
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("no task panics").expect("no task fails");
                }
            })
        })
    });
    g.finish();
}

/// Waits (yielding) until `n` tasks have said they are parked.
async fn all_parked(parked: &AtomicUsize, n: usize) {
    while parked.load(Ordering::Acquire) < n {
        tokio::task::yield_now().await;
    }
}

fn first_error(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("group_first_error_1k");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("cancel-tree", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    let group = SpawnGroup::new(&Context::background(), Handle::current());
                    let parked = Arc::new(AtomicUsize::new(0));
                    for _ in 0..SIBLINGS {
                        let ctx = group.context().clone();
                        let parked = parked.clone();
                        let _ = group.try_add(async move {
                            parked.fetch_add(1, Ordering::Release);
                            ctx.done().await;
                            Ok(())
                        });
                    }
                    let (go, told) = oneshot::channel::<()>();
                    let failed_at = Arc::new(Mutex::new(None));
                    let at = failed_at.clone();
                    let _ = group.try_add(async move {
                        told.await.expect("told");
                        *at.lock().unwrap() = Some(Instant::now());
                        Err(Cause::msg("boom"))
                    });
                    all_parked(&parked, SIBLINGS).await;
                    go.send(()).expect("the failing task listens");
                    let _ = group.wait().await;
                    let end = Instant::now();
                    let start = failed_at.lock().unwrap().expect("it failed");
                    end - start
                });
            }
            total
        })
    });
    g.bench_function("cancel-tree-in-task", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    let parked = AtomicUsize::new(0);
                    let failed_at = Mutex::new(None);
                    let (go, told) = oneshot::channel::<()>();
                    let mut group = Group::new(&Context::background());
                    for _ in 0..SIBLINGS {
                        let ctx = group.context().clone();
                        let parked = &parked;
                        let _ = group.try_add(async move {
                            parked.fetch_add(1, Ordering::Release);
                            ctx.done().await;
                            Ok(())
                        });
                    }
                    let at = &failed_at;
                    let _ = group.try_add(async move {
                        told.await.expect("told");
                        *at.lock().unwrap() = Some(Instant::now());
                        Err(Cause::msg("boom"))
                    });
                    // The group runs its tasks only while awaited: tell the
                    // failing task from another task once all are parked.
                    let parked_ref = &parked;
                    let teller = async move {
                        all_parked(parked_ref, SIBLINGS).await;
                        go.send(()).expect("the failing task listens");
                    };
                    let (_, ()) = tokio::join!(group.wait(), teller);
                    let end = Instant::now();
                    let start = failed_at.lock().unwrap().expect("it failed");
                    end - start
                });
            }
            total
        })
    });
    g.bench_function("tokio-util", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    let token = CancellationToken::new();
                    let mut set = JoinSet::new();
                    let parked = Arc::new(AtomicUsize::new(0));
                    for _ in 0..SIBLINGS {
                        let token = token.clone();
                        let parked = parked.clone();
                        set.spawn(async move {
                            parked.fetch_add(1, Ordering::Release);
                            token.cancelled().await;
                            Ok::<(), Boom>(())
                        });
                    }
                    let (go, told) = oneshot::channel::<()>();
                    let failed_at = Arc::new(Mutex::new(None));
                    let at = failed_at.clone();
                    let canceller = token.clone();
                    set.spawn(async move {
                        told.await.expect("told");
                        *at.lock().unwrap() = Some(Instant::now());
                        canceller.cancel(); // errgroup: the first error cancels
                        Err(Boom)
                    });
                    all_parked(&parked, SIBLINGS).await;
                    go.send(()).expect("the failing task listens");
                    let mut first = None;
                    while let Some(r) = set.join_next().await {
                        if let Err(e) = r.expect("no task panics") {
                            first.get_or_insert(e);
                        }
                    }
                    black_box(first);
                    let end = Instant::now();
                    let start = failed_at.lock().unwrap().expect("it failed");
                    end - start
                });
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, spawn_join, first_error);
criterion_main!(benches);
