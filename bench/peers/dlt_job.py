#!/usr/bin/env python3
"""The benchmark's jobs in dlt (run with bench/.venv-dlt/bin/python).

Usage: dlt_job.py extract|map|offset BASE_URL OUT_DIR WORK_DIR
The bearer token comes from BENCH_TOKEN.

A `rest_api` source (bearer auth, page-number paginator reading
`last_page`, or an offset paginator that stops on an empty page) loaded by a
pipeline into the filesystem destination as uncompressed JSON Lines under
OUT_DIR. `map` adds the per-record mapping of bench/map_deal.lua with
`add_map`. WORK_DIR holds the pipeline's own state, fresh for every run.
"""

import os
import re
import sys

# Before dlt is imported: no telemetry (there is no internet here), plain
# .jsonl files rather than gzipped ones, and only warnings in the log.
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
os.environ["DATA_WRITER__DISABLE_COMPRESSION"] = "true"
os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"

import dlt  # noqa: E402
from dlt.sources.rest_api import rest_api_source  # noqa: E402

NOT_DIGIT = re.compile(r"\D")


def normalise_phone(phone):
    """A Russian number as +7XXXXXXXXXX, or None."""
    digits = NOT_DIGIT.sub("", phone or "")
    if len(digits) == 11 and digits[0] in "78":
        return "+7" + digits[1:]
    if len(digits) == 10:
        return "+7" + digits
    return None


def map_deal(r):
    """The mapping of bench/map_deal.lua."""
    r["deal_id"] = r.pop("id")
    r["client_name"] = r.pop("name")
    r["amount"] = r.pop("summ")
    r["phone"] = normalise_phone(r.get("phone"))
    return r


def main(mode, base_url, out_dir, work_dir):
    if mode == "offset":
        endpoint = {"path": "offset", "data_selector": "data.projects"}
        paginator = {"type": "offset", "limit": 200, "offset_param": "offset",
                     "limit_param": "count", "total_path": None}
    else:
        endpoint = {"path": "projects", "data_selector": "data.projects"}
        paginator = {"type": "page_number", "base_page": 1, "page_param": "page",
                     "total_path": "last_page"}
    source = rest_api_source({
        "client": {
            "base_url": base_url.rstrip("/") + "/",
            "auth": {"type": "bearer", "token": os.environ["BENCH_TOKEN"]},
            "paginator": paginator,
        },
        "resources": [{"name": "deals", "endpoint": endpoint}],
    })
    if mode == "map":
        source.resources["deals"].add_map(map_deal)
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        pipelines_dir=work_dir,
        destination=dlt.destinations.filesystem(bucket_url=os.path.abspath(out_dir)),
        dataset_name="bench",
    )
    pipeline.run(source, loader_file_format="jsonl")


if __name__ == "__main__":
    main(*sys.argv[1:5])
