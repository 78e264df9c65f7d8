//! FutureExt / StreamExt / CancelGuard, tokio-util interop, grpc-timeout.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as Cx, Poll};

use cancel_tree::{CancelGuard, Context, Error, FutureExt, StreamExt};
use common::*;
use futures_core::{FusedStream, Stream};

struct Counter {
    next: u32,
    polls: Arc<AtomicUsize>,
}
impl Stream for Counter {
    type Item = u32;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Cx<'_>) -> Poll<Option<u32>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.next += 1;
        Poll::Ready(Some(self.next))
    }
}

/// A stream that is pending until woken, then yields one item.
struct Gate(Option<std::task::Waker>, bool);
impl Stream for Gate {
    type Item = ();
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Option<()>> {
        if self.1 {
            return Poll::Ready(Some(()));
        }
        self.0 = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[test]
fn always_ready_stream_stops_at_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let polls = Arc::new(AtomicUsize::new(0));
    let mut s = Box::pin(
        Counter {
            next: 0,
            polls: polls.clone(),
        }
        .take_until_cancelled(&ctx),
    );
    let (_, w) = counting_waker();
    let mut cx = Cx::from_waker(&w);
    assert_eq!(s.as_mut().poll_next(&mut cx), Poll::Ready(Some(1)));
    assert_eq!(s.as_mut().poll_next(&mut cx), Poll::Ready(Some(2)));
    cancel.cancel();
    let before = polls.load(Ordering::SeqCst);
    assert_eq!(s.as_mut().poll_next(&mut cx), Poll::Ready(None));
    assert_eq!(
        polls.load(Ordering::SeqCst),
        before,
        "checked before polling the stream"
    );
    assert!(s.is_terminated());
    assert_eq!(s.err(), Some(Error::Canceled));
    assert_eq!(s.as_mut().poll_next(&mut cx), Poll::Ready(None));
}

#[test]
fn pending_stream_is_woken_and_ended_by_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut s = Box::pin(Gate(None, false).take_until_cancelled(&ctx));
    let (c, w) = counting_waker();
    let mut cx = Cx::from_waker(&w);
    assert!(s.as_mut().poll_next(&mut cx).is_pending());
    cancel.cancel();
    assert_eq!(wakes(&c), 1);
    assert_eq!(s.as_mut().poll_next(&mut cx), Poll::Ready(None));
}

#[test]
fn stream_ends_normally_when_inner_ends() {
    struct Two(u8);
    impl Stream for Two {
        type Item = u8;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Cx<'_>) -> Poll<Option<u8>> {
            if self.0 == 2 {
                return Poll::Ready(None);
            }
            self.0 += 1;
            Poll::Ready(Some(self.0))
        }
    }
    let (ctx, _cancel) = Context::background().with_cancel();
    let mut s = Box::pin(Two(0).take_until_cancelled(&ctx));
    let (_, w) = counting_waker();
    let mut cx = Cx::from_waker(&w);
    let mut got = Vec::new();
    while let Poll::Ready(Some(v)) = s.as_mut().poll_next(&mut cx) {
        got.push(v);
    }
    assert_eq!(got, vec![1, 2]);
    assert_eq!(s.err(), None);
}

#[test]
fn with_context_is_static_and_stops_ready_futures() {
    fn assert_static<T: Send + 'static>(_: &T) {}
    let (ctx, cancel) = Context::background().with_cancel();
    let fut = async { 5 }.with_context(ctx.clone());
    assert_static(&fut);
    assert_eq!(block_on(fut), Ok(5));
    let (c, w) = counting_waker();
    let mut pending = Box::pin(std::future::pending::<u8>().with_context(ctx.clone()));
    assert!(pending.as_mut().poll(&mut Cx::from_waker(&w)).is_pending());
    cancel.cancel_with(MyErr("stop"));
    assert_eq!(wakes(&c), 1);
    assert_eq!(
        pending.as_mut().poll(&mut Cx::from_waker(&w)),
        Poll::Ready(Err(Error::Canceled))
    );
    assert_eq!(block_on(async { 1 }.cancel_on(&ctx)), Err(Error::Canceled));
}

#[test]
fn cancel_guard_cancels_on_drop_and_disarms() {
    let parent = Context::background();
    let child = {
        let g = CancelGuard::new(&parent);
        let (c, _h) = g.with_cancel();
        c
    };
    assert!(child.is_cancelled());
    let g = CancelGuard::new(&parent);
    let kept = g.disarm();
    assert!(!kept.is_cancelled());
    let (c, h) = parent.with_cancel();
    let g = CancelGuard::from_parts(c, h);
    g.cancel_with(MyErr("why"));
    assert_eq!(
        g.cause().unwrap().downcast_ref::<MyErr>(),
        Some(&MyErr("why"))
    );
}

#[cfg(feature = "tokio-util")]
mod tokio_util_interop {
    use super::*;
    use cancel_tree::TokenCancelled;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn token_cancels_context_without_polling() {
        let token = CancellationToken::new();
        let (ctx, _h) = Context::background().with_token(&token);
        let (grand, _g) = ctx.with_cancel();
        assert!(!ctx.is_cancelled());
        token.cancel();
        assert!(
            ctx.is_cancelled() && grand.is_cancelled(),
            "cancelled inside token.cancel()"
        );
        assert!(
            ctx.cause()
                .unwrap()
                .downcast_ref::<TokenCancelled>()
                .is_some()
        );
    }

