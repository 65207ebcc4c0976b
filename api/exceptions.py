"""Errors of the API package (each a one-line message for the ``traffic`` command)."""

from __future__ import annotations

from schemas.exceptions import TrafficError

__all__ = ["ApiError", "BadFilter", "VendorFilesMissing"]


class ApiError(TrafficError):
    """Root of the API package's errors."""


class VendorFilesMissing(ApiError):
    """The dashboard's npm files (Leaflet) are not in ``api/static/vendor/``."""


class BadFilter(ApiError):
    """A stream or REST filter that cannot be parsed (answered with HTTP 422)."""
