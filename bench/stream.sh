#!/usr/bin/env bash
# Streams N records (default 1 000 000) through read -> lua -> write with the
# release build and reports wall time, records/s and peak memory (RSS), once
# for N and once for N/10, to show that memory does not grow with the data.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
python3 - "$n" "$work" <<'PY'
import json, sys
n, work = int(sys.argv[1]), sys.argv[2]
for count, name in ((n, "big"), (max(n // 10, 1), "small")):
    with open(f"{work}/{name}.jsonl", "w") as f:
        for i in range(count):
            f.write(json.dumps({"id": i, "name": f"Lead {i}", "phone": f"8 (912) {i % 1000:03d}-{i % 100:02d}-{(i // 7) % 100:02d}",
                                "company": "ООО Ромашка", "email": f"lead{i}@example.ru"}, ensure_ascii=False) + "\n")
PY
for name in small big; do
  records=$(wc -l < "$work/$name.jsonl")
  /usr/bin/time -f "%e %M" -o "$work/time" ./target/release/flow run bench/stream.yaml -q \
    -i "source=$work/$name.jsonl" -i "out=$work/out.jsonl" > /dev/null
  read -r wall rss < "$work/time"
  python3 -c "import sys; w,r,n=float(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3]); print(f'{n:>9} records  {w:6.2f} s  {n/w:>10,.0f} records/s  peak RSS {r/1024:6.1f} MiB')" "$wall" "$rss" "$records"
done
