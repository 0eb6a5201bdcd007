#!/usr/bin/env python3
"""Ratios, goals and the Markdown tables of a benchmark run (results.json).

    python3 benches/load/report.py target/bench/results.json   # print the tables again

The goals are the project's performance targets; they are reported, never asserted (the
machine is shared and noisy: the ratios are the result, not the absolute numbers).
"""

import json
import math
import statistics
import sys

PROXY = "entra-proxy"


def _get(results, variant, target, key):
    t = results.get("variants", {}).get(variant, {}).get("targets", {}).get(target, {})
    return t.get("median", {}).get(key)


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def _diff(a, b):
    return round(a - b, 1) if a is not None and b is not None else None


def latency_vs_rate(results):
    """Added latency over direct at the base fixed rate and at each higher rate measured.

    A target's point is missing where its rate was above half its saturation throughput (it
    would measure queueing) or where direct has no point to compare with."""
    v = results.get("variants", {}).get("instant", {})
    targets = v.get("targets", {})
    base = results.get("settings", {}).get("rate")

    def point(target, rate):
        md = targets.get(target, {}).get("median", {})
        if rate == base:
            return {"rps": md.get("rate_rps"), "p50_us": md.get("p50_us"),
                    "p99_us": md.get("p99_us"), "cpu_us_per_req": md.get("rate_cpu_us_per_req"),
                    "upstream_cpu_us_per_req": md.get("rate_upstream_cpu_us_per_req"),
                    } if md.get("p50_us") is not None else None
        c = md.get("curve", {}).get(str(rate), {})
        return c if "p50_us" in c else None

    rates = sorted({int(k) for t in targets.values()
                    for k in t.get("median", {}).get("curve", {})} | ({base} if base else set()))
    rows = []
    for rate in rates:
        direct = point("direct", rate)
        row = {"rate": rate, "direct_p50_us": direct and direct["p50_us"],
               "direct_upstream_cpu_us_per_req": direct and direct.get("upstream_cpu_us_per_req")}
        for target in ("entra-proxy", "nginx", "litellm"):
            key = target.replace("-", "_")
            p = point(target, rate)
            row[f"{key}_rps"] = p and p.get("rps")
            row[f"{key}_cpu_us_per_req"] = p and p.get("cpu_us_per_req")
            row[f"{key}_upstream_cpu_us_per_req"] = p and p.get("upstream_cpu_us_per_req")
            row[f"{key}_added_p50_us"] = _diff(p and p["p50_us"], direct and direct["p50_us"])
            row[f"{key}_added_p99_us"] = _diff(p and p["p99_us"], direct and direct["p99_us"])
        rows.append(row)
    return rows


def valid(results, variant):
    """The variant's generator check: True, False (INVALID), or None (not made)."""
    return results.get("variants", {}).get(variant, {}).get("generator_check", {}).get("valid")


def derive(results):
    """The numbers the conclusions are drawn from: ratios per variant, and the targets."""
    ratios = {}
    for variant, v in results.get("variants", {}).items():
        r = {"valid": valid(results, variant)}
        p_rps = _get(results, variant, PROXY, "rps")
        for other in ("direct", "nginx", "litellm"):
            r[f"proxy_over_{other}_rps"] = _ratio(p_rps, _get(results, variant, other, "rps"))
        for target in ("entra-proxy", "nginx", "litellm"):
            key = target.replace("-", "_")
            if v.get("emulator", {}).get("stream"):
                r[f"{key}_added_ttfb_p50_us"] = _diff(
                    _get(results, variant, target, "ttfb_p50_us"),
                    _get(results, variant, "direct", "ttfb_p50_us"))
                r[f"{key}_added_ttfb_p99_us"] = _diff(
                    _get(results, variant, target, "ttfb_p99_us"),
                    _get(results, variant, "direct", "ttfb_p99_us"))
            else:
                for p in ("p50", "p90", "p99"):
                    r[f"{key}_added_{p}_us"] = _diff(
                        _get(results, variant, target, f"{p}_us"),
                        _get(results, variant, "direct", f"{p}_us"))
        r["proxy_over_nginx_cpu_per_10k"] = _ratio(
            _get(results, variant, PROXY, "cpu_s_per_10k"),
            _get(results, variant, "nginx", "cpu_s_per_10k"))
        r["proxy_over_nginx_cpu_per_chunk"] = _ratio(
            _get(results, variant, PROXY, "cpu_us_per_chunk"),
            _get(results, variant, "nginx", "cpu_us_per_chunk"))
        ratios[variant] = r
    return {"ratios": ratios, "latency_vs_rate": latency_vs_rate(results),
            "targets": targets(results, ratios), "goals": goals(results, ratios),
            "ab": ab(results)}


