#!/usr/bin/env python3
"""Turns scripts/bench.sh's raw rounds into bench/results/latest.json, bench/results/*.png
and BENCHMARKS.md.  usage: report.py RAW.jsonl META.json [--plots 0|1]"""
import json
import os
import statistics
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TARGETS = ["direct", "static", "ours", "colyseus"]
NAMES = {
    "direct": "(1) direct to upstreams",
    "static": "(2) Envoy, static routes, no wasm",
    "ours": "(3) colyseus-envoy (Envoy + filter + agent)",
    "colyseus": "(4) @colyseus/proxy 0.12.11",
}
SHORT = {"direct": "direct", "static": "Envoy static", "ours": "ours", "colyseus": "@colyseus/proxy"}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(rows):
    out = {}
    for t in TARGETS:
        rs = [r for r in rows if r["target"] == t]
        if not rs:
            continue
        c = [r["connect"] for r in rs]
        e = [r["echo"] for r in rs]
        first = min(rs, key=lambda r: r["round"])["connect"]
        lg_conn = [x["usage"]["loadgen_cpu_s"] / max(x["setup_wall_s"], 1e-9) for x in c]
        proxy = t != "direct"
        out[t] = {
            "rounds": len(rs),
            "conn_per_s": med([x["conn_per_s"] for x in c]),
            "handshake_p50_us": med([x["handshake_us"]["p50"] for x in c]),
            "handshake_p99_us": med([x["handshake_us"]["p99"] for x in c]),
            "connect_errors": sum(x["errors"] for x in c),
            "connect_ok": med([x["ok"] for x in c]),
            "msg_per_s": med([x["msg_per_s"] for x in e]),
            "rtt_p50_us": med([x["rtt_us"]["p50"] for x in e]),
            "rtt_p99_us": med([x["rtt_us"]["p99"] for x in e]),
            "rtt_p999_us": med([x["rtt_us"]["p999"] for x in e]),
            "echo_errors": sum(x["errors"] for x in e),
            # CPU of the watched processes: the proxy's for (2)-(4), the upstreams' for (1).
            "cpu_us_per_conn": med([x["watched_cpu_us_per_conn"] for x in c]),
            "cpu_us_per_msg": med([x["watched_cpu_us_per_msg"] for x in e]),
            "cpu_is": "proxy" if proxy else "upstreams",
            # Memory from the first round, on a freshly started proxy.
            "rss_kb_per_idle_ws": first["watched_rss_kb_per_conn"],
            "rss_before_kb": first["usage"]["watched_rss_before_kb"],
            "rss_after_kb": first["usage"]["watched_rss_after_kb"],
            "loadgen_busy_connect_max": max(lg_conn),
            "loadgen_busy_echo_max": max(x["usage"]["loadgen_busy"] for x in e),
        }
    return out


def ratio(a, b):
    return None if a is None or not b else a / b


def fmt(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, float) and nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def us(v):
    return "–" if v is None else (f"{v/1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs")


def plots(summary, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ts = [t for t in TARGETS if t in summary]
    labels = [SHORT[t] for t in ts]
    colors = ["#888888", "#4c72b0", "#55a868", "#c44e52"][: len(ts)]
    made = []

    def bars(fname, title, series, ylabel):
        fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.6))
        if len(series) == 1:
            axes = [axes]
        for ax, (sub, key, skip_direct) in zip(axes, series):
            vals = [summary[t][key] if not (skip_direct and t == "direct") else 0 for t in ts]
            vals = [v or 0 for v in vals]
            ax.bar(labels, vals, color=colors)
            ax.set_title(sub, fontsize=10)
            ax.tick_params(axis="x", labelrotation=20, labelsize=8)
            for i, v in enumerate(vals):
                ax.annotate(f"{v:,.0f}" if v >= 10 else f"{v:.2f}", (i, v), ha="center", va="bottom", fontsize=8)
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        path = os.path.join(outdir, fname)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(os.path.relpath(path, ROOT))

    bars("connect.png", "WebSocket connection setup",
         [("connections/s", "conn_per_s", False), ("handshake p50 (µs)", "handshake_p50_us", False),
          ("handshake p99 (µs)", "handshake_p99_us", False), ("proxy CPU µs / connection", "cpu_us_per_conn", True)], "")
    bars("echo.png", "Closed-loop 64 B round trips",
         [("messages/s", "msg_per_s", False), ("RTT p50 (µs)", "rtt_p50_us", False),
          ("RTT p99 (µs)", "rtt_p99_us", False), ("proxy CPU µs / message", "cpu_us_per_msg", True)], "")
    bars("memory.png", "Proxy memory per idle WebSocket",
         [("RSS KB / idle WebSocket", "rss_kb_per_idle_ws", True)], "")
    return made


