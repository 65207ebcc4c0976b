"""One convention for Beam flags (pipelines/beam_flags.py): after `--`, for `traffic batch` and `traffic stream`."""

from __future__ import annotations

import pytest

from cli.main import build_parser, main
from pipelines.beam_flags import beam_flags, parse_args, split_beam_flags


def test_split_at_the_first_double_dash() -> None:
    assert split_beam_flags(["a", "--x", "1"]) == (["a", "--x", "1"], None)
    assert split_beam_flags(["a", "--", "--b=1", "--", "c"]) == (["a"], ["--b=1", "--", "c"])


@pytest.mark.parametrize("command", [["batch", "features"], ["stream"]])
def test_batch_and_stream_take_beam_flags_after_the_dashes(command: list[str]) -> None:
    args = parse_args(build_parser(command[0]), [*command, "--runner", "direct", "--", "--direct_num_workers=2"])
    assert args.runner == "direct" and beam_flags(args) == ["--direct_num_workers=2"]
    assert beam_flags(parse_args(build_parser(command[0]), command)) == []


def test_batch_flags_after_the_mode_stay_the_commands_own() -> None:
    args = parse_args(build_parser("batch"), ["batch", "features", "--data", "d.npz", "--", "--parallelism=1"])
    assert (args.mode, args.data, beam_flags(args)) == ("features", "d.npz", ["--parallelism=1"])


def test_the_old_quoted_beam_args_still_work_and_say_they_are_deprecated(capsys) -> None:
    args = parse_args(build_parser("batch"), ["batch", "features", "--beam-args=--a=1 --b='x y'", "--", "--c=3"])
    assert beam_flags(args) == ["--c=3", "--a=1", "--b=x y"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deprecated" in err[0] and "after --" in err[0]


def test_a_command_without_beam_flags_refuses_the_dashes(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["topics", "list", "--", "--x=1"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "traffic: error: topics takes no Beam flags after --"
