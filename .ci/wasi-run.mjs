// Cargo's runner for wasm32-wasip1: runs a test binary (or any WASI
// program) under node's built-in WASI, so CI needs no other wasm runtime.
//   node --no-warnings --single-threaded .ci/wasi-run.mjs target/.../semantics-xxxx.wasm [args]
// (`--single-threaded`: see .ci/wasm.sh)
// The program gets its arguments, the environment and the current directory
// (cargo runs tests in the package root, so they can read the fuzz corpus);
// its exit code is ours; a trap (a panic, with wasm's panic=abort) throws
// and makes node exit non-zero.
import { readFile } from "node:fs/promises";
import { argv, cwd, env, exit } from "node:process";
import { WASI } from "node:wasi";

const [file, ...args] = argv.slice(2);
if (!file) {
  console.error("usage: node .ci/wasi-run.mjs program.wasm [args...]");
  exit(2);
}
const wasi = new WASI({
  version: "preview1",
  args: [file, ...args],
  env,
  preopens: { [cwd()]: cwd() },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
exit(wasi.start(instance));
