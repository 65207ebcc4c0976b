"""Fixtures every fault test shares: a small real model, registered once per test module."""

from __future__ import annotations

import pytest
from chaos_harness import SENSORS
from small_models import register_ridge_bundle


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """``(registry root, bundle)``: a ridge model of the first SENSORS sensors, calibrated and registered."""
    root = str(tmp_path_factory.mktemp("registry"))
    return root, register_ridge_bundle(root, SENSORS)
