//! What goes on the wire: the `grpc-timeout` header in and out, telling gRPC
//! requests from plain HTTP ones, and the answers the server layer gives
//! itself (deadline exceeded, malformed `grpc-timeout`).

use std::time::Duration;

use cancel_tree::Context;
use cancel_tree::grpc::{GrpcTimeoutError, format_grpc_timeout, parse_grpc_timeout};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

/// The gRPC deadline header (gRPC over HTTP/2 spec, "Timeout").
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// gRPC status codes the layer answers with.
const DEADLINE_EXCEEDED: &str = "4";
const INTERNAL: &str = "13";

/// Whether a request or response is gRPC: its content type is
/// `application/grpc` or `application/grpc+…` (also gRPC-Web's, which takes
/// a status in headers the same way).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The request's `grpc-timeout`: `Ok(None)` without one. A value that is
/// not 1 to 8 ASCII digits and a unit is an error (bytes that are not UTF-8
/// count as non-digits).
pub(crate) fn incoming_timeout(headers: &HeaderMap) -> Result<Option<Duration>, GrpcTimeoutError> {
    let Some(value) = headers.get(GRPC_TIMEOUT) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(value.as_bytes()).map_err(|_| GrpcTimeoutError::NotADigit)?;
    parse_grpc_timeout(text).map(Some)
}

/// Time left until `ctx`'s deadline on its own clock (zero once passed);
/// `None` without a deadline.
pub(crate) fn remaining(ctx: &Context) -> Option<Duration> {
    let deadline = ctx.deadline()?;
    Some(deadline - ctx.now())
}

/// Sets `grpc-timeout` to `remaining`, unless the request already carries
/// a shorter valid one (set by the caller, e.g. tonic's
/// `Request::set_timeout`).
pub(crate) fn set_outgoing_timeout(headers: &mut HeaderMap, remaining: Duration) {
    if let Ok(Some(existing)) = incoming_timeout(headers)
        && existing <= remaining
    {
        return;
    }
    // Always ASCII digits and a unit, so always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(remaining)) {
        headers.insert(GRPC_TIMEOUT, value);
    }
}

/// An answer the server layer gives without (or instead of) the service's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The request's deadline passed before the service answered
    /// (enforcement mode): gRPC `DEADLINE_EXCEEDED`, or HTTP 504.
    DeadlineExceeded,
    /// The `grpc-timeout` header did not parse: gRPC `INTERNAL` (as gRPC's
    /// reference implementations answer), or HTTP 400.
    MalformedTimeout(GrpcTimeoutError),
}

