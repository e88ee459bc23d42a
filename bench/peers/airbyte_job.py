#!/usr/bin/env python3
"""The benchmark's jobs in Airbyte's declarative CDK (run with
bench/.venv-airbyte/bin/python).

Usage: airbyte_job.py MANIFEST BASE_URL OUT_FILE
The bearer token comes from BENCH_TOKEN.

Loads the low-code manifest with the CDK's YamlDeclarativeSource (the class
the CDK's own manifest runner uses), reads the `deals` stream in full, and
writes the data of every RECORD message to OUT_FILE as JSON Lines: what a
destination would receive, without the protocol envelope.
"""

import logging
import os
import sys

import orjson
from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer, Type
from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource


def main(manifest, base_url, out_file):
    config = {"base_url": base_url, "token": os.environ["BENCH_TOKEN"]}
    catalog = ConfiguredAirbyteCatalogSerializer.load({"streams": [{
        "stream": {"name": "deals", "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
        "sync_mode": "full_refresh",
        "destination_sync_mode": "overwrite",
    }]})
    source = YamlDeclarativeSource(manifest, catalog=catalog, config=config, state=[])
    logger = logging.getLogger("airbyte")
    logger.setLevel(logging.WARNING)
    count = 0
    with open(out_file, "wb") as out:
        for message in source.read(logger, config, catalog, []):
            if message.type == Type.RECORD:
                out.write(orjson.dumps(message.record.data))
                out.write(b"\n")
                count += 1
            elif message.type == Type.TRACE and message.trace.error is not None:
                sys.exit(f"airbyte: {message.trace.error.message}")
    if count == 0:
        sys.exit("airbyte: no records read")


if __name__ == "__main__":
    main(*sys.argv[1:4])
