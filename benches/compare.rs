//! cancel-tree vs tokio-util's `CancellationToken`, side by side.
//!
//! Every criterion group holds one scenario, with both libraries measured back
//! to back in the same process. Function names: `cancel-tree` and
//! `tokio-util` are the idiomatic forms (the pair `scripts/bench_chart.py`
//! compares); other names are variants or baselines:
//!
//! * `atomic-bool`: a bare `AtomicBool::load(Acquire)` (the floor for
//!   `is_cancelled`).
//! * `cancel-tree-detach`: the child's handle is `detach()`ed instead of
//!   dropped (dropping a `CancelHandle` cancels; `detach` does not).
//! * `tokio-util-cancel`: the child token is cancelled before it is dropped.
//! * `cancel-tree-std` / `cancel-tree-manual`: timeouts on the default
//!   `StdClock` tree / on a `ManualClock` tree.
//! * `*-1thread`: the two-thread harness with one thread (the baseline for
//!   "two threads are faster in total than one").
//!
//! The two-thread groups also record CPU time / wall time in
//! `target/criterion/parallelism.json`: near 2 the threads really ran at the
//! same time; near 1 another process held the second core and the threads
//! were time-sliced, which hides all contention (the chart script then
//! refuses to judge those numbers).
//!
//! Run with `cargo bench --bench compare` (about 3 to 4 minutes on 2 cores);
//! see `docs/benchmarks.md` for the results and `scripts/bench_chart.py` for
//! the table and chart.

use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::task::{Context as TaskContext, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use cancel_tree::{CancelHandle, Context, ManualClock};
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main,
};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------
// Group settings

/// Groups whose iterations take nanoseconds to microseconds.
fn fast<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40);
    g
}

/// Groups whose iterations take tens of milliseconds or more (the big trees):
/// flat sampling, so criterion runs about `sample_size` iterations, each with
/// its own untimed setup and teardown.
fn heavy<'a>(c: &'a mut Criterion, name: &str, secs: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(secs))
        .sample_size(10);
    g
}

fn noop_cx() -> TaskContext<'static> {
    TaskContext::from_waker(Waker::noop())
}

// ---------------------------------------------------------------------------
// 1. is_cancelled

