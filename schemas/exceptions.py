"""The project's root exception and the schema package's own errors.

Every error a user can cause or meet (bad flag values, missing files, a service
that is down, bad records) derives from :class:`TrafficError`, so the ``traffic``
command can print it as a single line instead of a traceback.
"""

from __future__ import annotations

__all__ = ["TrafficError", "SchemaError", "DecodeError"]


class TrafficError(Exception):
    """Root of every error this project raises on purpose."""


class SchemaError(TrafficError):
    """A schema is missing, malformed or incompatible with its history."""


class DecodeError(SchemaError):
    """Bytes that are not a valid record in the Confluent wire format."""
