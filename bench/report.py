"""The results table and the notes under it, from the results dict of a run.

Holds the issue's targets and the paths the table is laid out by. ``build_rows`` turns the
figures into rows (the proxy's figure, the floor's, their ratio, the target and a
PASS/FAIL/info verdict); ``render_table`` lays the rows out as a Markdown table; ``notes``
describes CPU and RSS during the throughput runs; ``report`` puts the header lines, the
table, the legend and the notes together into the text printed and saved as
``table_text``. ``scaleout_lines`` lays out the two tables of the scale-out phases
(scaleout.py), ``era_lines`` the era bridges' (eras.py), and ``markdown`` any table.
"""

from __future__ import annotations

from clients import KEEPALIVE
from procs import MiB

SERVER_PATHS = ("server/sse", "server/streamable", "server/modern")
CLIENT_PATHS = ("client/sse", "client/streamable")

# the targets
TARGET_ADDED_P50_MS = 0.5
TARGET_TPUT_20 = 2000.0
TARGET_RT_MS = {1 * MiB: 20.0, 10 * MiB: 150.0}
TARGET_IDLE_RSS_MIB = 150.0
TARGET_STARTUP_MS = 250.0
TARGET_SLOW_GROWTH_MIB = 16.0  # a client that reads nothing of 100 MiB it asked for
TARGET_SLOW_AFTER_MIB = 8.0  # ... and 10 s after it left
TARGET_DISCONNECT_S = 1.0  # a closed stream noticed, its server stopped
TARGET_SHARED_100_MIB = 82.0  # mcp-proxy 0.13 with 100 connected clients, on this machine
TARGET_CLIENT_ADDED_P50_MS = 0.4  # client p50 - its remote's (server mode) p50, same run
TARGET_FORWARD_P50_MS = 0.5  # a call sent to another process than its session's owner


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:.0f}" if digits < 2 else f"{value:.1f}"
    return f"{value:.{digits}f}"


