source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
for pair in "$OP $OA" "$O2P $O2A"; do set -- $pair
  out=$(taskset -c 1 $T/release/loadgen echo --url "$(urls $1)" --connections 10 --inflight 1 --size 64 --warmup-s 0.5 --duration-s 2)
  msgs=$(echo "$out" | $PY -c 'import json,sys; print(json.load(sys.stdin)["messages"])')
  echo "port $1: messages measured=$msgs (plus warm-up)"; curl -s "127.0.0.1:$2/stats?filter=probe|wasm|downstream_rq_total|upstream_cx_rx_bytes_total" | grep -v ": 0$" | grep -E "probe|rq_total|vm" | head
done
