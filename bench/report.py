#!/usr/bin/env python3
"""Writes bench/RESULTS.md from the raw results bench/run.sh leaves.

Usage: report.py RESULTS_DIR > RESULTS.md
       report.py --check-mapped FILE   (prints a complaint unless the first
                                        record of FILE is mapped as
                                        bench/map_deal.lua maps it)

RESULTS_DIR holds meta.txt (machine, tool versions, settings), index.tsv
(one line per figure) and, per figure ID: ID.json (hyperfine's export),
ID.time (GNU time lines "wall user sys maxrss_kib", the warm-up run first),
ID.count, and ID.error / ID.mismatch when something went wrong; wrk-*.txt
(wrk's output) and the create jobs' nginx logs (ID.log, "msec status").
"""

import csv
import json
import os
import re
import statistics
import sys

TOOLS = {
    "flow-seq": "flow, 1 connection (`parallel: 1`)",
    "flow-par": "flow, default (4 pages at once, up to 8)",
    "flow-par8": "flow, `parallel: 8` on the connection",
    "flow-offset": "flow, offset listing (sequential)",
    "flow-identity": "flow, default, Lua step that returns its input",
    "flow-lua2": "flow, default, the script in 2 Lua states (`parallel: 2`)",
    "dlt": "dlt `rest_api` → filesystem jsonl",
    "airbyte": "Airbyte declarative CDK",
    "curl": "curl, 1 connection",
    "curl4": "curl, 4 at once (`--parallel-max 4`)",
}
SET_NAMES = {"d100k": "100 000", "d1m": "1 000 000", "d1p": "200 (one page)"}


def check_mapped(path):
    with open(path, encoding="utf-8") as f:
        r = json.loads(f.readline())
    ok = ({"deal_id", "client_name", "amount"} <= r.keys()
          and not {"id", "name", "summ"} & r.keys()
          and re.fullmatch(r"\+7\d{10}", r.get("phone") or ""))
    if not ok:
        print("mapped record not as expected:", json.dumps(r, ensure_ascii=False))


def read(path, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return default


def paired(root, sets):
    """The rounds in which the plain extract and the mapped jobs took turns:
    (data set, rounds), each round (extract, map, map in two Lua states) in
    wall seconds; None when there are none."""
    for s in reversed(sets):
        text = read(f"{root}/paired-{s}.tsv")
        if text:
            rounds = [tuple(float(x) for x in line.split("\t")[1:4]) for line in text.splitlines()[1:] if line.strip()]
            if rounds:
                return s, rounds
    return None


class Results:
    def __init__(self, root):
        self.root = root
        self.meta = dict(line.split("=", 1) for line in read(f"{root}/meta.txt", "").splitlines() if "=" in line)
        with open(f"{root}/index.tsv", encoding="utf-8") as f:
            self.rows = {r["id"]: r for r in csv.DictReader(f, delimiter="\t")}
        self.figures = {i: self.figure(r) for i, r in self.rows.items()}

    def figure(self, row):
        fid, n = row["id"], int(row["records"])
        fig = {"id": fid, "records": n, "runs": int(row["runs"]), "warmup": int(row["warmup"]),
               "ok": row["status"] == "ok",
               "error": read(f"{self.root}/{fid}.error"), "mismatch": read(f"{self.root}/{fid}.mismatch")}
        hf = read(f"{self.root}/{fid}.json")
        if fig["ok"] and hf:
            times = json.loads(hf)["results"][0]["times"]
            fig["wall"] = statistics.median(times)
            fig["walls"] = times
        lines = [l.split() for l in read(f"{self.root}/{fid}.time", "").splitlines() if re.match(r"^[\d.]+ ", l)]
        runs = lines[fig["warmup"]:]  # the warm-up runs come first
        if fig["ok"] and runs:
            fig["cpu"] = statistics.median(float(u) + float(s) for _, u, s, _ in runs)
            fig["rss"] = statistics.median(int(m) for *_, m in runs) / 1024
            fig["rss_max"] = max(int(m) for *_, m in runs) / 1024
        if "wall" in fig:
            fig["rate"] = n / fig["wall"]
        return fig

    def get(self, fid):
        return self.figures.get(fid, {"id": fid, "ok": False, "missing": True})

    def wrk(self, set_, conns):
        text = read(f"{self.root}/wrk-{set_}-c{conns}.txt")
        if not text:
            return None
        m = re.search(r"Requests/sec:\s+([\d.]+)", text)
        t = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
        scale = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}
        return {"pages": float(m.group(1)), "mib": float(t.group(1)) * scale.get(t.group(2), 1),
                "bad": int(bad.group(1)) if bad else 0}