STANDARD_TARGETS = ("direct", PROXY, "nginx", "litellm")


def ab(results):
    """Each --also build against entra-proxy, repetition by repetition: CPU per request of the
    two measured in the same repetition, back to back, so a drift of the machine over the run
    moves both. A difference smaller than the spread of these pairs is no difference."""
    rows = []
    for variant, v in results.get("variants", {}).items():
        ts = v.get("targets", {})
        base = [r.get("cpu_s_per_10k") for r in ts.get(PROXY, {}).get("reps", [])]
        for name, t in ts.items():
            if name in STANDARD_TARGETS:
                continue
            other = [r.get("cpu_s_per_10k") for r in t.get("reps", [])]
            pairs = [(b * 100, o * 100) for b, o in zip(base, other)
                     if b is not None and o is not None]
            if not pairs:
                continue
            diffs = sorted(b - o for b, o in pairs)
            rows.append({
                "variant": variant, "target": name, "valid": valid(results, variant),
                "pairs": len(pairs),
                "proxy_cpu_us_per_req": statistics.median(b for b, _ in pairs),
                "other_cpu_us_per_req": statistics.median(o for _, o in pairs),
                "median_diff_us": statistics.median(diffs),
                "min_diff_us": diffs[0], "max_diff_us": diffs[-1],
                "proxy_lower": sum(1 for d in diffs if d < 0),
                "proxy_higher": sum(1 for d in diffs if d > 0),
            })
            rows[-1]["sign_test_p"] = sign_test(rows[-1]["proxy_lower"], rows[-1]["proxy_higher"])
    return rows


def sign_test(lower, higher):
    """One-sided exact sign test: the chance of entra-proxy being lower in at least `lower` of
    the `lower + higher` untied pairs if neither build were cheaper. Small: a real difference."""
    n = lower + higher
    if n == 0:
        return None
    return sum(math.comb(n, k) for k in range(lower, n + 1)) / 2 ** n


STREAMS_TARGET = 10_000
STREAMS_RSS_MB = 400
RSS_GROWTH_MB = 5


def targets(results, ratios):
    """The targets of the issue, in one run with the bench key's tokens_per_minute: each with
    its measured value and nginx's, and met (True/False), or None with the reason when the run
    cannot say (INVALID generator check, variant not run, another key)."""
    out = []
    key = results.get("settings", {}).get("key")
    variants = results.get("variants", {})

    def target(name, variant, measured, ref, met, unit="", note=""):
        if key != "tpm":
            met, note = None, "the bench key had no tokens_per_minute (--key none)"
        elif variant in variants and valid(results, variant) is False:
            met, note = None, "INVALID: the generator check failed"
        elif measured is None:
            met = None
            note = note or "not measured"
        out.append({"target": name, "variant": variant, "measured": measured, "nginx": ref,
                    "unit": unit, "met": met, "note": note})

    def ratio_target(name, variant, field, ratio, limit, unit, at_most):
        x = ratios.get(variant, {}).get(ratio)
        p = _get(results, variant, PROXY, field)
        n = _get(results, variant, "nginx", field)
        met = None if x is None else (x <= limit if at_most else x >= limit)
        target(name, variant, None if x is None else {"ratio": x, "entra_proxy": p}, n, met,
               unit, "" if variant in variants else f"variant {variant} not run")

    ratio_target("CPU per request ≤ 1.5× nginx's (fast upstream)", "fast", "cpu_us_per_req",
                 "proxy_over_nginx_cpu_per_10k", 1.5, "µs/req", True)
    ratio_target("throughput ≥ 0.75× nginx's (fast upstream)", "fast", "rps",
                 "proxy_over_nginx_rps", 0.75, "req/s", False)
    ratio_target("CPU per streamed chunk ≤ 2× nginx's (sse, meter on)", "sse",
                 "cpu_us_per_chunk", "proxy_over_nginx_cpu_per_chunk", 2.0, "µs/chunk", True)
    name = f"{STREAMS_TARGET:,} streams in ≤ {STREAMS_RSS_MB} MB RSS"
    st = results.get("entra_proxy", {}).get("open_streams", {})
    ep = st.get(PROXY)
    if ep and ep.get("open"):
        n = ep["open"]
        rss = ep["rss_kb"]
        ng = st.get("nginx", {}).get("rss_kb")
        measured = {"rss_kb": rss, "streams": n, "kb_per_stream": ep.get("kb_per_stream")}
        if n >= STREAMS_TARGET:
            target(name, "streams", measured, ng, rss <= STREAMS_RSS_MB * 1024, "KiB")
        else:
            est = None if ep.get("kb_per_stream") is None \
                else round(ep["idle_rss_kb"] + ep["kb_per_stream"] * STREAMS_TARGET)
            measured["extrapolated_kb"] = est
            why = st.get("limited") or "fewer requested"
            if n < 1000 or est is None:
                target(name, "streams", measured, ng, None, "KiB",
                       f"only {n:,} streams ({why}): too few to say")
            else:
                target(name, "streams", measured, ng, est <= STREAMS_RSS_MB * 1024, "KiB",
                       f"measured with {n:,} streams ({why}); {STREAMS_TARGET:,} extrapolated "
                       "from the memory per stream")
    else:
        target(name, "streams", None, None, None, note="streams extra not run")
    rss = results.get("entra_proxy", {}).get("rss")
    if rss:
        g = rss.get("growth_kb")
        cps = [c for c in rss.get("checkpoints", []) if str(c) in rss.get("at", {})]
        target(f"RSS flat from {_count(cps[0]) if cps else '?'} to "
               f"{_count(cps[-1]) if cps else '?'} requests (≤ {RSS_GROWTH_MB} MB growth)",
               "rss", None if g is None else {"growth_kb": g}, None,
               None if g is None else g <= RSS_GROWTH_MB * 1024, "KiB",
               "" if not rss.get("not_reached") else
               f"not reached within {rss['max_secs']:g} s: "
               + ", ".join(_count(c) for c in rss["not_reached"]))
    return out


