#!/usr/bin/env python3
"""Turns scripts/bench.sh's raw rounds into bench/results/latest.json, bench/results/*.png
and BENCHMARKS.md.
usage: report.py RAW.jsonl META.json [--plots 0|1] [--scale SCALE.txt] [--converge CONVERGE.jsonl]"""
import json
import math
import os
import re
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
        f = [r["flow"] for r in rs if r.get("flow")]
        if f:
            out[t]["flow"] = {
                "joins_per_s": med([x["joins_per_s"] for x in f]),
                "join_p50_ms": med([x["join_ms"]["p50"] for x in f]),
                "join_p99_ms": med([x["join_ms"]["p99"] for x in f]),
                "ok": sum(x["ok"] for x in f),
                "failed": sum(x["failed"] for x in f),
                "error_kinds": merge_counts(x["error_kinds"] for x in f),
                "proxy_cpu_us_per_join": med([x["proxy_cpu_us_per_join"] for x in f]) if proxy else None,
                "servers_cpu_us_per_join": med([x["servers_cpu_us_per_join"] for x in f]),
                "client_cpu_us_per_join": med([x["client_cpu_us_per_join"] for x in f]),
                "client_busy_max": max(x["client_busy"] for x in f),
                # The load side (client + game servers) shares one CPU when pinned.
                "load_busy_max": max(x["client_busy"] + x["servers_busy"] for x in f),
                "proxy_busy_max": max(x["proxy_busy"] for x in f) if proxy else None,
            }
    return out


def merge_counts(dicts):
    out = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def converge_summary(path):
    """One entry per proxy from `loadgen converge` lines; trials of several runs are pooled."""
    out = {}
    if not path or not os.path.exists(path):
        return out
    for line in open(path):
        if not line.strip():
            continue
        x = json.loads(line)
        t = out.setdefault(x.get("label", "?"), {"routable": [], "unroutable": [], "failures": [],
                                                  "still_routed": 0, "trials": 0})
        if "error" in x:
            t["failures"].append(x["error"])
            continue
        t["removal"] = x["removal"]
        t["trials"] += x["trials"]
        t["routable"] += x["routable_samples_ms"]
        t["unroutable"] += x["unroutable_samples_ms"]
        t["failures"] += x["failures"]
        t["still_routed"] += x.get("still_routed_after_removal") or 0
    for t in out.values():
        for k in ("routable", "unroutable"):
            t[k + "_ms"] = percentiles(t.pop(k))
    return out


def percentiles(xs):
    """Nearest-rank p50/p99/max, as loadgen computes them."""
    xs = sorted(xs)
    if not xs:
        return {"n": 0, "p50": None, "p99": None, "max": None}

    def pick(p):
        return xs[min(len(xs), max(1, math.ceil(p * len(xs)))) - 1]
    return {"n": len(xs), "p50": pick(0.5), "p99": pick(0.99), "max": xs[-1]}


SCALE_PROC_START = re.compile(
    r"processes=(\d+): agent start -> synced (\d+) ms, -> all clusters active in Envoy (\d+) ms; "
    r"CDS ([\d.]+) MB; RSS agent (\d+) MB, Envoy (\d+) MB")
SCALE_PROC_UPDATE = re.compile(
    r"processes=(\d+): one more registration -> active in Envoy median (\d+) ms, max (\d+) ms; "
    r"CPU per update: agent ([\d.]+) ms, Envoy ([\d.]+) ms")
SCALE_ROOMS = re.compile(r"rooms=(\d+) \(RedisDriver\): agent start -> all indexed ([\d.]+) s; agent RSS (\d+) MB")


def parse_scale(lines):
    """The numbers of tests/e2e/tests/scale.rs's SCALE lines, by process count and room count."""
    procs, rooms = {}, {}
    for l in lines:
        if m := SCALE_PROC_START.search(l):
            procs.setdefault(int(m[1]), {}).update(
                sync_ms=int(m[2]), envoy_all_ms=int(m[3]), cds_mb=float(m[4]),
                agent_rss_mb=int(m[5]), envoy_rss_mb=int(m[6]))
        elif m := SCALE_PROC_UPDATE.search(l):
            procs.setdefault(int(m[1]), {}).update(
                update_median_ms=int(m[2]), update_max_ms=int(m[3]),
                agent_cpu_ms_per_update=float(m[4]), envoy_cpu_ms_per_update=float(m[5]))
        elif m := SCALE_ROOMS.search(l):
            rooms[int(m[1])] = {"indexed_s": float(m[2]), "agent_rss_mb": int(m[3])}
    return procs, rooms