def fmt(x, digits=2):
    if x is None:
        return "—"
    if x >= 1000:
        return f"{x:,.0f}".replace(",", " ")
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "—"


def runs_note(fig):
    """How a figure's runs differ from the default, if they do."""
    default = int(RUNS[0])
    if fig["runs"] == default and fig["warmup"] == 1:
        return ""
    return f" ({fig['runs']} runs{', no warm-up' if fig['warmup'] == 0 else ''})"


RUNS = ["5"]


def cell_failed(fig):
    if fig.get("missing"):
        return "not run"
    return "**failed** (see notes)"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def tool_of(fid):
    for key in ("flow-seq", "flow-par", "flow-offset", "flow-identity", "curl4", "curl", "dlt", "airbyte"):
        if fid.startswith(key + "-"):
            return key
    return fid


def main(root):
    R = Results(root)
    m = R.meta
    RUNS[0] = m.get("runs", "5")
    sets = [s for s in ("d100k", "d1m") if any(r["set"] == s and r["job"] == "extract" for r in R.rows.values())]
    pair = paired(root, sets)
    quick = m.get("mode") == "quick"
    out = []
    w = out.append

    w("# flow benchmark results\n")
    w(f"Written by `bench/run.sh{' --quick' if quick else ''}` on {m.get('date', '?')} "
      f"in {int(m.get('elapsed', 0)) // 60} min. Raw numbers: `bench/.results/` after a run.\n")
    w("## Machine and tools\n")
    w(table(["", ""], [
        ["CPU", f"{m.get('cpu')} × {m.get('nproc')} (`nproc`)"],
        ["memory", m.get("memory")],
        ["kernel", m.get("kernel")],
        ["load average (1, 5, 15 min)", m.get("load")],
        ["flow", m.get("flow") + " (release build)"],
        ["peers", f"{m.get('dlt')}, {m.get('airbyte')}, {m.get('python')}"],
        ["server and tools", f"{m.get('nginx')}, {m.get('wrk')}, {m.get('curl')}, {m.get('hyperfine')}"],
    ]))
    w("")
    w("## How it is measured\n")
    w(f"""nginx (all cores, access log off, keep-alive, `tcp_nopush off` as an API answering from
memory would be, so that no page waits for a client's delayed ACK) serves pre-generated static pages on
127.0.0.1 in the shape of Neiros's deals list: `GET /<set>/projects?page=N` answers
`{{"data":{{"projects":[200 records]}},"last_page":P,"total":T}}` after a bearer-token
check (401 without it); an offset listing `GET /<set>/offset?offset=K&count=200` gives
no total and an empty list past the end. A record is a deal of about 350 bytes
(id, site, date, phone in several spellings, Cyrillic name, amount, status, channel...).
Every tool runs on the same machine as nginx, so they share its 2 cores.

Each figure is the **median of {m.get('runs')} runs after one warm-up run** (hyperfine), except
where the table says otherwise: the peers' jobs at 1 000 000 records take
{m.get('peer_big_runs')} runs, the 20 ms-delay jobs, the rate-limited creates and Airbyte's
mapping {m.get('slow_runs')}{' without a warm-up run' if m.get('slow_warmup') == '0' else ''},
the cold start {m.get('cold_runs')}. Wall time is hyperfine's; CPU
(user + system) and peak RSS come from GNU time around the same runs. records/s =
records ÷ median wall. Every run starts from an empty output folder, and the last
run's output is counted (and, for the mapping, its first record checked).

Jobs, the same for every tool: the output is a JSON Lines file (dlt: its filesystem
destination, uncompressed jsonl, including dlt's own `_dlt_*` columns; Airbyte: the
`data` of every RECORD message the CDK's `YamlDeclarativeSource.read` yields, written
as JSON lines). flow runs `flow -q --providers bench/providers run --no-state` with
the workflows in `bench/`.
""")

    # --- raw limit
    w("## The raw limit\n")
    w(f"wrk runs {m.get('wrk_secs')} s, cycling through every page of the set; curl fetches "
      "every page of the set and saves each to a file.\n")
    rows = []
    paired_mismatch = read(f"{root}/paired-map.mismatch")
    if paired_mismatch:
        notes.append(f"- the jobs taking turns: {paired_mismatch.strip()}")
    for s in sets:
        for conns in (1, 8):
            k = R.wrk(s, conns)
            if k:
                rows.append([SET_NAMES[s], f"wrk, {conns} connection{'s' if conns > 1 else ''}", "—",
                             fmt(k["pages"]), fmt(k["pages"] * 200), fmt(k["mib"], 1)
                             + (f" ({k['bad']} non-2xx!)" if k["bad"] else "")])
        for c in ("curl", "curl4"):
            f = R.get(f"{c}-{s}")
            if f.get("wall"):
                rows.append([SET_NAMES[s], TOOLS[c], fmt(f["wall"]), fmt(f["rate"] / 200), fmt(f["rate"]), "—"])
            else:
                rows.append([SET_NAMES[s], TOOLS[c], cell_failed(f), "", "", ""])
    w(table(["records", "client", "wall s", "pages/s", "records/s", "MiB/s"], rows))
    w("")

    def limit_for(s, tool):
        k = R.wrk(s, 8 if tool == "flow-par" else 1)
        return k["pages"] * 200 if k else None

    def job_table(job, s, tools, limit=True):
        rows = []
        curl = R.get(f"curl-{s}").get("rate")
        for t in tools:
            f = R.get(f"{t}-{job}-{s}")
            if f.get("missing"):
                continue
            if not f.get("wall"):
                rows.append([TOOLS[t], cell_failed(f)] + [""] * (5 if limit else 3))
                continue
            row = [TOOLS[t] + runs_note(f),
                   fmt(f["wall"]), fmt(f["cpu"]), fmt(f["rss"], 1), fmt(f["rate"])]
            if limit:
                lim = limit_for(s, t)
                row += [f"{f['rate'] / lim:.0%}" if lim else "—", f"{f['rate'] / curl:.0%}" if curl else "—"]
            rows.append(row)
        head = ["tool", "wall s", "CPU s", "peak RSS MiB", "records/s"]
        if limit:
            head += ["of raw limit¹", "of curl"]
        return table(head, rows)

    footnote = ("¹ records/s ÷ wrk's records/s: over 1 connection for the sequential tools, "
                "over 8 connections for flow's default parallel fetch.\n")

    # --- job 1
    w("## Job 1: extract every record into JSON Lines\n")
    for s in sets:
        w(f"### {SET_NAMES[s]} records\n")
        w(job_table("extract", s, ["flow-seq", "flow-par", "flow-offset", "dlt", "airbyte"]))
        w("")
    w(footnote)

    # --- job 2
    w("## Job 2: extract with a per-record mapping\n")
    w("Three fields renamed (`id`→`deal_id`, `name`→`client_name`, `summ`→`amount`) and the "
      "phone normalised to `+7XXXXXXXXXX`: `bench/map_deal.lua` in flow, a Python function "
      "through `add_map` in dlt, `AddFields` + `RemoveFields` transformations (Jinja "
      "interpolation) in Airbyte.\n")
    for s in sets:
        w(f"### {SET_NAMES[s]} records\n")
        w(job_table("map", s, ["flow-seq", "flow-par", "flow-lua2", "flow-identity", "dlt", "airbyte"]))
        if not R.get(f"airbyte-map-{s}").get("wall") and R.get(f"airbyte-map-{s}").get("missing"):
            w("\nAirbyte's mapped job runs at 100 000 records only: at 1 000 000 its "
              "transformations take minutes a run.")
        w("")
    w(footnote)
    rows = []
    for s in sets:
        for t in ("flow-seq", "flow-par", "flow-lua2", "flow-identity", "dlt", "airbyte"):
            a, b = R.get(f"{'flow-par' if t in ('flow-identity', 'flow-lua2') else t}-extract-{s}"), R.get(f"{t}-map-{s}")
            if a.get("wall") and b.get("wall"):
                d = b["wall"] - a["wall"]
                rows.append([SET_NAMES[s], TOOLS[t], fmt(d), f"{d / a['wall']:+.0%}",
                             fmt(d / a["records"] * 1e6, 1), fmt(b["cpu"] - a["cpu"])])
    w("Cost of the mapping (mapped job − plain extract; for the identity Lua step and the two Lua states, "
      "− flow's default extract). A negative figure means the noise between the two figures is larger than the cost.\n")
    w(table(["records", "tool", "extra wall s", "extra wall %", "extra µs/record", "extra CPU s"], rows))
    w("")
    if pair:
        s, rounds = pair
        w(f"The mapped jobs against flow's default extract at {SET_NAMES[s]} records, taking turns: "
          f"{len(rounds)} rounds of the plain extract, the mapped job and the mapped job in two Lua states, "
          "one after the other, after a round to warm up. The figures in the tables above were taken minutes "
          "apart, while the machine's speed drifts; here each round's ratio compares runs seconds apart.\n")
        rows = [[str(i + 1), fmt(e), fmt(m), fmt(m2), ratio(m, e), ratio(m2, e)] for i, (e, m, m2) in enumerate(rounds)]
        med = [statistics.median(c) for c in zip(*rounds)]
        rows.append(["median", fmt(med[0]), fmt(med[1]), fmt(med[2]),
                     f"{statistics.median(m / e for e, m, _ in rounds):.2f}×",
                     f"{statistics.median(m2 / e for e, _, m2 in rounds):.2f}×"])
        w(table(["round", "extract s", "mapped s", "mapped, 2 Lua states s", "mapped ÷ extract",
                 "2 Lua states ÷ extract"], rows))
        w("")

    # --- job 3
    w("## Job 3: cold start (one page, 200 records)\n")
    rows = []
    for t in ("flow-par", "dlt", "airbyte"):
        f = R.get(f"{t}-cold-d1p")
        if f.get("wall"):
            rows.append([TOOLS[t].split(",")[0] if t == "flow-par" else TOOLS[t], fmt(f["wall"] * 1000, 1),
                         fmt(f["cpu"] * 1000, 1), fmt(f["rss"], 1)])
        elif not f.get("missing"):
            rows.append([TOOLS[t], cell_failed(f), "", ""])
    w(table(["tool", "wall ms", "CPU ms", "peak RSS MiB"], rows))
    w("")

    # --- job 4
    delay = int(m.get("delay_ms", 20))
    w(f"## Job 4: extract with every page answered {delay} ms late\n")
    w(f"100 000 records (500 pages) through `bench/delay_proxy.py`, an asyncio proxy in front of "
      f"nginx that holds each request {delay} ms. The floor is 500 × {delay} ms ÷ pages in flight; "
      "curl through the same proxy shows what one connection gets.\n")
    rows = []
    for t, inflight in (("curl", 1), ("flow-seq", 1), ("flow-par", 8), ("flow-par8", 8), ("dlt", 1), ("airbyte", 1)):
        f = R.get(f"{t}-delay-d100k")
        floor = 500 * delay / 1000 / inflight
        if f.get("wall"):
            rows.append([TOOLS[t], fmt(f["wall"]), fmt(f["cpu"]), fmt(f["rss"], 1), fmt(f["rate"]),
                         fmt(floor), f"{floor / f['wall']:.0%}"])
        elif not f.get("missing"):
            rows.append([TOOLS[t], cell_failed(f), "", "", "", fmt(floor), ""])
    w(table(["tool", "wall s", "CPU s", "peak RSS MiB", "records/s", "floor s", "of floor speed"], rows))
    w("")
    rows = []
    for conns, t in ((1, "flow-seq"), (8, "flow-par"), (8, "flow-par8")):
        k, f = R.wrk("delay", conns), R.get(f"{t}-delay-d100k")
        if k:
            pages_s = 500 / k["pages"]
            rows.append([TOOLS[t], str(conns), fmt(k["pages"], 1), fmt(pages_s),
                         f"{pages_s / f['wall']:.0%}" if f.get("wall") else "—"])
    seq, par = R.get("flow-seq-delay-d100k").get("wall"), R.get("flow-par-delay-d100k").get("wall")
    if rows:
        w("What the proxy itself gives (wrk, pages/s over as many connections as flow has pages in flight), "
          "the time 500 pages take at that rate, and how close flow comes to it. flow fetches the first "
          "page alone (it tells the page count). With `parallel` left unset it then keeps 4 pages in flight, "
          "and tries one more after each window of at least 100 ms whose answers it waited for and that took "
          "on average at most a fifth longer than the first window's, keeping it if answers then come a tenth more often, up to 8: "
          f"here the proxy adds {delay} ms whatever the load, so the window grows to 8 within the first half second"
          + (f", and the default fetch is {ratio(seq, par)} as fast as the sequential one" if seq and par else "")
          + ". Against nginx alone on the same 2 cores, more pages bring no more answers a second, and it stays at 4 or 5.\n")
        w(table(["flow", "pages in flight", "proxy pages/s", "500 pages at that rate, s", "flow of that speed"],
                rows))
        w("")

    # --- job 5
    w("## Job 5: creates (flow only)\n")
    w("One `POST` a record from a JSON Lines file, `for_each` with `concurrency: 16`; nginx answers "
      "`{\"ok\":true}` and logs each POST with its time. The server's rate is measured over the "
      "last run's POSTs, first to last. The last two cases go through `bench/delay_proxy.py` "
      "holding each create 10 ms, a server that takes its time, one at a time and 16 at once.\n")
    rows = []
    create_delay = int(m.get("create_delay_ms", 10))
    cases = (("flow-create-unlimited", None, "no limit"), ("flow-create-limited", 10, "10 requests/s limit"),
             ("flow-create-slow-c1", None, f"server takes {create_delay} ms, `concurrency: 1`"),
             ("flow-create-slow-c16", None, f"server takes {create_delay} ms, `concurrency: 16`"))
    for fid, budget, case in cases:
        f = R.get(fid)
        if not f.get("wall"):
            if not f.get("missing"):
                rows.append([case, cell_failed(f)] + [""] * 6)
            continue
        n = f["records"]
        stamps = [float(l.split()[0]) for l in read(f"{root}/{fid}.log", "").splitlines() if l.strip()][-n:]
        server = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else None
        rows.append([case, fmt(n), f["runs"], fmt(f["wall"]),
                     fmt(n / f["wall"], 1), fmt(server, 2) if server else "—",
                     f"{budget}/s" if budget else "—", fmt(f["rss"], 1)])
    w(table(["case", "requests", "runs", "wall s", "requests/s (÷ wall)", "server-side rate/s", "budget",
             "peak RSS MiB"], rows))
    w("")

    # --- headline
    w("## Headline\n")
    w("Ratios of records/s (higher is faster for the first tool).\n")
    lines = []
    for s in sets:
        fs, fp = R.get(f"flow-seq-extract-{s}"), R.get(f"flow-par-extract-{s}")
        d, a, c = R.get(f"dlt-extract-{s}"), R.get(f"airbyte-extract-{s}"), R.get(f"curl-{s}")
        name = SET_NAMES[s]
        if fs.get("rate"):
            lines.append(f"- **extract, {name} records**: flow {fmt(fs['rate'])} records/s over one connection, "
                         f"{fmt(fp.get('rate'))} with its default parallel fetch. "
                         f"flow ÷ dlt {ratio(fs['rate'], d.get('rate'))} (parallel {ratio(fp.get('rate'), d.get('rate'))}); "
                         f"flow ÷ Airbyte {ratio(fs['rate'], a.get('rate'))} (parallel {ratio(fp.get('rate'), a.get('rate'))}); "
                         f"flow ÷ curl's fetch-and-save {ratio(fs['rate'], c.get('rate'))} "
                         f"(parallel {ratio(fp.get('rate'), c.get('rate'))}).")
        ms, mp = R.get(f"flow-seq-map-{s}"), R.get(f"flow-par-map-{s}")
        dm, am = R.get(f"dlt-map-{s}"), R.get(f"airbyte-map-{s}")
        fm = ms if ms.get("rate") else mp
        if fm.get("rate"):
            l2 = R.get(f"flow-lua2-map-{s}")
            lines.append(f"- **mapped, {name} records**: flow {fmt(fm['rate'])} records/s; "
                         f"flow ÷ dlt {ratio(fm['rate'], dm.get('rate'))}"
                         + (f", flow ÷ Airbyte {ratio(fm['rate'], am.get('rate'))}" if am.get("rate") else "")
                         + (f"; in two Lua states {fmt(l2['rate'])} records/s, ÷ dlt {ratio(l2['rate'], dm.get('rate'))}"
                            if l2.get("rate") else "") + ".")
    rss = [f"{fmt(R.get(f'flow-par-extract-{s}').get('rss_max'), 1)} MiB at {SET_NAMES[s]} records"
           for s in sets if R.get(f"flow-par-extract-{s}").get("rss_max")]
    rss_map = [f"{fmt(R.get(f'flow-par-map-{s}').get('rss_max'), 1)} MiB" for s in sets
               if R.get(f"flow-par-map-{s}").get("rss_max")]
    if rss:
        lines.append("- **flow peak RSS** (largest run, default extract): " + ", ".join(rss)
                     + (f"; with the Lua mapping {', '.join(rss_map)}" if rss_map else "") + ".")
    cold = {t: R.get(f"{t}-cold-d1p").get("wall") for t in ("flow-par", "dlt", "airbyte")}
    if cold["flow-par"]:
        lines.append(f"- **cold start** (one page): flow {fmt(cold['flow-par'] * 1000, 1)} ms, dlt "
                     f"{fmt((cold['dlt'] or 0) * 1000, 0)} ms, Airbyte {fmt((cold['airbyte'] or 0) * 1000, 0)} ms.")
    idm, pm, pe = R.get("flow-identity-map-d100k"), R.get("flow-par-map-d100k"), R.get("flow-par-extract-d100k")
    big = "d1m" if R.get("flow-par-map-d1m").get("wall") else "d100k"
    bm, b2, be, bs = (R.get(f"flow-{k}-{big}").get("wall") for k in ("par-map", "lua2-map", "par-extract", "seq-extract"))
    if pair:
        s, rounds = pair
        one = [m / e for e, m, _ in rounds]
        two = [m2 / e for e, _, m2 in rounds]
        lines.append(f"- **Lua mapping in flow** ({SET_NAMES[s]} records, the jobs taking turns, {len(rounds)} rounds): "
                     f"the mapped job takes {statistics.median(one):.2f}× the wall time of the plain extract "
                     f"({min(one):.2f}–{max(one):.2f}), {statistics.median(two):.2f}× in two Lua states "
                     f"({min(two):.2f}–{max(two):.2f}).")
    elif bm and be:
        two = f", {fmt(b2 / be, 2)}× in two Lua states" if b2 else ""
        seq = f" ({fmt(b2 / bs, 2)}× the extract over one connection)" if b2 and bs else ""
        lines.append(f"- **Lua mapping in flow** ({'1 000 000' if big == 'd1m' else '100 000'} records): the mapped job "
                     f"takes {fmt(bm / be, 2)}× the wall time of the plain extract{two}{seq}.")
    if idm.get("wall") and pm.get("wall") and pe.get("wall"):
        per, ident = (pm["wall"] - pe["wall"]) * 10, (idm["wall"] - pe["wall"]) * 10
        lines.append(f"- **What the mapping costs** (100 000 records): {fmt(per, 1)} µs a record more than the plain "
                     f"extract; a Lua step that returns its input unchanged costs {fmt(ident, 1)} µs, so "
                     + ("most of it is in passing records through Lua." if ident > per / 2 else
                        "most of it is the script's own reads and writes of fields."))
    dl = {t: R.get(f"{t}-delay-d100k").get("wall") for t in ("curl", "flow-seq", "flow-par", "flow-par8", "dlt", "airbyte")}
    if dl["flow-seq"]:
        lines.append(f"- **{delay} ms a page** (100 000 records, floor 10 s on one connection): flow {fmt(dl['flow-seq'])} s "
                     f"over one connection, {fmt(dl['flow-par'])} s by default (4 pages at once, growing to 8: "
                     f"{ratio(dl['flow-seq'], dl['flow-par'])} as fast), {fmt(dl['flow-par8'])} s with `parallel: 8`; "
                     f"curl {fmt(dl['curl'])} s, "
                     f"dlt {fmt(dl['dlt'])} s, Airbyte {fmt(dl['airbyte'])} s.")
    cu, cl = R.get("flow-create-unlimited"), R.get("flow-create-limited")
    c1, c16 = R.get("flow-create-slow-c1"), R.get("flow-create-slow-c16")
    if cu.get("wall"):
        lines.append(f"- **creates**: {fmt(cu['records'] / cu['wall'])} POSTs/s with no limit (16 at once); "
                     + (f"{fmt(cl['records'] / cl['wall'], 2)} POSTs/s against the 10/s budget" if cl.get("wall") else "")
                     + (f"; against a server that takes {m.get('create_delay_ms', 10)} ms a create, "
                        f"{fmt(c16['records'] / c16['wall'], 1)} POSTs/s 16 at once ÷ {fmt(c1['records'] / c1['wall'], 1)} "
                        f"one at a time = {ratio(c16['records'] / c16['wall'], c1['records'] / c1['wall'])}"
                        if c1.get("wall") and c16.get("wall") else "")
                     + ".")
    w("\n".join(lines) + "\n")

    # --- notes
    notes = []
    for fid, f in R.figures.items():
        if f.get("error"):
            notes.append(f"- `{fid}` failed:\n\n```\n{f['error'].strip()}\n```")
        if f.get("mismatch"):
            notes.append(f"- `{fid}`: {f['mismatch'].strip()}")
    for s in sets:
        for conns in (1, 8):
            k = R.wrk(s, conns)
            if k and k["bad"]:
                notes.append(f"- wrk {s} -c{conns}: {k['bad']} answers were not 2xx.")
    load = m.get("load", "").split()
    if load and float(load[0]) > 1.0:
        notes.append(f"- The 1-minute load average was {load[0]} before the benchmark started anything: other work "
                     "was running on this 2-core machine during the run. It slows every tool and adds noise; "
                     "compare figures within one table rather than across runs.")
    if quick:
        notes.append("- Quick mode (`--quick`): 100 000 records only, 3 runs a figure; "
                     "`bench/run.sh` without it adds 1 000 000 records and takes 5 runs.")
    if notes:
        w("## Notes\n")
        w("\n".join(notes) + "\n")
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    if sys.argv[1] == "--check-mapped":
        check_mapped(sys.argv[2])
    else:
        main(sys.argv[1])
