# Helpers the benchmark scripts share (sourced; needs `say` and $py defined by the caller).
#   free_port                    a port nobody listens on now
#   wait_http URL [substring]    until URL answers 2xx (containing substring), 30 s at most
#   wait_port PORT               until 127.0.0.1:PORT accepts a connection, 30 s at most

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() {
  local n body
  for ((n = 0; n < 300; n++)); do
    if body="$(curl -fsS --max-time 1 "$1" 2>/dev/null)" && [[ "$body" == *"${2:-}"* ]]; then return 0; fi
    sleep 0.1
  done
  say "timed out waiting for $1"
  return 1
}

wait_port() {
  local n
  for ((n = 0; n < 300; n++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  say "timed out waiting for port $1"
  return 1
}