def build_rows(results: dict) -> list[dict]:
    p = results["paths"]
    fl = p["floor"]
    rows: list[dict] = []

    def add(figure, path, value, floor, target="", verdict="", digits=2):
        ratio = value / floor if value is not None and floor else None
        rows.append({"figure": figure, "path": path, "value": value, "floor": floor,
                     "ratio": ratio, "target": target, "result": verdict, "digits": digits})

    for key, name in (("p50_ms", "echo latency p50 (ms)"), ("p99_ms", "echo latency p99 (ms)")):
        for path in (*SERVER_PATHS, *CLIENT_PATHS):
            lat = p[path].get("latency")
            if not lat:
                continue
            floor = fl["latency"][key]
            target = verdict = ""
            if key == "p50_ms" and path in SERVER_PATHS:
                added = lat[key] - floor
                target = f"added <= {TARGET_ADDED_P50_MS} ms"
                verdict = f"{'PASS' if added <= TARGET_ADDED_P50_MS else 'FAIL'} (+{added:.2f})"
            elif key == "p50_ms":
                verdict = f"info (+{lat[key] - floor:.2f})"
            add(name, path, lat[key], floor, target, verdict, 3)
    for path in CLIENT_PATHS:
        lat = p[path].get("latency")
        remote = p[path.replace("client/", "server/")].get("latency")
        if lat and remote:
            added = lat["p50_ms"] - remote["p50_ms"]
            add("client mode adds over its remote, p50 (ms)", path, added, None,
                f"<= {TARGET_CLIENT_ADDED_P50_MS} ms",
                "PASS" if added <= TARGET_CLIENT_ADDED_P50_MS else "FAIL", 3)
        if lat and "cpu_ms_per_call" in lat:
            add("  client-mode process CPU per call (ms)", path, lat["cpu_ms_per_call"], None,
                "", "info", 3)
    for n in results["config"]["concurrency"]:
        key = f"throughput_{n}"
        for path in SERVER_PATHS:
            tp = p[path].get(key)
            if not tp:
                continue
            target = verdict = ""
            if n == 20:
                target = f">= {TARGET_TPUT_20:,.0f}/s"
                verdict = "PASS" if tp["calls_per_s"] >= TARGET_TPUT_20 else "FAIL"
            add(f"calls/s, {n} sessions", path, tp["calls_per_s"],
                fl[key]["calls_per_s"], target, verdict, 0)
    rows.append({"figure": "calls/s, 20 and 100 sessions", "path": "client/*",
                 "note": "one stdio session per process, by design"})
    for size in (1 * MiB, 10 * MiB):
        label = f"{size // MiB} MiB round trip (ms)"
        for path in (*SERVER_PATHS, *CLIENT_PATHS):
            rt = p[path].get("round_trip", {}).get(str(size))
            if not rt:
                continue
            target = verdict = ""
            if path in SERVER_PATHS:
                target = f"<= {TARGET_RT_MS[size]:g} ms"
                verdict = "PASS" if rt["median_ms"] <= TARGET_RT_MS[size] else "FAIL"
            else:
                verdict = "info (2 proxies)"
            add(label, path, rt["median_ms"], fl["round_trip"][str(size)]["median_ms"],
                target, verdict, 1)
    idle = p["server/sse"].get("idle_sessions")
    if idle:
        n = idle["sessions"]
        add(f"proxy RSS, {n:,} idle SSE (MiB)", "server/sse", idle["proxy_rss_mib"],
            idle["proxy_rss_idle_mib"], f"<= {TARGET_IDLE_RSS_MIB:g} MiB",
            "PASS" if idle["proxy_rss_mib"] <= TARGET_IDLE_RSS_MIB and n >= 1000 else "FAIL", 1)
        add(f"  + children RSS (MiB), {idle['children']} children", "server/sse",
            idle["proxy_with_children_rss_mib"], idle["proxy_rss_idle_mib"], "", "info", 1)
        add(f"time to open {n:,} SSE sessions (ms)", "server/sse", idle["open_s"] * 1000, None,
            "", "info", 0)
    modern, legacy = p["server/modern"].get("latency"), p["server/streamable"].get("latency")
    if modern and legacy:
        add("2026-07-28 p50 vs 2025 /mcp p50 (ms)", "server/modern", modern["p50_ms"],
            legacy["p50_ms"], "<= the 2025 era",
            "PASS" if modern["p50_ms"] <= legacy["p50_ms"] * 1.05 else "FAIL", 3)
    connected, shared = p["server/sse"].get("connected"), p["server/sse"].get("connected_shared")
    if connected and shared:
        add("100 connected SSE clients, proxy + children RSS (MiB)", "server/sse",
            connected["with_children_rss_mib"], None, "", f"info ({connected['children']} "
            "children)", 0)
        add("  the same with --shared-child (MiB)", "server/sse", shared["with_children_rss_mib"],
            None, f"<= {TARGET_SHARED_100_MIB:g} MiB (0.13)",
            "PASS" if shared["with_children_rss_mib"] <= TARGET_SHARED_100_MIB else "FAIL", 0)
    for path in SERVER_PATHS:
        tp, own = p[path].get("throughput_20_shared"), p[path].get("throughput_20")
        if tp and own:
            add("calls/s, 20 sessions, --shared-child", path, tp["calls_per_s"],
                own["calls_per_s"], ">= a process per session",
                "PASS" if tp["calls_per_s"] >= own["calls_per_s"] else "FAIL", 0)
    combined = p["server/streamable"].get("combined")
    if combined:  # issue 21: the member's own path is the "floor" of this row
        add("echo p50 through a combined server of 2 (ms)", "server/streamable",
            combined["combined"]["p50_ms"], combined["member"]["p50_ms"],
            f"added <= {combined['target_ms']:g} ms",
            f"{'PASS' if combined['passed'] else 'FAIL'} ({combined['extra_p50_ms']:+.3f})", 3)
    slow = p["server/sse"].get("slow_reader")
    if slow:
        add(f"RSS growth, a client reading none of {slow['asked_bytes'] / MiB:.0f} MiB (MiB)",
            "server/sse", slow["growth_mib"], slow["rss_before_mib"],
            f"<= {TARGET_SLOW_GROWTH_MIB:g} MiB",
            "PASS" if slow["growth_mib"] <= TARGET_SLOW_GROWTH_MIB else "FAIL", 1)
        add("  RSS 10 s after it left, above the start (MiB)", "server/sse",
            slow["after_minus_before_mib"], None, f"<= {TARGET_SLOW_AFTER_MIB:g} MiB",
            "PASS" if slow["after_minus_before_mib"] <= TARGET_SLOW_AFTER_MIB else "FAIL", 1)
        add("  another session's ping p50 during the stall (ms)", "server/sse",
            slow["other_ping_p50_ms_during"], slow["other_ping_p50_ms_before"], "", "info", 2)
    for kind, path, note in (("sse", "server/sse", ""),
                             ("streamable_get", "server/streamable", ", incl. 1 s reopen grace")):
        gone = p[path].get("disconnect", {}).get(kind) if p.get(path) else None
        if gone:
            ok = gone["median_s"] <= TARGET_DISCONNECT_S + (1.0 if note else 0.0)
            add(f"stream closed -> server stopped (ms){note}", path, gone["median_s"] * 1000,
                None, f"<= {TARGET_DISCONNECT_S * 1000:g} ms" + (" + grace" if note else ""),
                "PASS" if ok else "FAIL", 0)
    for path in CLIENT_PATHS:
        st = p[path].get("startup")
        if st:
            add("client start -> initialize (ms)", path, st["median_ms"],
                fl["startup"]["median_ms"], f"<= {TARGET_STARTUP_MS:g} ms",
                "PASS" if st["median_ms"] <= TARGET_STARTUP_MS else "FAIL", 0)
            remote = p[path].get("remote_initialize")
            if remote:
                add("  of which the remote's initialize (ms)", path, remote["median_ms"], None,
                    "", "info", 0)
                add("  the client's own share (ms)", path,
                    st["median_ms"] - remote["median_ms"], fl["startup"]["median_ms"], "",
                    "info", 0)
    return rows


