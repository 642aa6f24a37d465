#!/usr/bin/env bash
# The xDS sink beside the CDS file sink at scale (issue 15): for each size in
# SCALE_PROCESSES (default 1000,10000), file sink then xDS sink, each on its own Redis with
# that many registrations written directly (as the scale benchmark does). Prints
# SCALE-XDS lines: start -> all clusters active, one more registration -> active in Envoy
# (median/max over 20), agent and Envoy CPU per update, RSS. See tests/e2e/tests/scale_xds.rs.
#
# Usage: scripts/bench-xds.sh            Settings: SCALE_PROCESSES (1000,10000),
#   SCALE_SINKS (file,xds), SCALE_XDS_BOOTSTRAP (JSON: top-level bootstrap fields, xDS Envoy).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "bench-xds: load before: $(uptime)" >&2
cargo build --release -p colyseus-envoy-agent
cargo test -p e2e --features e2e --release --test scale_xds -- --ignored --nocapture --test-threads=1
echo "bench-xds: load after: $(uptime)" >&2
