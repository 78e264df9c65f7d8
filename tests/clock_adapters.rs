//! The runtime clock adapters, each on its own runtime: a timeout fires
//! through the runtime's timer with nobody polling the context, and a
//! cancelled timeout leaves the queue.

mod common;

use std::time::Duration;

use cancel_tree::{Clock, Context, Error};

#[cfg(feature = "tokio")]
mod tokio_clock {
    use super::*;
    use cancel_tree::TokioClock;

    #[tokio::test(start_paused = true)]
    async fn paused_time_is_deterministic() {
        let clock = TokioClock::new();
        let root = Context::background_with_clock(clock.clone());
        let start = clock.now();
        let (a, _ha) = root.with_timeout(Duration::from_secs(30));
        let (b, _hb) = root.with_timeout(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(a.err(), None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::yield_now().await; // let the driver task run
        assert_eq!(a.err(), Some(Error::DeadlineExceeded));
        assert_eq!(b.err(), None);
        assert_eq!(b.done().await, Error::DeadlineExceeded);
        assert_eq!(
            clock.now() - start,
            Duration::from_secs(60),
            "exactly, in paused time"
        );
        assert_eq!(clock.timers().len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_time_on_multi_thread_runtime() {
        let clock = TokioClock::new();
        let root = Context::background_with_clock(clock.clone());
        let (ctx, _h) = root.with_timeout(Duration::from_millis(20));
        let waiter = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.done().await }
        });
        assert_eq!(waiter.await.unwrap(), Error::DeadlineExceeded);
        // A cancelled timeout leaves the queue and does not fire later.
        let (c2, h2) = root.with_timeout(Duration::from_millis(10));
        assert_eq!(clock.timers().len(), 1);
        h2.cancel();
        assert_eq!(clock.timers().len(), 0);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(c2.err(), Some(Error::Canceled));
    }

    #[test]
    fn current_thread_runtime_with_handle_and_shutdown() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let clock = TokioClock::with_handle(rt.handle());
        let root = Context::background_with_clock(clock);
        let (ctx, _h) = root.with_timeout(Duration::from_millis(5));
        assert_eq!(rt.block_on(ctx.done()), Error::DeadlineExceeded);
        drop(root);
        drop(rt); // the driver task goes with the runtime; nothing hangs
    }
}

#[cfg(feature = "async-io")]
mod async_io_clock {
    use super::*;
    use cancel_tree::AsyncIoClock;

    #[test]
    fn fires_on_async_io_timers() {
        let (clock, driver) = AsyncIoClock::new();
        let ex = async_executor::Executor::new();
        ex.spawn(driver).detach();
        let root = Context::background_with_clock(clock.clone());
        let (a, _ha) = root.with_timeout(Duration::from_millis(10));
        let (b, hb) = root.with_timeout(Duration::from_millis(15));
        hb.cancel();
        let err = futures_lite::future::block_on(ex.run(a.done()));
        assert_eq!(err, Error::DeadlineExceeded);
        assert_eq!(b.err(), Some(Error::Canceled));
        assert_eq!(clock.timers().len(), 0);
    }

    #[test]
    fn driver_ends_when_the_clock_is_gone() {
        let (clock, driver) = AsyncIoClock::new();
        let ex = async_executor::Executor::new();
        let task = ex.spawn(driver);
        let root = Context::background_with_clock(clock);
        let (ctx, h) = root.with_timeout(Duration::from_millis(1));
        futures_lite::future::block_on(ex.run(ctx.done()));
        drop((ctx, h, root));
        futures_lite::future::block_on(ex.run(task)); // returns: no leak, no hang
    }
}

#[cfg(feature = "embassy-time")]
mod embassy_clock {
    use super::*;
    use cancel_tree::EmbassyClock;

    static CLOCK: EmbassyClock = EmbassyClock::new();

    #[test]
    fn fires_on_embassy_time_std_driver() {
        // embassy-time's `std` driver wakes timers from its own thread, so
        // the driver can run on any executor; here a plain thread.
        std::thread::spawn(|| futures_lite::future::block_on(CLOCK.run()));
        let root = Context::background_with_clock(&CLOCK);
        let (a, _ha) = root.with_timeout(Duration::from_millis(10));
        let (b, _hb) = a.with_timeout(Duration::from_millis(5));
        assert_eq!(common::block_on(b.done()), Error::DeadlineExceeded);
        assert_eq!(
            a.wait_timeout(Duration::from_secs(10)),
            Some(Error::DeadlineExceeded)
        );
        let t0 = CLOCK.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(CLOCK.now() > t0, "now() follows embassy_time::Instant");
    }
}