def render_table(rows: list[dict]) -> str:
    header = ["figure", "path", "proxy", "floor", "ratio", "target", "result"]
    body = []
    for r in rows:
        if "note" in r:
            body.append([r["figure"], r["path"], "skipped", "", "", "", r["note"]])
            continue
        d = r["digits"]
        body.append([r["figure"], r["path"], fmt(r["value"], d), fmt(r["floor"], d),
                     "—" if r["ratio"] is None else f"{r['ratio']:.2f}x", r["target"],
                     r["result"]])
    return markdown(header, body, {2, 3, 4})


def markdown(header: list[str], body: list[list[str]], right: set[int]) -> str:
    """A Markdown table, its columns padded; the columns in ``right`` (numbers) right-aligned."""
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 1) + (":" if i in right else "-")
                                        for i, w in enumerate(widths)) + "|"]
    out.extend(line(b) for b in body)
    return "\n".join(out)


def scaleout_lines(so: dict) -> list[str]:
    """The two tables of the scale-out phases (issue 11)."""
    lat, body = so["latency"], []
    for transport in ("streamable", "sse"):
        t = lat[transport]
        cells = [f"{t[k]['p50_ms']:.3f} / {t[k]['p99_ms']:.2f}"
                 for k in ("single", "local", "forwarded")]
        ok = t["added_p50_ms"] <= TARGET_FORWARD_P50_MS
        body.append([transport, *cells, f"{t['added_p50_ms']:+.3f}",
                     f"<= {TARGET_FORWARD_P50_MS} ms", "PASS" if ok else "FAIL"])
    calls = lat["streamable"]["local"]["calls"]
    out = [f"Scale-out (issue 11): echo latency p50 / p99 (ms), {calls}"
           f" calls per path in {lat['rounds']} alternating rounds; A and B: CLI proxies on one "
           "redis-server",
           markdown(["transport", "single process", "local (on A)", "forwarded (B -> A)",
                     "forwarding adds (p50)", "target", "result"], body, {1, 2, 3, 4}),
           "CPU per call (ms; single process / local: the proxy serving it, forwarded: B "
           "that received it + A that owns the session + redis-server):",
           *(f"  {transport:<10} single {c['single']['single']:.2f}, local {c['local']['A']:.2f}"
             f", forwarded {c['forwarded']['B']:.2f} + {c['forwarded']['A']:.2f} + "
             f"{c['forwarded']['redis']:.2f}"
             for transport in ("streamable", "sse")
             for c in [lat[transport]["cpu_ms_per_call"]]),
           "", "Scale-out: calls/s, 20 sessions, echo child; CPU over the window "
           "(100% = one core)"]
    body = []
    for name, tp in so["throughput"].items():
        farm, transport = name.split(" | ")
        cpu = tp["cpu_groups_pct"]
        workers = " + ".join(f"{v:.0f}" for k, v in cpu.items() if k.startswith("worker"))
        routes = tp["routes"]
        share = routes["forwarded"] / max(1, routes["local"] + routes["forwarded"])
        body.append([farm, transport, f"{tp['calls_per_s']:,.0f}",
                     f"{tp['p50_ms']:.2f} / {tp['p99_ms']:.2f}", f"{100 * share:.0f}%",
                     "/".join(str(n) for n in tp["servers_per_worker"]),
                     f"{cpu['master']:.0f}", workers, f"{cpu['servers']:.0f}",
                     fmt(cpu.get("redis"), 0), f"{tp['cpu_bench_pct']:.0f}",
                     f"{tp['machine_busy_pct']:.0f}"])
    out.append(markdown(["farm", "transport", "calls/s", "p50 / p99 ms", "forwarded",
                         "sessions", "master %", "workers %", "servers %", "redis %",
                         "client %", "machine busy %"], body, set(range(2, 12))))
    return out