def _count(n):
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k" if n >= 1000 else str(n)


def goals(results, ratios):
    """The other goals the benchmark has kept (reported, not asserted)."""
    out = []

    def goal(name, measured, met, note=""):
        if measured is not None:
            out.append({"goal": name, "measured": measured, "met": met, "note": note})

    inst = ratios.get("instant", {})
    x = inst.get("proxy_over_litellm_rps")
    if x is not None and inst.get("valid") is not False:
        goal("throughput ≥ 10× LiteLLM (instant upstream)", x, x >= 10)
    base = results.get("settings", {}).get("rate")
    x = inst.get("entra_proxy_added_p50_us")
    goal(f"added p50 ≤ 0.2 ms over direct (instant, paced {base}/s)", x,
         None if x is None else x <= 200, "µs")
    x = inst.get("entra_proxy_added_p99_us")
    goal(f"added p99 ≤ 1 ms over direct (instant, paced {base}/s)", x,
         None if x is None else x <= 1000, "µs")
    for row in latency_vs_rate(results):
        if row["rate"] == base or row["entra_proxy_added_p50_us"] is None:
            continue
        x = row["entra_proxy_added_p50_us"]
        goal(f"added p50 ≤ 0.2 ms over direct (instant, paced {row['rate']}/s)", x, x <= 200,
             "µs")
    x = ratios.get("streaming", {}).get("entra_proxy_added_ttfb_p50_us")
    goal("TTFB within 1 ms of direct (p50)", x, None if x is None else abs(x) <= 1000, "µs")
    ep = results.get("entra_proxy", {})
    su = ep.get("startup", {})
    if su:
        x = su.get("idle_rss_kb")
        goal("idle RSS ≤ 20 MB", x, None if x is None else x <= 20 * 1024, "KiB")
        x = su.get("listening_ms")
        goal("spawn to /healthz ≤ 100 ms", x, None if x is None else x <= 100, "ms")
    calls = [_get(results, v, PROXY, "token_calls") for v in results.get("variants", {})]
    calls = [c for c in calls if c is not None]
    if calls:
        goal("one token acquisition per token lifetime (1 h tokens, per variant run)", calls,
             all(c == 1 for c in calls))
    lim = (ep.get("limits") or {}).get("setups", {})
    mem = lim.get("memory", {}).get("median", {})
    red = lim.get("redis", {}).get("median", {})
    if mem and red:
        x = _diff(red.get("p50_us"), mem.get("p50_us"))
        goal("limits in Redis: added p50 ≤ 0.15 ms over limits in memory", x,
             None if x is None else x <= 150, "µs")
        x = _diff(red.get("cpu_us_per_req"), mem.get("cpu_us_per_req"))
        goal("limits in Redis: proxy CPU ≤ +25 µs/request over limits in memory", x,
             None if x is None else x <= 25, "µs")
        x = red.get("redis_evalsha_per_req")
        goal("limits in Redis: one script call (round trip) per request before the answer", x,
             None if x is None else x <= 1.05, "calls/req, settlement batches included")
    for ch in ep.get("token_churn", []):
        ok = ch["token_calls_under_load"] <= ch["expected_under_load"] and ch["errors"] == 0
        goal(f"one acquisition per refresh interval under load, {ch['token_lifetime_secs']} s "
             f"tokens", f"{ch['token_calls_under_load']} in {ch['load_secs']} s "
             f"(at most {ch['expected_under_load']})", ok)
    return out


