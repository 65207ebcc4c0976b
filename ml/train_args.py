"""The flags of ``traffic train`` and their checks (the training itself is ``ml.train``)."""

from __future__ import annotations

import argparse

from ml.exceptions import DataError
from ml.models import CANDIDATE_NAMES, DEFAULT_CANDIDATES, parse_candidates
from ml.network import add_network_argument

__all__ = ["QUICK_DAYS", "QUICK_SENSORS", "add_arguments", "check_arguments"]

QUICK_SENSORS = 12
QUICK_DAYS = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The training flags of ``traffic train`` (the command itself is ``cli/train_cmd.py``)."""
    add_network_argument(p)
    p.add_argument("--data", help="the network's readings as .npz or .h5, or raw-reading Parquet (local or "
                   "hdfs://); default: the network's own")
    p.add_argument(
        "--features",
        help="train on these Parquet feature tables (the batch pipeline's features/ directory with train/ and val/, "
        "or one table; local or hdfs://) instead of the ones `traffic train` keeps up to date itself; "
        "the feature context comes from context.npz beside them, else is fitted on --data",
    )
    p.add_argument("--registry",
                   help="registry root, local or hdfs:// (default: $TRAFFIC_MODEL_REGISTRY or <work>/models)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SENSORS} sensors, {QUICK_DAYS + 2} days, tiny models")
    p.add_argument("--coverage", type=float, default=0.9, help="nominal interval coverage (default 0.9)")
    p.add_argument("--max-rows", type=int, help="cap the training rows of every learned candidate")
    p.add_argument(
        "--candidates",
        help="comma-separated candidate models to fit and select from, or 'all' for every one "
        f"({', '.join(CANDIDATE_NAMES)}); default: {', '.join(DEFAULT_CANDIDATES)} (--quick: all)",
    )


def check_arguments(args: argparse.Namespace) -> tuple[str, ...] | None:
    """Refuse bad training flags before any work; the chosen candidates (None: the default set)."""
    if not 0.0 < args.coverage < 1.0:
        raise DataError(f"--coverage must be between 0 and 1, got {args.coverage}")
    candidates = parse_candidates(args.candidates)
    if args.max_rows is not None and args.max_rows < 1000:
        raise DataError(f"--max-rows must be at least 1000, got {args.max_rows}")
    return candidates
