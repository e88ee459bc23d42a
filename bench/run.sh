#!/usr/bin/env bash
# Compares flow with dlt and Airbyte's declarative CDK on the same jobs
# against a local nginx that serves static Neiros-style deal pages, measures
# the raw limit of that server with wrk and curl, and writes
# bench/RESULTS.md. Not part of the test suite.
#
# Usage: bench/run.sh [--quick]
#   default   100 000 and 1 000 000 records, 5 runs a figure after a warm-up
#             run (the peers at 1 000 000, the 20 ms-delay, rate-limited and
#             Airbyte-mapping jobs take 3), about half an hour on 2 cores
#   --quick   100 000 records only, 3 runs a figure (no warm-up for the slow
#             jobs), about 8 minutes
# Environment:
#   FLOW_BENCH_NO_BUILD=1   use target/release/flow as it is (no cargo build)
#   FLOW_BENCH_PORT=P       nginx listens on 127.0.0.1:P, the delaying proxies
#                           on P+1 (pages, 20 ms) and P+2 (creates, 10 ms)
#                           (default 18080)
# Needs: python3 (with venv), nginx, wrk, hyperfine, curl, GNU time
# (apt-get install -y nginx-light wrk hyperfine time curl). dlt and
# airbyte-cdk are installed from PyPI into bench/.venv-dlt and
# bench/.venv-airbyte on the first run. Raw measurements stay in
# bench/.results/.
set -euo pipefail

# Moves to the repository's root; sets root, bench and flow.
# shellcheck source=bench/server.sh
source "$(dirname "$0")/server.sh"

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) echo "usage: bench/run.sh [--quick]" >&2; exit 2 ;;
esac

# Data sets: name, records. d1p (one page) is the cold-start job's.
if (( quick )); then
  sets=(d100k)
  runs=3           # runs a figure, after one warm-up run
  peer_big_runs=3  # the peers' runs at 1 000 000 records (unused in quick mode)
  slow_runs=3      # the 20 ms-delay, rate-limited and Airbyte-mapping jobs
  slow_warmup=0    # their warm-up runs: none, to keep --quick quick
  limited_n=100    # create requests under the 10/s limit
  slow_c1_n=100    # creates one at a time against the 10 ms server
  slow_c16_n=1000  # creates 16 at a time against it
  wrk_secs=5
else
  sets=(d100k d1m)
  runs=5
  peer_big_runs=3
  slow_runs=3
  slow_warmup=1
  limited_n=300
  slow_c1_n=200
  slow_c16_n=2000
  wrk_secs=10
fi
declare -A records=([d100k]=100000 [d1m]=1000000 [d1p]=200)
unlimited_n=10000
port=${FLOW_BENCH_PORT:-18080}
proxy_port=$((port + 1))
delay_ms=20
create_proxy_port=$((port + 2))
create_delay_ms=10

for tool in python3 nginx wrk hyperfine curl /usr/bin/time; do
  command -v "$tool" > /dev/null || { echo "bench: $tool is missing" >&2; exit 2; }
done

# --- flow and the peers -----------------------------------------------------

if [[ -z ${FLOW_BENCH_NO_BUILD:-} ]]; then
  cargo build --release --quiet
fi
[[ -x $flow ]] || { echo "bench: $flow is missing (build it, or unset FLOW_BENCH_NO_BUILD)" >&2; exit 2; }

# Creates bench/.venv-NAME from peers/requirements-NAME.txt unless it holds
# exactly those requirements already.
ensure_venv() {
  local name=$1 venv=$bench/.venv-$1 req=$bench/peers/requirements-$1.txt
  if ! cmp -s "$req" "$venv/.requirements" 2> /dev/null; then
    echo "bench: installing $name into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$req"
    cp "$req" "$venv/.requirements"
  fi
}
ensure_venv dlt
ensure_venv airbyte
dlt_py=$bench/.venv-dlt/bin/python
airbyte_py=$bench/.venv-airbyte/bin/python

# --- scratch space, results, clean-up ---------------------------------------

