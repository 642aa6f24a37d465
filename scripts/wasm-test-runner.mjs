#!/usr/bin/env node
// Runs a wasm32-wasip1 program (a `cargo test` binary) under Node's built-in WASI and exits
// with its exit code. Cargo calls it as the target runner (see .cargo/config.toml):
//   wasm-test-runner.mjs <file.wasm> [args...]
// No directory is preopened: the tests are pure. Only RUST_* environment variables are
// passed (RUST_BACKTRACE, RUST_TEST_THREADS, ...). Imports from any module other than WASI
// (e.g. proxy-wasm's `env.proxy_*` host calls) are stubbed with functions that throw, so a
// binary that links them but never calls them still runs.
//
// On wasm32-wasip1 a panic aborts (traps) instead of unwinding, so the first failing test
// ends the run and libtest's captured output, the panic message included, is lost. The
// runner then runs the binary once more with `--nocapture` to show which test failed and why.

// node:wasi prints an ExperimentalWarning when loaded; keep every other warning.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (w.name !== 'ExperimentalWarning') console.warn(w);
});

const { readFile } = await import('node:fs/promises');
const { WASI } = await import('node:wasi');

const [wasmPath, ...args] = process.argv.slice(2);
if (!wasmPath) {
  console.error('usage: wasm-test-runner.mjs <file.wasm> [args...]');
  process.exit(64);
}

const env = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => k.startsWith('RUST_')),
);
const module = await WebAssembly.compile(await readFile(wasmPath));

/** Runs the module once; resolves to its exit code, or throws on a trap. */
async function run(argv) {
  const wasi = new WASI({ version: 'preview1', args: [wasmPath, ...argv], env, preopens: {}, returnOnExit: true });
  const imports = wasi.getImportObject();
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module === 'wasi_snapshot_preview1' || imp.kind !== 'function') continue;
    imports[imp.module] ??= {};
    imports[imp.module][imp.name] = () => {
      throw new Error(`host function ${imp.module}.${imp.name} is not available in the test runner`);
    };
  }
  const instance = await WebAssembly.instantiate(module, imports);
  // A cdylib's `#[no_mangle] _initialize` (proxy-wasm's `main!`) is also exported by its test
  // binary, and WASI refuses to `start` a module exporting it: hand over only what it needs.
  const { _start, memory } = instance.exports;
  return wasi.start({ exports: { _start, memory } });
}

let code;
try {
  code = await run(args);
} catch (e) {
  console.error(`wasm-test-runner: ${wasmPath}: ${e}`);
  code = 101;
  if (e instanceof WebAssembly.RuntimeError && !args.includes('--nocapture')) {
    console.error('wasm-test-runner: a panic aborts the run on wasm; running again with --nocapture:');
    try {
      await run([...args, '--nocapture']);
    } catch (again) {
      console.error(`wasm-test-runner: ${again}`);
    }
  }
}
process.exit(code);
