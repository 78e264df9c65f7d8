//! Heap-free scopes: `StaticScope` roots, pinned `LocalScope` children,
//! deadlines on a hand-written clock. Also run without any crate feature
//! (`cargo test --no-default-features --test local_scopes`), where the crate
//! has no `alloc` at all.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as Cx, Poll, Wake, Waker};
use std::time::Duration;

use cancel_tree::{Clock, Error, Instant, LocalScope, StaticScope, Timers};

struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A tick clock as firmware would write it: `tick()` is the timer ISR.
struct TickClock {
    nanos: AtomicU64,
    alarm: AtomicU64,
    timers: Timers,
}

impl TickClock {
    const fn new() -> TickClock {
        TickClock {
            nanos: AtomicU64::new(0),
            alarm: AtomicU64::new(u64::MAX),
            timers: Timers::new(),
        }
    }
    fn tick(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
        if self.now().as_nanos() >= self.alarm.load(Ordering::SeqCst) {
            self.timers.fire(self);
        }
    }
}

impl Clock for TickClock {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
    fn timers(&self) -> &Timers {
        &self.timers
    }
    fn set_alarm(&self, at: Option<Instant>) {
        self.alarm
            .store(at.map_or(u64::MAX, Instant::as_nanos), Ordering::SeqCst);
    }
}

const MS: Duration = Duration::from_millis(1);

#[test]
#[cfg_attr(target_family = "wasm", ignore = "needs threads")]
fn static_root_cancel_reaches_local_subtree_and_wakes() {
    static ROOT: StaticScope = StaticScope::new();
    let a = pin!(LocalScope::new(ROOT.scope()));
    let a = a.into_ref().get();
    let b = pin!(LocalScope::new(a));
    let b = b.into_ref().get();
    let c = pin!(LocalScope::new(a));
    let c = c.into_ref().get();
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    let mut done = pin!(b.done());
    assert!(done.as_mut().poll(&mut Cx::from_waker(&waker)).is_pending());
    // The "interrupt": another thread.
    std::thread::spawn(|| ROOT.scope().cancel()).join().unwrap();
    assert!(a.is_cancelled() && b.is_cancelled() && c.is_cancelled());
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        done.as_mut().poll(&mut Cx::from_waker(&waker)),
        Poll::Ready(Error::Canceled)
    );
    assert_eq!(b.cause().unwrap(), Error::Canceled);
}

#[test]
fn child_cancel_does_not_touch_parent_and_first_cancel_wins() {
    static ROOT: StaticScope = StaticScope::new();
    let a = pin!(LocalScope::new(ROOT.scope()));
    let a = a.into_ref().get();
    let b = pin!(LocalScope::new(a));
    let b = b.into_ref().get();
    b.cancel_with(Error::DeadlineExceeded);
    assert!(!a.is_cancelled() && !ROOT.scope().is_cancelled());
    a.cancel();
    assert_eq!(b.err(), Some(Error::Canceled));
    assert_eq!(
        b.cause().unwrap(),
        Error::DeadlineExceeded,
        "b's own cause stays"
    );
}

#[test]
fn attached_after_parent_cancel_is_born_cancelled() {
    static ROOT: StaticScope = StaticScope::new();
    ROOT.scope().cancel_with(Error::DeadlineExceeded);
    let a = pin!(LocalScope::new(ROOT.scope()));
    let a = a.into_ref().get();
    assert_eq!(a.err(), Some(Error::Canceled));
    assert_eq!(a.cause().unwrap(), Error::DeadlineExceeded);
}

#[test]
fn local_deadline_fires_from_the_clock_interrupt() {
    static CLOCK: TickClock = TickClock::new();
    static ROOT: StaticScope = StaticScope::new();
    let t = pin!(LocalScope::with_timeout(ROOT.scope(), &CLOCK, 3 * MS));
    let t = t.into_ref().get();
    assert_eq!(t.deadline(), Some(Instant::ZERO + 3 * MS));
    let inner = pin!(LocalScope::with_timeout(t, &CLOCK, 10 * MS));
    let inner = inner.into_ref().get();
    assert_eq!(
        inner.deadline(),
        t.deadline(),
        "an earlier parent deadline wins"
    );
    assert_eq!(CLOCK.timers().len(), 1);
    CLOCK.tick(2 * MS);
    assert!(!t.is_cancelled());
    CLOCK.tick(MS);
    assert_eq!(t.err(), Some(Error::DeadlineExceeded));
    assert_eq!(inner.err(), Some(Error::DeadlineExceeded));
    assert_eq!(CLOCK.timers().len(), 0);
    assert!(!ROOT.scope().is_cancelled());
}

