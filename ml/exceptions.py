"""Errors of the forecasting package."""

from __future__ import annotations

from schemas.exceptions import TrafficError

__all__ = ["MLError", "DataError", "ModelRegistryError"]


class MLError(TrafficError):
    """Root of the forecasting package's errors."""


class DataError(MLError):
    """A data file is missing, unreadable or not shaped like METR-LA."""


class ModelRegistryError(MLError):
    """The model registry has no usable model, or a model cannot be loaded."""
