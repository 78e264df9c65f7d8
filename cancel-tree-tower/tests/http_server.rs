//! Runs `examples/http_server.rs` as a child process and talks HTTP/1.1 to
//! it over loopback with a raw `TcpStream`: timeouts (the server's default,
//! or the caller's `grpc-timeout`) become 504s while other requests go on, a
//! client that disconnects gets its slow work abandoned with the disconnect
//! cause, and SIGINT cancels the root so in-flight requests end with the
//! shutdown cause and the server exits 0.
//!
//! The example is built with `cargo build --example http_server` (a no-op
//! when `cargo test` already built it), with this test's features and target
//! directory, and its path is read from cargo's JSON messages.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long building the example may take (the first build compiles axum,
/// hyper and tokio; minutes on a small machine).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long anything that should happen "soon" may take before the test
/// fails: generous, for a loaded machine.
const SOON: Duration = Duration::from_secs(30);
/// A per-request timeout no test request reaches.
const LONG_TIMEOUT_MS: u64 = 60_000;

// ---------------------------------------------------------------------------
// Building the example.

/// The package features this test was built with, to build the example with
/// the same (so cargo reuses the library instead of building another copy).
fn features() -> Vec<&'static str> {
    let all = [
        ("axum", cfg!(feature = "axum")),
        ("tonic", cfg!(feature = "tonic")),
    ];
    all.iter().filter(|(_, on)| *on).map(|(f, _)| *f).collect()
}

/// The example's executable, built once per test process.
fn example_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_example)
}

fn build_example() -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--example",
        "http_server",
        "--message-format=json-render-diagnostics",
    ])
    .arg("--manifest-path")
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
    .arg("--no-default-features");
    let features = features();
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    // This test runs as `<target>/<profile dir>/deps/http_server-<hash>`:
    // build into the same target directory and profile.
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe.parent().and_then(Path::parent);
    if let Some(profile_dir) = profile_dir
        && let (Some(target), Some(name)) = (profile_dir.parent(), profile_dir.file_name())
    {
        let profile = match name.to_str() {
            Some("debug") => "dev",
            Some(other) => other,
            None => "dev",
        };
        cmd.env("CARGO_TARGET_DIR", target)
            .args(["--profile", profile]);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    eprintln!("building the example: {cmd:?}");
    let mut child = ChildGuard(cmd.spawn().expect("cargo starts"));
    let stdout = child.0.stdout.take().expect("piped stdout");
    // Cargo's progress and diagnostics, through the test's output capture
    // (shown if the test fails).
    let stderr = child.0.stderr.take().expect("piped stderr");
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("cargo: {line}");
        }
    });
    let reader = thread::spawn(move || {
        let mut executable = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("cargo's output is UTF-8");
            if line.contains(r#""reason":"compiler-artifact""#)
                && line.contains(r#""kind":["example"]"#)
                && line.contains(r#""name":"http_server""#)
            {
                executable = json_string_field(&line, "executable");
            }
        }
        executable
    });
    let status = child
        .wait_timeout(BUILD_TIMEOUT)
        .unwrap_or_else(|| panic!("building the example took over {BUILD_TIMEOUT:?}"));
    assert!(
        status.success(),
        "cargo build --example http_server: {status}"
    );
    let executable = reader
        .join()
        .expect("the reader thread")
        .expect("cargo reports the example's executable");
    PathBuf::from(executable)
}

/// The string value of `"field":"..."` in one line of cargo's JSON.
fn json_string_field(line: &str, field: &str) -> Option<String> {
    let start = line.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c => out.push(c), // `\\`, `\"`, `\/`
            },
            c => out.push(c),
        }
    }
}

/// Kills (and reaps) the child when dropped, also when a test fails.
struct ChildGuard(Child);