    #[test]
    fn child_token_cancels_context_and_already_cancelled_token() {
        let parent = CancellationToken::new();
        let child = parent.child_token();
        let (ctx, _h) = Context::background().with_token(&child);
        parent.cancel();
        assert!(ctx.is_cancelled());
        let (ctx2, _h2) = Context::background().with_token(&parent);
        assert!(ctx2.is_cancelled(), "born cancelled from a cancelled token");
    }

    #[test]
    fn context_ending_first_unregisters_and_handle_still_cancels() {
        let token = CancellationToken::new();
        let (ctx, h) = Context::background().with_token(&token);
        h.cancel();
        assert_eq!(ctx.cause().unwrap(), Error::Canceled);
        token.cancel(); // nothing left listening; must not panic or change the cause
        assert_eq!(ctx.cause().unwrap(), Error::Canceled);
        // Dropping everything before the token is cancelled leaks nothing
        // and does not cancel the token.
        let token = CancellationToken::new();
        let (c, h) = Context::background().with_token(&token);
        drop((c, h));
        assert!(!token.is_cancelled());
    }

    #[test]
    fn context_cancels_token() {
        let (ctx, cancel) = Context::background().with_cancel();
        let token = ctx.to_token();
        let child = token.child_token();
        assert!(!token.is_cancelled());
        cancel.cancel();
        assert!(token.is_cancelled() && child.is_cancelled());
        // From a cancelled context: cancelled at once.
        assert!(ctx.to_token().is_cancelled());
        // Cancelling the token does not cancel the context.
        let (ctx, _c) = Context::background().with_cancel();
        ctx.to_token().cancel();
        assert!(!ctx.is_cancelled());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interop_across_threads() {
        let token = CancellationToken::new();
        let (ctx, _h) = Context::background().with_token(&token);
        let t2 = token.clone();
        tokio::spawn(async move { t2.cancel() });
        assert_eq!(ctx.done().await, Error::Canceled);
    }
}

#[cfg(feature = "http")]
mod grpc {
    use cancel_tree::grpc::{GrpcTimeoutError, format_grpc_timeout, parse_grpc_timeout};
    use cancel_tree::{Context, Instant, ManualClock};
    use std::time::Duration;

    #[test]
    fn every_unit_parses() {
        let cases = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("4m", Duration::from_millis(4)),
            ("5u", Duration::from_micros(5)),
            ("6n", Duration::from_nanos(6)),
            ("0n", Duration::ZERO),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
            ("00000001S", Duration::from_secs(1)),
        ];
        for (s, d) in cases {
            assert_eq!(parse_grpc_timeout(s), Ok(d), "{s}");
        }
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        use GrpcTimeoutError::*;
        let cases = [
            ("", Empty),
            ("S", BadValue),
            ("123456789S", BadValue),
            ("12x", BadUnit),
            ("12", BadUnit),
            ("1.5S", NotADigit),
            ("-1S", NotADigit),
            (" 1S", NotADigit),
            ("1 S", NotADigit),
            ("１S", NotADigit),
            ("1é", BadUnit),
            ("+5m", NotADigit),
        ];
        for (s, e) in cases {
            assert_eq!(parse_grpc_timeout(s), Err(e), "{s:?}");
            assert!(!e.to_string().is_empty());
        }
        // Arbitrary bytes never panic.
        for b in 0u8..=255 {
            let s = String::from_utf8_lossy(&[b'1', b]).into_owned();
            let _ = parse_grpc_timeout(&s);
        }
    }

    #[test]
    fn format_picks_finest_unit_that_fits_and_rounds_up() {
        assert_eq!(format_grpc_timeout(Duration::ZERO), "0n");
        assert_eq!(
            format_grpc_timeout(Duration::from_nanos(99_999_999)),
            "99999999n"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_nanos(100_000_000)),
            "100000u"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_nanos(100_000_001)),
            "100001u"
        );
        assert_eq!(format_grpc_timeout(Duration::from_secs(1000)), "1000000m");
        assert_eq!(format_grpc_timeout(Duration::from_secs(100_000)), "100000S");
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(100_000_000)),
            "1666667M"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(6_000_000_000)),
            "1666667H"
        );
        assert_eq!(format_grpc_timeout(Duration::MAX), "99999999H");
        // Round trip never shortens.
        for n in [1u64, 7, 999, 123_456_789, 9_876_543_210_123] {
            let d = Duration::from_nanos(n);
            let back = parse_grpc_timeout(&format_grpc_timeout(d)).unwrap();
            assert!(back >= d, "{n}");
        }
    }

    #[test]
    fn context_round_trip() {
        let clock = ManualClock::new();
        let root = Context::background_with_clock(clock.clone());
        let (ctx, _h) = root.with_timeout(Duration::from_secs(2));
        clock.advance(Duration::from_millis(1500));
        let header = ctx.grpc_timeout().unwrap();
        assert_eq!(header, "500000u");
        let (remote, _r) = root.with_grpc_timeout(&header).unwrap();
        assert_eq!(
            remote.deadline(),
            Some(Instant::ZERO + Duration::from_millis(2000))
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(ctx.grpc_timeout().as_deref(), Some("0n"));
        assert!(root.with_grpc_timeout("").is_err());
    }
}