def ratio(a, b):
    return None if a is None or not b else a / b


def paired(rows, phase, key, a, b):
    """Per-round ratios a/b of one figure (targets run back to back within a round, so a
    drift of the machine's load between rounds cancels out), in round order."""
    by = {(r["round"], r["target"]): r for r in rows}
    out = []
    for rnd in sorted({r["round"] for r in rows}):
        ra, rb = by.get((rnd, a)), by.get((rnd, b))
        if ra and rb and phase in ra and phase in rb:
            x = ratio(ra[phase].get(key), rb[phase].get(key))
            if x is not None:
                out.append(x)
    return out


def fmt(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, float) and nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def us(v):
    return "–" if v is None else (f"{v/1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs")


def save(plt, fig, outdir, fname):
    """Writes the figure as outdir/fname and returns its path from the repository root."""
    path = os.path.join(outdir, fname)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.path.relpath(path, ROOT)


def plots(summary, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ts = [t for t in TARGETS if t in summary]
    labels = [SHORT[t] for t in ts]
    colors = ["#888888", "#4c72b0", "#55a868", "#c44e52"][: len(ts)]
    made = []

    def bars(fname, title, series, ylabel, data=summary):
        fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.6))
        if len(series) == 1:
            axes = [axes]
        for ax, (sub, key, skip_direct) in zip(axes, series):
            vals = [data[t][key] if not (skip_direct and t == "direct") else 0 for t in ts]
            vals = [v or 0 for v in vals]
            ax.bar(labels, vals, color=colors)
            ax.set_title(sub, fontsize=10)
            ax.tick_params(axis="x", labelrotation=20, labelsize=8)
            for i, v in enumerate(vals):
                ax.annotate(f"{v:,.0f}" if v >= 10 else f"{v:.2f}", (i, v), ha="center", va="bottom", fontsize=8)
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        made.append(save(plt, fig, outdir, fname))

    bars("connect.png", "WebSocket connection setup",
         [("connections/s", "conn_per_s", False), ("handshake p50 (µs)", "handshake_p50_us", False),
          ("handshake p99 (µs)", "handshake_p99_us", False), ("proxy CPU µs / connection", "cpu_us_per_conn", True)], "")
    bars("echo.png", "Closed-loop 64 B round trips",
         [("messages/s", "msg_per_s", False), ("RTT p50 (µs)", "rtt_p50_us", False),
          ("RTT p99 (µs)", "rtt_p99_us", False), ("proxy CPU µs / message", "cpu_us_per_msg", True)], "")
    bars("memory.png", "Proxy memory per idle WebSocket",
         [("RSS KB / idle WebSocket", "rss_kb_per_idle_ws", True)], "")
    if all("flow" in summary[t] for t in ts):
        bars("flow.png", "Colyseus joinOrCreate + room WebSocket (real colyseus.js, Colyseus 0.16)",
             [("joins/s", "joins_per_s", False), ("join p50 (ms)", "join_p50_ms", False),
              ("join p99 (ms)", "join_p99_ms", False), ("proxy CPU µs / join", "proxy_cpu_us_per_join", True)],
             "", data={t: summary[t]["flow"] for t in ts})
    return made


def plot_converge(conv, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [l for l in ("ours", "colyseus") if l in conv and conv[l]["routable_ms"]["n"]]
    if not labels:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6))
    for ax, key, title in zip(axes, ("routable_ms", "unroutable_ms"),
                              ("registration -> first routed upgrade (ms)", "removal -> out of matchmaking (ms)")):
        x = range(len(labels))
        for off, stat, color in ((-0.25, "p50", "#55a868"), (0, "p99", "#4c72b0"), (0.25, "max", "#c44e52")):
            vals = [conv[l][key][stat] or 0 for l in labels]
            ax.bar([i + off for i in x], vals, width=0.25, color=color, label=stat)
            for i, v in zip(x, vals):
                ax.annotate(f"{v:.1f}", (i + off, v), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), [SHORT[l] for l in labels])
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Convergence with Redis presence", fontsize=11)
    fig.tight_layout()
    return [save(plt, fig, outdir, "converge.png")]


