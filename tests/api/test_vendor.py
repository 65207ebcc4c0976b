"""The dashboard's npm files: copied from node_modules, or a one-line error that says what to run."""

from __future__ import annotations

import pytest

from api.exceptions import VendorFilesMissing
from api.vendor import API_DIR, VENDOR_FILES, copy_vendor, ensure_vendor, missing_vendor


def test_missing_vendor_files_and_no_node_modules_is_one_clear_line(tmp_path):
    with pytest.raises(VendorFilesMissing) as info:
        ensure_vendor(tmp_path / "static", tmp_path / "node_modules")
    message = str(info.value)
    assert "\n" not in message and "npm ci" in message and "python -m api.vendor" in message


def test_vendor_files_are_copied_from_node_modules(tmp_path):
    node_modules = API_DIR / "node_modules"
    if not (node_modules / "leaflet").is_dir():
        pytest.fail("api/node_modules is missing: run `traffic setup --with-test-tools` (npm ci in api/)")
    assert missing_vendor(tmp_path) == list(VENDOR_FILES)
    ensure_vendor(tmp_path, node_modules)
    assert missing_vendor(tmp_path) == []
    assert (tmp_path / "vendor" / "leaflet" / "leaflet.js").read_bytes() == \
        (node_modules / "leaflet" / "dist" / "leaflet.js").read_bytes()


def test_copy_vendor_names_the_absent_package(tmp_path):
    with pytest.raises(VendorFilesMissing, match="leaflet/dist/leaflet.js"):
        copy_vendor(tmp_path / "node_modules", tmp_path / "static")
