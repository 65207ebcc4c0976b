"""HDFS stopped for 30 s while the streaming job writes its windowed Parquet files there.

``traffic stream --output hdfs://...`` on Prism writes one Parquet file per
window for the aggregates and the predictions. Once files appear, HDFS
(NameNode and DataNode) is stopped for 30 s and started again (it then leaves
safe mode). The writer retries with backoff (transforms/publish.py). Asserted:
the job keeps running; every final file is a complete Parquet file; the
prediction files hold exactly the keys of the predictions topic; nothing is
lost in Kafka (see :mod:`chaos_harness`). The recovery times are printed (and
recorded in docs/faults.md).
"""

from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime

import httpx
import pyarrow.parquet as pq
import pytest
from chaos_harness import ChaosRun, wait_for

from config.settings import PlatformSettings
from ml.dataset import STEP_MS
from runners.platform import Platform

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.hdfs]

SPEED = 90.0
OUTAGE_S = 30.0
WAIT_S = 600.0


def _window_start_ms(name: str) -> int:
    """part-20120603T111500Z-20120603T112000Z-pane0.parquet -> the window start, epoch ms."""
    return int(datetime.strptime(name.split("-")[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp() * 1000)


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


class _WebHdfs:
    def __init__(self, service: dict) -> None:
        self.url, self.user = service["webhdfs_url"], service["user"]

    def names(self, path: str) -> list[str]:
        try:
            response = httpx.get(f"{self.url}/{path}", params={"op": "LISTSTATUS", "user.name": self.user}, timeout=10)
        except httpx.HTTPError:
            return []
        if response.status_code != 200:
            return []
        return sorted(s["pathSuffix"] for s in response.json()["FileStatuses"]["FileStatus"])

    def read(self, path: str) -> bytes:
        response = httpx.get(f"{self.url}/{path}", params={"op": "OPEN", "user.name": self.user}, timeout=30,
                             follow_redirects=True)
        response.raise_for_status()
        return response.content


def test_hdfs_down_during_the_windowed_parquet_writes_loses_no_file(
        registered, kafka_bootstrap, hdfs_service, fresh_topic, platform_settings: PlatformSettings,
        tmp_path) -> None:
    root, bundle = registered
    run = ChaosRun(kafka_bootstrap, fresh_topic, root, bundle, tmp_path)
    reference = run.reference()
    platform = Platform(platform_settings)
    hdfs = _WebHdfs(hdfs_service)
    out = f"chaos-parquet-{uuid.uuid4().hex[:8]}"
    finals = lambda kind: [n for n in hdfs.names(f"{out}/{kind}") if n.endswith(".parquet")]  # noqa: E731
    try:
        job = run.stream("prism", out, output=f"hdfs://{out}")
        run.replay_in_background(SPEED)
        wait_for(lambda: bool(finals("predictions")), WAIT_S, "the first prediction files were written",
                 every_s=2, alive=job.exited)
        down_at = time.time()
        platform.down(["hdfs"])
        time.sleep(max(0.0, OUTAGE_S - (time.time() - down_at)))
        assert platform.up(["hdfs"]) == ["hdfs"]
        up_at = time.time()
        seen = len(finals("predictions"))
        written_s = wait_for(lambda: len(finals("predictions")) > seen, WAIT_S,
                             "a prediction file was written after HDFS came back", alive=job.exited)
        wait_for(run.replay_done, WAIT_S, "the replay finished", alive=job.exited)
        wait_for(run.all_arrived(reference), WAIT_S, "every prediction arrived", every_s=2, alive=job.exited)
        topic_keys = set(run.predictions())
        # The last steps' windows stay open (no later data moves the watermark past them): the files must hold
        # every prediction of the topic up to the newest window written, and nothing else.
        newest_step = lambda: max(_window_start_ms(n) for n in finals("predictions"))  # noqa: E731
        closed_keys = lambda: {k for k in topic_keys if k[1] <= newest_step()}  # noqa: E731
        last: list[set] = [set()]

        def files_hold_the_topic() -> bool:
            keys = set()
            for name in finals("predictions"):
                table = pq.read_table(io.BytesIO(hdfs.read(f"{out}/predictions/{name}")))
                keys |= {(r["sensor_id"], int(r["event_time"]), int(r["horizon_min"])) for r in table.to_pylist()}
            last[0] = keys
            return keys == closed_keys() and newest_step() >= run.end_ms - 4 * STEP_MS

        try:
            files_s = wait_for(files_hold_the_topic, 180, "the prediction files hold the topic", every_s=5,
                               alive=job.exited)
        except AssertionError:
            missing = sorted({_hhmm(k[1]) for k in closed_keys() - last[0]})
            raise AssertionError(f"prediction files of steps {missing} are missing; the topic has them") from None
        retries = job.output(10**7).count("failed (attempt")
        assert job.exited() is None
    finally:
        if not platform.is_running("hdfs"):
            platform.up(["hdfs"])
        run.stop_all()

    tables = {kind: finals(kind) for kind in ("predictions", "aggregates")}
    for kind, names in tables.items():  # every file under a final name is complete Parquet
        for name in names:
            assert pq.read_table(io.BytesIO(hdfs.read(f"{out}/{kind}/{name}"))).num_rows > 0, name
    leftovers = [n for kind in tables for n in hdfs.names(f"{out}/{kind}") if n.endswith(".tmp")]
    counts = run.check_nothing_lost(reference)
    print(f"\nHDFS down {up_at - down_at:.1f} s (stop, {OUTAGE_S:.0f} s, start until out of safe mode): "
          f"{retries} write attempts failed and were retried; first new prediction file {written_s:.1f} s after "
          f"HDFS was back; the files held the topic (closed windows) {files_s:.1f} s after every prediction arrived; "
          f"{len(tables['predictions'])} prediction and {len(tables['aggregates'])} aggregate files, all complete; "
          f"{len(leftovers)} temporary file(s) left by failed attempts; counts {counts}")
