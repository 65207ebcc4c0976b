"""Idempotent, cached installation of the local platform's binaries.

Everything lands under ``PlatformSettings.cache_dir`` (see :class:`InstallLayout`):

* ``jars/<profile>/``  the runtime classpath of each Maven profile of ``runners/pom.xml``
  (``kafka``, ``hadoop``, ``flink-jobserver``), copied with ``dependency:copy-dependencies``;
* ``flink-<version>/`` the Flink distribution from the ``apache-flink`` and
  ``apache-flink-libraries`` wheels, installed with ``pip --no-deps --target`` (never into
  the project's environment: every apache-flink release pins an old apache-beam);
* ``bin/prism`` and ``bin/boot`` built with ``go install``;
* ``api/node_modules`` from ``npm ci`` (stamped with the hash of ``api/package-lock.json``), and the
  dashboard's vendor files copied from it into ``api/static/vendor/`` (``traffic serve`` needs them);
* ``stamps/<step>.stamp`` one per finished step, holding the step's key (versions and the
  pom's hash). A step whose stamp matches and whose outputs exist is skipped, so a second
  run downloads nothing;
* ``logs/setup-<step>.log`` the output of each step's last run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.settings import REPO_ROOT, PlatformSettings
from schemas.exceptions import TrafficError

__all__ = [
    "BEAM_GO_VERSION",
    "FLINK_VERSION",
    "JAR_PROFILES",
    "InstallError",
    "InstallLayout",
    "InstallStep",
    "install",
    "plan",
    "postgres_bin_dir",
]

FLINK_VERSION = "1.19.3"
BEAM_GO_VERSION = "v2.77.0"
JAR_PROFILES: tuple[str, ...] = ("kafka", "hadoop", "flink-jobserver")
POM_PATH = REPO_ROOT / "runners" / "pom.xml"
TEST_APT_PACKAGES: tuple[str, ...] = ("chromium", "chromium-driver", "docker-compose")
_TEST_APT_BINARIES = {"chromium": "chromium", "chromium-driver": "chromedriver", "docker-compose": "docker-compose"}


class InstallError(TrafficError):
    """A set-up step failed; the message names the step and its log file."""


@dataclass(frozen=True)
class InstallLayout:
    """Where the installed pieces live inside the cache directory."""

    cache_dir: Path

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> InstallLayout:
        return cls(Path(settings.cache_dir).expanduser())

    def jars_dir(self, profile: str) -> Path:
        return self.cache_dir / "jars" / profile

    def classpath(self, profile: str) -> str:
        """The Java ``-cp`` value for a profile (a directory wildcard)."""
        return str(self.jars_dir(profile) / "*")

    @property
    def flink_target(self) -> Path:
        return self.cache_dir / f"flink-{FLINK_VERSION}"

    @property
    def flink_home(self) -> Path:
        """The Flink distribution (``bin``, ``conf``, ``lib``, ``opt``, ``plugins``)."""
        return self.flink_target / "pyflink"

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    @property
    def prism(self) -> Path:
        return self.bin_dir / "prism"

    @property
    def boot(self) -> Path:
        """The Beam Python SDK container entry point (built from ``sdks/python/container``)."""
        return self.bin_dir / "boot"

    @property
    def stamps_dir(self) -> Path:
        return self.cache_dir / "stamps"

    @property
    def logs_dir(self) -> Path:
        return self.cache_dir / "logs"


@dataclass
class InstallStep:
    """One cached step: ``run(log)`` does the work, ``outputs`` must exist afterwards."""

    name: str
    title: str
    key: str
    outputs: Sequence[Path]
    run: Callable[[Path], None]
    stamped: bool = True
    needed: Callable[[], bool] = field(default=lambda: True)


def _sha(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:16]


def _run_logged(argv: Sequence[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        rc = subprocess.call(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=cwd, env=env)
    if rc != 0:
        raise _StepFailed(f"`{argv[0]}` exited with code {rc}")


class _StepFailed(Exception):
    pass


def _require_tool(tool: str, what: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise _StepFailed(f"'{tool}' ({what}) is not on PATH")
    return path


def _pom_key(profile: str) -> str:
    """Hash of what decides a profile's classpath: the pom minus the other profiles."""
    pom = POM_PATH.read_text()
    blocks = re.findall(r"<profile>.*?</profile>", pom, flags=re.DOTALL)
    mine = [b for b in blocks if f"<id>{profile}</id>" in b]
    others_removed = pom
    for block in blocks:
        others_removed = others_removed.replace(block, "")
    return _sha(others_removed, *mine, profile)