work=$(mktemp -d /tmp/flow-bench.XXXXXX)
chmod 755 "$work"   # nginx's workers run as nobody
# A copy of the binary, so that a build during the run cannot change it.
cp "$flow" "$work/flow"
flow_built=$(date -u -r "$flow" '+%Y-%m-%d %H:%M UTC')
flow=$work/flow
res=$bench/.results
rm -rf "$res"
mkdir -p "$res"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }
started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the data server --------------------------------------------------------

log "generating pages"
gen_args=()
for set in "${sets[@]}" d1p; do gen_args+=("$set:${records[$set]}"); done
python3 "$bench/gen_data.py" "$work/www" "${gen_args[@]}" --items "$unlimited_n"
head -n "$limited_n" "$work/www/items.jsonl" > "$work/www/items_limited.jsonl"

token="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
export BENCH_TOKEN=$token

bench_nginx "$work" "$port" "$token"
pids+=($!)
python3 "$bench/delay_proxy.py" "$proxy_port" "$port" "$delay_ms" &
pids+=($!)
# Creates answered 10 ms late, for what concurrency buys against a slow API.
python3 "$bench/delay_proxy.py" "$create_proxy_port" "$port" "$create_delay_ms" &
pids+=($!)

base=http://127.0.0.1:$port
slow=http://127.0.0.1:$proxy_port
slow_create=http://127.0.0.1:$create_proxy_port
for _ in $(seq 50); do
  curl -sf -o /dev/null -H "Authorization: Bearer $token" "$slow/d1p/projects?page=1" && break
  sleep 0.1
done
# The server refuses a missing token and answers the right one.
[[ $(curl -s -o /dev/null -w '%{http_code}' "$base/d100k/projects?page=1") == 401 ]]
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/d100k/projects?page=1") == 200 ]]

# --- measuring --------------------------------------------------------------

# index.tsv: one line per figure, read by report.py:
# id, job, data set, tool, records, runs, warm-up runs, status
printf 'id\tjob\tset\ttool\trecords\truns\twarmup\tstatus\n' > "$res/index.tsv"

# measure ID JOB SET TOOL RECORDS RUNS PREPARE -- COMMAND...
# Runs COMMAND $warmup times (1 unless set) to warm up and RUNS times under
# hyperfine, each time under GNU time for CPU seconds and peak RSS; PREPARE
# (a shell command) runs before each. A failure is recorded with its output,
# not fatal.
warmup=1
measure() {
  local id=$1 job=$2 set=$3 tool=$4 n=$5 nruns=$6 prepare=$7
  shift 8
  local cmd status=ok
  printf -v cmd '%q ' "$@"
  log "$id: $warmup + $nruns runs"
  rm -f "$res/$id.time"
  if ! hyperfine --style none --warmup "$warmup" --runs "$nruns" --prepare "$prepare" \
      --export-json "$res/$id.json" \
      "/usr/bin/time -f '%e %U %S %M' -a -o $res/$id.time $cmd" > "$res/$id.hyperfine.txt" 2>&1; then
    status=failed
    { echo "\$ $cmd"; bash -c "$prepare; $cmd" 2>&1 | tail -n 20; } > "$res/$id.error" || true
    log "$id FAILED: $(tail -n 3 "$res/$id.error" | tr '\n' ' ')"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$job" "$set" "$tool" "$n" "$nruns" "$warmup" "$status" >> "$res/index.tsv"
}

# check ID EXPECTED FILE...: the records the last run wrote, noted for the report.
check() {
  local id=$1 want=$2 got
  shift 2
  got=$(cat "$@" 2> /dev/null | wc -l)
  echo "$got" > "$res/$id.count"
  if [[ $got != "$want" ]]; then
    log "$id wrote $got records, expected $want"
    echo "wrote $got records, expected $want" >> "$res/$id.mismatch"
  fi
}

