"""``python -m api.vendor``: copy the dashboard's npm files into ``api/static/vendor/`` (see :mod:`runners.vendor`)."""

from __future__ import annotations

import sys

from runners.vendor import API_DIR, VENDOR_FILES, VendorFilesMissing, copy_vendor, ensure_vendor, missing_vendor

__all__ = ["API_DIR", "VENDOR_FILES", "copy_vendor", "ensure_vendor", "missing_vendor"]

if __name__ == "__main__":
    try:
        print(f"copied {copy_vendor()} files into {API_DIR / 'static' / 'vendor'}")
    except VendorFilesMissing as exc:
        print(f"api.vendor: error: {exc}", file=sys.stderr)
        sys.exit(2)
