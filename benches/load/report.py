#!/usr/bin/env python3
"""Ratios, goals and the Markdown tables of a benchmark run (results.json).

    python3 benches/load/report.py target/bench/results.json   # print the tables again

The goals are the project's performance targets; they are reported, never asserted (the
machine is shared and noisy: the ratios are the result, not the absolute numbers).
"""

import json
import sys

PROXY = "entra-proxy"


def _get(results, variant, target, key):
    t = results.get("variants", {}).get(variant, {}).get("targets", {}).get(target, {})
    return t.get("median", {}).get(key)


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def _diff(a, b):
    return round(a - b, 1) if a is not None and b is not None else None


def derive(results):
    """The numbers the conclusions are drawn from: ratios per variant, and the goals."""
    ratios = {}
    for variant, v in results.get("variants", {}).items():
        r = {}
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
        ratios[variant] = r
    return {"ratios": ratios, "latency_vs_rate": latency_vs_rate(results),
            "goals": goals(results, ratios)}


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


def goals(results, ratios):
    out = []

    def goal(name, measured, met, note=""):
        out.append({"goal": name, "measured": measured, "met": met, "note": note})

    inst = ratios.get("instant", {})
    x = inst.get("proxy_over_nginx_rps")
    goal("throughput ≥ 0.8× nginx (instant upstream)", x, None if x is None else x >= 0.8)
    fast = ratios.get("fast", {})
    x = fast.get("proxy_over_nginx_rps")
    goal("throughput ≥ 0.8× nginx (fast upstream)", x, None if x is None else x >= 0.8)
    x = fast.get("proxy_over_nginx_cpu_per_10k")
    goal("CPU per request ≤ 1.5× nginx (fast upstream)", x, None if x is None else x <= 1.5)
    x = inst.get("proxy_over_litellm_rps")
    goal("throughput ≥ 10× LiteLLM (instant upstream)", x, None if x is None else x >= 10)
    base = results.get("settings", {}).get("rate")
    x = inst.get("entra_proxy_added_p50_us")
    goal(f"added p50 ≤ 0.2 ms over direct (instant, {base}/s)", x,
         None if x is None else x <= 200, "µs")
    x = inst.get("entra_proxy_added_p99_us")
    goal(f"added p99 ≤ 1 ms over direct (instant, {base}/s)", x,
         None if x is None else x <= 1000, "µs")
    for row in latency_vs_rate(results):
        if row["rate"] == base or row["entra_proxy_added_p50_us"] is None:
            continue
        x = row["entra_proxy_added_p50_us"]
        goal(f"added p50 ≤ 0.2 ms over direct (instant, {row['rate']}/s)", x, x <= 200, "µs")
    x = ratios.get("streaming", {}).get("entra_proxy_added_ttfb_p50_us")
    goal("TTFB within 1 ms of direct (p50)", x, None if x is None else abs(x) <= 1000, "µs")
    ep = results.get("entra_proxy", {})
    st = ep.get("open_streams", {})
    if PROXY in st:
        n = st.get("streams")
        rss = st[PROXY]["sample"]["rss_kb"]
        ok = st[PROXY]["open"] == n and rss <= 64 * 1024
        goal(f"RSS with {n} open streams ≤ 64 MB", rss, ok if n >= 1000 else None,
             "KiB" + ("" if n >= 1000 else f" (only {n} streams: not the goal's 1,000)"))
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
           f"Same request for every target: `POST {s.get('path')}` with a "
           f"{len(s.get('body', ''))}-byte chat body. Medians of {s.get('reps')} repetitions. "
           f"Throughput: wrk -t1 -c{s.get('throughput_conns')} for {s.get('throughput_secs')} s. "
           f"Latency: paced to {s.get('rate')} req/s on {s.get('rate_conns')} connections for "
           f"{s.get('rate_secs')} s"
           + (f" (instant upstream: also at {', '.join(map(str, s['curve_rates']))} req/s)"
              if s.get("curve_rates") else "")
           + f". TTFB: {s.get('ttfb_requests')} streamed requests, "
           f"{s.get('ttfb_concurrency')} at a time. RSS: peak (VmHWM) of the process tree; "
           "CPU: utime+stime of the process tree (nginx: master and workers) during the "
           "throughput run, per request (upstream CPU: the emulator's or the static nginx's, "
           "same run). Syscalls and context switches (cs): raw_syscalls:sys_enter and "
           "context-switches of the process tree over one more saturation run (full mode only). "
           "Steal: the share of all CPUs' time the hypervisor gave to others during a "
           "throughput run, the largest over the repetitions kept"
           + (f"; a repetition with more than {s['max_steal_pct']:g}% was measured again "
              "(at most as many times as there are repetitions), and the table says how many "
              "were" if s.get("max_steal_pct") else "")
           + ".",
           ""]
    if s.get("skipped"):
        out += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in s["skipped"].items()), ""]
    for variant, v in results.get("variants", {}).items():
        emu = v.get("emulator", {})
        stream = emu.get("stream")
        desc = (f"SSE, {emu.get('stream_events')} events {emu.get('stream_interval_ms')} ms apart"
                if stream else f"JSON, {emu.get('latency_ms')} ms upstream latency")
        if emu.get("upstream") == "nginx-static":
            desc = "JSON, nginx answering a static chat completion as the upstream"
        out.append(f"### {variant} ({desc})")
        out.append("")
        if stream:
            rows = [["target", "streams/s", "TTFB p50 ms", "TTFB p90 ms", "TTFB p99 ms",
                     "+TTFB p50 ms", "stream p50 ms", "peak RSS MB", "CPU s/10k",
                     "upstream CPU s/10k", "token calls", "errors"]]
        else:
            rows = [["target", "req/s", "CPU µs/req", "p50 ms", "p90 ms", "p99 ms", "+p50 ms",
                     "+p99 ms", "syscalls/req", "cs/req", "peak RSS MB", "upstream CPU µs/req",
                     "steal % (max)", "measured again", "token calls", "errors"]]
        direct = v.get("targets", {}).get("direct", {}).get("median", {})
        for name, rec in v.get("targets", {}).items():
            if "failed" in rec:
                rows.append([name, "FAILED: " + rec["failed"][:80]] + [""] * (len(rows[0]) - 2))
                continue
            md = rec.get("median", {})
            if stream:
                added = None if name == "direct" else _diff(md.get("ttfb_p50_us"),
                                                            direct.get("ttfb_p50_us"))
                rows.append([name, _num(md.get("rps")), _ms(md.get("ttfb_p50_us")),
                             _ms(md.get("ttfb_p90_us")), _ms(md.get("ttfb_p99_us")),
                             _signed_ms(added), _ms(md.get("stream_p50_us"), 1),
                             _mb(md.get("peak_rss_kb")), _num(md.get("cpu_s_per_10k"), 2),
                             _num(md.get("upstream_cpu_s_per_10k"), 2),
                             md.get("token_calls"), md.get("errors")])
            else:
                a50 = None if name == "direct" else _diff(md.get("p50_us"), direct.get("p50_us"))
                a99 = None if name == "direct" else _diff(md.get("p99_us"), direct.get("p99_us"))
                up = md.get("upstream_cpu_s_per_10k")
                rows.append([name, _num(md.get("rps")), _num(md.get("cpu_us_per_req")),
                             _ms(md.get("p50_us")), _ms(md.get("p90_us")), _ms(md.get("p99_us")),
                             _signed_ms(a50), _signed_ms(a99), _num(md.get("syscalls_per_req")),
                             _num(md.get("switches_per_req"), 2), _mb(md.get("peak_rss_kb")),
                             _num(None if up is None else up * 100),
                             _num(md.get("steal_pct_max"), 1), md.get("discarded_reps", 0),
                             md.get("token_calls"), md.get("errors")])
        out += [_table(rows), ""]

    ratios = summary.get("ratios", {})
    if ratios:
        rows = [["variant", "proxy/direct req/s", "proxy/nginx req/s", "proxy/LiteLLM req/s",
                 "proxy/nginx CPU per req"]]
        for variant, r in ratios.items():
            rows.append([variant, _num(r.get("proxy_over_direct_rps"), 2),
                         _num(r.get("proxy_over_nginx_rps"), 2),
                         _num(r.get("proxy_over_litellm_rps"), 1),
                         _num(r.get("proxy_over_nginx_cpu_per_10k"), 2)])
        out += ["### Ratios", "", _table(rows), ""]

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
        st = ep.get("open_streams", {})
        for name in ("entra-proxy", "nginx"):
            if name in st:
                r = st[name]
                rows.append([f"{name}: RSS with {r['open']}/{st['streams']} SSE streams open",
                             f"{_mb(r['sample']['rss_kb'])} MB (before: {_mb(r['rss_before_kb'])} MB;"
                             f" upstream streams open: {r['sample']['upstream_open_streams']})"])
        for ch in ep.get("token_churn", []):
            rows.append([f"token acquisitions in {ch['load_secs']} s of saturation, "
                         f"{ch['token_lifetime_secs']} s tokens",
                         f"{ch['token_calls_under_load']} (one per refresh interval: at most "
                         f"{ch['expected_under_load']}; {ch['requests']} requests, "
                         f"{ch['errors']} errors)"])
        out += ["### entra-proxy alone", "", _table(rows), ""]
        lim = ep.get("limits")
        if lim and lim.get("setups"):
            rows = [["limits accounting (fast upstream)", "req/s", "CPU µs/req",
                     "Redis CPU µs/req", f"p50 ms @{lim['rate']}/s", "p99 ms", "+p50 ms",
                     "+p99 ms", "errors"]]
            none = lim["setups"].get("none", {}).get("median", {})
            for name, rec in lim["setups"].items():
                md = rec.get("median", {})
                rows.append([name, _num(md.get("rps")), _num(md.get("cpu_us_per_req")),
                             _num(md.get("redis_cpu_us_per_req")), _ms(md.get("p50_us")),
                             _ms(md.get("p99_us")),
                             _signed_ms(_diff(md.get("p50_us"), none.get("p50_us"))),
                             _signed_ms(_diff(md.get("p99_us"), none.get("p99_us"))),
                             md.get("errors")])
            out += [f"Redis: {lim.get('redis_version') or lim.get('skipped')}", "",
                    _table(rows), ""]

    gl = summary.get("goals", [])
    if gl:
        rows = [["goal", "measured", "met"]]
        for g in gl:
            met = {True: "yes", False: "**no**", None: "n/a"}[g["met"]]
            rows.append([g["goal"], f"{g['measured']} {g['note']}".strip(), met])
        out += ["### Goals (reported, not asserted)", "", _table(rows), ""]
    if results.get("perf_top"):
        out += ["### perf: entra-proxy self time at saturation (top symbols)", ""]
        for name, lines in results["perf_top"].items():
            out += [f"`{name}`:", "", "```"] + lines[:15] + ["```", ""]
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
