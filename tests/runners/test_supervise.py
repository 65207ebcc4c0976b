"""runners.platform.supervise: a killed command comes back; a stop ends it; a crash loop is given up on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from runners.platform.supervise import main, supervise


def test_a_killed_command_is_started_again_until_stopped(tmp_path: Path, capsys) -> None:
    starts = tmp_path / "starts"
    # Each start appends a line; the first two kill themselves with SIGKILL, the third stays up.
    script = f'echo x >> {starts}; [ "$(wc -l < {starts})" -ge 3 ] && exec sleep 60; kill -9 $$'
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervise("t", ["sh", "-c", script], delay_s=0.1,
                                                                        stop=stop)))
    thread.start()
    deadline = time.monotonic() + 30
    while not (starts.exists() and len(starts.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline, "the command was not started three times"
        time.sleep(0.1)
    stop.set()
    thread.join(30)
    assert result == [0]
    out = capsys.readouterr().out
    assert out.count("(killed by signal 9); restarting") == 2 and out.rstrip().endswith("stopped")
    assert len(starts.read_text().splitlines()) == 3


def test_a_crash_loop_is_given_up_with_the_commands_exit_code(capsys) -> None:
    assert supervise("t", ["sh", "-c", "exit 3"], delay_s=0.0, max_restarts=2, window_s=60) == 3
    out = capsys.readouterr().out
    assert out.count("restarting") == 2 and "3 exits within 60 s, giving up" in out


def test_no_command_is_a_one_line_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--name", "t"])
    assert exited.value.code == 2
    assert "no command given" in capsys.readouterr().err