impl ChildGuard {
    /// Waits for the child to exit, for at most `limit`.
    fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// The server under test.

/// The server's stdout, line by line, as it comes.
#[derive(Default)]
struct Log {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Log {
    /// The first line matching `pred`, waiting up to `limit` for it.
    fn wait_for(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut guard = self.lines.lock().unwrap();
        loop {
            if let Some(l) = guard.0.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None; // closed, or out of time
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    fn all(&self) -> String {
        self.lines.lock().unwrap().0.join("\n")
    }
}

struct Server {
    child: ChildGuard,
    addr: SocketAddr,
    log: Arc<Log>,
}

impl Server {
    /// Starts the example with a per-request timeout of `timeout_ms`.
    fn start(timeout_ms: u64) -> Server {
        let mut child = ChildGuard(
            Command::new(example_binary())
                .args(["--timeout-ms", &timeout_ms.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the example starts"),
        );
        let stdout = child.0.stdout.take().expect("piped stdout");
        let log = Arc::new(Log::default());
        let pid = child.0.id();
        thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("server {pid}: {line}");
                    log.lines.lock().unwrap().0.push(line);
                    log.changed.notify_all();
                }
                log.lines.lock().unwrap().1 = true;
                log.changed.notify_all();
            }
        });
        let first = log
            .wait_for(SOON, |_| true)
            .expect("the server prints its address");
        let addr = first
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("first line {first:?}"))
            .parse()
            .expect("a socket address");
        Server { child, addr, log }
    }

    /// A line of the log matching `pred`, waiting up to [`SOON`] for it.
    fn expect_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.log
            .wait_for(SOON, pred)
            .unwrap_or_else(|| panic!("no log line {what}; log:\n{}", self.log.all()))
    }

    /// `/stats` as `(name, value)` pairs.
    fn stats(&self) -> Vec<(String, u64)> {
        let resp = get(self.addr, "/stats");
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.body
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().expect("a counter")))
            .collect()
    }

    fn stat(&self, name: &str) -> u64 {
        self.stats()
            .into_iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
    }
}

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 client.

#[derive(Debug)]
struct Response {
    status: u16,
    headers: String,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, SOON).expect("connect");
    stream.set_read_timeout(Some(SOON)).unwrap();
    stream.set_write_timeout(Some(SOON)).unwrap();
    stream
}

/// Sends a `GET`, with `extra` header lines (each ending in `\r\n`).
fn send_get(stream: &mut TcpStream, addr: SocketAddr, path: &str, extra: &str) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )
    .expect("send the request");
}

/// One `GET` on a fresh connection; the server closes it after answering.
fn get(addr: SocketAddr, path: &str) -> Response {
    get_with(addr, path, "")
}

