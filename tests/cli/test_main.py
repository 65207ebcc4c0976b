"""`traffic`: each command's help line is written once (the table), and only the chosen module is imported."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time

import pytest

from cli.main import COMMANDS, _chosen_command, _HelpFromTable, build_parser, main


@pytest.mark.parametrize(("name", "module", "help_line"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_each_module_registers_its_command_with_the_tables_help_line(name: str, module: str, help_line: str) -> None:
    subparsers = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).register(_HelpFromTable(subparsers, help_line))
    assert [(a.dest, a.help) for a in subparsers._choices_actions] == [(name, help_line)]


def test_a_module_that_writes_its_own_help_line_is_refused() -> None:
    subparsers = _HelpFromTable(argparse.ArgumentParser().add_subparsers(), "from the table")
    with pytest.raises(TypeError, match="written once"):
        subparsers.add_parser("x", help="a second copy")


def test_chosen_command_is_the_first_word_that_is_not_an_option() -> None:
    assert _chosen_command(["--help"]) is None
    assert _chosen_command(["serve", "--port", "8000"]) == "serve"
    assert _chosen_command(["-h", "platform", "status"]) == "platform"


def test_help_lists_every_command_without_importing_any(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    listing = capsys.readouterr().out
    for name, _, help_line in COMMANDS:
        assert name in listing and help_line.split()[0] in listing


def test_full_parser_still_builds_every_command() -> None:
    args = build_parser().parse_args(["topics", "list"])
    assert args.command == "topics" and callable(args.func)


def test_serve_and_help_do_not_import_beam() -> None:
    code = ("import sys; from cli.main import build_parser, _chosen_command; "
            "build_parser(_chosen_command(['serve'])).parse_args(['serve']); import api.app; "
            "print(sorted(m for m in ('apache_beam', 'sklearn', 'ml.train') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_sigterm_interrupts_like_ctrl_c_and_the_previous_handler_comes_back() -> None:
    import os
    import signal

    from cli.main import _sigterm_interrupts

    before = signal.getsignal(signal.SIGTERM)
    restore = _sigterm_interrupts()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler runs between bytecodes of the main thread
                time.sleep(0.01)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_long_command_stopped_with_sigterm_exits_130_with_one_line_and_registers_nothing(tmp_path) -> None:
    import os
    import queue
    import signal
    import threading

    registry = tmp_path / "models"
    env = {**os.environ, "TRAFFIC_FEATURE_TABLES": str(tmp_path / "tables")}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "train", "--quick", "--registry", str(registry)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stderr() -> None:
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    err: list[str] = []
    try:
        # The long part has started once the batch pipeline builds the feature tables.
        while not any("batch features: network metr-la" in line for line in err):
            line = lines.get(timeout=300)
            assert line is not None, f"train ended before it started training: {''.join(err)}"
            err.append(line)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    while (line := lines.get_nowait() if not lines.empty() else None) is not None:
        err.append(line)
    text = "".join(err)
    assert process.returncode == 130, text
    assert text.strip().splitlines()[-1] == "traffic: interrupted" and "Traceback" not in text
    assert not (registry / "LATEST").exists()
    assert not (tmp_path / "tables" / "quick" / "manifest.json").exists()  # an interrupted build stays stale
