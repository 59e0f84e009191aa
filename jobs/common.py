"""What every job's command line shares: the config file and dotted overrides."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TypeVar

from rlhf_ray.config import JobConfig, load_config

C = TypeVar("C", bound=JobConfig)


def add_config_arguments(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    parser.add_argument(
        "--config",
        default=default_config,
        help="YAML config file" + (f" (default: {default_config})" if default_config else " (default: built-in)"),
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied after the YAML file, e.g. seed=3 world.num_prompts=200",
    )


PROMPT_FILE_FLAGS = {"prompts": "train", "eval_prompts": "validation", "test_prompts": "test"}


def add_prompt_file_arguments(parser: argparse.ArgumentParser, section: str, validation_use: str,
                              test_use: str) -> None:
    """`--prompts`, `--eval-prompts`, `--test-prompts`: a user's prompt file per split, set at `section`.train,
    .validation and .test (`prompt_file_flags`)."""
    parser.add_argument("--prompts", help="JSONL/Parquet training prompts, rows with `prompt` or `messages` "
                        f"(sets {section}.train; default: the synthetic world's)")
    parser.add_argument("--eval-prompts", dest="eval_prompts", help=f"validation prompts: {validation_use} "
                        f"(sets {section}.validation)")
    parser.add_argument("--test-prompts", dest="test_prompts", help=f"test prompts, {test_use} (sets {section}.test)")


def prompt_file_flags(section: str) -> dict[str, str]:
    """The flag → dotted field mapping of `add_prompt_file_arguments`."""
    return {flag: f"{section}.{split}" for flag, split in PROMPT_FILE_FLAGS.items()}


def flag_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    """Turn convenience flags (`--out`, `--rows`) into dotted overrides; explicit KEY=VALUE args win."""
    return [f"{key}={getattr(args, flag)}" for flag, key in mapping.items() if getattr(args, flag, None) is not None]


def resolve_config(schema: type[C], args: argparse.Namespace, flags: dict[str, str] | None = None) -> C:
    """Load and validate the job's config before any Ray work starts."""
    overrides: Sequence[str] = [*flag_overrides(args, flags or {}), *args.overrides]
    return load_config(schema, args.config, overrides)