# --- Markdown ---------------------------------------------------------------------------------


def _ms(us, digits=3):
    return "—" if us is None else f"{us / 1000:.{digits}f}"


def _mb(kb):
    return "—" if kb is None else f"{kb / 1024:.1f}"


def _num(x, digits=1):
    return "—" if x is None else f"{x:.{digits}f}"


def _signed_ms(us):
    return "—" if us is None else f"{us / 1000:+.3f}"


def _table(rows):
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def _met(m):
    return {True: "met", False: "**not met**", None: "—"}[m]


def _target_value(t):
    x = t["measured"]
    if x is None:
        return "—"
    if "ratio" in x:
        v = x["entra_proxy"]
        return f"{x['ratio']:.2f}× ({_num(v, 2 if 'chunk' in t['unit'] else 1)} {t['unit']})"
    if "growth_kb" in x:
        return f"{x['growth_kb'] / 1024:+.1f} MB"
    if "rss_kb" in x:
        s = f"{_mb(x['rss_kb'])} MB with {x['streams']:,} ({_num(x.get('kb_per_stream'), 1)} KiB/stream)"
        if x.get("extrapolated_kb") is not None and x["streams"] >= 1000:
            s += f"; ≈ {_mb(x['extrapolated_kb'])} MB at 10,000"
        return s
    return str(x)


def _target_ref(t):
    n = t["nginx"]
    if n is None:
        return "—"
    if t["unit"] == "KiB":
        return f"{_mb(n)} MB"
    return f"{_num(n, 2 if 'chunk' in t['unit'] else 1)} {t['unit']}"


