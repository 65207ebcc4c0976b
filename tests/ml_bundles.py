"""Shared by the model tests: a tiny feature context, a registry round trip, and the quick slice's examples.

Importable because tests/ holds the root conftest (like ``small_models``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.dataset import MetrLA, load_metrla
from ml.features import FeatureContext, fit_context
from ml.registry import ModelBundle, ModelRegistry
from ml.train import quick_subset
from ml.training_set import ExampleMeta, examples

__all__ = ["QuickExamples", "assert_same_predictions", "quick_examples", "round_trip", "tiny_context"]


def tiny_context(n: int = 4) -> FeatureContext:
    """A flat context for ``n`` sensors (60 mph profiles, no road graph): enough to build a bundle."""
    return FeatureContext(
        sensor_ids=tuple(f"s{i}" for i in range(n)), profile=np.full((n, 2, 288), 60.0),
        profile_std=np.ones((n, 2, 288)), sensor_mean=np.full(n, 60.0), sensor_std=np.ones(n),
        w_up=np.zeros((n, n)), w_down=np.zeros((n, n)), w_hop2=np.zeros((n, n)), degree_in=np.zeros(n),
        degree_out=np.zeros(n), train_start_ms=0, train_end_ms=1,
    )


def round_trip(bundle: ModelBundle, root: Path) -> ModelBundle:
    """The bundle registered under ``root`` and loaded back (skops, the trusted types)."""
    registry = ModelRegistry(root)
    return registry.load(registry.register(bundle))


def assert_same_predictions(before: dict, after: dict, rtol: float = 1e-5) -> None:
    """Two bundles' ``predict`` results agree at every horizon: forecast, lower and upper bound."""
    assert before.keys() == after.keys()
    for h in before:
        for a, b in zip(before[h], after[h], strict=True):
            np.testing.assert_allclose(a, b, rtol=rtol)


@dataclass(frozen=True)
class QuickExamples:
    """The quick slice, its fitted context, its train and validation examples, and the table ``train`` reads."""

    data: MetrLA
    context: FeatureContext
    x_train: np.ndarray
    x_val: np.ndarray
    table: tuple[np.ndarray, np.ndarray, ExampleMeta]


def quick_examples() -> QuickExamples:
    data = quick_subset(load_metrla())
    ctx = fit_context(data)
    x_tr, y_tr, m_tr = examples(data, ctx, "train")
    x_va, y_va, m_va = examples(data, ctx, "val")
    meta = ExampleMeta(np.concatenate([m_tr.sensor_index, m_va.sensor_index]),
                       np.concatenate([m_tr.step_ms, m_va.step_ms]), m_tr.sensor_ids)
    return QuickExamples(data, ctx, x_tr, x_va, (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), meta))