def _jars_step(layout: InstallLayout, profile: str) -> InstallStep:
    out_dir = layout.jars_dir(profile)

    def run(log: Path) -> None:
        mvn = _require_tool("mvn", "Maven")
        tmp = out_dir.with_name(out_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        _run_logged([mvn, "-B", "-q", "-f", str(POM_PATH), f"-P{profile}", "dependency:copy-dependencies",
                     f"-DoutputDirectory={tmp}"], log)
        if not any(tmp.glob("*.jar")):
            raise _StepFailed(f"Maven copied no jars for profile {profile}")
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)

    return InstallStep(
        name=f"jars-{profile}",
        title=f"JVM jars ({profile})",
        key=_pom_key(profile),
        outputs=[out_dir],
        run=run,
    )


def _flink_step(layout: InstallLayout) -> InstallStep:
    target = layout.flink_target

    def run(log: Path) -> None:
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        _run_logged([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--disable-pip-version-check",
                     "--target", str(tmp), f"apache-flink=={FLINK_VERSION}",
                     f"apache-flink-libraries=={FLINK_VERSION}"], log)
        bin_dir = tmp / "pyflink" / "bin"
        for script in bin_dir.iterdir():
            if script.suffix in {".sh", ""} and script.is_file():
                script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)

    return InstallStep(
        name="flink",
        title=f"Flink {FLINK_VERSION} distribution",
        key=_sha("flink", FLINK_VERSION),
        outputs=[layout.flink_home / "bin" / "jobmanager.sh",
                 layout.flink_home / "lib" / f"flink-dist-{FLINK_VERSION}.jar"],
        run=run,
    )


def _go_step(layout: InstallLayout, name: str, package: str, built_as: str, target: Path) -> InstallStep:
    def run(log: Path) -> None:
        go = _require_tool("go", "Go")
        gobin = layout.cache_dir / "gobin.partial"
        shutil.rmtree(gobin, ignore_errors=True)
        env = dict(os.environ, GOBIN=str(gobin), CGO_ENABLED="0")
        _run_logged([go, "install", f"{package}@{BEAM_GO_VERSION}"], log, env=env)
        layout.bin_dir.mkdir(parents=True, exist_ok=True)
        os.replace(gobin / built_as, target)
        shutil.rmtree(gobin, ignore_errors=True)

    return InstallStep(name=name, title=f"{name} ({BEAM_GO_VERSION}, go install)",
                       key=_sha(package, BEAM_GO_VERSION), outputs=[target], run=run)


def _apt_step() -> InstallStep:
    def missing() -> list[str]:
        return [pkg for pkg in TEST_APT_PACKAGES if shutil.which(_TEST_APT_BINARIES[pkg]) is None]

    def run(log: Path) -> None:
        packages = missing()
        apt = _require_tool("apt-get", "Debian's package manager")
        sudo: list[str] = [] if os.geteuid() == 0 else [_require_tool("sudo", "root rights for apt-get")]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run_logged([*sudo, apt, "update", "-q"], log, env=env)
        _run_logged([*sudo, apt, "install", "-y", "-q", "--no-install-recommends", *packages], log, env=env)

    return InstallStep(name="apt-test-tools", title=f"Debian packages ({', '.join(TEST_APT_PACKAGES)})",
                       key="apt", outputs=[], run=run, stamped=False, needed=lambda: bool(missing()))


def postgres_bin_dir() -> Path | None:
    """``/usr/lib/postgresql/<newest version>/bin`` of Debian's server packages, or None when none is installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]) if
                   p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else None


def _postgres_step() -> InstallStep:
    """Debian's PostgreSQL server (the store behind the API), installed with apt-get when no server is there."""
    def missing() -> bool:
        return postgres_bin_dir() is None

    def run(log: Path) -> None:
        apt = _require_tool("apt-get", "Debian's package manager")
        sudo: list[str] = [] if os.geteuid() == 0 else [_require_tool("sudo", "root rights for apt-get")]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run_logged([*sudo, apt, "update", "-q"], log, env=env)
        _run_logged([*sudo, apt, "install", "-y", "-q", "--no-install-recommends", "postgresql"], log, env=env)

    return InstallStep(name="apt-postgresql", title="PostgreSQL server (Debian package postgresql)",
                       key="apt-postgresql", outputs=[], run=run, stamped=False, needed=missing)


