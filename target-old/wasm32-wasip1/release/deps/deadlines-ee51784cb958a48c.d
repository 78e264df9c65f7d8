/work/main/target-old/wasm32-wasip1/release/deps/deadlines-ee51784cb958a48c.d: tests/deadlines.rs tests/common/mod.rs

/work/main/target-old/wasm32-wasip1/release/deps/deadlines-ee51784cb958a48c.wasm: tests/deadlines.rs tests/common/mod.rs

tests/deadlines.rs:
tests/common/mod.rs:
