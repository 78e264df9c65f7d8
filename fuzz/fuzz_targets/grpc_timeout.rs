//! `grpc-timeout` values (feature `http`), as a server reads them from a
//! header and a client writes them: parsing arbitrary bytes never panics,
//! accepts exactly the spec's grammar (1 to 8 ASCII digits, then one of
//! `H M S m u n`, checked against a plain reference with u128 math), and
//! formatting any duration gives a value that parses back to at least that
//! much time (saturating at the largest value), at most one unit more.
//!
//! Run: `cargo +nightly fuzz run grpc_timeout` (from the repository root).
#![no_main]

use std::time::Duration;

use cancel_tree::grpc::{format_grpc_timeout, parse_grpc_timeout};
use libfuzzer_sys::fuzz_target;

/// Nanoseconds per unit.
fn unit_nanos(unit: u8) -> Option<u128> {
    Some(match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    })
}

fn from_nanos(n: u128) -> Duration {
    Duration::new((n / 1_000_000_000) as u64, (n % 1_000_000_000) as u32)
}

/// The grammar, read literally.
fn reference(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u128 = digits
        .iter()
        .fold(0, |n, d| n * 10 + u128::from(d - b'0'));
    Some(from_nanos(n * unit_nanos(unit)?))
}

const LARGEST: Duration = Duration::from_secs(99_999_999 * 3600);

fuzz_target!(|data: &[u8]| {
    // As a header value arrives: bytes, which may not be UTF-8.
    if let Ok(text) = std::str::from_utf8(data) {
        let parsed = parse_grpc_timeout(text).ok();
        assert_eq!(parsed, reference(data), "{text:?}");
    }
    // Formatting: the first 12 bytes as a duration.
    if let Some((secs, rest)) = data.split_first_chunk::<8>()
        && let Some((nanos, _)) = rest.split_first_chunk::<4>()
    {
        let d = Duration::new(
            u64::from_le_bytes(*secs),
            u32::from_le_bytes(*nanos) % 1_000_000_000,
        );
        let text = format_grpc_timeout(d);
        let back = reference(text.as_bytes()).unwrap_or_else(|| panic!("{d:?} -> {text:?}"));
        assert!(back >= d.min(LARGEST), "{d:?} -> {text:?}");
        let unit = unit_nanos(*text.as_bytes().last().unwrap()).unwrap();
        assert!(
            d > LARGEST || back.as_nanos() - d.as_nanos() < unit,
            "{d:?} -> {text:?}: more than a unit over"
        );
    }
});