def _npm_step() -> InstallStep:
    """``npm ci`` in ``api/`` (skipped while the lock file's stamp matches), then copy the dashboard's vendor files.

    Part of the default plan: ``traffic serve`` (so ``make run``) refuses to start without them.
    """
    api_dir = REPO_ROOT / "api"
    package_json = api_dir / "package.json"
    lock = api_dir / "package-lock.json"
    node_modules = api_dir / "node_modules"
    stamp = node_modules / ".traffic-stamp"

    def key() -> str:
        return _sha(package_json.read_bytes(), lock.read_bytes() if lock.exists() else b"")

    def modules_current() -> bool:
        return stamp.exists() and stamp.read_text() == key()

    def run(log: Path) -> None:
        from runners.vendor import VendorFilesMissing, copy_vendor  # noqa: PLC0415 - only this step needs it

        if not modules_current():
            npm = _require_tool("npm", "Node.js package manager")
            _run_logged([npm, "ci" if lock.exists() else "install", "--no-audit", "--no-fund"], log, cwd=api_dir)
            stamp.write_text(key())
        try:
            copied = copy_vendor(node_modules)
        except VendorFilesMissing as exc:
            raise _StepFailed(str(exc)) from None
        with log.open("a") as out:
            out.write(f"copied {copied} vendor files into {api_dir / 'static' / 'vendor'}\n")

    def needed() -> bool:
        from runners.vendor import missing_vendor  # noqa: PLC0415

        if not package_json.exists():
            return False
        return not modules_current() or bool(missing_vendor())

    return InstallStep(name="npm-api", title="npm packages of api/ (dashboard vendor files)", key="npm", outputs=[],
                       run=run, stamped=False, needed=needed)


def plan(settings: PlatformSettings, *, with_test_tools: bool = False) -> list[InstallStep]:
    """The ordered set-up steps for these settings."""
    layout = InstallLayout.from_settings(settings)
    steps = [_jars_step(layout, profile) for profile in JAR_PROFILES]
    steps.append(_flink_step(layout))
    steps.append(_go_step(layout, "prism", "github.com/apache/beam/sdks/v2/go/cmd/prism", "prism", layout.prism))
    steps.append(_go_step(layout, "boot", "github.com/apache/beam/sdks/v2/python/container", "container", layout.boot))
    steps.append(_npm_step())  # `traffic serve` needs the dashboard's vendor files, so not only for tests
    steps.append(_postgres_step())
    if with_test_tools:
        steps.append(_apt_step())
    return steps


def _is_current(layout: InstallLayout, step: InstallStep) -> bool:
    if not step.stamped:
        return not step.needed()
    stamp = layout.stamps_dir / f"{step.name}.stamp"
    return stamp.exists() and stamp.read_text().strip() == step.key and all(p.exists() for p in step.outputs)


def install(settings: PlatformSettings, *, with_test_tools: bool = False, only: Sequence[str] = (),
            echo: Callable[[str], None] = print) -> list[str]:
    """Run every step that is not already done; return the names of the steps that ran.

    Raises :class:`InstallError` naming the failed step and its log file.
    """
    layout = InstallLayout.from_settings(settings)
    layout.stamps_dir.mkdir(parents=True, exist_ok=True)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    steps = [s for s in plan(settings, with_test_tools=with_test_tools) if not only or s.name in only]
    ran: list[str] = []
    for index, step in enumerate(steps, start=1):
        prefix = f"setup: [{index}/{len(steps)}] {step.title}"
        if _is_current(layout, step):
            echo(f"{prefix}: cached")
            continue
        log = layout.logs_dir / f"setup-{step.name}.log"
        log.write_text("")
        echo(f"{prefix}: installing (log: {log})")
        started = time.monotonic()
        try:
            step.run(log)
            missing = [p for p in step.outputs if not p.exists()]
            if missing:
                raise _StepFailed(f"{missing[0]} is missing afterwards")
        except _StepFailed as exc:
            raise InstallError(f"setup step '{step.name}' failed: {exc}; read {log}") from None
        if step.stamped:
            (layout.stamps_dir / f"{step.name}.stamp").write_text(step.key + "\n")
        echo(f"{prefix}: done in {time.monotonic() - started:.1f} s")
        ran.append(step.name)
    return ran
