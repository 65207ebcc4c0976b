"""`traffic setup`: the step plan, stamp keys, a failing step's message, and that a second run is cached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import runners.install as install_mod
from config.settings import REPO_ROOT, PlatformSettings
from runners.install import JAR_PROFILES, InstallError, InstallLayout, install, plan


def test_plan_lists_jars_flink_and_go_tools_in_order(tmp_path: Path) -> None:
    names = [step.name for step in plan(PlatformSettings(cache_dir=tmp_path))]
    assert names == ["jars-kafka", "jars-hadoop", "jars-flink-jobserver", "flink", "prism", "boot", "npm-api",
                     "apt-postgresql"]
    with_tools = [step.name for step in plan(PlatformSettings(cache_dir=tmp_path), with_test_tools=True)]
    assert with_tools == [*names, "apt-test-tools"]


def test_layout_paths_live_under_the_cache(tmp_path: Path) -> None:
    layout = InstallLayout(tmp_path)
    assert layout.classpath("kafka") == f"{tmp_path}/jars/kafka/*"
    assert layout.flink_home == tmp_path / "flink-1.19.3" / "pyflink"
    assert layout.prism == tmp_path / "bin" / "prism"
    assert layout.boot == tmp_path / "bin" / "boot"


def test_pom_has_one_profile_per_jar_step() -> None:
    pom = (REPO_ROOT / "runners" / "pom.xml").read_text()
    for profile in JAR_PROFILES:
        assert f"<id>{profile}</id>" in pom
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<artifactId>beam-runners-flink-1.19</artifactId>" in pom


def test_pom_key_changes_only_for_the_edited_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text((REPO_ROOT / "runners" / "pom.xml").read_text())
    monkeypatch.setattr(install_mod, "POM_PATH", pom)
    before = {p: install_mod._pom_key(p) for p in JAR_PROFILES}
    pom.write_text(pom.read_text().replace("<version>${hadoop.version}</version>", "<version>3.4.0</version>", 1))
    after = {p: install_mod._pom_key(p) for p in JAR_PROFILES}
    assert after["hadoop"] != before["hadoop"]
    assert after["kafka"] == before["kafka"]
    assert after["flink-jobserver"] == before["flink-jobserver"]


def test_failing_step_names_the_step_and_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "pom.xml"
    broken.write_text("<project><modelVersion>4.0.0</modelVersion><not-closed></project>")
    monkeypatch.setattr(install_mod, "POM_PATH", broken)
    settings = PlatformSettings(cache_dir=tmp_path / "cache")
    lines: list[str] = []
    with pytest.raises(InstallError) as caught:
        install(settings, only=["jars-kafka"], echo=lines.append)
    log = tmp_path / "cache" / "logs" / "setup-jars-kafka.log"
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("setup step 'jars-kafka' failed")
    assert f"read {log}" in message
    assert "mvn" in log.read_text()
    assert lines == [f"setup: [1/1] JVM jars (kafka): installing (log: {log})"]
    assert not (tmp_path / "cache" / "stamps" / "jars-kafka.stamp").exists()


@pytest.mark.integration
def test_second_setup_run_is_fully_cached() -> None:
    """After `traffic setup` (run by `make test`), running it again does no step at all."""
    result = subprocess.run([sys.executable, "-m", "cli.main", "setup"], capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    again = subprocess.run([sys.executable, "-m", "cli.main", "setup"], capture_output=True, text=True,
                           timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    step_lines = [line for line in again.stdout.splitlines() if line.startswith("setup: [")]
    assert step_lines and all(line.endswith(": cached") for line in step_lines), again.stdout
    assert "(0 step(s) ran" in again.stdout


@pytest.mark.integration
def test_a_second_checkout_gets_its_own_environment_and_dashboard_files(tmp_path: Path) -> None:
    """Bootstrap in a copy of this checkout: the copy runs its own code and gets its own npm files.

    Both checkouts share the cached dependencies; before each had its own `.venv`, a second clone's
    `traffic` ran the first clone's code and skipped `npm ci` in the second clone.
    """
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    copy = tmp_path / "checkout"
    for name in filter(None, files.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes(source.read_bytes())
    result = subprocess.run(["bash", "runners/bootstrap.sh"], cwd=copy, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "npm packages of api/ (dashboard vendor files): done" in result.stdout
    where = subprocess.run([str(copy / ".venv" / "bin" / "python"), "-P", "-c", "import api; print(api.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(copy / "api" / "__init__.py")
    assert (copy / "api" / "static" / "vendor" / "leaflet").is_dir()
    here = subprocess.run([sys.executable, "-P", "-c", "import api; print(api.__file__)"], cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert here == str(REPO_ROOT / "api" / "__init__.py")