# check_files ID EXPECTED FILE...: the same for curl, which writes a file a page.
check_files() {
  local id=$1 want=$2
  shift 2
  echo "$#" > "$res/$id.count"
  if [[ $# != "$want" ]]; then
    log "$id wrote $# pages, expected $want"
    echo "wrote $# pages, expected $want" >> "$res/$id.mismatch"
  fi
}

# check_mapped ID FILE...: the first record of a mapped output is what
# map_deal.lua promises (renamed fields, a +7 phone).
check_mapped() {
  local id=$1
  python3 "$bench/report.py" --check-mapped "$2" >> "$res/$id.mismatch" || true
  [[ -s $res/$id.mismatch ]] || rm -f "$res/$id.mismatch"
}

out=$work/out
fresh="rm -rf $out && mkdir -p $out"
flow_run=("$flow" -q --providers "$bench/providers" run --no-state)

# flow_job ID JOB SET RUNS WORKFLOW [URL]: a flow extract workflow to $out/deals.jsonl.
flow_job() {
  local id=$1 job=$2 set=$3 nruns=$4 wf=$5 url=${6:-$base}
  measure "$id" "$job" "$set" flow "${records[$set]}" "$nruns" "$fresh" -- \
    env "FLOW_BENCH_BASE_URL=$url/$set" "${flow_run[@]}" "$bench/$wf" -i "out=$out/deals.jsonl"
  check "$id" "${records[$set]}" "$out/deals.jsonl"
}
# dlt_job ID JOB SET RUNS MODE [URL]
dlt_job() {
  local id=$1 job=$2 set=$3 nruns=$4 mode=$5 url=${6:-$base}
  measure "$id" "$job" "$set" dlt "${records[$set]}" "$nruns" "$fresh" -- \
    "$dlt_py" "$bench/peers/dlt_job.py" "$mode" "$url/$set" "$out/files" "$out/pipelines"
  check "$id" "${records[$set]}" "$out"/files/bench/deals/*.jsonl
}
# airbyte_job ID JOB SET RUNS MANIFEST [URL]
airbyte_job() {
  local id=$1 job=$2 set=$3 nruns=$4 manifest=$5 url=${6:-$base}
  measure "$id" "$job" "$set" airbyte "${records[$set]}" "$nruns" "$fresh" -- \
    "$airbyte_py" "$bench/peers/airbyte_job.py" "$bench/peers/$manifest" "$url/$set" "$out/deals.jsonl"
  check "$id" "${records[$set]}" "$out/deals.jsonl"
}

# --- the raw limit ----------------------------------------------------------

for set in "${sets[@]}"; do
  pages=$(( ${records[$set]} / 200 ))
  for conns in 1 8; do
    threads=$(( conns == 1 ? 1 : 2 ))
    log "wrk $set -c$conns"
    wrk -t"$threads" -c"$conns" -d"${wrk_secs}s" -s "$bench/wrk_pages.lua" "$base" -- "$set" "$pages" "$token" \
      > "$res/wrk-$set-c$conns.txt"
  done
  # curl fetch-and-save of every page, one connection, then 4 at a time.
  measure "curl-$set" raw "$set" curl "${records[$set]}" "$runs" "$fresh" -- \
    curl -sf -H "Authorization: Bearer $token" "$base/$set/projects?page=[1-$pages]" -o "$out/p#1.json"
  check_files "curl-$set" "$pages" "$out"/p*.json
  measure "curl4-$set" raw "$set" curl-parallel-4 "${records[$set]}" "$runs" "$fresh" -- \
    curl -sf --parallel --parallel-max 4 -H "Authorization: Bearer $token" "$base/$set/projects?page=[1-$pages]" -o "$out/p#1.json"
  check_files "curl4-$set" "$pages" "$out"/p*.json
done

# --- job 1: extract every record into JSON Lines ----------------------------

for set in "${sets[@]}"; do
  big=$(( ${records[$set]} >= 1000000 ))
  peer_runs=$(( big ? peer_big_runs : runs ))
  flow_job "flow-seq-extract-$set" extract "$set" "$runs" extract_seq.yaml
  flow_job "flow-par-extract-$set" extract "$set" "$runs" extract.yaml
  flow_job "flow-offset-extract-$set" extract "$set" "$runs" extract_offset.yaml
  dlt_job "dlt-extract-$set" extract "$set" "$peer_runs" extract
  airbyte_job "airbyte-extract-$set" extract "$set" "$peer_runs" airbyte_manifest.yaml
done

# --- job 2: the same with a per-record mapping ------------------------------

for set in "${sets[@]}"; do
  big=$(( ${records[$set]} >= 1000000 ))
  peer_runs=$(( big ? peer_big_runs : runs ))
  # The Lua step bounds both variants alike: at 1 000 000, the default one only.
  if (( !big )); then
    flow_job "flow-seq-map-$set" map "$set" "$runs" extract_map_seq.yaml
    check_mapped "flow-seq-map-$set" "$out/deals.jsonl"
  fi
  flow_job "flow-par-map-$set" map "$set" "$runs" extract_map.yaml
  check_mapped "flow-par-map-$set" "$out/deals.jsonl"
  # The script in two Lua states (`parallel: 2` on the step).
  flow_job "flow-lua2-map-$set" map "$set" "$runs" extract_map_par2.yaml
  check_mapped "flow-lua2-map-$set" "$out/deals.jsonl"
  # The same through a Lua step that changes nothing: the cost of Lua itself.
  (( big )) || flow_job "flow-identity-map-$set" map "$set" "$runs" extract_identity.yaml
  dlt_job "dlt-map-$set" map "$set" "$peer_runs" map
  check_mapped "dlt-map-$set" "$out"/files/bench/deals/*.jsonl
  # Airbyte's transformations take minutes at 1 000 000 records: 100 000 only.
  if (( !big )); then
    warmup=$slow_warmup airbyte_job "airbyte-map-$set" map "$set" "$slow_runs" airbyte_manifest_map.yaml
    check_mapped "airbyte-map-$set" "$out/deals.jsonl"
  fi
done

# The mapped job's time as a multiple of the plain extract's: the machine's
# speed drifts over minutes, and the figures above were taken minutes apart.
# Here the plain extract and the two mapped jobs take turns, after one round
# to warm up, and the report takes each round's ratio. paired-SET.tsv: the
# wall seconds of each round.
paired_set=${sets[-1]}
paired=$res/paired-$paired_set.tsv
printf 'round\textract\tmap\tmap_lua2\n' > "$paired"
log "paired-$paired_set: 1 + $runs rounds"
for (( round = 0; round <= runs; round++ )); do
  row=$round
  for wf in extract.yaml extract_map.yaml extract_map_par2.yaml; do
    bash -c "$fresh"
    start=$EPOCHREALTIME
    if ! env "FLOW_BENCH_BASE_URL=$base/$paired_set" "${flow_run[@]}" "$bench/$wf" -i "out=$out/deals.jsonl" > /dev/null; then
      log "paired-$paired_set: $wf FAILED"
      continue 2
    fi
    end=$EPOCHREALTIME
    row+=$'\t'$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.4f", b - a }')
  done
  (( round == 0 )) || echo "$row" >> "$paired"
done
check paired-map "${records[$paired_set]}" "$out/deals.jsonl"

# --- job 3: cold start, one page --------------------------------------------

cold_runs=$(( runs * 2 ))
flow_job flow-par-cold-d1p cold d1p "$cold_runs" extract.yaml
dlt_job dlt-cold-d1p cold d1p "$cold_runs" extract
airbyte_job airbyte-cold-d1p cold d1p "$cold_runs" airbyte_manifest.yaml

# --- job 4: extract with every page 20 ms late ------------------------------

# What the delaying proxy itself gives 1, 4 and 8 connections: the most any
# client can get from it.
for conns in 1 4 8; do
  log "wrk delay -c$conns"
  wrk -t1 -c"$conns" -d"${wrk_secs}s" -s "$bench/wrk_pages.lua" "$slow" -- d100k 500 "$token" \
    > "$res/wrk-delay-c$conns.txt"
done
warmup=$slow_warmup measure curl-delay-d100k delay d100k curl 100000 "$slow_runs" "$fresh" -- \
  curl -sf -H "Authorization: Bearer $token" "$slow/d100k/projects?page=[1-500]" -o "$out/p#1.json"
warmup=$slow_warmup flow_job flow-seq-delay-d100k delay d100k "$slow_runs" extract_seq.yaml "$slow"
warmup=$slow_warmup flow_job flow-par-delay-d100k delay d100k "$slow_runs" extract.yaml "$slow"
warmup=$slow_warmup flow_job flow-par8-delay-d100k delay d100k "$slow_runs" extract_par8.yaml "$slow"
warmup=$slow_warmup dlt_job dlt-delay-d100k delay d100k "$slow_runs" extract "$slow"
warmup=$slow_warmup airbyte_job airbyte-delay-d100k delay d100k "$slow_runs" airbyte_manifest.yaml "$slow"

# --- job 5: creates, flow only ----------------------------------------------

# create_job ID WARMUP RUNS N WORKFLOW ITEMS [URL]: the server's log is
# emptied first, so it holds exactly the POSTs of this figure's runs.
create_job() {
  local id=$1 w=$2 nruns=$3 n=$4 wf=$5 items=$6 url=${7:-$base}
  : > "$work/create.log"
  warmup=$w measure "$id" create d100k flow "$n" "$nruns" true -- \
    env "FLOW_BENCH_BASE_URL=$url/d100k" "FLOW_BENCH_LIMITED_BASE_URL=$url/d100k" \
    "${flow_run[@]}" "$bench/$wf" -i "items=$items"
  cp "$work/create.log" "$res/$id.log"
  check "$id" $(( n * (nruns + w) )) "$work/create.log"
}
create_job flow-create-unlimited 1 "$runs" "$unlimited_n" create.yaml "$work/www/items.jsonl"
create_job flow-create-limited "$slow_warmup" "$slow_runs" "$limited_n" create_limited.yaml "$work/www/items_limited.jsonl"
# Against a server that takes 10 ms a create: one at a time, then 16.
head -n "$slow_c1_n" "$work/www/items.jsonl" > "$work/www/items_c1.jsonl"
create_job flow-create-slow-c1 "$slow_warmup" "$slow_runs" "$slow_c1_n" create_c1.yaml "$work/www/items_c1.jsonl" "$slow_create"
head -n "$slow_c16_n" "$work/www/items.jsonl" > "$work/www/items_c16.jsonl"
create_job flow-create-slow-c16 "$slow_warmup" "$slow_runs" "$slow_c16_n" create.yaml "$work/www/items_c16.jsonl" "$slow_create"

# --- the report -------------------------------------------------------------

{
  echo "mode=$( (( quick )) && echo quick || echo full)"
  echo "runs=$runs"
  echo "peer_big_runs=$peer_big_runs"
  echo "slow_runs=$slow_runs"
  echo "slow_warmup=$slow_warmup"
  echo "cold_runs=$cold_runs"
  echo "wrk_secs=$wrk_secs"
  echo "delay_ms=$delay_ms"
  echo "limited_n=$limited_n"
  echo "unlimited_n=$unlimited_n"
  echo "create_delay_ms=$create_delay_ms"
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc=$(nproc)"
  echo "cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
  echo "memory=$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "kernel=$(uname -sr)"
  echo "flow=$("$flow" --version), built $flow_built, sha256 $(sha256sum "$flow" | cut -c1-12)"
  echo "dlt=dlt $("$dlt_py" -c 'import dlt; print(dlt.__version__)')"
  echo "airbyte=airbyte-cdk $("$airbyte_py" -c 'from importlib.metadata import version; print(version("airbyte-cdk"))')"
  echo "python=$("$dlt_py" --version)"
  echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "wrk=$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
  echo "curl=$(curl --version | head -n 1 | cut -d' ' -f1-2)"
  echo "hyperfine=$(hyperfine --version)"
  echo "load=$load_before at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "elapsed=$(( $(date +%s) - started ))"
} > "$res/meta.txt"
python3 "$bench/report.py" "$res" > "$bench/RESULTS.md"
log "wrote bench/RESULTS.md in $(( $(date +%s) - started )) s"