#[test]
fn dropped_or_cancelled_local_deadlines_leave_the_queue() {
    static CLOCK: TickClock = TickClock::new();
    static ROOT: StaticScope = StaticScope::new();
    {
        let t = pin!(LocalScope::with_timeout(ROOT.scope(), &CLOCK, 5 * MS));
        let _ = t.into_ref().get();
        assert_eq!(CLOCK.timers().len(), 1);
    }
    assert_eq!(CLOCK.timers().len(), 0, "drop removes the entry");
    let t = pin!(LocalScope::with_timeout(ROOT.scope(), &CLOCK, 5 * MS));
    let t = t.into_ref().get();
    t.cancel();
    assert_eq!(CLOCK.timers().len(), 0, "cancel removes the entry");
    CLOCK.tick(10 * MS);
    assert_eq!(t.err(), Some(Error::Canceled));
    // A deadline already past ends the scope as soon as it is attached.
    let late = pin!(LocalScope::with_deadline(
        ROOT.scope(),
        &CLOCK,
        Instant::ZERO
    ));
    assert_eq!(late.into_ref().get().err(), Some(Error::DeadlineExceeded));
    // Never attached: nothing to undo.
    drop(LocalScope::with_timeout(
        ROOT.scope(),
        &CLOCK,
        Duration::MAX,
    ));
}

#[test]
#[cfg_attr(target_family = "wasm", ignore = "needs threads")]
fn local_scopes_dropped_while_other_threads_cancel_and_fire() {
    static CLOCK: TickClock = TickClock::new();
    for round in 0..if cfg!(miri) { 3 } else { 300 } {
        // A fresh static per round is not possible; use a local root under a
        // static that is never cancelled.
        static ROOT: StaticScope = StaticScope::new();
        let parent = pin!(LocalScope::new(ROOT.scope()));
        let parent = parent.into_ref().get();
        std::thread::scope(|s| {
            let kids: Vec<_> = (0..4)
                .map(|i| {
                    s.spawn(move || {
                        let k = pin!(LocalScope::with_timeout(
                            parent,
                            &CLOCK,
                            Duration::from_nanos(1 + (i + round) % 3)
                        ));
                        let k = k.into_ref().get();
                        let g = pin!(LocalScope::new(k));
                        let _g = g.into_ref().get();
                        std::thread::yield_now();
                        // dropped here, racing the cancel and the clock
                    })
                })
                .collect();
            s.spawn(|| CLOCK.tick(Duration::from_nanos(1)));
            s.spawn(move || parent.cancel());
            for k in kids {
                k.join().unwrap();
            }
        });
        assert!(parent.is_cancelled());
    }
    // Every entry left the queue when its scope was dropped.
    assert_eq!(CLOCK.timers().len(), 0);
}

/// A `LocalScope` timeout dropped by its owner while its deadline fires on
/// another thread: the firing walk holds a reference and leaves the parent's
/// list after the owner has already taken the scope out of it. The owner
/// must leave the scope marked unlinked, or the walk unlinks it a second
/// time through links that no longer describe the list (caught by the
/// list's debug check, and by Miri as a race on a neighbour's link).
#[test]
#[cfg_attr(target_family = "wasm", ignore = "needs threads")]
fn local_timeout_dropped_while_its_deadline_fires() {
    use std::sync::atomic::AtomicBool;
    static CLOCK: TickClock = TickClock::new();
    static ROOT: StaticScope = StaticScope::new();
    let parent = pin!(LocalScope::new(ROOT.scope()));
    let parent = parent.into_ref().get();
    // A neighbour in the parent's list, so a second unlink has links to
    // write through.
    let neighbour = pin!(LocalScope::new(parent));
    let _neighbour = neighbour.into_ref().get();
    for round in 0..if cfg!(miri) { 4 } else { 2000 } {
        let ready = AtomicUsize::new(0);
        let go = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let k = pin!(LocalScope::with_timeout(
                    parent,
                    &CLOCK,
                    Duration::from_nanos(1)
                ));
                let k = k.into_ref().get();
                // A child, so the firing cancel walks (a leaf just ends).
                let g = pin!(LocalScope::new(k));
                let _g = g.into_ref().get();
                ready.fetch_add(1, Ordering::SeqCst);
                while !go.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                // Sweep the drop across the fire's window.
                for _ in 0..round % 64 {
                    std::hint::spin_loop();
                }
            });
            s.spawn(|| {
                ready.fetch_add(1, Ordering::SeqCst);
                while !go.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                // A panic here would leave the owner waiting for the fire's
                // reference forever: fail loudly instead of hanging.
                if std::panic::catch_unwind(|| CLOCK.tick(Duration::from_nanos(1))).is_err() {
                    eprintln!("fire panicked; aborting rather than hang");
                    std::process::abort();
                }
            });
            while ready.load(Ordering::SeqCst) < 2 {
                std::thread::yield_now();
            }
            go.store(true, Ordering::SeqCst);
        });
        assert_eq!(CLOCK.timers().len(), 0, "round {round}");
    }
    assert!(!parent.is_cancelled());
}
