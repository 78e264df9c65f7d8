//! A walk through Go's `context` examples, in cancel-tree.
//!
//! Run it with `cargo run --example tour`. It finishes in well under a second
//! and prints what happens at each step.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use cancel_tree::{Cause, Context, Error, Group, ManualClock, ThreadGroup};

fn main() {
    background_and_todo();
    with_cancel_stops_a_generator();
    with_value_carries_request_data();
    after_func_runs_on_cancel();
    causes_say_why();
    with_deadline_bounds_work();
    with_timeout_gives_up();
    deterministic_time_with_manual_clock();
    merged_contexts_have_two_parents();
    errgroup_first_error_cancels_the_rest();
    errgroup_on_threads();
    println!("\ntour finished");
}

/// Roots: never cancelled, no deadline, no values.
fn background_and_todo() {
    println!("== background and todo");
    let bg = Context::background();
    let todo = Context::todo();
    println!("{bg:?}: err={:?} deadline={:?}", bg.err(), bg.deadline());
    println!("{todo:?}: err={:?}", todo.err());
}

/// Go's ExampleWithCancel: a generator goroutine that stops when its
/// context is cancelled, so it does not leak.
fn with_cancel_stops_a_generator() {
    println!("\n== with_cancel: stop a generator");
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = std::sync::mpsc::sync_channel::<u32>(0);
    let generator = thread::spawn(move || {
        let mut n = 1;
        loop {
            // Stop as soon as the context is cancelled.
            if ctx.is_cancelled() {
                return format!("generator stopped: {}", ctx.err().unwrap());
            }
            if tx.try_send(n).is_ok() {
                n += 1;
            } else {
                thread::yield_now();
            }
        }
    });
    for n in rx.iter().take(5) {
        println!("got {n}");
    }
    cancel.cancel(); // Go's `defer cancel()`; dropping `cancel` would do the same
    println!("{}", generator.join().unwrap());
}

/// Go's ExampleWithValue: request-scoped data, looked up by key type.
fn with_value_carries_request_data() {
    println!("\n== with_value: request-scoped data");
    #[derive(Debug)]
    struct Language(&'static str);
    #[derive(Debug)]
    struct Color(&'static str);
    let ctx = Context::background().with_value(Language("Go"));
    let (ctx, _cancel) = ctx.with_cancel();
    for lookup in ["language", "color"] {
        match lookup {
            "language" => match ctx.value::<Language>() {
                Some(v) => println!("found value: {}", v.0),
                None => println!("key not found: {lookup}"),
            },
            _ => match ctx.value::<Color>() {
                Some(v) => println!("found value: {}", v.0),
                None => println!("key not found: {lookup}"),
            },
        }
    }
}

/// Go's ExampleAfterFunc: run something when a context ends, stop it if it
/// is no longer needed.
fn after_func_runs_on_cancel() {
    println!("\n== after_func");
    let (ctx, cancel) = Context::background().with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let _keep = ctx.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
        println!("after_func: context ended, closing the connection");
    });
    let stopped = ctx.after_func(|| println!("this never prints"));
    println!("stop() before cancel: {}", stopped.stop());
    cancel.cancel();
    println!("callbacks that ran: {}", ran.load(Ordering::SeqCst));
    let never = Context::background().after_func(|| println!("never"));
    println!("after_func on background: stop() = {}", never.stop());
}

/// Go's WithCancelCause: say why.
fn causes_say_why() {
    println!("\n== causes");
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_cancel();
    let waiter = {
        let child = child.clone();
        thread::spawn(move || child.wait_timeout(Duration::from_secs(5)))
    };
    cancel.cancel_with(Cause::msg("client disconnected"));
    println!("child err:   {}", child.err().unwrap());
    println!("child cause: {}", child.cause().unwrap());
    println!("waiter woke with: {:?}", waiter.join().unwrap());
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    assert_eq!(ctx.cause().unwrap(), Error::Canceled);
    println!("plain cancel(): cause = {}", ctx.cause().unwrap());
}

/// Go's ExampleWithDeadline: a deadline earlier than the work takes.
fn with_deadline_bounds_work() {
    println!("\n== with_deadline");
    let root = Context::background();
    let at = root.now() + Duration::from_millis(50);
    let (ctx, _cancel) = root.with_deadline(at);
    // "overslept" would take a second; the deadline ends the wait first.
    match ctx.wait_timeout(Duration::from_secs(1)) {
        None => println!("overslept"),
        Some(e) => println!("{e}"),
    }
}

