#!/usr/bin/env bash
# Counts the instructions flow spends a record on the benchmark's extract
# jobs, thread by thread, under callgrind. Wall time on a shared machine
# moves by 5-10 % between minutes, more than most changes to the engine are
# worth; instruction counts move by about 1 % (Lua seeds its string hash
# afresh each run), so two builds can be compared here. Not part of the
# test suite.
#
# Usage: bench/profile.sh [RECORDS] [WORKFLOW...]
#   RECORDS    records served, a multiple of 200 (default 100000)
#   WORKFLOW   bench/ jobs to count (default: extract.yaml, extract_map.yaml,
#              extract_identity.yaml)
# Environment:
#   FLOW_BENCH_NO_BUILD=1   use target/release/flow as it is (no cargo build)
#   FLOW_BENCH_PORT=P       nginx listens on 127.0.0.1:P (default 18070)
# Needs: valgrind, nginx, python3, curl (apt-get install -y valgrind
# nginx-light curl). Writes bench/.results/profile/: the callgrind files
# (one per thread, for callgrind_annotate) and profile.md, the table printed
# at the end. A build with line tables names the source lines too:
# CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release.
set -euo pipefail

# Moves to the repository's root; sets root, bench and flow.
# shellcheck source=bench/server.sh
source "$(dirname "$0")/server.sh"

n=${1:-100000}
shift || true
workflows=("$@")
(( ${#workflows[@]} )) || workflows=(extract.yaml extract_map.yaml extract_identity.yaml)
if ! [[ $n =~ ^[0-9]+$ ]] || (( n == 0 || n % 200 )); then
  echo "usage: bench/profile.sh [RECORDS] [WORKFLOW...]  (RECORDS a multiple of 200)" >&2
  exit 2
fi
for wf in "${workflows[@]}"; do
  [[ -f $bench/$wf ]] || { echo "bench: no workflow bench/$wf" >&2; exit 2; }
done
for tool in valgrind callgrind_annotate nginx python3 curl; do
  command -v "$tool" > /dev/null || { echo "bench: $tool is missing" >&2; exit 2; }
done
port=${FLOW_BENCH_PORT:-18070}

if [[ -z ${FLOW_BENCH_NO_BUILD:-} ]]; then
  cargo build --release --quiet
fi
[[ -x $flow ]] || { echo "bench: $flow is missing (build it, or unset FLOW_BENCH_NO_BUILD)" >&2; exit 2; }

work=$(mktemp -d /tmp/flow-profile.XXXXXX)
chmod 755 "$work"   # nginx's workers run as nobody
res=$bench/.results/profile
rm -rf "$res"
mkdir -p "$res"
nginx_pid=
cleanup() {
  [[ -z $nginx_pid ]] || kill "$nginx_pid" 2> /dev/null || true
  wait 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "bench: $*" >&2; }

log "generating $n records"
python3 "$bench/gen_data.py" "$work/www" "dp:$n" --items 1
token="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
bench_nginx "$work" "$port" "$token"
nginx_pid=$!
base=http://127.0.0.1:$port
for _ in $(seq 50); do
  curl -sf -o /dev/null -H "Authorization: Bearer $token" "$base/dp/projects?page=1" && break
  sleep 0.1
done

for wf in "${workflows[@]}"; do
  id=${wf%.yaml}
  log "$id under callgrind"
  rm -rf "$work/out" && mkdir -p "$work/out"
  env "BENCH_TOKEN=$token" "FLOW_BENCH_BASE_URL=$base/dp" \
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$res/$id.cg" \
    "$flow" -q --providers "$bench/providers" run --no-state "$bench/$wf" -i "out=$work/out/deals.jsonl" \
    > "$res/$id.log" 2>&1 || { log "$id FAILED (see $res/$id.log)"; exit 1; }
  got=$(wc -l < "$work/out/deals.jsonl")
  [[ $got == "$n" ]] || { log "$id wrote $got records, expected $n"; exit 1; }
done

python3 - "$res" "$n" "${workflows[@]}" <<'PY' | tee "$res/profile.md"
import glob, re, subprocess, sys

res, n, workflows = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def total(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 0

def top(path, count=3):
    """The costliest functions of one thread's file, by their own instructions."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                         capture_output=True, text=True, errors="replace").stdout
    names, seen_totals = [], False
    for line in out.splitlines():
        if "PROGRAM TOTALS" in line:
            seen_totals = True
            continue
        m = re.match(r"\s*[\d,]+ \(\s*[\d.]+%\)\s+(.*?)(?: \[.*\])?$", line)
        if seen_totals and m:
            name = m.group(1)
            # "file:function", "???:function" without debug information.
            head, _, rest = name.partition(":")
            if rest and not rest.startswith(":") and ("/" in head or head == "???" or "." in head):
                name = rest
            names.append(name)
            if len(names) == count:
                break
    return ", ".join(f"`{x}`" for x in names)

def num(x):
    return f"{x:,.0f}".replace(",", " ")

print(f"Instructions a record ({num(n)} records, callgrind), by thread; "
      "threads doing under 1 % of a job's work are left out.\n")
print("| job | thread | instructions a record | share | its costliest functions |")
print("|---|---|---|---|---|")
busiest = {}
for wf in workflows:
    job = wf[:-5] if wf.endswith(".yaml") else wf
    threads = sorted(((total(p), p) for p in glob.glob(f"{res}/{job}.cg-*")), reverse=True)
    whole = sum(t for t, _ in threads) or 1
    busiest[job] = (threads[0][0] if threads else 0, whole)
    for t, p in threads:
        if t < whole / 100:
            continue
        print(f"| {job} | {p.rsplit('-', 1)[1]} | {num(t / n)} | {100 * t / whole:.0f} % | {top(p)} |")
    print(f"| {job} | all | {num(whole / n)} | 100 % | |")
if "extract" in busiest:
    base_busy, base_all = busiest["extract"]
    print()
    for job, (busy, whole) in busiest.items():
        if job != "extract":
            print(f"- {job}: {whole / base_all:.2f}x the plain extract's instructions in all, "
                  f"its busiest thread {busy / base_busy:.2f}x the extract's busiest.")
PY
