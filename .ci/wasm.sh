#!/usr/bin/env bash
# wasm (docs/wasm.md): the library builds for wasm32-unknown-unknown and
# wasm32-wasip1; JsClock's tests run in node on the real JS timer
# (wasm-bindgen-test-runner); the test suites that fit one thread run in
# node's WASI. A check that cannot run says SKIPPED and why.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown wasm32-wasip1

echo "--- builds and lints"
# What makes sense there: nothing, alloc, std, and js (JsClock; on wasip1
# it adds nothing, which is checked too).
for target in wasm32-unknown-unknown wasm32-wasip1; do
    for features in "--no-default-features" "--no-default-features --features alloc" "" "--features js"; do
        echo "cargo build --lib --target $target $features"
        # shellcheck disable=SC2086 # $features is a list of flags
        cargo build --lib --target "$target" $features
    done
done
wasi_tests=(--test semantics --test deadlines --test merge --test local_scopes
    --test combinators --test model_check --test alloc_counts)
cargo clippy --lib --target wasm32-unknown-unknown --features js -- -D warnings
cargo clippy --target wasm32-unknown-unknown --features js --test js_clock -- -D warnings
cargo clippy --target wasm32-unknown-unknown --test wasm_without_js -- -D warnings
cargo clippy --lib "${wasi_tests[@]}" --target wasm32-wasip1 -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --target wasm32-unknown-unknown --features js
# JsClock's example is `no_run`: built for the target, not run.
cargo test --doc --target wasm32-unknown-unknown --features js -- JsClock

echo "--- MSRV: JsClock and the wasm cfgs at Cargo.toml's rust-version"
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
if rustup toolchain list | grep -q "^$msrv" &&
    rustup target add --toolchain "$msrv" wasm32-unknown-unknown wasm32-wasip1; then
    CARGO_TARGET_DIR=target/msrv cargo +"$msrv" check --lib --target wasm32-unknown-unknown --features js
    CARGO_TARGET_DIR=target/msrv cargo +"$msrv" check --lib --target wasm32-wasip1
else
    echo "SKIPPED: wasm at MSRV: Rust $msrv or its wasm targets are not installed"
fi

node_major=$(node --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p')
if [ -z "$node_major" ] || [ "$node_major" -lt 20 ]; then
    echo "SKIPPED: wasm tests in node: they need node 20 or later (found: ${node_major:-none})"
    exit 0
fi

echo "--- JsClock (and std without it) in node: wasm32-unknown-unknown, wasm-bindgen-test-runner"
# The runner must be exactly the wasm-bindgen version the lock file has.
wb=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
if [ "$(wasm-bindgen-test-runner --version 2>/dev/null)" != "wasm-bindgen-test-runner $wb" ]; then
    start=$(date +%s)
    if ! cargo install --locked wasm-bindgen-cli --version "$wb"; then
        # Its lock file can pin a crate the registry no longer serves.
        echo "NOTE: cargo install --locked wasm-bindgen-cli $wb failed; retrying with a fresh resolution"
        cargo install wasm-bindgen-cli --version "$wb" || true
    fi
    echo "wasm-bindgen-cli $wb: installed in $(($(date +%s) - start)) s"
fi
if [ "$(wasm-bindgen-test-runner --version 2>/dev/null)" = "wasm-bindgen-test-runner $wb" ]; then
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
    timeout -k 10 600 cargo test --target wasm32-unknown-unknown --features js --test js_clock
    # std without js: no clock under background(), and no panic.
    timeout -k 10 600 cargo test --target wasm32-unknown-unknown --test wasm_without_js
else
    echo "SKIPPED: JsClock tests in node: wasm-bindgen-test-runner $wb could not be installed"
fi

echo "--- single-thread suites under node's WASI (wasm32-wasip1)"
# Optimised, with the checks of a debug build: the model check and the
# allocation counts take minutes unoptimised. Tests that need threads or
# catch panics (wasm aborts) are marked ignored on wasm in their files.
# Not tests/scale.rs: its 10M-node trees grow the memory past 300 MB, which
# takes long under WASI; the native run covers it. `--single-threaded`:
# without it node 20 segfaults now and then after a test binary whose
# memory grew large (deadlines.rs's million pending timeouts; any program
# that does, not only ours) has printed its results; V8's helper threads
# are the difference (16 of 16 runs clean with it, about 1 in 2 crashed
# without it).
CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings --single-threaded $PWD/.ci/wasi-run.mjs" \
    CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
    timeout -k 10 900 cargo test --release --target wasm32-wasip1 "${wasi_tests[@]}"
