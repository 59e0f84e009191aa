"""`rlhf-ray ingest`: feedback shards → validated, masked, pseudonymized, versioned dataset, with Ray Data
(the pipeline is `actors.ingest`)."""

from __future__ import annotations

import argparse
from typing import Any

from actors.ingest import IngestConfig, ingest
from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.telemetry.sink import sink_for

NAME = "ingest"
HELP = "validate, mask, pseudonymize, de-duplicate and version feedback shards with Ray Data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="shard directory or URI (sets input)")
    parser.add_argument("--out", help="output directory or URI (sets output_dir)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(IngestConfig, args, {"input": "input", "out": "output_dir"}))


def run(config: IngestConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = ingest(config)
    sink.log({k: v for k, v in figures.items() if not isinstance(v, list | dict)})
    return sink.close(figures)
