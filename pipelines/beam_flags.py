"""One convention for Beam's own flags on ``traffic batch`` and ``traffic stream``: after ``--``.

    traffic batch features --data d.npz -- --direct_num_workers=1
    traffic stream --runner flink -- --checkpointing_interval=10000

The command's own flags come before ``--``; every word after it goes to Beam's
``PipelineOptions`` unchanged. ``traffic batch``'s old ``--beam-args='...'`` (one
quoted string) still works for now and says on stderr that it is deprecated.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

__all__ = ["accepts_beam_flags", "beam_flags", "parse_args", "split_beam_flags"]


def accepts_beam_flags(parser: argparse.ArgumentParser, example: str) -> None:
    """Declare that the command takes Beam flags after ``--`` (``example`` is shown in its ``--help``)."""
    parser.set_defaults(beam_args=[])
    note = f"Beam pipeline options go after --, e.g. {example}"
    parser.epilog = f"{parser.epilog}\n\n{note}" if parser.epilog else note


def split_beam_flags(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """``argv`` before the first ``--``, and the words after it (None when there is no ``--``)."""
    words = list(argv)
    if "--" not in words:
        return words, None
    cut = words.index("--")
    return words[:cut], words[cut + 1:]


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse the words before ``--`` with ``parser``; the rest become ``beam_args`` (refused by other commands)."""
    own, beam = split_beam_flags(argv)
    args = parser.parse_args(own)
    if beam is not None:
        if not hasattr(args, "beam_args"):
            command = getattr(args, "command", None)
            parser.error(f"{command or parser.prog} takes no Beam flags after --")
        args.beam_args = beam
    return args


def beam_flags(args: argparse.Namespace) -> list[str]:
    """The Beam flags of a parsed command: the words after ``--``, then a deprecated ``--beam-args`` string's."""
    flags = list(getattr(args, "beam_args", None) or [])
    deprecated = getattr(args, "beam_args_string", None)
    if deprecated:
        print("traffic: --beam-args is deprecated: give Beam flags after --, e.g. -- --direct_num_workers=1",
              file=sys.stderr)
        flags += shlex.split(deprecated)
    return flags
