//! Cross-process deadlines, as gRPC sends them (feature `http`): a context's
//! remaining time as a `grpc-timeout` header value, and back.
//!
//! The wire format (gRPC over HTTP/2 spec): `TimeoutValue TimeoutUnit`, where
//! the value is 1 to 8 ASCII digits and the unit is one of `H` (hours), `M`
//! (minutes), `S` (seconds), `m` (milliseconds), `u` (microseconds), `n`
//! (nanoseconds).

use alloc::string::String;
use core::fmt::{self, Write};
use core::time::Duration;

use crate::api::cancel_handle::CancelHandle;
use crate::api::context::Context;

/// The largest `TimeoutValue`: 8 digits.
const MAX_VALUE: u64 = 99_999_999;

/// Why a `grpc-timeout` value did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcTimeoutError {
    /// The value was empty.
    Empty,
    /// No digits before the unit, or more than eight.
    BadValue,
    /// The value has a character that is not an ASCII digit.
    NotADigit,
    /// The unit is not one of `H M S m u n`.
    BadUnit,
}

impl fmt::Display for GrpcTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GrpcTimeoutError::Empty => "empty grpc-timeout",
            GrpcTimeoutError::BadValue => "grpc-timeout value must be 1 to 8 digits",
            GrpcTimeoutError::NotADigit => "grpc-timeout value has a non-digit",
            GrpcTimeoutError::BadUnit => "grpc-timeout unit must be one of H M S m u n",
        })
    }
}

impl core::error::Error for GrpcTimeoutError {}

/// Parses a `grpc-timeout` header value.
///
/// ```
/// use cancel_tree::grpc::{parse_grpc_timeout, GrpcTimeoutError};
/// use std::time::Duration;
/// assert_eq!(parse_grpc_timeout("100m"), Ok(Duration::from_millis(100)));
/// assert_eq!(parse_grpc_timeout("2H"), Ok(Duration::from_secs(7200)));
/// assert_eq!(parse_grpc_timeout("123456789S"), Err(GrpcTimeoutError::BadValue));
/// assert_eq!(parse_grpc_timeout("5x"), Err(GrpcTimeoutError::BadUnit));
/// ```
pub fn parse_grpc_timeout(value: &str) -> Result<Duration, GrpcTimeoutError> {
    let Some(unit) = value.chars().next_back() else {
        return Err(GrpcTimeoutError::Empty);
    };
    let digits = &value.as_bytes()[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 {
        return Err(GrpcTimeoutError::BadValue);
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(GrpcTimeoutError::NotADigit);
        }
        n = n * 10 + u64::from(d - b'0'); // at most 8 digits: no overflow
    }
    Ok(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return Err(GrpcTimeoutError::BadUnit),
    })
}

/// Formats `d` as a `grpc-timeout` value: the finest unit whose value fits in
/// 8 digits, rounded up (so the receiver never gets less time than the
/// sender had, by at most one unit). Saturates at `99999999H`.
///
/// ```
/// use cancel_tree::grpc::format_grpc_timeout;
/// use std::time::Duration;
/// assert_eq!(format_grpc_timeout(Duration::from_millis(100)), "100000u");
/// assert_eq!(format_grpc_timeout(Duration::from_nanos(250)), "250n");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3600 * 24 * 365)), "31536000S");
/// assert_eq!(format_grpc_timeout(Duration::MAX), "99999999H");
/// ```
pub fn format_grpc_timeout(d: Duration) -> String {
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let nanos = d.as_nanos();
    let mut out = String::new();
    for (per, unit) in UNITS {
        let v = nanos.div_ceil(per);
        if v <= u128::from(MAX_VALUE) {
            let _ = write!(out, "{v}{unit}");
            return out;
        }
    }
    let _ = write!(out, "{MAX_VALUE}H");
    out
}

impl Context {
    /// The context's remaining time as a `grpc-timeout` value, for an
    /// outgoing call; `None` without a deadline. A deadline already passed
    /// gives `"0n"`.
    ///
    /// ```
    /// use cancel_tree::{Context, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let root = Context::background_with_clock(clock.clone());
    /// let (ctx, _c) = root.with_timeout(Duration::from_secs(2));
    /// clock.advance(Duration::from_millis(500));
    /// assert_eq!(ctx.grpc_timeout().as_deref(), Some("1500000u"));
    /// assert_eq!(root.grpc_timeout(), None);
    /// ```
    pub fn grpc_timeout(&self) -> Option<String> {
        Some(format_grpc_timeout(self.remaining()?))
    }

    /// A child whose deadline is an incoming `grpc-timeout` value from now
    /// (or the parent's, if earlier). A malformed value is an error, never a
    /// panic.
    ///
    /// ```
    /// use cancel_tree::{Context, ManualClock, Instant};
    /// let clock = ManualClock::new();
    /// let root = Context::background_with_clock(clock.clone());
    /// let (ctx, _c) = root.with_grpc_timeout("250m").unwrap();
    /// assert_eq!(ctx.deadline(), Some(Instant::from_nanos(250_000_000)));
    /// assert!(root.with_grpc_timeout("soon").is_err());
    /// ```
    pub fn with_grpc_timeout(
        &self,
        value: &str,
    ) -> Result<(Context, CancelHandle), GrpcTimeoutError> {
        let d = parse_grpc_timeout(value)?;
        Ok(self.with_timeout(d))
    }
}
