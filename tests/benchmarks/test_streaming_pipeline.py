"""The streaming benchmark's --without flag: which parts of the job it leaves out, and one-line refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.streaming_pipeline import OPTIONAL_PARTS, _parts, main  # noqa: E402


def test_without_names_parts_of_the_job_and_refuses_others(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--without", "scores,gpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("unknown part(s) gpu; choose among scores, incidents, files")
    assert _parts(" scores, files,") == {"scores", "files"}
    assert _parts(",".join(OPTIONAL_PARTS)) == set(OPTIONAL_PARTS)  # all three: only the reference loop's work