def main():
    raw, meta_path = sys.argv[1], sys.argv[2]
    want_plots = "--plots" not in sys.argv or sys.argv[sys.argv.index("--plots") + 1] == "1"
    rows = [json.loads(l) for l in open(raw) if l.strip()]
    meta = json.load(open(meta_path))
    summary = summarize(rows)
    outdir = os.path.join(ROOT, "bench", "results")
    os.makedirs(outdir, exist_ok=True)
    made, plot_err = [], None
    if want_plots:
        try:
            made = plots(summary, outdir)
        except Exception as e:  # noqa: BLE001 - a missing plot must not lose the numbers
            plot_err = str(e)
    ratios = {}
    for t in summary:
        ratios[t] = {}
        for base in ("direct", "static"):
            if base in summary and t != base:
                b, s = summary[base], summary[t]
                ratios[t][f"vs_{base}"] = {
                    "conn_per_s": ratio(s["conn_per_s"], b["conn_per_s"]),
                    "msg_per_s": ratio(s["msg_per_s"], b["msg_per_s"]),
                    "rtt_p50": ratio(s["rtt_p50_us"], b["rtt_p50_us"]),
                    "cpu_per_conn": ratio(s["cpu_us_per_conn"], b["cpu_us_per_conn"]) if base != "direct" else None,
                    "cpu_per_msg": ratio(s["cpu_us_per_msg"], b["cpu_us_per_msg"]) if base != "direct" else None,
                }
    latest = {"meta": meta, "summary": summary, "ratios": ratios, "rounds": rows, "plots": made}
    scale = []
    if "--scale" in sys.argv:
        path = sys.argv[sys.argv.index("--scale") + 1]
        if os.path.exists(path):
            scale = [l.strip() for l in open(path) if l.startswith("SCALE ")]
    latest["scale"] = scale
    json.dump(latest, open(os.path.join(outdir, "latest.json"), "w"), indent=1)
    open(os.path.join(ROOT, "BENCHMARKS.md"), "w").write(
        markdown(meta, summary, ratios, rows, made, plot_err, scale))