/// Go's ExampleWithTimeout: pass a context with a 150 ms timeout to tell a
/// blocking function to abandon its work after the timeout elapses.
fn with_timeout_gives_up() {
    println!("\n== with_timeout (150 ms)");
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(150));
    let started = std::time::Instant::now();
    let err = ctx.wait(); // e.g. a worker checking ctx between steps
    println!("{err} after {} ms", started.elapsed().as_millis());
    let (ctx, _cancel) = Context::background()
        .with_timeout_cause(Duration::from_millis(10), Cause::msg("backend too slow"));
    ctx.wait();
    println!(
        "with cause: err={} cause={}",
        ctx.err().unwrap(),
        ctx.cause().unwrap()
    );
}

/// Deadlines on a clock that only moves when told: deterministic tests.
fn deterministic_time_with_manual_clock() {
    println!("\n== ManualClock");
    let clock = ManualClock::new();
    let root = Context::background_with_clock(clock.clone());
    let (rpc, _cancel) = root.with_timeout(Duration::from_secs(30));
    let (slow_step, _c2) = rpc.with_timeout(Duration::from_secs(5));
    clock.advance(Duration::from_secs(5));
    println!("after 5 s: step={:?} rpc={:?}", slow_step.err(), rpc.err());
    clock.advance(Duration::from_secs(25));
    println!("after 30 s: rpc={:?}", rpc.err());
}

/// A context with two parents (Go proposal 36503): a request that must stop
/// when its client goes away *or* when the server shuts down. It ends with
/// whichever parent ends first, and says where that cancel was called.
fn merged_contexts_have_two_parents() {
    println!("\n== merge: two parents");
    struct RequestId(u64);
    let (server, shutdown) = Context::background().with_cancel();
    let (client, _client_gone) = Context::background()
        .with_value(RequestId(7))
        .with_timeout(Duration::from_secs(30));
    let (request, _done) = client.merge(&server);
    println!(
        "request {}: deadline in {:?}",
        request.value::<RequestId>().unwrap().0,
        request.remaining().map(|d| d.as_secs())
    );
    shutdown.cancel_with(Cause::msg("server shutting down"));
    let at = request.cancel_location().unwrap();
    println!(
        "request: {} ({}), cancelled at {}:{}",
        request.err().unwrap(),
        request.cause().unwrap(),
        at.file(),
        at.line()
    );
    println!("client context still live: {}", !client.is_cancelled());
}

/// golang.org/x/sync/errgroup: run tasks under one derived context; the
/// first failure cancels the others; wait returns it once all are done.
/// `Group` runs its tasks inside the task that awaits it (any executor,
/// tasks may borrow); here on `futures::executor::block_on`.
fn errgroup_first_error_cancels_the_rest() {
    println!("\n== Group (errgroup): the first error cancels the rest");
    // Two at a time. The healthy mirrors here wait until a failure stops
    // them, so the broken one must be among the first two admitted: as
    // with Go's SetLimit, a full group does not admit the task its running
    // tasks wait for.
    let mirrors = ["mirror-a", "broken-mirror", "mirror-b", "mirror-c"];
    futures::executor::block_on(async {
        let mut group = Group::new(&Context::background());
        group.set_limit(Some(2)); // at most two downloads at once
        for name in &mirrors {
            let ctx = group.context().clone();
            group
                .add(async move {
                    if name.starts_with("broken") {
                        println!("{name}: connection refused");
                        return Err(Cause::msg(format!("{name}: connection refused")));
                    }
                    // A real download would race its I/O against `ctx`;
                    // this one just waits to be told to stop.
                    let err = ctx.done().await;
                    println!("{name}: stopped ({err}, because {})", ctx.cause().unwrap());
                    Ok(())
                })
                .await;
        }
        match group.wait().await {
            Ok(()) => println!("all mirrors fine"),
            Err(e) => println!("group failed: {e}"),
        }
        // Collect mode: every result, values too, in the order added.
        let mut squares = Group::new(&Context::background());
        for n in [2_u32, 3, 4] {
            squares.add(async move { Ok::<_, Cause>(n * n) }).await;
        }
        let results: Vec<_> = squares
            .collect()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        println!("collected: {results:?}");
    });
}

/// The blocking form: one scoped thread per task, Go's goroutines.
fn errgroup_on_threads() {
    println!("\n== ThreadGroup: errgroup on scoped threads");
    let inputs = ["7", "11", "x", "13"];
    let result = thread::scope(|s| {
        let group = ThreadGroup::<u64, Cause>::new(s, &Context::background());
        for input in &inputs {
            group.spawn(move |_ctx| {
                let n: u64 = input.parse()?; // any error converts into a Cause
                Ok(n)
            });
        }
        group.wait()
    });
    println!(
        "parse all: {}",
        match result {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("failed: {e}"),
        }
    );
}
