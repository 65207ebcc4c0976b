"""Errors raised by the shared transforms.

Bad records never raise (they become dead letters); these are for mistakes a
user makes when building a pipeline, such as a non-positive window length.
"""

from __future__ import annotations

from schemas.exceptions import TrafficError

__all__ = ["SinkWriteError", "TransformConfigError"]


class TransformConfigError(TrafficError, ValueError):
    """A composite transform was given parameters it cannot work with."""


class SinkWriteError(TrafficError):
    """A sink could not write its output even after retrying (the file system stayed unreachable)."""