def markdown(results):
    s = results.get("settings", {})
    m = results.get("machine", {})
    summary = results.get("summary") or derive(results)
    out = [f"## entra-proxy load benchmark ({results.get('mode')}, {results.get('started_at')})",
           "",
           f"nproc **{m.get('nproc')}** ({m.get('cpu', '?')}), kernel {m.get('kernel')}; "
           f"load generator: {m.get('load_generator')}; {m.get('entra_proxy')}; "
           f"{m.get('nginx') or 'nginx: skipped'}; "
           f"LiteLLM {m.get('litellm') or 'skipped'}.",
           "",
           f"entra-proxy's key: {s.get('key_limits') or 'no limits'}. "
           + (f"Medians of {s.get('reps')} repetitions, targets interleaved."
              if s.get("reps", 1) > 1 else "One repetition.")
           + f" Throughput: plain wrk -t{s.get('generator_threads', 1)} "
           f"-c{s.get('throughput_conns')} for {s.get('throughput_secs')} s (a static request: "
           "no Lua per request or response); its own CPU is the generator's, shown as a share "
           "of one core and never counted. Generator check: direct (the same wrk "
           f"against the upstream) must reach {s.get('generator_margin', 2):g}× the faster "
           "proxy's rate; a variant that fails is INVALID and its throughput and CPU are not a "
           "result. CPU: utime+stime of the target's process tree (nginx: master and every "
           "worker) over the throughput run, per request and, for streams, per chunk. "
           f"Correctness apart from the load: {s.get('sample')} answers per target and "
           "variant, status and body compared with what the upstream sends. Latency: separate "
           f"runs paced to {s.get('rate')} req/s on {s.get('rate_conns')} connections for "
           f"{s.get('rate_secs')} s"
           + (f" (instant upstream: also at {', '.join(map(str, s['curve_rates']))} req/s)"
              if s.get("curve_rates") else "")
           + f". TTFB: {s.get('ttfb_requests')} streamed requests, "
           f"{s.get('ttfb_concurrency')} at a time. RSS: peak (VmHWM) of the process tree. "
           "Syscalls and context switches (cs): perf stat over one more saturation run (full "
           "mode only). Steal: the share of all CPUs' time the hypervisor gave to others during "
           "a throughput run, the largest over the repetitions kept"
           + (f"; a repetition with more than {s['max_steal_pct']:g}% was measured again "
              "(at most as many times as there are repetitions), and the table says how many "
              "were" if s.get("max_steal_pct") else "")
           + ".",
           ""]
    if s.get("skipped"):
        out += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in s["skipped"].items()), ""]
    tg = summary.get("targets", [])
    if tg:
        rows = [["target", "entra-proxy", "nginx", "", "note"]]
        for t in tg:
            rows.append([t["target"], _target_value(t), _target_ref(t), _met(t["met"]),
                         t["note"]])
        out += ["### Targets", "", _table(rows), ""]
    for variant, v in results.get("variants", {}).items():
        emu = v.get("emulator", {})
        stream = emu.get("stream")
        chunks = emu.get("chunks")
        latency = emu.get("latency", True)
        desc = (f"SSE, {emu.get('stream_events')} events {emu.get('stream_interval_ms')} ms apart"
                if stream else f"JSON, {emu.get('latency_ms')} ms upstream latency")
        if emu.get("upstream") == "nginx-static":
            desc = ("JSON, nginx answering a static chat completion as the upstream"
                    if not stream else
                    f"SSE, nginx answering a static {chunks}-chunk stream "
                    + ("with the usage chunk, which the client asked for"
                       if emu.get("expect") == "usage" else "without usage; entra-proxy asks "
                       "for it and removes it"))
        out.append(f"### {variant} ({desc})")
        out.append("")
        g = v.get("generator_check", {})
        ok = g.get("valid")
        if ok is None:
            out += [f"Generator check not made: {g.get('why', 'no proxy measured')}.", ""]
        else:
            line = (f"Generator check: direct {_num(g.get('direct_rps'), 0)}/s, "
                    f"{g.get('fastest_proxy')} {_num(g.get('fastest_proxy_rps'), 0)}/s"
                    + (f" = {g['ratio']:.2f}×" if g.get("ratio") is not None else "")
                    + f" (≥ {g.get('required', 2):g}× required): ")
            line += "passed." if ok else ("**INVALID** — throughput and CPU below are not a "
                                          "result.")
            out += [line, ""]
        inv = ok is False

        def thr(x, digits=1):
            return "invalid" if inv and x is not None else _num(x, digits)

        if chunks:
            rows = [["target", "streams/s", "CPU µs/stream", "CPU µs/chunk", "bytes/answer",
                     "sample", "wrk CPU %", "peak RSS MB", "upstream CPU µs/stream",
                     "steal % (max)", "token calls", "errors"]]
        elif stream:
            rows = [["target", "streams/s", "TTFB p50 ms", "TTFB p90 ms", "TTFB p99 ms",
                     "+TTFB p50 ms", "stream p50 ms", "peak RSS MB", "CPU µs/stream",
                     "upstream CPU µs/stream", "wrk CPU %", "token calls", "errors"]]
        else:
            rows = [["target", "req/s", "CPU µs/req", "p50 ms", "p90 ms", "p99 ms", "+p50 ms",
                     "+p99 ms", "syscalls/req", "cs/req", "peak RSS MB", "upstream CPU µs/req",
                     "sample", "wrk CPU %", "steal % (max)", "measured again", "token calls",
                     "errors"]]
        direct = v.get("targets", {}).get("direct", {}).get("median", {})
        for name, rec in v.get("targets", {}).items():
            if "failed" in rec:
                rows.append([name, "FAILED: " + rec["failed"][:80]] + [""] * (len(rows[0]) - 2))
                continue
            md = rec.get("median", {})
            sm = rec.get("sample", {})
            sample = f"{sm.get('ok')}/{sm.get('n')}" if sm else "—"
            up = md.get("upstream_cpu_s_per_10k")
            up = None if up is None else up * 100
            if chunks:
                rows.append([name, thr(md.get("rps")), thr(md.get("cpu_us_per_req")),
                             thr(md.get("cpu_us_per_chunk"), 2),
                             _num(md.get("bytes_per_response"), 0), sample,
                             _num(md.get("generator_cpu_pct"), 0), _mb(md.get("peak_rss_kb")),
                             thr(up), _num(md.get("steal_pct_max"), 1),
                             md.get("token_calls"), md.get("errors")])
            elif stream:
                added = None if name == "direct" else _diff(md.get("ttfb_p50_us"),
                                                            direct.get("ttfb_p50_us"))
                rows.append([name, thr(md.get("rps")), _ms(md.get("ttfb_p50_us")),
                             _ms(md.get("ttfb_p90_us")), _ms(md.get("ttfb_p99_us")),
                             _signed_ms(added), _ms(md.get("stream_p50_us"), 1),
                             _mb(md.get("peak_rss_kb")), thr(md.get("cpu_us_per_req")),
                             thr(up), _num(md.get("generator_cpu_pct"), 0),
                             md.get("token_calls"), md.get("errors")])
            else:
                a50 = None if name == "direct" else _diff(md.get("p50_us"), direct.get("p50_us"))
                a99 = None if name == "direct" else _diff(md.get("p99_us"), direct.get("p99_us"))
                lat = latency
                rows.append([name, thr(md.get("rps")), thr(md.get("cpu_us_per_req")),
                             _ms(md.get("p50_us")) if lat else "—",
                             _ms(md.get("p90_us")) if lat else "—",
                             _ms(md.get("p99_us")) if lat else "—",
                             _signed_ms(a50), _signed_ms(a99), _num(md.get("syscalls_per_req")),
                             _num(md.get("switches_per_req"), 2), _mb(md.get("peak_rss_kb")),
                             thr(up), sample, _num(md.get("generator_cpu_pct"), 0),
                             _num(md.get("steal_pct_max"), 1), md.get("discarded_reps", 0),
                             md.get("token_calls"), md.get("errors")])
        out += [_table(rows), ""]

    chk = results.get("checks", {}).get("sse_check")
    if chk:
        rows = [["sse check (an upstream that reads the body, as Azure does)", "request",
                 "upstream asked for usage", "bytes in", "bytes out", "removed", "client got",
                 ""]]
        for name, kinds in chk.get("targets", {}).items():
            for kind, r in kinds.items():
                rows.append([name, kind, "yes" if r["upstream_asked_for_usage"] else "no",
                             r["bytes_in"], r["bytes_out"], r["removed"],
                             "the stream as asked" if r["client_bytes_as_asked"] else
                             "**other bytes**", "ok" if r["ok"] else "**wrong**"])
        out += [f"The {chk['chunks']}-chunk stream is {chk['plain_bytes']} bytes without usage "
                f"and {chk['usage_bytes']} with it; a proxy that asked for usage on the "
                f"client's behalf must remove exactly {chk['removal_bytes']} (the usage chunk "
                "and every `\"usage\":null`).", "", _table(rows), ""]

    ratios = summary.get("ratios", {})
    if ratios:
        rows = [["variant", "generator check", "proxy/direct req/s", "proxy/nginx req/s",
                 "proxy/LiteLLM req/s", "proxy/nginx CPU per req", "proxy/nginx CPU per chunk"]]
        for variant, r in ratios.items():
            if r.get("valid") is False:
                rows.append([variant, "**INVALID**"] + ["—"] * 5)
                continue
            rows.append([variant, {True: "passed", None: "not made"}[r.get("valid")],
                         _num(r.get("proxy_over_direct_rps"), 2),
                         _num(r.get("proxy_over_nginx_rps"), 2),
                         _num(r.get("proxy_over_litellm_rps"), 1),
                         _num(r.get("proxy_over_nginx_cpu_per_10k"), 2),
                         _num(r.get("proxy_over_nginx_cpu_per_chunk"), 2)])
        out += ["### Ratios", "", _table(rows), ""]

    pairs = summary.get("ab", [])
    if pairs:
        rows = [["variant", "generator check", "build", "repetitions",
                 "entra-proxy CPU µs/req (median)", "build CPU µs/req (median)",
                 "entra-proxy − build, per repetition: median [min, max] µs",
                 "entra-proxy lower in", "sign test p"]]
        for a in pairs:
            rows.append([a["variant"],
                         {True: "passed", False: "**INVALID**", None: "not made"}[a["valid"]],
                         a["target"], a["pairs"], _num(a["proxy_cpu_us_per_req"], 2),
                         _num(a["other_cpu_us_per_req"], 2),
                         f"{a['median_diff_us']:+.2f} [{a['min_diff_us']:+.2f}, "
                         f"{a['max_diff_us']:+.2f}]",
                         f"{a['proxy_lower']} of {a['pairs']}",
                         "—" if a.get("sign_test_p") is None else f"{a['sign_test_p']:.3f}"])
        out += ["### A/B: entra-proxy against the other builds (--also)", "",
                "CPU per request of entra-proxy and each --also build in the same repetition, "
                "measured back to back (the order turns with each repetition). With the "
                "generator check failed, both ran below saturation: the comparison holds, the "
                "absolute numbers are no result. Sign test p: the chance of entra-proxy coming "
                "out lower this often if neither build were cheaper (one-sided; below 0.05, "
                "the difference is real).", "", _table(rows), ""]

    curve = summary.get("latency_vs_rate", [])
    if len(curve) > 1:
        rows = [["paced rate (instant)", "direct p50 ms", "entra-proxy +p50 / +p99 ms",
                 "nginx +p50 / +p99 ms", "LiteLLM +p50 / +p99 ms"]]
        for c in curve:
            cells = [f"{c['rate']}/s", _ms(c["direct_p50_us"])]
            for key in ("entra_proxy", "nginx", "litellm"):
                a50, a99 = c[f"{key}_added_p50_us"], c[f"{key}_added_p99_us"]
                cells.append("—" if a50 is None else f"{_signed_ms(a50)} / {_signed_ms(a99)}")
            rows.append(cells)
        out += ["### Added latency against load", "",
                "Each rate is paced on the same connections as the base rate; a target is only "
                "measured at rates up to half its saturation throughput (—: not measured).", "",
                _table(rows), ""]
        rows = [["paced rate (instant)", "direct: upstream", "entra-proxy: own / upstream",
                 "nginx: own / upstream", "LiteLLM: own / upstream"]]
        for c in curve:
            cells = [f"{c['rate']}/s", _num(c["direct_upstream_cpu_us_per_req"], 0)]
            for key in ("entra_proxy", "nginx", "litellm"):
                own, up = c[f"{key}_cpu_us_per_req"], c[f"{key}_upstream_cpu_us_per_req"]
                cells.append("—" if own is None else f"{_num(own, 0)} / {_num(up, 0)}")
            rows.append(cells)
        out += ["CPU time per request at those rates, µs (the target's process tree, and the "
                "upstream emulator's during the same run): the fewer the requests per second, "
                "the colder the caches each one starts with.", "", _table(rows), ""]

    ep = results.get("entra_proxy", {})
    if ep:
        rows = [["entra-proxy alone", "value"]]
        su = ep.get("startup")
        if su:
            rows.append(["spawn → /healthz answers (median)", f"{_num(su.get('listening_ms'), 1)} ms"])
            rows.append(["spawn → /readyz 200, first token included (median)",
                         f"{_num(su.get('ready_ms'), 1)} ms"])
            rows.append(["idle RSS after readiness", f"{_mb(su.get('idle_rss_kb'))} MB"])
        for ch in ep.get("token_churn", []):
            rows.append([f"token acquisitions in {ch['load_secs']} s of saturation, "
                         f"{ch['token_lifetime_secs']} s tokens",
                         f"{ch['token_calls_under_load']} (one per refresh interval: at most "
                         f"{ch['expected_under_load']}; {ch['requests']} requests, "
                         f"{ch['errors']} errors)"])
        if len(rows) > 1:
            out += ["### entra-proxy alone", "", _table(rows), ""]
        st = ep.get("open_streams", {})
        names = [n for n in ("entra-proxy", "nginx") if n in st]
        if names:
            rows = [["held streams", "open", "open in s", "idle RSS MB", "idle CPU %",
                     "RSS MB", "KiB per stream", "CPU % of a core", "CPU µs per event",
                     "events/s got / sent", "client CPU %", "listen overflows",
                     "RSS after close MB", "errors"]]
            for name in names:
                r = st[name]
                rows.append([name, f"{r['open']:,}/{st['streams']:,}", _num(r["open_all_s"]),
                             _mb(r["idle_rss_kb"]), _num(r["idle_cpu_pct"], 2),
                             _mb(r["rss_kb"]), _num(r["kb_per_stream"], 1),
                             _num(r["cpu_pct"]), _num(r["cpu_us_per_event"]),
                             f"{_num(r['events_per_s'], 0)} / "
                             f"{_num(r['events_expected_per_s'], 0)}",
                             _num(r["client_cpu_pct"], 0), r.get("listen_overflows"),
                             _mb(r.get("rss_after_close_kb")), r["errors"]])
            out += [f"{st['streams']:,} SSE streams held open at once"
                    + (f" ({st['limited']})" if st.get("limited") else "")
                    + f", each dribbling one event every {st['interval_ms']} ms from the "
                    f"emulator, held {st['hold_secs']} s; RSS is VmRSS of the process tree "
                    "(nginx: master and workers), per stream: (RSS − idle RSS) / open streams; "
                    f"descriptor limit {st['nofile']:,} (needed for {st['requested']:,}: "
                    f"{st['nofile_needed']:,}), net.core.somaxconn {st.get('somaxconn')}.", "",
                    _table(rows), ""]
        rs = ep.get("rss")
        if rs:
            rows = [["requests", "after s", "RSS MB"]]
            rows.append(["0 (answering)", "0", _mb(rs.get("start_rss_kb"))])
            for cp in rs.get("checkpoints", []):
                pt = rs.get("at", {}).get(str(cp))
                rows.append([f"≥ {cp:,}", "not reached" if not pt else _num(pt["secs"]),
                             "—" if not pt else f"{_mb(pt['rss_kb'])} ({pt['requests']:,})"])
            out += [f"RSS as requests add up (plain wrk -c{rs['conns']} against the fast "
                    f"upstream, key: {rs['key']}; {rs.get('requests', 0):,} requests in "
                    f"{_num(rs.get('took_secs'))} s, {rs.get('errors')} errors; peak "
                    f"{_mb(rs.get('peak_rss_kb'))} MB):", "", _table(rows), ""]
        lim = ep.get("limits")
        if lim and lim.get("setups"):
            rows = [["limits accounting (fast upstream)", "req/s", "CPU µs/req",
                     "Redis CPU µs/req", "Redis cmds/req (round trips)",
                     f"p50 ms @{lim['rate']}/s", "p99 ms", "+p50 ms", "+p99 ms", "errors"]]
            none = lim["setups"].get("none", {}).get("median", {})
            for name, rec in lim["setups"].items():
                md = rec.get("median", {})
                cmds = md.get("redis_commands_per_req")
                rows.append([name, _num(md.get("rps")), _num(md.get("cpu_us_per_req")),
                             _num(md.get("redis_cpu_us_per_req")),
                             "—" if cmds is None else
                             f"{cmds:.2f} ({_num(md.get('redis_evalsha_per_req'))})",
                             _ms(md.get("p50_us")),
                             _ms(md.get("p99_us")),
                             _signed_ms(_diff(md.get("p50_us"), none.get("p50_us"))),
                             _signed_ms(_diff(md.get("p99_us"), none.get("p99_us"))),
                             md.get("errors")])
            g = lim.get("generator_check", {})
            check = ("generator check: " + ("passed" if g.get("valid") else
                     "**INVALID** (the rows are no result)" if g.get("valid") is False
                     else "not made")
                     + (f", direct {g['direct_rps']:.0f}/s = {g['ratio']:.2f}× the fastest setup"
                        if g.get("ratio") is not None else ""))
            out += [f"Redis: {lim.get('redis_version') or lim.get('skipped')}; {check}.", "",
                    _table(rows), ""]

    gl = summary.get("goals", [])
    if gl:
        rows = [["goal", "measured", "met"]]
        for g in gl:
            met = {True: "yes", False: "**no**", None: "n/a"}[g["met"]]
            rows.append([g["goal"], f"{g['measured']} {g['note']}".strip(), met])
        out += ["### Other goals (reported, not asserted)", "", _table(rows), ""]
    if results.get("perf_top"):
        out += ["### perf: where entra-proxy's CPU goes", "",
                "Self time at saturation, by shared object, then by symbol (one more run under "
                "`perf record`, not counted in any result):", ""]
        for name, lines in results["perf_top"].items():
            out += [f"`{name}`:", "", "```"] + lines[:25] + ["```", ""]
    if results.get("failures"):
        out += ["### Failures", ""] + [f"- {f}" for f in results["failures"]] + [""]
    return "\n".join(out)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.json"
    with open(path) as f:
        results = json.load(f)
    results["summary"] = derive(results)
    print(markdown(results))


if __name__ == "__main__":
    main()
