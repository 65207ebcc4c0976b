"""The per-step inference benchmark times a real registered model alone and in catch-up calls, and says so."""

from __future__ import annotations

import os
import re

from small_models import register_ridge_bundle

from benchmarks.inference_step import main


def test_it_prints_a_row_per_call_size_and_thread_setting(tmp_path, capsys) -> None:
    root = str(tmp_path / "models")
    register_ridge_bundle(root, n_sensors=8)
    assert main(["--registry", root, "--steps", "5", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "(8 sensors; horizons (15, 30, 60)); 5 validation steps" in out
    rows = [line for line in out.splitlines() if re.match(r"(one step a call|catch-up, 2 steps a call) \| ", line)]
    default = f"default ({os.cpu_count()})"
    assert [r.split(" | ")[:2] for r in rows] == [["one step a call", "1"], ["one step a call", default],
                                                   ["catch-up, 2 steps a call", "1"],
                                                   ["catch-up, 2 steps a call", default]]
    for row in rows:
        p50, mean, p99 = (float(v) for v in row.split(" | ")[2].split(" / "))
        assert 0 < p50 <= p99 and 0 < mean


def test_an_empty_registry_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["--registry", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no model registered" in err
