# Where the benchmark scripts find what they run (sourced after `root` is set): the release
# builds in CARGO_TARGET_DIR (default target/), Envoy and Python in the project's .venv.
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
# shellcheck disable=SC2034 # each script uses its own subset
agent="$target_dir/release/colyseus-envoy"
wasm="$target_dir/wasm32-wasip1/release/colyseus_envoy_filter.wasm"
envoy="$root/.venv/bin/envoy"
py="$root/.venv/bin/python"
loadgen="$target_dir/release/loadgen"
echo_bin="$target_dir/release/bench-echo"
