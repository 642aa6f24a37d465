#!/usr/bin/env python3
"""Report of scripts/bench-edge.sh (issue 14): medians per target and the issue's ratios.

usage: edge_report.py RAW.jsonl [--note TEXT] [--rounds R] [--hold N] [--hold-big N]
                      [--echo-c N] > bench/results/edge-path.md
"""
import argparse
import json
import datetime
import statistics

TARGETS = ["static", "ours-http", "ours-tcp", "colyseus"]
NAMES = {
    "static": "Envoy, static routes, no wasm",
    "ours-http": "ours, `--edge-path http`",
    "ours-tcp": "ours, `--edge-path tcp`",
    "colyseus": "@colyseus/proxy 0.12.11",
}


def med(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    return "–" if v is None else f"{v:,.{digits}f}"


def ratio(a, b):
    return None if a is None or not b else a / b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--note", default="")
    ap.add_argument("--rounds", default="?")
    ap.add_argument("--hold", default="2000")
    ap.add_argument("--hold-big", default="10000")
    ap.add_argument("--echo-c", default="200")
    a = ap.parse_args()
    rows = [json.loads(line) for line in open(a.raw) if line.strip()]
    by = {t: [r for r in rows if r.get("target") == t] for t in TARGETS}
    s = {}
    for t, rs in by.items():
        hold = [r["hold"] for r in rs if "hold" in r]
        big = [r["hold_big"] for r in rs if "hold_big" in r]
        s[t] = {
            "mem": med([h.get("proxy_rss_kb_per_ws") for h in hold]),
            "mem_big": med([h.get("proxy_rss_kb_per_ws") for h in big]),
            "alloc": med([h.get("proxy_allocated_kb_per_ws") for h in hold]),
            "alloc_big": med([h.get("proxy_allocated_kb_per_ws") for h in big]),
            "ok_big": med([h.get("ok") for h in big]),
            "cpu_conn": med([h.get("watched_cpu_us_per_conn") for h in hold]),
            "conn_s": med([h.get("conn_per_s") for h in hold]),
            "msg1": med([r["echo1"].get("watched_cpu_us_per_msg") for r in rs if "echo1" in r]),
            "msg4": med([r["echo4"].get("watched_cpu_us_per_msg") for r in rs if "echo4" in r]),
            "join": med([r["flow"].get("proxy_cpu_us_per_join") for r in rs if "flow" in r]),
            "join_ok": sum(r["flow"].get("ok", 0) for r in rs if "flow" in r),
            "join_n": sum(r["flow"].get("n", 0) for r in rs if "flow" in r),
            "loads": sorted({r.get("load", "") for r in rs}),
        }
    upgrades = next((r["tcp_hcm_upgrades"] for r in rows if "tcp_hcm_upgrades" in r), None)
    out = []
    w = out.append
    w("## Edge paths: room WebSockets at L4 (scripts/bench-edge.sh, issue 14)\n")
    w(f"`scripts/bench-edge.sh --rounds {a.rounds}`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
      f"Medians of {a.rounds} rounds, targets interleaved in each round; Envoy "
      "`--concurrency 1` and @colyseus/proxy pinned to CPU 0, load on CPU 1. Memory: the proxy "
      f"process's RSS while the WebSockets are held ({a.hold}, and {a.hold_big} once) minus its RSS "
      "before any was opened, per WebSocket (Envoy only, not the agent); for Envoy also tcmalloc's "
      "bytes in use (admin `/memory` `allocated`), the exact figure. CPU per connection and "
      f"connections/s: the same {a.hold} handshakes, 64 in flight (proxy + agent CPU for ours). "
      f"CPU per message: {a.echo_c} connections, 64 B, 1 or 4 in flight. Join: real colyseus.js "
      "joinOrCreate + room WebSocket against 3 Colyseus 0.16 servers, proxy CPU per join.")
    if a.note:
        w(f"\n{a.note}")
    loads = sorted({l for t in TARGETS for l in s[t]["loads"] if l})
    w(f"\nLoad average during the rounds (1/5/15 min): {', '.join(loads[:3])}{' ...' if len(loads) > 3 else ''} "
      "(2 cores shared with other work).\n")
    w(f"| | {' | '.join(NAMES[t] for t in TARGETS)} |")
    w("| --- |" + " ---: |" * len(TARGETS))
    for key, label, d in [
        ("mem", f"KB per idle WebSocket, {a.hold} held", 1),
        ("mem_big", f"KB per idle WebSocket, {a.hold_big} held", 1),
        ("alloc", f"KB allocated (tcmalloc) per idle WebSocket, {a.hold} held", 1),
        ("alloc_big", f"KB allocated (tcmalloc) per idle WebSocket, {a.hold_big} held", 1),
        ("cpu_conn", "CPU per connection (us)", 0),
        ("conn_s", "connections/s", 0),
        ("msg1", "CPU per message, 1 in flight (us)", 2),
        ("msg4", "CPU per message, 4 in flight (us)", 2),
        ("join", "proxy CPU per Colyseus join (us)", 0),
    ]:
        w(f"| {label} | {' | '.join(fmt(s[t][key], d) for t in TARGETS)} |")
    tcp, http, col, st = s["ours-tcp"], s["ours-http"], s["colyseus"], s["static"]
    w("\n| target (issue 14) | measured | target | met |")
    w("| --- | ---: | ---: | :---: |")

    def line(name, value, target, ok):
        w(f"| {name} | {value} | {target} | {'yes' if ok else ('no' if ok is not None else '–')} |")

    r = ratio(tcp["mem"], col["mem"])
    line(f"memory/idle WS, tcp vs @colyseus/proxy ({a.hold})", fmt(r, 2) + "x", "<= 1x", None if r is None else r <= 1)
    r = ratio(tcp["mem_big"], col["mem_big"])
    line(f"memory/idle WS, tcp vs @colyseus/proxy ({a.hold_big})", fmt(r, 2) + "x", "<= 1x", None if r is None else r <= 1)
    r = ratio(tcp["cpu_conn"], col["cpu_conn"])
    line("CPU/connection, tcp vs @colyseus/proxy", fmt(r, 2) + "x", "<= 0.3x", None if r is None else r <= 0.3)
    for k, n in (("msg1", "1"), ("msg4", "4")):
        r = ratio(tcp[k], st[k])
        line(f"CPU/message ({n} in flight), tcp vs static Envoy", fmt(r, 2) + "x", "<= 1x", None if r is None else r <= 1)
    r = ratio(tcp["join"], http["join"])
    line("proxy CPU/join, tcp (internal listener) vs http", fmt(r, 2) + "x", "<= 1.15x", None if r is None else r <= 1.15)
    w(f"\nJoins completed: tcp {tcp['join_ok']}/{tcp['join_n']}, http {http['join_ok']}/{http['join_n']}. "
      f"Room WebSockets that went through the HCM on the tcp path over the whole run: {upgrades} "
      "(0: every one was raw).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