def plot_scale(procs, rooms, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = sorted(n for n in procs if "sync_ms" in procs[n] and "update_median_ms" in procs[n])
    if len(ns) < 2:
        return []
    col = lambda k: [procs[n][k] for n in ns]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [
        ("time (ms)", [("agent start -> synced", "sync_ms"), ("-> all clusters active in Envoy", "envoy_all_ms"),
                       ("one more registration, median", "update_median_ms"),
                       ("one more registration, max", "update_max_ms")]),
        ("CPU per update (ms)", [("agent", "agent_cpu_ms_per_update"), ("Envoy", "envoy_cpu_ms_per_update")]),
        ("RSS (MB)", [("agent", "agent_rss_mb"), ("Envoy", "envoy_rss_mb")]),
    ]
    for ax, (ylabel, series) in zip(axes, panels):
        for name, key in series:
            ax.plot(ns, [max(v, 0.1) for v in col(key)], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("registered processes")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Agent scale (tests/e2e/tests/scale.rs; file-based CDS, health checks off)", fontsize=11)
    fig.tight_layout()
    return [save(plt, fig, outdir, "scale.png")]


def main():
    raw, meta_path = sys.argv[1], sys.argv[2]
    want_plots = "--plots" not in sys.argv or sys.argv[sys.argv.index("--plots") + 1] == "1"
    rows = [json.loads(l) for l in open(raw) if l.strip()]
    meta = json.load(open(meta_path))
    summary = summarize(rows)
    outdir = os.path.join(ROOT, "bench", "results")
    os.makedirs(outdir, exist_ok=True)
    scale = []
    if "--scale" in sys.argv:
        path = sys.argv[sys.argv.index("--scale") + 1]
        if os.path.exists(path):
            scale = [l.strip() for l in open(path) if l.startswith("SCALE ")]
    scale_procs, scale_rooms = parse_scale(scale)
    conv = converge_summary(sys.argv[sys.argv.index("--converge") + 1] if "--converge" in sys.argv else None)
    made, plot_err = [], None
    if want_plots:
        try:
            made = plots(summary, outdir) + plot_converge(conv, outdir) + plot_scale(scale_procs, scale_rooms, outdir)
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
                if "flow" in b and "flow" in s:
                    bf, sf = b["flow"], s["flow"]
                    ratios[t][f"vs_{base}"].update({
                        "joins_per_s": ratio(sf["joins_per_s"], bf["joins_per_s"]),
                        "join_p50": ratio(sf["join_p50_ms"], bf["join_p50_ms"]),
                        "cpu_per_join": ratio(sf["proxy_cpu_us_per_join"], bf["proxy_cpu_us_per_join"])
                        if base != "direct" else None,
                    })
    latest = {"meta": meta, "summary": summary, "ratios": ratios, "rounds": rows, "plots": made,
              "converge": conv, "scale": scale, "scale_parsed": {"processes": scale_procs, "rooms": scale_rooms}}
    json.dump(latest, open(os.path.join(outdir, "latest.json"), "w"), indent=1)
    text = markdown(meta, summary, ratios, rows, made, plot_err, scale, conv, scale_procs)
    # Sections measured outside this harness, kept across bench.sh runs: the last
    # scripts/bench-converge.sh run (real Colyseus servers), the long-poll's fast-path cost
    # and the last scripts/bench-edge.sh run (both edge paths).
    for extra in ("converge-colyseus.md", "fast-path-cpu.md", "edge-path.md"):
        path = os.path.join(outdir, extra)
        if os.path.exists(path):
            text += "\n" + open(path).read()
    open(os.path.join(ROOT, "BENCHMARKS.md"), "w").write(text)


def markdown(meta, s, ratios, rows, made, plot_err, scale=(), conv=None, scale_procs=None):
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
    w("Regenerate with `scripts/bench.sh` (default: medians of 3 rounds, about 8 minutes) or "
      "`scripts/bench.sh --quick` (about two minutes). Raw data: `bench/results/latest.json`.\n")
    w("## Machine and run\n")
    m = meta["machine"]
    v = meta["versions"]
    w(f"- {m['cpus']} CPUs ({m['cpu_model']}), {m['mem_total']} RAM, Linux {m['kernel']}; {meta['date']}, commit {v['commit']}")
    w(f"- Envoy {v['envoy']} (`--concurrency {st['envoy_concurrency']}`), Node {v['node']}, @colyseus/proxy {v['colyseus_proxy']}")
    w(f"- Pinning: {meta['pinning']}")
    w(f"- connect: {st['conn_n']} WebSockets, {st['conn_concurrency']} handshakes at a time, over {st['upstreams']} processes; "
      f"echo: {st['echo_connections']} connections x {st['echo_inflight']} in flight, {st['message_bytes']} B, "
      f"{st['echo_duration_s']} s after {st['echo_warmup_s']} s warm-up; {meta['rounds']} round(s), {meta['measure_s']} s of measuring")
    if st.get("flow_n"):
        w(f"- flow: {st['flow_n']} joins per target and round, {st['flow_concurrency']} at a time, over "
          f"{st['flow_servers']} Colyseus {v.get('colyseus', '?')} game servers (maxClients {st['flow_max_clients']}), "
          f"colyseus.js {v.get('colyseus_js', '?')}; convergence: {st.get('conv_trials', 0)} trials per proxy")
    w("")

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
    flow_section(w, s, ratios)
    converge_section(w, conv or {})
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
        line("CPU/msg vs Envoy static (ratio of medians)", f"{(rm-1)*100:+.1f} %" if rm else "–", "<= +3 %",
             bool(rm and rm <= 1.03))
        pm = paired(rows, "echo", "watched_cpu_us_per_msg", "ours", "static")
        if pm:
            each = ", ".join(f"{(x-1)*100:+.1f}" for x in pm)
            line("CPU/msg vs Envoy static (median of per-round ratios)",
                 f"{(med(pm)-1)*100:+.1f} % (rounds: {each})", "<= +3 %", med(pm) <= 1.03)
        rcm = ratio(o["cpu_us_per_msg"], c["cpu_us_per_msg"])
        line("CPU/msg vs @colyseus/proxy", f"{rcm:.2f}x" if rcm else "–", "<= 0.8x", bool(rcm and rcm <= 0.8))
        line("memory/idle WS vs @colyseus/proxy", f"{o['rss_kb_per_idle_ws']:.1f} vs {c['rss_kb_per_idle_ws']:.1f} KB",
             "<=", o["rss_kb_per_idle_ws"] <= c["rss_kb_per_idle_ws"])
        p99 = (conv or {}).get("ours", {}).get("routable_ms", {}).get("p99")
        if p99 is not None:
            line("registration -> routable p99 (ours)", f"{p99:.1f} ms", "< 50 ms", p99 < 50)
        w("")
    w("## Agent scale\n")
    if scale:
        w("From `tests/e2e/tests/scale.rs` (liveness and Envoy health checks off, so only the "
          "sync is measured; Envoy with the file-based CDS the agent writes):\n")
        w("```")
        for l in scale:
            w(l)
        w("```\n")
        if scale_procs:
            w("| processes | start -> synced | -> all active in Envoy | one more registration, median / max "
              "| CPU per update, agent / Envoy | CDS | RSS agent / Envoy |")
            w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for n in sorted(scale_procs):
                x = scale_procs[n]
                if "sync_ms" in x and "update_median_ms" in x:
                    w(f"| {n:,} | {x['sync_ms']:,} ms | {x['envoy_all_ms']:,} ms | {x['update_median_ms']:,} / "
                      f"{x['update_max_ms']:,} ms | {x['agent_cpu_ms_per_update']:.1f} / {x['envoy_cpu_ms_per_update']:.1f} ms "
                      f"| {x['cds_mb']:.1f} MB | {x['agent_rss_mb']} / {x['envoy_rss_mb']} MB |")
            w("\nPlot: `bench/results/scale.png` (log-log).\n")
    else:
        w("Not run this time (`scripts/bench.sh --scale`).\n")
    w("## Is the load generator the bottleneck?\n")
    w("`loadgen` runs one thread; `busy` is its CPU time (from /proc/self/stat) over the measured "
      "wall time: 1.0 would mean saturated.\n")
    w("For (1) the load generator shares its CPU with the upstreams, which take the rest of it: "
      "(1) is the limit of the load side (CPU 1) alone. For (2)-(4), a load generator well below "
      "1.0 means the proxy side (or the machine's other load) set the pace.\n")
    w("| target | loadgen busy, connect (max over rounds) | loadgen busy, echo (max) | flow: client busy (max) | flow: client + game servers busy (max) |")
    w("| --- | ---: | ---: | ---: | ---: |")
    for t in TARGETS:
        if t in s:
            f = s[t].get("flow")
            fc = f"{f['client_busy_max']:.2f} | {f['load_busy_max']:.2f}" if f else "– | –"
            w(f"| {NAMES[t]} | {s[t]['loadgen_busy_connect_max']:.2f} | {s[t]['loadgen_busy_echo_max']:.2f} | {fc} |")
    w("")
    w("In the flow, the client and the game servers share the load side's one CPU: their summed "
      "busy near 1.0 means that CPU, not the proxy, set the join rate.\n")
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


def flow_section(w, s, ratios):
    if not any("flow" in s[t] for t in s):
        return
    w("## Full Colyseus flow: joinOrCreate + room WebSocket\n")
    w("Real `colyseus.js` clients against real Colyseus game servers (RedisPresence + RedisDriver). "
      "A join = matchmaking `POST /matchmake/joinOrCreate/echo` through the target, then the room's "
      "WebSocket; it is done when the room's `hello` message arrives; then the client leaves.\n")
    w("| target | joins/s | join p50 | join p99 | failed | proxy CPU / join | game servers CPU / join | client CPU / join | vs (1) joins/s | vs (2) joins/s | vs (2) CPU/join |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in TARGETS:
        f = s.get(t, {}).get("flow")
        if not f:
            continue
        r = ratios.get(t, {})
        cpu = us(f["proxy_cpu_us_per_join"]) if t != "direct" else "(no proxy)"
        w(f"| {NAMES[t]} | {fmt(f['joins_per_s'])} | {f['join_p50_ms']:.1f} ms | {f['join_p99_ms']:.1f} ms | "
          f"{f['failed']} | {cpu} | {us(f['servers_cpu_us_per_join'])} | {us(f['client_cpu_us_per_join'])} | "
          f"{rfmt(r, 'vs_direct', 'joins_per_s')} | {rfmt(r, 'vs_static', 'joins_per_s')} | {rfmt(r, 'vs_static', 'cpu_per_join')} |")
    w("")
    w("For (1) the client sends matchmaking round-robin to the game servers' own ports and opens the "
      "room's WebSocket on the room's process (`publicAddress`); (2)-(4) see one address. CPU per join "
      "is over completed joins: the proxy's (Envoy; Envoy + agent for ours; node for @colyseus/proxy), "
      "the game servers' and the client's.\n")
    errs = {t: s[t]["flow"]["error_kinds"] for t in TARGETS if t in s and s[t].get("flow", {}).get("error_kinds")}
    for t, kinds in errs.items():
        w(f"- failed joins through {SHORT[t]}: " + "; ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    if errs:
        w("")


def converge_section(w, conv):
    w("## Convergence with Redis presence\n")
    w("Fresh processIds registered and removed in Redis as Colyseus does, each pointing at an upstream "
      "that is already running; probes about every millisecond (definitions under Method).\n")
    w("| target | trials | registration -> first routed upgrade p50 / p99 / max | removal -> ... p50 / p99 / max | removal means | failures |")
    w("| --- | ---: | ---: | ---: | --- | ---: |")
    w(f"| {NAMES['direct']} | – | not applicable: nothing to configure | – | – | – |")
    w(f"| {NAMES['static']} | – | not applicable: routes fixed when Envoy starts | – | – | – |")
    means = {"all-cluster": "out of matchmaking (`colyseus-all`); its room path drains",
             "route": "its room path no longer reaches it (nor matchmaking)"}
    for t in ("ours", "colyseus"):
        c = conv.get(t)
        if not c:
            w(f"| {NAMES[t]} | – | not run | – | – | – |")
            continue
        a, b = c["routable_ms"], c["unroutable_ms"]
        trip = lambda x: "–" if x["p50"] is None else f"{x['p50']:.1f} / {x['p99']:.1f} / {x['max']:.1f} ms"
        w(f"| {NAMES[t]} | {c['trials']} | {trip(a)} | {trip(b)} | {means.get(c.get('removal'), '?')} | {len(c['failures'])} |")
    w("")
    o = conv.get("ours")
    if o and o.get("removal") == "all-cluster":
        w(f"Ours, after each removal: the room path `/{{pid}}/...` still reached the process in "
          f"{o['still_routed']} of {o['trials']} trials (expected: all; the drain keeps its cluster "
          "while it accepts TCP, so players already seated there can still connect).\n")
    for t in ("ours", "colyseus"):
        for f in (conv.get(t) or {}).get("failures", [])[:5]:
            w(f"- {SHORT[t]}: {f}")


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
  (3) our stack as users start it, `colyseus-envoy run` (the sync agent and Envoy with the
  filter as its children; its CPU counts all three processes), and (4)
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
- **Full Colyseus flow** (`bench/flow.js`, after connect and echo in each round, same
  interleaving and pinning). `BENCH_FLOW_SERVERS` (3) Colyseus 0.16 game servers
  (`example/server.js`, RedisPresence + RedisDriver) on the load CPU register themselves in a
  Redis of their own; a second Envoy static (`envoy_static.py` with the processIds they
  registered in `colyseus:nodes`, matchmaking round-robin over all of them), a second
  agent + Envoy and a second @colyseus/proxy are configured from it, side by side with the
  echo targets' proxies. (1) direct is a second fleet on a third Redis, started with
  `publicAddress` = `127.0.0.1:{its port}`: colyseus.js 0.16 builds the room URL from the
  seat reservation's `publicAddress` (`Client.buildEndpoint`), so the client opens the room's
  WebSocket on the room's process itself, with matchmaking sent round-robin to the three
  processes' own ports. N real `colyseus.js` clients, C at a time (a new `Client` each, no
  HTTP keep-alive): `joinOrCreate("echo")` - the matchmaking POST through the target (any
  process answers; rooms are created on the process with the fewest rooms and seats
  reserved over Redis), then the WebSocket `/{processId}/{roomId}?sessionId=..` - is done
  when the room's `hello` message arrives (latency: from the call to `hello`); then
  `leave()`, awaited, and the worker's next join. joins/s = completed joins / wall time.
  CPU per join = utime+stime from `/proc/PID/stat` before and after, over completed joins,
  for the proxy's processes, the game servers and the client itself. Each of the C workers
  passes its own `lane` option and the servers run with `FILTER_BY=lane`: Colyseus 0.16
  queues concurrent `joinOrCreate` calls with equal filter options behind one fleet-wide
  Redis lock in which a waiter sleeps up to 0.5-1.1 s (measured with no proxy: 4 at a time
  without lanes gave 23 joins/s and p99 2.5 s, against 110 joins/s one at a time), which
  would measure that lock instead of the path through the proxy. With maxClients 4 and one
  worker per lane, each join creates its room and its leave disposes it.
- **Convergence** (`loadgen converge`, after all rounds, against the echo targets' ours and
  @colyseus/proxy). Each trial: a fresh processId for a running upstream (a `bench-echo`
  registered under no other processId, whose answers carry an `x-bench-echo` tag) is
  registered with `SADD colyseus:nodes` + `PUBLISH colyseus:nodes:discovery "add,..."`
  (JSON string, as Colyseus); from just before that write, WebSocket upgrades to
  `/{pid}/r?sessionId=x` start about every millisecond; **registration -> routed** is the time
  to the first `101` from that upstream (an unknown processId gets 404 from ours, and is sent
  to a random process by @colyseus/proxy: hence the tag). Then `SREM` + `"remove,..."`.
  **Removal** differs by design: @colyseus/proxy forgets the process at once (its room paths
  then go to a random process, and matchmaking stops), measured as the first probe not
  answered by that upstream. Ours drains a removed process (README, "When a process
  leaves"): it leaves the matchmaking cluster `colyseus-all` at once, but its own cluster
  stays while it accepts TCP connections (probed every `--drain-check-interval`, 2 s) or up
  to `--max-drain` (10 min), so players seated in its remaining rooms still connect. The
  upstream stays up in this test, so for ours "removal" is measured as the time until Envoy's
  admin `/clusters` no longer lists it in `colyseus-all` (polled every millisecond), and each
  trial then checks that its room path is still routed. A 100 ms pause separates trials.

## Not measured yet (issue 6)

Envoy's per-connection memory breakdown in the harness (see `bench/PERF-NOTES.md` for the
manual one), and the end of a drain for ours (by construction within one
`--drain-check-interval` of the process refusing TCP, plus the probe timeout).
"""

if __name__ == "__main__":
    main()
