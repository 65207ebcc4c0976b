"""Errors of the API package (each a one-line message for the ``traffic`` command)."""

from __future__ import annotations

from runners.vendor import VendorFilesMissing
from schemas.exceptions import TrafficError

__all__ = ["ApiError", "BadFilter", "VendorFilesMissing"]


class ApiError(TrafficError):
    """Root of the API package's errors."""


class BadFilter(ApiError):
    """A stream or REST filter that cannot be parsed (answered with HTTP 422)."""
