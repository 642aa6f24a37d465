#!/usr/bin/env bash
# Builds the proxy-wasm filter in release mode and prints the path of the .wasm Envoy loads.
# Runs from any directory; cargo's own output goes to stderr.
#
# The module is then rewritten in place by tools/strip-callbacks: the proxy-wasm SDK exports
# every callback, and Envoy enters the VM for each one exported, including the body
# callbacks on every chunk (every WebSocket frame) of every stream. The callbacks the filter
# leaves at the SDK's no-op default are removed from the exports, so Envoy skips them
# (see tools/strip-callbacks/src/lib.rs). A plain `cargo build` of the filter puts the
# unstripped module back: it works the same, only slower per message.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo build --release --target wasm32-wasip1 -p colyseus-envoy-filter \
  --manifest-path "$root/Cargo.toml" >&2
# Cargo's target directory, which CARGO_TARGET_DIR or a config may move.
target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
wasm="$target_dir/wasm32-wasip1/release/colyseus_envoy_filter.wasm"
test -f "$wasm" || { echo "build-filter.sh: $wasm was not built" >&2; exit 1; }
cargo run --quiet -p strip-callbacks --manifest-path "$root/Cargo.toml" -- "$wasm" >&2
echo "$wasm"