fn is_cancelled(c: &mut Criterion) {
    let flag = AtomicBool::new(false);
    let (ctx, h) = Context::background().with_cancel();
    let tok = CancellationToken::new();

    let mut g = fast(c, "is_cancelled_live");
    g.bench_function("cancel-tree", |b| b.iter(|| black_box(&ctx).is_cancelled()));
    g.bench_function("tokio-util", |b| b.iter(|| black_box(&tok).is_cancelled()));
    g.bench_function("atomic-bool", |b| {
        b.iter(|| black_box(&flag).load(Ordering::Acquire))
    });
    g.finish();

    h.cancel();
    tok.cancel();
    flag.store(true, Ordering::Release);
    assert!(ctx.is_cancelled() && tok.is_cancelled());
    let mut g = fast(c, "is_cancelled_cancelled");
    g.bench_function("cancel-tree", |b| b.iter(|| black_box(&ctx).is_cancelled()));
    g.bench_function("tokio-util", |b| b.iter(|| black_box(&tok).is_cancelled()));
    g.bench_function("atomic-bool", |b| {
        b.iter(|| black_box(&flag).load(Ordering::Acquire))
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// 2. clone + drop

fn clone_drop(c: &mut Criterion) {
    let (parent, _ph) = Context::background().with_cancel();
    let (ctx, _h) = parent.with_cancel();
    let ptok = CancellationToken::new();
    let tok = ptok.child_token();

    let mut g = fast(c, "clone_drop");
    g.bench_function("cancel-tree", |b| {
        b.iter(|| drop(black_box(black_box(&ctx).clone())))
    });
    g.bench_function("tokio-util", |b| {
        b.iter(|| drop(black_box(black_box(&tok).clone())))
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// 3. child create + drop, one thread

/// One create + drop of a child under `parent`, in each library's idiom.
#[inline(always)]
fn ct_child(parent: &Context) {
    let (ctx, cancel) = black_box(parent).with_cancel();
    black_box(&ctx);
    drop(cancel); // what `let (ctx, _cancel) = ..` does at scope end: cancels
    drop(ctx);
}

#[inline(always)]
fn ct_child_detach(parent: &Context) {
    let (ctx, cancel) = black_box(parent).with_cancel();
    black_box(&ctx);
    cancel.detach();
    drop(ctx);
}

#[inline(always)]
fn tu_child(parent: &CancellationToken) {
    let tok = black_box(parent).child_token();
    drop(black_box(tok));
}

#[inline(always)]
fn tu_child_cancel(parent: &CancellationToken) {
    let tok = black_box(parent).child_token();
    black_box(&tok).cancel();
    drop(tok);
}

fn child_one_thread(c: &mut Criterion) {
    for siblings in [0usize, 1000] {
        let name = if siblings == 0 {
            "child_create_drop".to_string()
        } else {
            "child_create_drop_1k_siblings".to_string()
        };
        let (parent, _ph) = Context::background().with_cancel();
        let ct_sibs: Vec<_> = (0..siblings).map(|_| parent.with_cancel()).collect();
        let ptok = CancellationToken::new();
        let tu_sibs: Vec<_> = (0..siblings).map(|_| ptok.child_token()).collect();

        let mut g = fast(c, &name);
        g.bench_function("cancel-tree", |b| b.iter(|| ct_child(&parent)));
        g.bench_function("tokio-util", |b| b.iter(|| tu_child(&ptok)));
        g.bench_function("cancel-tree-detach", |b| {
            b.iter(|| ct_child_detach(&parent))
        });
        g.bench_function("tokio-util-cancel", |b| b.iter(|| tu_child_cancel(&ptok)));
        g.finish();
        drop(ct_sibs);
        drop(tu_sibs);
    }
}

// ---------------------------------------------------------------------------
// 4. child create + drop, two threads on the same parent

/// CPU time (user + system) of this process so far, from `/proc/self/stat`
/// (Linux; `None` elsewhere). Clock ticks are assumed to be 100 Hz (the
/// Linux `USER_HZ` on every mainstream architecture).
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, i.e. the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Wall and CPU time accumulated over every sample of one multi-threaded
/// benchmark: CPU / wall near the thread count means the threads really ran
/// in parallel; near 1 means they were time-sliced on one core (another
/// process held the other core), and the result says nothing about
/// contention.
#[derive(Default)]
struct Parallelism {
    wall: std::cell::Cell<Duration>,
    cpu: std::cell::Cell<Duration>,
}

impl Parallelism {
    fn ratio(&self) -> Option<f64> {
        let wall = self.wall.get().as_secs_f64();
        (wall > 0.5).then(|| self.cpu.get().as_secs_f64() / wall)
    }
}

/// Runs `work(iters)` on `threads` threads started together; returns the wall
/// time divided by `threads`, so criterion reports wall / (threads * iters):
/// the time per operation of the whole system (its inverse is total ops/s).
fn on_threads<F: Fn(u64) + Sync>(
    threads: usize,
    iters: u64,
    par: &Parallelism,
    work: F,
) -> Duration {
    let barrier = Barrier::new(threads);
    let cpu0 = process_cpu_time();
    let t0 = Instant::now();
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    work(iters);
                    (start, Instant::now())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if let (Some(a), Some(b)) = (cpu0, process_cpu_time()) {
        par.wall.set(par.wall.get() + t0.elapsed());
        par.cpu.set(par.cpu.get() + b.saturating_sub(a));
    }
    // From the first thread's start to the last thread's end.
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    end.duration_since(start) / threads as u32
}

/// Records CPU / wall of each multi-threaded benchmark in
/// `<target>/criterion/parallelism.json` (read by `scripts/bench_chart.py`)
/// and prints it.
fn record_parallelism(id: &str, par: &Parallelism) {
    let Some(r) = par.ratio() else { return };
    println!("{id}: CPU time / wall time = {r:.2} (2.00 = both threads ran in parallel)");
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    )
    .join("criterion");
    let path = dir.join("parallelism.json");
    let mut map: std::collections::BTreeMap<String, String> = std::fs::read_to_string(&path)
        .ok()
        .map(|s| {
            s.lines()
                .filter_map(|l| {
                    let l = l.trim().trim_end_matches(',');
                    let (k, v) = l.split_once(':')?;
                    Some((k.trim().trim_matches('"').to_string(), v.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    map.insert(id.to_string(), format!("{r:.3}"));
    let body: Vec<String> = map.iter().map(|(k, v)| format!("  \"{k}\": {v}")).collect();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, format!("{{\n{}\n}}\n", body.join(",\n")));
}

/// The loop one benchmark thread runs: `n` operations.
type Work<'a> = &'a (dyn Fn(u64) + Sync);

fn child_two_threads(c: &mut Criterion) {
    for siblings in [0usize, 1000] {
        let name = if siblings == 0 {
            "child_create_drop_2threads".to_string()
        } else {
            "child_create_drop_2threads_1k_siblings".to_string()
        };
        let (parent, _ph) = Context::background().with_cancel();
        let ct_sibs: Vec<_> = (0..siblings).map(|_| parent.with_cancel()).collect();
        let ptok = CancellationToken::new();
        let tu_sibs: Vec<_> = (0..siblings).map(|_| ptok.child_token()).collect();

        let ct = |n: u64| {
            for _ in 0..n {
                ct_child(&parent)
            }
        };
        let ct_detach = |n: u64| {
            for _ in 0..n {
                ct_child_detach(&parent)
            }
        };
        let tu = |n: u64| {
            for _ in 0..n {
                tu_child(&ptok)
            }
        };
        // (function, threads, work). The one-thread rows run the same
        // harness: the baseline for "faster in total than one thread".
        let cases: [(&str, usize, Work<'_>); 5] = [
            ("cancel-tree", 2, &ct),
            ("tokio-util", 2, &tu),
            ("cancel-tree-detach", 2, &ct_detach),
            ("cancel-tree-1thread", 1, &ct),
            ("tokio-util-1thread", 1, &tu),
        ];
        let mut g = fast(c, &name);
        for (func, threads, work) in cases {
            let par = Parallelism::default();
            g.bench_function(func, |b| {
                b.iter_custom(|iters| on_threads(threads, iters, &par, work))
            });
            if threads > 1 {
                record_parallelism(&format!("{name}/{func}"), &par);
            }
        }
        g.finish();
        drop(ct_sibs);
        drop(tu_sibs);
    }
}

// ---------------------------------------------------------------------------
// 5. cancel a big tree (and build it)

#[derive(Clone, Copy)]
enum Shape {
    /// A root with this many direct children.
    Fanout(usize),
    /// Complete tree: `levels` levels (the root is level 1), each inner node
    /// with `branch` children.
    Tree { branch: usize, levels: u32 },
    /// A root and a chain of this many descendants.
    Chain(usize),
}

impl Shape {
    /// Nodes below the root.
    fn below_root(self) -> usize {
        match self {
            Shape::Fanout(n) | Shape::Chain(n) => n,
            Shape::Tree { branch, levels } => (1..levels).map(|l| branch.pow(l)).sum(),
        }
    }

    /// Builds the tree below `root`, pushing each node with `derive(parent)`.
    fn build<T>(self, root: &T, nodes: &mut Vec<T>, derive: impl Fn(&T) -> T) {
        match self {
            Shape::Fanout(n) => {
                for _ in 0..n {
                    nodes.push(derive(root));
                }
            }
            Shape::Chain(n) => {
                nodes.push(derive(root));
                for i in 1..n {
                    let next = derive(&nodes[i - 1]);
                    nodes.push(next);
                }
            }
            Shape::Tree { branch, levels } => {
                for _ in 0..branch {
                    nodes.push(derive(root));
                }
                let (mut start, mut end) = (0, nodes.len());
                for _ in 2..levels {
                    for i in start..end {
                        for _ in 0..branch {
                            let child = derive(&nodes[i]);
                            nodes.push(child);
                        }
                    }
                    (start, end) = (end, nodes.len());
                }
            }
        }
    }
}

/// A cancel-tree tree: the root's context and handle, and every node below
/// it with its handle (kept alive so nothing is cancelled before the bench).
struct CtTree {
    root: (Context, CancelHandle),
    nodes: Vec<(Context, CancelHandle)>,
}

struct TuTree {
    root: CancellationToken,
    nodes: Vec<CancellationToken>,
}

fn ct_tree(shape: Shape) -> CtTree {
    let root = Context::background().with_cancel();
    let mut nodes = Vec::with_capacity(shape.below_root());
    shape.build(&root, &mut nodes, |p| p.0.with_cancel());
    CtTree { root, nodes }
}

fn tu_tree(shape: Shape) -> TuTree {
    let root = CancellationToken::new();
    let mut nodes = Vec::with_capacity(shape.below_root());
    shape.build(&root, &mut nodes, |p| p.child_token());
    TuTree { root, nodes }
}

fn big_trees(c: &mut Criterion) {
    let shapes = [
        ("fanout_100k", Shape::Fanout(100_000), 3),
        (
            "tree_4x10",
            Shape::Tree {
                branch: 4,
                levels: 10,
            },
            6,
        ),
        ("chain_1m", Shape::Chain(1_000_000), 6),
    ];
    for (name, shape, secs) in shapes {
        let mut g = heavy(c, &format!("cancel_{name}"), secs);
        g.bench_function("cancel-tree", |b| {
            b.iter_batched(
                || ct_tree(shape),
                |t| {
                    t.root.1.cancel();
                    t // dropped outside the timed part
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("tokio-util", |b| {
            b.iter_batched(
                || tu_tree(shape),
                |t| {
                    t.root.cancel();
                    t
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();

        // Sanity: everything below the root ends up cancelled.
        let t = ct_tree(shape);
        t.root.1.cancel();
        assert!(t.nodes.iter().all(|(c, _)| c.is_cancelled()));
        let t = tu_tree(shape);
        t.root.cancel();
        assert!(t.nodes.iter().all(|c| c.is_cancelled()));

        // Building the same tree (the node Vec is allocated untimed).
        let mut g = heavy(c, &format!("build_{name}"), secs);
        g.bench_function("cancel-tree", |b| {
            b.iter_batched(
                || {
                    let root = Context::background().with_cancel();
                    (root, Vec::with_capacity(shape.below_root()))
                },
                |(root, mut nodes)| {
                    shape.build(&root, &mut nodes, |p| p.0.with_cancel());
                    (root, nodes)
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("tokio-util", |b| {
            b.iter_batched(
                || {
                    (
                        CancellationToken::new(),
                        Vec::with_capacity(shape.below_root()),
                    )
                },
                |(root, mut nodes)| {
                    shape.build(&root, &mut nodes, |p| p.child_token());
                    (root, nodes)
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

// ---------------------------------------------------------------------------
// 6. done(): create + poll once + drop

fn done_poll(c: &mut Criterion) {
    let (parent, _ph) = Context::background().with_cancel();
    let (ctx, h) = parent.with_cancel();
    let ptok = CancellationToken::new();
    let tok = ptok.child_token();
    let mut cx = noop_cx();

    let mut g = fast(c, "done_poll_live");
    g.bench_function("cancel-tree", |b| {
        b.iter(|| {
            let mut f = pin!(black_box(&ctx).done());
            black_box(f.as_mut().poll(&mut cx)).is_pending()
        })
    });
    g.bench_function("tokio-util", |b| {
        b.iter(|| {
            let mut f = pin!(black_box(&tok).cancelled());
            black_box(f.as_mut().poll(&mut cx)).is_pending()
        })
    });
    g.finish();

    h.cancel();
    tok.cancel();
    let mut g = fast(c, "done_poll_cancelled");
    g.bench_function("cancel-tree", |b| {
        b.iter(|| {
            let mut f = pin!(black_box(&ctx).done());
            black_box(f.as_mut().poll(&mut cx)).is_ready()
        })
    });
    g.bench_function("tokio-util", |b| {
        b.iter(|| {
            let mut f = pin!(black_box(&tok).cancelled());
            black_box(f.as_mut().poll(&mut cx)).is_ready()
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// 7. wake path: cancel() -> a thread blocked on done() runs

struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Shared flags between the timing thread and the blocked worker.
#[derive(Default)]
struct Flags {
    /// The worker polled its future once (Pending) and is about to park.
    waiting: AtomicBool,
    /// The worker saw its future Ready.
    woken: AtomicBool,
}

/// The worker: for every item received, poll `$make(&item)` once with a
/// waker that unparks this thread, report `waiting`, park until it is ready,
/// then report `woken`. (A macro: the future borrows the item.)
macro_rules! blocked_worker {
    ($rx:expr, $flags:expr, |$item:ident| $make:expr) => {{
        let flags: &Flags = $flags;
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = TaskContext::from_waker(&waker);
        for $item in $rx {
            let mut fut = pin!($make);
            let mut first = true;
            while fut.as_mut().poll(&mut cx).is_pending() {
                if first {
                    flags.waiting.store(true, Ordering::Release);
                    first = false;
                }
                thread::park();
            }
            flags.woken.store(true, Ordering::Release);
        }
    }};
}

/// Gives the worker time to actually block in `park` (a futex wait).
fn settle() {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(30) {
        std::hint::spin_loop();
    }
}

/// One round trip: hand `item` to the worker, wait until it is blocked, then
/// time `cancel()` until the worker reports it was woken.
fn round_trip<T>(tx: &mpsc::Sender<T>, flags: &Flags, item: T, cancel: impl FnOnce()) -> Duration {
    tx.send(item).unwrap();
    while !flags.waiting.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    flags.waiting.store(false, Ordering::Relaxed);
    settle();
    let t = Instant::now();
    cancel();
    while !flags.woken.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let dt = t.elapsed();
    flags.woken.store(false, Ordering::Relaxed);
    dt
}

fn wake_latency(c: &mut Criterion) {
    let mut g = fast(c, "wake_latency");
    g.measurement_time(Duration::from_secs(3));

    let (parent, _ph) = Context::background().with_cancel();
    g.bench_function("cancel-tree", |b| {
        b.iter_custom(|iters| {
            let flags = Flags::default();
            let (tx, rx) = mpsc::channel::<Context>();
            thread::scope(|s| {
                s.spawn(|| blocked_worker!(rx, &flags, |ctx| ctx.done()));
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (ctx, cancel) = parent.with_cancel();
                    total += round_trip(&tx, &flags, ctx, || cancel.cancel());
                }
                drop(tx);
                total
            })
        })
    });

    let ptok = CancellationToken::new();
    g.bench_function("tokio-util", |b| {
        b.iter_custom(|iters| {
            let flags = Flags::default();
            let (tx, rx) = mpsc::channel::<CancellationToken>();
            thread::scope(|s| {
                s.spawn(|| blocked_worker!(rx, &flags, |tok| tok.cancelled()));
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let tok = ptok.child_token();
                    let theirs = tok.clone();
                    total += round_trip(&tx, &flags, theirs, || tok.cancel());
                }
                drop(tx);
                total
            })
        })
    });
    g.finish();
}

/// A waker that only counts its wakes.
struct CountWake(std::sync::atomic::AtomicUsize);

impl Wake for CountWake {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The library's share of the wake path, without the OS: on one thread,
/// derive a child, register a waiter (poll once with a counting waker),
/// cancel (which calls the waker), poll again (Ready), drop everything.
fn wake_inline(c: &mut Criterion) {
    let counter = Arc::new(CountWake(std::sync::atomic::AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = TaskContext::from_waker(&waker);
    let (parent, _ph) = Context::background().with_cancel();
    let ptok = CancellationToken::new();

    let mut g = fast(c, "wake_inline");
    g.bench_function("cancel-tree", |b| {
        b.iter(|| {
            let (ctx, cancel) = black_box(&parent).with_cancel();
            let mut f = pin!(ctx.done());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            cancel.cancel();
            assert!(f.as_mut().poll(&mut cx).is_ready());
        })
    });
    g.bench_function("tokio-util", |b| {
        b.iter(|| {
            let tok = black_box(&ptok).child_token();
            let mut f = pin!(tok.cancelled());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            tok.cancel();
            assert!(f.as_mut().poll(&mut cx).is_ready());
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// 8. timeouts: create a 30 s timeout and cancel it before it fires

const TIMEOUT: Duration = Duration::from_secs(30);
/// The other pending timeouts: later than the benchmarked one, far beyond
/// the length of a run, so none fires during the bench.
const OTHER_TIMEOUT: Duration = Duration::from_secs(3600);

#[inline(always)]
fn ct_timeout(parent: &Context) {
    let (ctx, cancel) = black_box(parent).with_timeout(TIMEOUT);
    black_box(&ctx);
    cancel.cancel();
    drop(cancel);
    drop(ctx);
}

#[inline(always)]
fn tu_timeout(parent: &CancellationToken, cx: &mut TaskContext<'_>) {
    let tok = black_box(parent).child_token();
    let mut sleep = pin!(tokio::time::sleep(TIMEOUT));
    // The first poll registers the timer with the runtime's driver.
    assert!(sleep.as_mut().poll(cx).is_pending());
    tok.cancel();
    drop(tok);
    // `sleep` (pinned on this frame) is dropped here, removing its timer.
}

fn timeouts(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let mut cx = noop_cx();

    for pending in [0usize, 100_000] {
        let name = if pending == 0 {
            "timeout_create_cancel".to_string()
        } else {
            "timeout_create_cancel_100k_pending".to_string()
        };
        let mut g = fast(c, &name);

        // Default StdClock tree (a real timer thread).
        {
            let (parent, _ph) = Context::background().with_cancel();
            let others: Vec<_> = (0..pending)
                .map(|_| parent.with_timeout(OTHER_TIMEOUT))
                .collect();
            g.bench_function("cancel-tree-std", |b| b.iter(|| ct_timeout(&parent)));
            assert!(others.iter().all(|(c, _)| !c.is_cancelled()));
        }
        // ManualClock tree.
        {
            let clock = ManualClock::new();
            let root = Context::background_with_clock(clock.clone());
            let (parent, _ph) = root.with_cancel();
            let others: Vec<_> = (0..pending)
                .map(|_| parent.with_timeout(OTHER_TIMEOUT))
                .collect();
            assert_eq!(clock.pending(), pending);
            g.bench_function("cancel-tree-manual", |b| b.iter(|| ct_timeout(&parent)));
            assert_eq!(clock.pending(), pending);
            drop(others);
        }
        // tokio-util: a child token plus a registered tokio Sleep.
        {
            let ptok = CancellationToken::new();
            let others: Vec<(CancellationToken, Pin<Box<tokio::time::Sleep>>)> = (0..pending)
                .map(|_| {
                    let mut s = Box::pin(tokio::time::sleep(OTHER_TIMEOUT));
                    assert!(s.as_mut().poll(&mut cx).is_pending());
                    (ptok.child_token(), s)
                })
                .collect();
            g.bench_function("tokio-util", |b| b.iter(|| tu_timeout(&ptok, &mut cx)));
            drop(others);
        }
        g.finish();
    }
}

criterion_group!(
    benches,
    is_cancelled,
    clone_drop,
    child_one_thread,
    child_two_threads,
    done_poll,
    wake_latency,
    wake_inline,
    timeouts,
    big_trees,
);
criterion_main!(benches);
