"""benchmarks/perceptron_fit.py: its reference is the shipped perceptron with the one-hot as a sparse matrix."""

from __future__ import annotations

import pytest

from benchmarks import perceptron_fit
from ml.neural import SensorIdentity, SensorIndex, make_mlp
from ml.rowwise_mlp import IndexedOneHotMLPRegressor, RowwiseMLPRegressor


def test_the_reference_is_the_shipped_perceptron_on_a_sparse_one_hot() -> None:
    reference = perceptron_fit._sparse_reference(passes=3)
    shipped = make_mlp().set_params(mlp__max_iter=3)
    (_, ref_inputs), (_, ref_mlp) = reference.steps
    (_, inputs), (_, mlp) = shipped.steps
    assert type(ref_inputs) is SensorIdentity and type(inputs) is SensorIndex
    assert type(ref_mlp) is RowwiseMLPRegressor and type(mlp) is IndexedOneHotMLPRegressor
    assert ref_inputs.key_columns == inputs.key_columns
    assert ref_mlp.get_params() == mlp.get_params() and ref_mlp.max_iter == 3


@pytest.mark.parametrize("flag", ["--rows", "--passes", "--stride", "--repeats"])
def test_a_count_below_one_is_refused_before_any_work(flag, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        perceptron_fit.main([flag, "0"])
    assert exit_info.value.code == 2
    assert "must be positive" in capsys.readouterr().err
