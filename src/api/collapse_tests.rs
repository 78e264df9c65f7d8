//! The collapse of a shard array runs while user code can run around it (a
//! custom cause's `Drop` runs in the same free). Its owner must have claimed
//! it before: a cancel walk that finds the parent waits for the claim while
//! holding list locks, so a claim that came after user code could wait on
//! that walk forever. Both scenarios hung (10 s timeout) when the claim came
//! later than the owner's decrement.
//! (Unit tests of the shard collapse, written against the public API.)

use std::sync::mpsc;
use std::time::Duration;

use crate::{CancelHandle, Cause, Context};

/// Runs `f` on a thread and fails if it does not finish within 10 s.
fn finishes(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("hung: {what}"));
}

/// A cause whose drop cancels another context.
#[derive(Debug)]
struct CancelsOnDrop(#[allow(dead_code)] CancelHandle);
impl std::fmt::Display for CancelsOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancels its handle's context when dropped")
    }
}
impl std::error::Error for CancelsOnDrop {}

#[test]
fn collapse_owner_cancelling_from_a_cause_drop_does_not_wait_on_itself() {
    finishes("the walk waited for a claim its own thread owed", || {
        let (g, gh) = Context::background().with_cancel();
        let (p, ph) = g.with_cancel();
        ph.detach();
        // C is in P's own list (derived before the array exists).
        let (c, ch) = p.with_cancel();
        p.install_shards_for_tests();
        ch.cancel_with(Cause::new(CancelsOnDrop(gh)));
        drop(p);
        drop(c);
        // Freeing C leaves P with only the array's reference (this thread
        // owns the collapse); then C's cause drops and cancels G, whose walk
        // meets P.
        drop(ch);
        assert!(g.is_cancelled());
    });
}

/// A cause that signals, waits, then drops the context it holds.
#[derive(Debug)]
struct SlowContextDrop {
    _ctx: Context,
    go: mpsc::Sender<()>,
}
impl std::fmt::Display for SlowContextDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("drops a context slowly")
    }
}
impl std::error::Error for SlowContextDrop {}
impl Drop for SlowContextDrop {
    fn drop(&mut self) {
        let _ = self.go.send(());
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn collapse_owner_freeing_a_sibling_while_a_walk_holds_the_grandparent_lock() {
    let (g, gh) = Context::background().with_cancel();
    let (go_tx, go_rx) = mpsc::channel();
    let canceller = std::thread::spawn(move || {
        go_rx.recv().unwrap();
        gh.cancel();
    });
    let g2 = g.clone();
    finishes("the walk held G's lock waiting for P's claim", move || {
        let (p, ph) = g2.with_cancel();
        ph.detach();
        let (s, sh) = g2.with_cancel();
        sh.detach();
        let (c, ch) = p.with_cancel();
        p.install_shards_for_tests();
        // The cause holds S's last context: dropping it frees S, which
        // takes G's lock, while G's walk (another thread) meets P.
        ch.cancel_with(Cause::new(SlowContextDrop { _ctx: s, go: go_tx }));
        drop(p);
        drop(c);
        drop(ch);
    });
    canceller.join().unwrap();
    assert!(g.is_cancelled());
}
