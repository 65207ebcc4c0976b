"""``traffic batch`` (pipelines/batch_cli.py): one-line errors, and a summary that checks the counts add up."""

from __future__ import annotations

from cli.main import main
from pipelines.batch import BatchConfig
from pipelines.batch_cli import summarise
from pipelines.sources import SourceSpec


def test_missing_file_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["batch", "features", "--data", str(tmp_path / "nope.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"traffic: error: data file {tmp_path / 'nope.npz'} does not exist"


def test_bad_time_flag_is_a_one_line_error(capsys) -> None:
    assert main(["batch", "features", "--start", "yesterday"]) == 2
    assert capsys.readouterr().err.strip().startswith("traffic: error: --start 'yesterday' is not a date/time")


def test_summary_checks_that_counts_add_up() -> None:
    cfg = BatchConfig(mode="features", source=SourceSpec(), output="out", sensor_ids=("a",))
    text, ok = summarise(cfg, {"in": 10, "valid": 8, "dead_letters": 2, "late": 1}, 2.0)
    assert ok and "in 10 = valid 8 + dead letters 2 (counts add up); 1 valid events came too late" in text
    text, ok = summarise(cfg, {"in": 10, "valid": 7, "dead_letters": 2}, 2.0)
    assert not ok and "DO NOT ADD UP" in text
