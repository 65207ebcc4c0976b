"""What the API knows about the current model: the registry's latest version and its metadata.

The API does not run the model (the streaming job does); it shows which
version is current and its validation metrics, and ``POST /admin/model/reload``
re-reads the registry after a new model was trained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ml.exceptions import ModelRegistryError

__all__ = ["ModelInfo"]


class ModelInfo:
    """The registry's current model, cached until :meth:`reload`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.version: str | None = None
        self.metadata: dict[str, Any] | None = None
        self.loaded_at_ms: int | None = None
        self.error: str | None = None

    def _registry(self):
        # imported late: the API starts (and reports the registry as down) before any model exists
        from ml.registry import ModelRegistry

        return ModelRegistry(self.root)

    def check(self) -> str:
        """The latest version in the registry (a real read); raises ModelRegistryError."""
        if not self.root.is_dir():
            raise ModelRegistryError(f"model registry {self.root} does not exist (run `traffic train`)")
        version = self._registry().latest_version()
        if not version:
            raise ModelRegistryError(f"model registry {self.root} has no model (run `traffic train`)")
        return str(version)

    def reload(self) -> dict[str, Any]:
        """Re-read the latest version and its ``metadata.json``."""
        try:
            version = self.check()
            path = self.root / version / "metadata.json"
            metadata = json.loads(path.read_text()) if path.exists() else {}
        except (ModelRegistryError, OSError, ValueError) as exc:
            self.error = str(exc)
            raise ModelRegistryError(str(exc)) from None
        self.version, self.metadata, self.error = version, metadata, None
        self.loaded_at_ms = int(time.time() * 1000)
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {
            "registry": str(self.root),
            "version": self.version,
            "loaded_at_ms": self.loaded_at_ms,
            "metadata": self.metadata,
            "error": self.error,
        }