def era_lines(results: dict) -> list[str]:
    """The table of every pair measured (issue 25), with a line on what each compares."""
    body = []

    def row(label: str, base: dict, bridged: dict, bound: float) -> None:
        extra = bridged["p50_ms"] - base["p50_ms"]
        body.append([label, f"{base['p50_ms']:.3f} / {base['p99_ms']:.2f}",
                     f"{bridged['p50_ms']:.3f} / {bridged['p99_ms']:.2f}",
                     f"{base['calls_per_s']:,.0f} / {bridged['calls_per_s']:,.0f}",
                     f"{extra:+.3f}", f"<= +{bound:g} ms",
                     "PASS" if extra <= bound else "FAIL: over the bound"])

    calls = rounds = 0
    for result in results.values():
        if not isinstance(result, dict) or "bridged" not in result:
            continue
        calls, rounds = result["bridged"]["calls"], result["rounds"]
        row(result["title"], result["same_era"], result["bridged"], result["target_ms"])
        if "modern_relayed" in result:
            row("  the bridge alone: vs a 2026-07-28 client relayed", result["modern_relayed"],
                result["bridged"], result["target_ms"])
    if not body:
        return []
    return [f"Era bridges (issue 25): echo p50 of a bridged call vs the same call where both "
            f"ends speak one era; {calls} calls per session in {rounds} alternating rounds, "
            f"one sequential session each (calls/s of it)",
            markdown(["bridge", "same era p50 / p99 (ms)", "bridged p50 / p99 (ms)",
                      "calls/s same / bridged", "bridge adds (p50)", "bound", "result"], body,
                     {1, 2, 3, 4}),
            "same era: server-a a 2026-07-28 client to a dual-era child (the lane), server-b "
            "and client mode a 2025 client to a dual-era child or remote (relayed); client "
            "mode's remote is mcp-proxy over the dual-era raw_server, which serves a "
            "2026-07-28 request on its lane: the bridge-alone row has the remote do the same "
            "work on both sides"]


def notes(results: dict) -> list[str]:
    p = results["paths"]
    out = []
    for path in ("floor", *SERVER_PATHS):
        for n in results["config"]["concurrency"]:
            tp = p[path].get(f"throughput_{n}")
            if not tp:
                continue
            proxy = ""
            if tp["cpu_proxy_pct"] is not None:
                per_call = tp["cpu_proxy_pct"] / 100 * tp["duration_s"] / max(1, tp["calls"])
                proxy = f"proxy {tp['cpu_proxy_pct']:.0f}% ({per_call * 1000:.2f} ms/call), "
            rss = "" if tp["proxy_rss_mib"] is None else (
                f"; RSS proxy {tp['proxy_rss_mib']:.0f} MiB, servers "
                f"{tp['servers_rss_mib']:.0f} MiB")
            out.append(f"  {path:<18} {n:>3} sessions: {tp['calls_per_s']:>7,.0f} calls/s, "
                       f"p50 {tp['p50_ms']:.2f} ms p99 {tp['p99_ms']:.2f} ms; CPU {proxy}"
                       f"{tp['servers']} servers {tp['cpu_servers_pct']:.0f}%, "
                       f"bench {tp['cpu_bench_pct']:.0f}%, machine {tp['machine_busy_pct']:.0f}% "
                       f"busy{rss}")
    return out


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"mcp-proxy benchmark, {results['date']} ({'quick' if results['quick'] else 'full'} run)"
        f", revision {results.get('revision', '?')}",
        f"machine: {m['cores']} cores ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}",
        ("load client, proxy and stdio servers SHARE these cores (not pinned)" if not m["pinned"]
         else "pinned: proxy and its stdio servers (and floor servers) on core 0, "
              "load client on core 1"),
        f"latency: {results['config']['calls']} sequential calls after "
        f"{results['config']['warmup']} warm-up; throughput: {results['config']['duration']:g} s "
        f"per run; round trips: median of {results['config']['rt_runs']}; start-up: median of "
        f"{results['config']['startup_runs']}",
    ]
    if results["paths"]:
        lines += [
            "",
            render_table(build_rows(results)),
            "",
            "floor = raw_server over stdio, no proxy (throughput: 20/100 raw_server processes; "
            "RSS: the same proxy with no session; start-up: raw_server start -> initialize "
            "answer)",
            "client mode: stdio -> mcp-proxy (client) -> mcp-proxy (server) -> raw_server; "
            "targets apply to server mode, except start-up",
            f"proxy under load runs with --keepalive {KEEPALIVE} --max-body-size 32MiB; the "
            "idle-session proxy with defaults (--keepalive 15)",
            "CPU during throughput (100% = one core; machine busy: share of all cores):",
            *notes(results),
        ]
    if results.get("oauth"):
        from oauth import oauth_lines

        lines += ["", *oauth_lines(results["oauth"])]
    if results.get("eras"):
        lines += ["", *era_lines(results["eras"])]
    if results.get("scaleout"):
        lines += ["", *scaleout_lines(results["scaleout"])]
    return "\n".join(lines)