/// [`get`] with `extra` header lines.
fn get_with(addr: SocketAddr, path: &str, extra: &str) -> Response {
    let mut stream = connect(addr);
    send_get(&mut stream, addr, path, extra);
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("reading the response to {path}: {e}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a response to {path}: {raw:?}"));
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
    Response {
        status,
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

/// The id in `[req N] GET {path}`, once the server has logged it.
fn started(server: &Server, path: &str) -> u64 {
    let suffix = format!("] GET {path}");
    let line = server.expect_log(&format!("for GET {path}"), |l| {
        l.starts_with("[req ") && l.ends_with(&suffix)
    });
    line["[req ".len()..line.len() - suffix.len()]
        .parse()
        .expect("a request id")
}

/// `K` in `abandoned request {id} after K steps (...)`, and the reason.
fn abandoned(server: &Server, id: u64) -> (u64, String) {
    let prefix = format!("[req {id}] abandoned request {id} after ");
    let line = server.expect_log(&format!("abandoning request {id}"), |l| {
        l.starts_with(&prefix)
    });
    let rest = &line[prefix.len()..];
    let (steps, reason) = rest.split_once(" steps ").expect("`K steps (reason)`");
    (steps.parse().expect("a step count"), reason.to_string())
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn fast_route_answers_200_with_its_request_id_in_the_log() {
    let server = Server::start(LONG_TIMEOUT_MS);
    let resp = get(server.addr, "/fast");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, "fast\n");
    let id = resp.header("x-request-id").expect("an x-request-id header");
    // The `RequestId` value from the request's context is in its log lines.
    server.expect_log("for the request's 200", |l| l == format!("[req {id}] 200"));
    assert_eq!(started(&server, "/fast").to_string(), id);

    let resp = get(server.addr, "/nowhere");
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(server.stat("abandoned"), 0);
}

#[test]
fn slow_request_hits_its_deadline_with_504_while_fast_requests_go_on() {
    let server = Server::start(300);
    let addr = server.addr;
    let slow = thread::spawn(move || get(addr, "/slow?ms=5000"));
    let slow_id = started(&server, "/slow?ms=5000");

    // Another request on another connection is served meanwhile.
    let fast = get(server.addr, "/fast");
    assert_eq!(fast.status, 200, "{fast:?}");

    let slow = slow.join().expect("the slow request's thread");
    assert_eq!(slow.status, 504, "{slow:?}");
    assert_eq!(slow.body, "context deadline exceeded\n");
    assert_eq!(
        slow.header("x-request-id"),
        Some(slow_id.to_string().as_str())
    );

    // The slow call noticed the deadline and stopped early (500 steps is the
    // whole call).
    let (steps, reason) = abandoned(&server, slow_id);
    assert!(steps < 500, "{steps} steps");
    assert_eq!(reason, "(context deadline exceeded)");
    assert_eq!(server.stat("timed_out"), 1);
    assert_eq!(server.stat("canceled"), 0);
}

#[test]
fn the_callers_grpc_timeout_is_the_requests_deadline() {
    let server = Server::start(LONG_TIMEOUT_MS);
    let resp = get_with(server.addr, "/slow?ms=5000", "grpc-timeout: 200m\r\n");
    assert_eq!(resp.status, 504, "{resp:?}");
    assert_eq!(resp.body, "context deadline exceeded\n");
    let id = resp.header("x-request-id").expect("an x-request-id header");
    let (steps, reason) = abandoned(&server, id.parse().unwrap());
    assert!(steps < 500, "{steps} steps");
    assert_eq!(reason, "(context deadline exceeded)");

    // A malformed one is refused before any handler runs.
    let resp = get_with(server.addr, "/slow?ms=5000", "grpc-timeout: soon\r\n");
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(
        resp.body,
        "malformed grpc-timeout: the value has a non-digit"
    );
}

#[test]
fn client_disconnect_cancels_the_request_and_abandons_the_slow_work() {
    let server = Server::start(LONG_TIMEOUT_MS);
    assert_eq!(server.stat("canceled"), 0);

    // 20 s of work that nobody will wait for.
    let path = "/slow?ms=20000";
    let mut stream = connect(server.addr);
    send_get(&mut stream, server.addr, path, "");
    let id = started(&server, path);
    thread::sleep(Duration::from_millis(100));
    stream
        .shutdown(Shutdown::Both)
        .expect("close the connection");
    drop(stream);

    // The request's context is cancelled, and the work stops at its next
    // step instead of running for 20 s.
    let deadline = Instant::now() + SOON;
    while server.stat("canceled") == 0 {
        assert!(
            Instant::now() < deadline,
            "no cancel after {SOON:?}; log:\n{}",
            server.log.all()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (steps, reason) = abandoned(&server, id);
    assert!(steps < 2000, "{steps} steps");
    assert_eq!(reason, "(context canceled: client disconnected)");
    server.expect_log("for the departed client", |l| {
        l == format!("[req {id}] client went away")
    });
    assert_eq!(server.stat("disconnected"), 1);
    assert_eq!(server.stat("timed_out"), 0);
    assert_eq!(server.stat("completed"), 0);
}

#[cfg(unix)]
#[test]
fn sigint_cancels_in_flight_requests_and_exits_0() {
    let mut server = Server::start(LONG_TIMEOUT_MS);
    let addr = server.addr;
    let path = "/slow?ms=60000";
    let slow = thread::spawn(move || get(addr, path));
    let id = started(&server, path);

    let pid = server.child.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -INT {pid}: {kill}");

    // Cancelling the root ended the in-flight request...
    let slow = slow.join().expect("the slow request's thread");
    assert_eq!(slow.status, 503, "{slow:?}");
    assert_eq!(slow.body, "context canceled: server shutting down\n");
    let (_, reason) = abandoned(&server, id);
    assert_eq!(reason, "(context canceled: server shutting down)");
    // ...and the server drained and exited cleanly.
    let status = server.child.wait_timeout(SOON).unwrap_or_else(|| {
        panic!(
            "still running {SOON:?} after SIGINT; log:\n{}",
            server.log.all()
        )
    });
    assert!(status.success(), "exit status {status}");
    server.expect_log("saying bye", |l| l == "[server] bye");
}