impl Answer {
    /// The message: static ASCII without `%`, so it is also a valid
    /// `grpc-message` as it stands (no percent-encoding needed).
    fn message(self) -> &'static str {
        match self {
            Answer::DeadlineExceeded => "context deadline exceeded",
            Answer::MalformedTimeout(e) => match e {
                GrpcTimeoutError::Empty => "malformed grpc-timeout: empty",
                GrpcTimeoutError::BadValue => {
                    "malformed grpc-timeout: the value must be 1 to 8 digits"
                }
                GrpcTimeoutError::NotADigit => "malformed grpc-timeout: the value has a non-digit",
                GrpcTimeoutError::BadUnit => {
                    "malformed grpc-timeout: the unit must be one of H M S m u n"
                }
            },
        }
    }

    /// The response head and, for plain HTTP, a one-line text body. gRPC
    /// answers are "Trailers-Only": status 200, the gRPC status in the
    /// headers, no body.
    pub(crate) fn response(self, grpc: bool) -> (Response<()>, Option<&'static str>) {
        let mut response = Response::new(());
        let headers = response.headers_mut();
        if grpc {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            let code = match self {
                Answer::DeadlineExceeded => DEADLINE_EXCEEDED,
                Answer::MalformedTimeout(_) => INTERNAL,
            };
            headers.insert(GRPC_STATUS, HeaderValue::from_static(code));
            headers.insert(GRPC_MESSAGE, HeaderValue::from_static(self.message()));
            (response, None)
        } else {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            *response.status_mut() = match self {
                Answer::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                Answer::MalformedTimeout(_) => StatusCode::BAD_REQUEST,
            };
            (response, Some(self.message()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn grpc_is_told_by_content_type() {
        assert!(is_grpc(&headers(&[("content-type", b"application/grpc")])));
        assert!(is_grpc(&headers(&[(
            "content-type",
            b"application/grpc+proto"
        )])));
        assert!(!is_grpc(&headers(&[("content-type", b"application/json")])));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn incoming_timeout_follows_the_spec() {
        let t = |v: &[u8]| incoming_timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(incoming_timeout(&HeaderMap::new()), Ok(None));
        assert_eq!(t(b"250m"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(t(b"99999999S"), Ok(Some(Duration::from_secs(99_999_999))));
        // Zero is a deadline that has already passed.
        assert_eq!(t(b"0n"), Ok(Some(Duration::ZERO)));
        // The largest value in hours is far past any clock's range, and
        // still parses (the context saturates it).
        assert_eq!(
            t(b"99999999H"),
            Ok(Some(Duration::from_secs(99_999_999 * 3600)))
        );
        assert_eq!(t(b""), Err(GrpcTimeoutError::Empty));
        assert_eq!(t(b"123456789m"), Err(GrpcTimeoutError::BadValue));
        assert_eq!(t(b"m"), Err(GrpcTimeoutError::BadValue));
        assert_eq!(t(b"5x"), Err(GrpcTimeoutError::BadUnit));
        assert_eq!(t(b"1.5S"), Err(GrpcTimeoutError::NotADigit));
        assert_eq!(t(b"-1S"), Err(GrpcTimeoutError::NotADigit));
        assert_eq!(t(b" 1S"), Err(GrpcTimeoutError::NotADigit));
        assert_eq!(t(b"1\xffS"), Err(GrpcTimeoutError::NotADigit));
        assert_eq!(t(b"1\xc3\xa9"), Err(GrpcTimeoutError::BadUnit));
    }

    #[test]
    fn arbitrary_header_bytes_never_panic() {
        // A small xorshift PRNG: deterministic, no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"0123456789HMSmun \t.-+x\x80\xff";
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                continue; // not a header value at all: never reaches a service
            };
            let mut map = HeaderMap::new();
            map.insert(GRPC_TIMEOUT, value);
            match incoming_timeout(&map) {
                Ok(d) => {
                    let d = d.expect("the header is there");
                    // Whatever parsed formats back to a value that parses to
                    // at least as much time (rounding up, saturating).
                    let again = parse_grpc_timeout(&format_grpc_timeout(d)).unwrap();
                    assert!(again >= d);
                }
                Err(e) => assert!(!Answer::MalformedTimeout(e).message().is_empty()),
            }
        }
    }

    #[test]
    fn outgoing_timeout_keeps_a_shorter_one_already_set() {
        let mut map = HeaderMap::new();
        set_outgoing_timeout(&mut map, Duration::from_millis(1500));
        assert_eq!(map[GRPC_TIMEOUT], "1500000u");
        set_outgoing_timeout(&mut map, Duration::from_secs(2));
        assert_eq!(map[GRPC_TIMEOUT], "1500000u", "a shorter one stays");
        set_outgoing_timeout(&mut map, Duration::from_millis(20));
        assert_eq!(map[GRPC_TIMEOUT], "20000000n");
        let mut bad = headers(&[("grpc-timeout", b"soon")]);
        set_outgoing_timeout(&mut bad, Duration::from_secs(1));
        assert_eq!(bad[GRPC_TIMEOUT], "1000000u", "a malformed one is replaced");
    }

    #[test]
    fn answers_are_valid_grpc_or_http() {
        let (head, body) = Answer::DeadlineExceeded.response(true);
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()[GRPC_STATUS], "4");
        assert_eq!(head.headers()[GRPC_MESSAGE], "context deadline exceeded");
        assert_eq!(body, None);
        let (head, body) = Answer::DeadlineExceeded.response(false);
        assert_eq!(head.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body, Some("context deadline exceeded"));
        for e in [
            GrpcTimeoutError::Empty,
            GrpcTimeoutError::BadValue,
            GrpcTimeoutError::NotADigit,
            GrpcTimeoutError::BadUnit,
        ] {
            let (head, _) = Answer::MalformedTimeout(e).response(true);
            assert_eq!(head.headers()[GRPC_STATUS], "13");
            let message = Answer::MalformedTimeout(e).message();
            // grpc-message: printable ASCII, `%` only as an escape.
            assert!(
                message
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'%')
            );
            let (head, _) = Answer::MalformedTimeout(e).response(false);
            assert_eq!(head.status(), StatusCode::BAD_REQUEST);
        }
    }
}
