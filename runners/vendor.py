"""Copy the dashboard's npm packages (Leaflet, Swagger UI) into ``api/static/vendor/`` (git-ignored).

``npm ci`` in ``api/`` (run by ``traffic setup``, or by hand)
fills ``api/node_modules``; ``python -m api.vendor`` copies the files the
dashboard loads. ``traffic serve`` copies them itself when ``node_modules`` is
there and refuses to start, with one line saying what to run, when neither is.
This is set-up work, so it lives with the installer (``runners/install.py``) below
``api``, which imports it from here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from config.settings import REPO_ROOT
from schemas.exceptions import TrafficError

__all__ = ["API_DIR", "VENDOR_FILES", "VendorFilesMissing", "copy_vendor", "ensure_vendor", "missing_vendor"]

API_DIR = REPO_ROOT / "api"


class VendorFilesMissing(TrafficError):
    """The dashboard's npm files (Leaflet) are not in ``api/static/vendor/``."""


# destination under static/vendor/ -> source under node_modules/
VENDOR_FILES: dict[str, str] = {
    "leaflet/leaflet.js": "leaflet/dist/leaflet.js",
    "leaflet/leaflet.css": "leaflet/dist/leaflet.css",
    "leaflet/images/layers.png": "leaflet/dist/images/layers.png",
    "leaflet/images/layers-2x.png": "leaflet/dist/images/layers-2x.png",
    "leaflet/images/marker-icon.png": "leaflet/dist/images/marker-icon.png",
    "leaflet/images/marker-icon-2x.png": "leaflet/dist/images/marker-icon-2x.png",
    "leaflet/images/marker-shadow.png": "leaflet/dist/images/marker-shadow.png",
    "leaflet/LICENSE": "leaflet/LICENSE",
    # the OpenAPI page (/docs) is served locally too, so it works offline
    "swagger-ui/swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui/swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "swagger-ui/favicon-32x32.png": "swagger-ui-dist/favicon-32x32.png",
    "swagger-ui/LICENSE": "swagger-ui-dist/LICENSE",
}


def missing_vendor(static_dir: Path = API_DIR / "static") -> list[str]:
    return [dest for dest in VENDOR_FILES if not (static_dir / "vendor" / dest).is_file()]


def copy_vendor(node_modules: Path = API_DIR / "node_modules", static_dir: Path = API_DIR / "static") -> int:
    """Copy every vendor file; returns how many were copied. Raises VendorFilesMissing."""
    absent = [src for src in VENDOR_FILES.values() if not (node_modules / src).is_file()]
    if absent:
        raise VendorFilesMissing(
            f"{node_modules} lacks {absent[0]}: run `npm ci` in {API_DIR} (or `traffic setup`)"
        )
    for dest, src in VENDOR_FILES.items():
        target = static_dir / "vendor" / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(node_modules / src, target)
    return len(VENDOR_FILES)


def ensure_vendor(static_dir: Path = API_DIR / "static", node_modules: Path = API_DIR / "node_modules") -> None:
    """Make sure the dashboard's vendor files are served: copy them if needed, else raise one clear line."""
    if not missing_vendor(static_dir):
        return
    if node_modules.is_dir():
        copy_vendor(node_modules, static_dir)
        return
    raise VendorFilesMissing(
        f"dashboard files missing in {static_dir / 'vendor'} (Leaflet, Swagger UI): run `npm ci` in {API_DIR} "
        "and `python -m api.vendor`, or `traffic setup`"
    )