def markdown(meta, s, ratios, rows, made, plot_err, scale=()):
    st = meta["settings"]
    L = []
    w = L.append
    w("# Benchmarks\n")
    w("<!-- Generated by scripts/bench.sh (bench/report.py); edit those, not this file. -->\n")
    if meta["quick"]:
        w("> **Status: a `--quick` run (small N and T, one round). These are not the reference "
          "figures: they show that the harness works end to end and give a first order of magnitude. "
          "See the load average per round below.**\n")
    else:
        w(f"> Medians of {meta['rounds']} rounds. Check the load average per round below before "
          "trusting small differences.\n")
    if meta.get("note"):
        w(f"> **{meta['note']}**\n")
    w("Regenerate with `scripts/bench.sh` (default: medians of 3 rounds, about 5 minutes) or "
      "`scripts/bench.sh --quick` (about a minute). Raw data: `bench/results/latest.json`.\n")
    w("## Machine and run\n")
    m = meta["machine"]
    v = meta["versions"]
    w(f"- {m['cpus']} CPUs ({m['cpu_model']}), {m['mem_total']} RAM, Linux {m['kernel']}; {meta['date']}, commit {v['commit']}")
    w(f"- Envoy {v['envoy']} (`--concurrency {st['envoy_concurrency']}`), Node {v['node']}, @colyseus/proxy {v['colyseus_proxy']}")
    w(f"- Pinning: {meta['pinning']}")
    w(f"- connect: {st['conn_n']} WebSockets, {st['conn_concurrency']} handshakes at a time, over {st['upstreams']} processes; "
      f"echo: {st['echo_connections']} connections x {st['echo_inflight']} in flight, {st['message_bytes']} B, "
      f"{st['echo_duration_s']} s after {st['echo_warmup_s']} s warm-up; {meta['rounds']} round(s), {meta['measure_s']} s of measuring\n")

    w("## Connection setup\n")
    w("| target | conn/s | handshake p50 | handshake p99 | errors | proxy CPU / conn | vs (1) rate | vs (2) rate | vs (2) CPU/conn |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in TARGETS:
        if t not in s:
            continue
        x, r = s[t], ratios.get(t, {})
        cpu = us(x["cpu_us_per_conn"]) if t != "direct" else f"({us(x['cpu_us_per_conn'])} upstreams)"
        w(f"| {NAMES[t]} | {fmt(x['conn_per_s'])} | {us(x['handshake_p50_us'])} | {us(x['handshake_p99_us'])} | "
          f"{x['connect_errors']} | {cpu} | {rfmt(r, 'vs_direct', 'conn_per_s')} | {rfmt(r, 'vs_static', 'conn_per_s')} | "
          f"{rfmt(r, 'vs_static', 'cpu_per_conn')} |")
    w("")
    w("## Message round trips (closed loop)\n")
    w("| target | msg/s | RTT p50 | RTT p99 | RTT p999 | errors | proxy CPU / msg | vs (1) msg/s | vs (2) msg/s | vs (2) CPU/msg |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in TARGETS:
        if t not in s:
            continue
        x, r = s[t], ratios.get(t, {})
        cpu = f"{x['cpu_us_per_msg']:.2f} µs" if x["cpu_us_per_msg"] is not None else "–"
        if t == "direct":
            cpu = f"({cpu} upstreams)"
        w(f"| {NAMES[t]} | {fmt(x['msg_per_s'])} | {us(x['rtt_p50_us'])} | {us(x['rtt_p99_us'])} | {us(x['rtt_p999_us'])} | "
          f"{x['echo_errors']} | {cpu} | {rfmt(r, 'vs_direct', 'msg_per_s')} | {rfmt(r, 'vs_static', 'msg_per_s')} | "
          f"{rfmt(r, 'vs_static', 'cpu_per_msg')} |")
    w("")
    w("## Memory per idle WebSocket\n")
    w("| target | RSS before | RSS with N open | per idle WebSocket |")
    w("| --- | ---: | ---: | ---: |")
    for t in TARGETS:
        if t not in s or t == "direct":
            continue
        x = s[t]
        w(f"| {NAMES[t]} | {x['rss_before_kb']/1024:.1f} MB | {x['rss_after_kb']/1024:.1f} MB | {x['rss_kb_per_idle_ws']:.1f} KB |")
    w("")
    w("## Against the issue's targets (this run)\n")
    if all(k in s for k in ("ours", "colyseus", "static")):
        o, c, st2 = s["ours"], s["colyseus"], s["static"]
        def line(what, val, goal, ok):
            w(f"| {what} | {val} | {goal} | {'yes' if ok else 'no'} |")
        w("| target | this run | goal | met |")
        w("| --- | ---: | ---: | --- |")
        rr = ratio(o["conn_per_s"], c["conn_per_s"])
        line("conn/s vs @colyseus/proxy", f"{rr:.2f}x" if rr else "–", ">= 3x", bool(rr and rr >= 3))
        rc = ratio(o["cpu_us_per_conn"], c["cpu_us_per_conn"])
        line("CPU/conn vs @colyseus/proxy", f"{rc:.2f}x" if rc else "–", "<= 0.25x", bool(rc and rc <= 0.25))
        rm = ratio(o["cpu_us_per_msg"], st2["cpu_us_per_msg"])
        line("CPU/msg vs Envoy static", f"{(rm-1)*100:+.1f} %" if rm else "–", "<= +3 %", bool(rm and rm <= 1.03))
        rcm = ratio(o["cpu_us_per_msg"], c["cpu_us_per_msg"])
        line("CPU/msg vs @colyseus/proxy", f"{rcm:.2f}x" if rcm else "–", "<= 0.8x", bool(rcm and rcm <= 0.8))
        line("memory/idle WS vs @colyseus/proxy", f"{o['rss_kb_per_idle_ws']:.1f} vs {c['rss_kb_per_idle_ws']:.1f} KB",
             "<=", o["rss_kb_per_idle_ws"] <= c["rss_kb_per_idle_ws"])
        w("")
    w("## Agent scale\n")
    if scale:
        w("From `tests/e2e/tests/scale.rs` (liveness and Envoy health checks off, so only the "
          "sync is measured; Envoy with the file-based CDS the agent writes):\n")
        w("```")
        for l in scale:
            w(l)
        w("```\n")
    else:
        w("Not run this time (`scripts/bench.sh --scale`).\n")
    w("## Is the load generator the bottleneck?\n")
    w("`loadgen` runs one thread; `busy` is its CPU time (from /proc/self/stat) over the measured "
      "wall time: 1.0 would mean saturated.\n")
    w("For (1) the load generator shares its CPU with the upstreams, which take the rest of it: "
      "(1) is the limit of the load side (CPU 1) alone. For (2)-(4), a load generator well below "
      "1.0 means the proxy side (or the machine's other load) set the pace.\n")
    w("| target | loadgen busy, connect (max over rounds) | loadgen busy, echo (max) |")
    w("| --- | ---: | ---: |")
    for t in TARGETS:
        if t in s:
            w(f"| {NAMES[t]} | {s[t]['loadgen_busy_connect_max']:.2f} | {s[t]['loadgen_busy_echo_max']:.2f} |")
    w("")
    w("## Load average per round\n")
    w("| round | target | loadavg before | after | loadgen busy echo |")
    w("| ---: | --- | --- | --- | ---: |")
    for r in rows:
        w(f"| {r['round']} | {r['target']} | {r['loadavg_before']} | {r['loadavg_after']} | {r['echo']['usage']['loadgen_busy']:.2f} |")
    w("")
    if made:
        w("## Plots\n")
        for p in made:
            w(f"![{os.path.basename(p)}]({p})")
        w("")
    elif plot_err:
        w(f"No plots: {plot_err}\n")
    w(METHOD)
    return "\n".join(L) + "\n"


def rfmt(r, base, key):
    v = r.get(base, {}).get(key)
    return "–" if v is None else f"{v:.2f}x"


METHOD = """## Method

- **Everything on 127.0.0.1, one run.** `scripts/bench.sh` starts Redis, `BENCH_UPSTREAMS` (3)
  upstream WebSocket echo servers (`bench-echo`, a one-thread Rust server in `bench/loadgen`
  that answers an upgrade on any path, e.g. `/{processId}/{roomId}?sessionId=...`, and echoes
  every frame), registers each in Redis as Colyseus 0.11-0.16 does (`SADD colyseus:nodes
  {pid}/127.0.0.1:{port}` and `PUBLISH colyseus:nodes:discovery "add,..."` JSON-encoded),
  then starts the three proxies side by side, all configured from those registrations:
  (2) Envoy with a static bootstrap written by `bench/envoy_static.py` (a STATIC cluster per
  process, a route per process on the path regex `^/{pid}/`, no wasm, no health checks),
  (3) our stack exactly as `scripts/proxy.sh` and the end-to-end tests run it
  (`colyseus-envoy-agent bootstrap`, `agent sync`, Envoy with the filter), and (4)
  `@colyseus/proxy` 0.12.11 from npm (`bench/colyseus-proxy`, its own lockfile; it reads
  `colyseus:nodes` at start; `SOCKET_TIMEOUT` raised so held connections are not cut; its
  per-connection `console.debug` goes to a log file, as it would in production). Before
  measuring, 30 handshakes through each target must all succeed.
- **Same load, targets interleaved.** Each round runs every target in turn (direct, static,
  ours, @colyseus/proxy): first `loadgen connect`, then `loadgen echo`. Results are medians
  over rounds; memory is from round 1 (a freshly started proxy).
- **connect**: N WebSockets to URLs `/{pid}/room{i}?sessionId=..` spread round-robin over the
  processes, C handshakes in flight; all stay open. Handshake latency = TCP connect start to
  the `101` (with a correct `Sec-WebSocket-Accept`) received. conn/s = N / setup wall time.
- **echo**: C connections, K 64-byte binary messages in flight on each (closed loop: each echo
  received sends the next); after the warm-up, messages/s and RTT percentiles over T seconds.
- **Proxy CPU and memory** are read by the load generator itself from `/proc/PID/stat`
  (utime+stime) and `/proc/PID/status` (VmRSS) of the proxy's processes (Envoy; Envoy + agent
  for ours; node for @colyseus/proxy) right before and after the measured interval (connect:
  first connect to 0.5 s after the last handshake; echo: the T-second window). CPU per
  connection = CPU delta / connections opened; per message = CPU delta / round trips;
  memory per idle WebSocket = RSS delta / connections held open. For (1) the same columns
  show the upstreams' CPU, for reference. Tick resolution is 10 ms: short quick runs are coarse.
- **Pinning.** On 2+ CPUs, `taskset` puts the proxy under test on CPU 0 and the load
  generator, the upstreams and Redis on CPU 1, so the proxy's throughput is not taken from the
  load generator and vice versa; Envoy runs with `--concurrency 1` to match the one CPU it
  has (and @colyseus/proxy's single Node thread). `--no-pin` turns this off. For (1) nothing
  runs on CPU 0: the direct figures are the limit of the load side alone.
- **Load generator.** `bench/loadgen` (`loadgen`, Rust, tokio single-thread, hand-rolled
  RFC 6455 client, no TLS). It reports its own CPU over the same interval ("busy" above).
- **Reading the numbers.** Compare targets within one run. CPU per connection and per
  message grow when the machine is busy (the proxy shares its CPU with whatever else runs,
  caches are colder, fewer events are handled per wake-up), so figures from a loaded machine
  are not comparable with anchors measured on a quiet one.
- **Noise.** The machine's load average is recorded before and after each target in each
  round (table above). Other processes on the machine are not stopped.

## Not measured yet (issue 6)

Full Colyseus flow with real clients (joinOrCreate + connect through each proxy), convergence
(registration to first routed connection, removal to unroutable), agent scale (1,000/10,000
processes, 100,000/1,000,000 rooms), and Envoy's per-connection memory breakdown.
"""

if __name__ == "__main__":
    main()
