"""Load benchmark of the API's SSE fan-out: N concurrent clients on loopback, real Kafka, real predictions.

What it does (bounded in time and in connections):

1. creates fresh predictions/alerts/aggregates/incidents topics on the local Kafka;
2. trains the quick ridge model with the project's feature code and forecasts
   a few hours of bundled METR-LA with it (``tests/api/real_predictions.py``);
3. starts the server as a separate process on a free port (``python -m api``,
   i.e. ``traffic serve`` without the other sub-commands' imports);
4. opens ``--clients`` SSE connections (``GET /stream``, all events) from
   ``--client-procs`` processes, each one uvloop event loop of bare
   ``asyncio.Protocol`` connections (no task or timer per read);
5. produces the model's Prediction records to Kafka at ``--rate`` records/s for
   ``--duration-s`` seconds;
6. every client parses the framing of every event and counts them; every
   ``--sample-every``-th client (default 10th) also keeps each step frame and
   decodes its JSON after the run (every column must hold ``n`` values), and
   records each event's delivery latency: the arrival time of the chunk holding its last byte minus
   the ``received_ms`` the API stamped when its consumer polled the record (the
   oldest of a frame's; decoding every frame in every client would make the
   Python clients, on the server's cores, the bottleneck).

Prints p50/p90/p99/max latency, delivered/expected events, and the server's RSS
(before clients, with clients, peak), the server's CPU per second of the run and
per step, the load average before and after and the CPU pressure (PSI), the
clients' CPU, and the frames per client and step (1.0: each step came whole).
``--profile PATH`` runs the server under cProfile (CPU time).
``--batch on`` makes the clients ask for step frames (``/stream?batch=true``:
a run of predictions as one column event, :mod:`api.frames`); each frame
counts as its ``n`` records, all with the frame's ``received_ms``.
``--write-doc`` writes the report to .work/benchmarks/api.md
(raw output; its figures are recorded at the end of docs/benchmarks.md, their one home).

    .venv/bin/python benchmarks/sse_fanout.py --clients 1000 --rate 20 --duration-s 30
    .venv/bin/python benchmarks/sse_fanout.py --clients 1000 --step-every-s 10 --batch off on
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "api"))

RECEIVED_KEY = b'"received_ms":'  # the API's arrival stamp, the last field of every event's JSON
RECEIVED = re.compile(rb'"received_ms":([0-9.]+)')
# a step frame (``batch=true``, api/frames.py) starts {"n":<records>,"received_ms":<stamp>,...
FRAME = re.compile(rb'data: \{"n":([0-9]+),"received_ms":([0-9.]+)')
FRAME_START = b'data: {"n":'


_MODEL: dict[str, Path] = {}

# ``python -m api`` under cProfile timed by CPU time (a write's kernel time counts; waiting for a core does not).
# argv: the stats file, then api's own flags. Read the file with pstats.
PROFILED_SERVER = """
import cProfile, sys, time
from api.__main__ import main
path = sys.argv[1]
profiler = cProfile.Profile(time.process_time)
try:
    profiler.runcall(main, sys.argv[2:])
finally:
    profiler.dump_stats(path)
"""


def step_payload(step: list[dict]) -> dict:
    """One step's bytes on the wire: as one column frame (``/stream?batch=true``) and as single events."""
    from api.frames import encode_columns
    from api.hub import encode_frame

    data = [{**record, "received_ms": 0.0} for record in step]  # what the hub publishes: record + arrival stamp
    started = time.perf_counter()
    frame = encode_columns(len(data), "prediction", data, 1)
    encode_ms = (time.perf_counter() - started) * 1000
    events = sum(len(encode_frame(i, "prediction", record)) for i, record in enumerate(data, 1))
    return {"records": len(data), "frame_kb": round(len(frame) / 1000, 1), "events_kb": round(events / 1000, 1),
            "frame_encode_ms": round(encode_ms, 1)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_pressure() -> float | None:
    """Share of the last 10 s (%) in which some runnable task waited for a CPU (Linux PSI), or None."""
    try:
        return float(Path("/proc/pressure/cpu").read_text().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _SseClient(asyncio.Protocol):
    """One SSE connection on a bare protocol: no task, no timer and no stream reader per read.

    Every chunk is stamped on arrival (``data_received``), so an event's time is that of the chunk holding its
    last byte. Every client parses the framing of every event it gets (the step frame's header: ``n`` and the
    ``received_ms`` stamp the server publishes it with); a ``verify`` client also keeps every frame's JSON and
    decodes it after the run (:meth:`check`: each column holds ``n`` values), so that decoding 35 KB of JSON in
    one client does not delay the other clients of its process while a step is being measured.
    """

    def __init__(self, path: str, ready: asyncio.Future, latencies: Counter | None, batched: bool,
                 verify: bool) -> None:
        self.path = path
        self.ready = ready
        self.latencies = latencies
        self.batched = batched
        self.verify = verify
        self.buffer = b""
        self.head_seen = False
        self.events = 0
        self.frames = 0
        self.verified = 0
        self.bad = 0
        self.sizes: Counter = Counter()  # records per frame (a verify client's)
        self.kept: list[tuple[int, bytes]] = []  # a verify client's frames (n, JSON), decoded by check()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.write(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
                        .encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, chunk: bytes) -> None:
        now_ms = time.time() * 1000.0
        buffer = self.buffer + chunk if self.buffer else chunk
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self.buffer = buffer
            return
        complete, self.buffer = buffer[: end + 2], buffer[end + 2 :]
        if not self.head_seen:
            if b"event: snapshot" not in complete:
                self.buffer = buffer
                return
            self.head_seen = True
            complete = complete.split(b"event: snapshot", 1)[1].split(b"\n\n", 1)[-1]
            if not self.ready.done():
                self.ready.set_result(None)
        if self.batched:
            self._frames(complete, now_ms)
        elif self.latencies is None:  # not sampled: only count (a C-speed scan)
            self.events += complete.count(RECEIVED_KEY)
        else:  # events of one Kafka poll share their received_ms: count them per value
            for received, n in Counter(RECEIVED.findall(complete)).items():
                self.latencies[round(now_ms - float(received), 1)] += n
                self.events += n

    def _frames(self, complete: bytes, now_ms: float) -> None:
        at = complete.find(FRAME_START)
        while at >= 0:
            frame = FRAME.match(complete, at)
            if frame is not None:
                n = int(frame[1])
                self.events += n
                self.frames += 1
                if self.latencies is not None:
                    self.latencies[round(now_ms - float(frame[2]), 1)] += n
                if self.verify:
                    self.sizes[n] += 1
                    self.kept.append((n, complete[at + 6 : complete.index(b"\n", at)]))
            at = complete.find(FRAME_START, at + 1)


    def check(self) -> None:
        """Decode the kept frames: every column of a frame must hold its ``n`` values."""
        for n, text in self.kept:
            body = json.loads(text)
            if body["n"] == n and all(len(column) == n for column in body["cols"].values()):
                self.verified += 1
            else:
                self.bad += 1
        self.kept = []


def _client_proc(port: int, n: int, path: str, stop, connected: mp.Value, out: mp.Queue, sample_every: int,
                 nice: int) -> None:
    """``n`` clients on one uvloop event loop; reports latencies, per-client counts and the process's CPU."""
    import uvloop

    if nice:
        os.nice(nice)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        latencies: Counter = Counter()
        clients: list[_SseClient] = []
        for i in range(n):
            ready = loop.create_future()
            sampled = i % sample_every == 0
            client = _SseClient(path, ready, latencies if sampled else None, "batch=true" in path, sampled)
            await loop.create_connection(lambda c=client: c, "127.0.0.1", port)
            clients.append(client)
            await asyncio.wait_for(ready, 30)
            with connected.get_lock():
                connected.value += 1
        while not stop.is_set():  # one timer for the process, none per client
            await asyncio.sleep(0.2)
        for client in clients:
            client.transport.close()
            client.check()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out.put((latencies, [c.events for c in clients], usage.ru_utime + usage.ru_stime,
                 {"frames": sum(c.frames for c in clients), "verified": sum(c.verified for c in clients),
                  "bad": sum(c.bad for c in clients), "sizes": sum((c.sizes for c in clients), Counter())}))

    uvloop.run(main())


def _setup_topics(bootstrap: str):
    from confluent_kafka.admin import AdminClient, NewTopic

    from schemas.topics import TopicSettings

    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(predictions=f"bench-{tag}-predictions", alerts=f"bench-{tag}-alerts",
                           aggregates=f"bench-{tag}-aggregates", incidents=f"bench-{tag}-incidents")
    names = [topics.predictions, topics.alerts, topics.aggregates, topics.incidents]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, num_partitions=4, replication_factor=1) for n in names]).values():
        future.result(30)
    return topics, admin, names


def run(args: argparse.Namespace) -> dict:
    from api_harness import Producer
    from real_predictions import forecast_hours, train_quick_model

    topics, admin, names = _setup_topics(args.bootstrap)
    tmp = Path(tempfile.mkdtemp(prefix="sse-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    server = None
    try:
        if "registry" not in _MODEL:  # one model per benchmark invocation
            print("training the quick model ...", flush=True)
            _MODEL["registry"] = tmp / "registry"
            train_quick_model(_MODEL["registry"])
        registry = _MODEL["registry"]
        first = int(np.datetime64("2012-06-01T16:00", "ms").astype("int64"))
        n_steps = (int(args.duration_s / args.step_every_s) + 1 if args.step_every_s
                   else int(np.ceil(args.rate * args.duration_s / 621)) + 1)
        records = forecast_hours(registry, first, n_steps)
        predictions = records.predictions
        payload = step_payload([p for p in predictions if p["event_time"] == records.steps_ms[0]])
        print(f"one step on the wire: {payload['frame_kb']} KB as a frame, {payload['events_kb']} KB as "
              f"{payload['records']} events; the frame encoded in {payload['frame_encode_ms']} ms", flush=True)
        port = _free_port()
        env = dict(os.environ, TRAFFIC_API_PORT=str(port), TRAFFIC_API_BOOTSTRAP_SERVERS=args.bootstrap,
                   TRAFFIC_API_MODEL_REGISTRY=str(registry), TRAFFIC_API_RATE_LIMIT_PER_S="0",
                   TRAFFIC_TOPICS_PREDICTIONS=topics.predictions, TRAFFIC_TOPICS_ALERTS=topics.alerts,
                   TRAFFIC_TOPICS_AGGREGATES=topics.aggregates, TRAFFIC_TOPICS_INCIDENTS=topics.incidents,
                   TRAFFIC_API_PING_S="5",
                   TRAFFIC_API_COALESCE_MS=str(args.coalesce_ms))
        env.update({k: v for k, v in os.environ.items() if k.startswith("TRAFFIC_API_GC_")})
        priority = ["nice", "-n", str(args.nice)] if args.nice else []
        command = ["-c", PROFILED_SERVER, str(Path(args.profile).resolve())] if args.profile else ["-m", "api"]
        server = subprocess.Popen([*priority, sys.executable, *command, "--log-level", "warning"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
                if health["checks"]["consumer"]["partitions"] == 4 * len(names):
                    break
            except (httpx.TransportError, KeyError, ValueError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("traffic serve did not become ready")
            time.sleep(0.3)
        rss_idle = _rss_mb(server.pid)

        connect_s = 60.0
        stop = mp.Event()
        connected = mp.Value("i", 0)
        out: mp.Queue = mp.Queue()
        per_proc = [args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
                    for i in range(args.client_procs)]
        path = "/stream?types=prediction&types=alert" + ("&batch=true" if args.batch == "on" else "")
        procs = [mp.Process(target=_client_proc, args=(port, n, path, stop, connected, out, args.sample_every,
                                                               args.nice))
                 for n in per_proc]
        t_connect = time.monotonic()
        for proc in procs:
            proc.start()
        while connected.value < args.clients:
            if time.monotonic() - t_connect > connect_s:
                raise RuntimeError(f"only {connected.value} of {args.clients} clients connected in {connect_s:.0f} s")
            time.sleep(0.1)
        connect_time_s = time.monotonic() - t_connect
        rss_connected = _rss_mb(server.pid)
        print(f"{args.clients} clients connected in {connect_time_s:.1f} s; producing ...", flush=True)

        idle_t, idle_cpu = time.monotonic(), _cpu_s(server.pid)
        time.sleep(args.idle_s)  # the server's CPU with every client connected and nothing to send (pings, consumer)
        idle_cores = (_cpu_s(server.pid) - idle_cpu) / (time.monotonic() - idle_t)
        producer = Producer(args.bootstrap, topics)
        peak = [rss_connected]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.5):
                peak[0] = max(peak[0], _rss_mb(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent = 0
        steps_sent = 0
        load_before = os.getloadavg()[0]
        cpu0 = _cpu_s(server.pid)
        t0 = time.monotonic()
        codec = producer.targets["prediction"][1]

        def produce(record: dict) -> None:
            producer.producer.produce(topics.predictions, key=record["sensor_id"].encode(), value=codec.encode(record))
            producer.producer.poll(0)

        if args.step_every_s:  # bursts: one model step (207 sensors x 3 horizons) every step_every_s
            for i, step in enumerate(records.steps_ms):
                if time.monotonic() - t0 >= args.duration_s:
                    break
                delay = t0 + i * args.step_every_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                for record in predictions:
                    if record["event_time"] == step:
                        produce(record)
                        sent += 1
                steps_sent += 1
                producer.producer.flush(30)
        else:  # a steady stream of args.rate records/s
            interval = 1.0 / args.rate
            while time.monotonic() - t0 < args.duration_s and sent < len(predictions):
                delay = t0 + sent * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                produce(predictions[sent])
                sent += 1
        producer.producer.flush(30)
        # let the stream drain, then stop the clients early
        time.sleep(args.drain_s)
        server_cpu_s = _cpu_s(server.pid) - cpu0
        elapsed_s = time.monotonic() - t0
        server_cpu = server_cpu_s / elapsed_s
        load = os.getloadavg()[0]
        pressure = _cpu_pressure()
        stop.set()
        latencies: Counter = Counter()
        counts: list[int] = []
        client_cpu_s = 0.0
        frames: Counter = Counter()
        sizes: Counter = Counter()
        for _ in procs:
            lat, cnt, cpu, seen = out.get(timeout=120)
            latencies.update(lat)
            counts.extend(cnt)
            client_cpu_s += cpu
            sizes.update(seen.pop("sizes"))
            for key, value in seen.items():
                frames[key] += value
        for proc in procs:
            proc.join(30)
        sampling.set()
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        values = np.array(sorted(latencies), dtype=np.float64)
        cumulative = np.cumsum([latencies[v] for v in sorted(latencies)]) if latencies else np.array([1])

        def percentile(p: float) -> float:
            if not latencies:
                return float("nan")
            return float(values[min(len(values) - 1, int(np.searchsorted(cumulative, p / 100 * cumulative[-1])))])

        result = {
            "clients": args.clients,
            "client_procs": args.client_procs,
            "clients_run_as": f"{args.client_procs} processes, each one uvloop event loop of asyncio.Protocol "
                              "connections over loopback HTTP/1.1; every client parses every event's framing, "
                              f"every {args.sample_every}th also records latencies and keeps each frame to "
                              "decode its JSON after the run",
            "latency_sampled_clients": sum((n + args.sample_every - 1) // args.sample_every for n in per_proc),
            "coalesce_ms": args.coalesce_ms,
            "batch": args.batch,
            "nice": args.nice,
            "workload": f"one step (621 records) every {args.step_every_s:g} s" if args.step_every_s
            else f"steady {args.rate:g} records/s",
            "duration_s": args.duration_s,
            "records_produced": sent,
            "events_expected": sent * args.clients,
            "events_delivered": int(sum(counts)),
            "clients_complete": int(sum(1 for c in counts if c == sent)),
            "steps_produced": steps_sent,
            "frames_received": frames["frames"],
            "frames_per_client_step": round(frames["frames"] / max(1, steps_sent * args.clients), 2)
            if steps_sent else None,
            "frames_json_verified": frames["verified"],
            "frames_json_bad": frames["bad"],
            "records_per_frame": {str(n): count for n, count in sorted(sizes.items())},
            "step_payload": payload,
            "latency_ms": {q: round(percentile(p), 1)
                           for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
            "server_ready": _histogram_quantiles(scraped, "traffic_api_sse_ready_seconds"),
            "server_sent": _histogram_quantiles(scraped, "traffic_api_sse_sent_seconds"),
            "server_loop_lag": _histogram_quantiles(scraped, "traffic_api_event_loop_lag_seconds"),
            "server_gc_sum_s": {g: sum(float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
                                       if line.startswith(f'traffic_api_gc_seconds_sum{{generation="{g}"}}'))
                                for g in ("0", "1", "2")},
            "connect_time_s": round(connect_time_s, 1),
            "server_cpu_cores": round(server_cpu, 2),
            "server_cpu_s_per_step": round(server_cpu_s / steps_sent, 3) if steps_sent else None,
            "server_idle_cpu_cores": round(idle_cores, 3),
            "server_burst_cpu_s_per_step": round(max(0.0, server_cpu_s - idle_cores * elapsed_s) / steps_sent, 3)
            if steps_sent else None,
            "client_cpu_s": round(client_cpu_s, 1),
            "load_avg_1m": round(load, 1),
            "load_avg_1m_before": round(load_before, 1),
            "cpu_pressure_avg10": pressure,
            "server_rss_mb": {"idle": round(rss_idle, 1), "connected": round(rss_connected, 1),
                              "peak": round(peak[0], 1)},
        }
        return result
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)  # SIGINT lets cProfile write
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        for future in admin.delete_topics(names).values():
            try:
                future.result(30)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"could not delete a benchmark topic: {exc}", file=sys.stderr)


HEADER = ("| clients | workload | nice | coalesce ms | records | delivered / expected | complete clients | p50 ms "
          "| p90 ms | p99 ms | max ms | server: write ready p50 / p99 | server: write accepted p50 / p99 "
          "| server CPU (cores) | load avg (1 min) | RSS idle / connected / peak MB |")
MACHINE = ("Machine: 2 cores / 24 GiB (the load average column shows what else ran); "
           "Kafka 4 (KRaft) on the same host; one server process "
           "(`python -m api`, uvicorn + uvloop, one worker; `traffic serve` is the same server plus ~146 MB of "
           "the other sub-commands' imports); "
           "clients are raw asyncio sockets in separate processes on the same 2 cores.")
METHOD = ("Records: Prediction records made by the model trained by `ml.train.train(quick=True)` (bundled METR-LA), "
          "produced to Kafka; every client subscribes to all predictions and alerts (`/stream?types=prediction"
          "&types=alert`). Latency = the client's receive time minus `received_ms`, which the API's consumer stamps "
          "when its poll returns the record; every 10th client records latencies (all count their events).")


NOTES = """How to read it: "write ready" is the server's own delay (consumer poll -> a client's bytes handed to
uvicorn, including the coalescing window); "write accepted" adds the wait until the client's socket took them
(a reader that is not keeping up holds it). Both come from the server's histograms
(`traffic_api_sse_ready_seconds`, `traffic_api_sse_sent_seconds`), as bucket bounds.
"server CPU" is the CPU time the API process used per second of the run; well below one core
while the delays grow means the process was waiting for a CPU or for its clients (the load average counts
everything on the machine, the client processes included). Per event the server decodes it in the consumer
thread, hands each poll batch to the event loop once, filters and encodes once per distinct filter, then makes
one write per client per `TRAFFIC_API_COALESCE_MS` window. In the burst workload every client receives a whole
step (621 events, about 190 KB) at once, so 1000 clients read about 190 MB per burst through loopback, on the
same two cores as the server."""


def _histogram_quantiles(metrics_text: str, name: str) -> dict[str, str]:
    """Upper bucket bounds holding the p50/p99 of a Prometheus histogram (``<= x ms``)."""
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return {}
    total = buckets[-1][1]
    out = {}
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        bound = next(b for b, count in buckets if count >= q * total)
        out[label] = f"<= {bound * 1000:g} ms" if bound != float("inf") else "> 10 s"
    return out


def _doc(results: list[dict], command: str) -> str:
    lines = ["# API: SSE fan-out benchmark", "", f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. {MACHINE}", "",
             f"Command: `{command}`", "", METHOD, "", HEADER, "|" + " --- |" * 16]
    for r in results:
        lat, rss = r["latency_ms"], r["server_rss_mb"]
        lines.append(
            f"| {r['clients']} | {r['workload']} | {r.get('nice', 0)} | {r['coalesce_ms']:g} | "
            f"{r['records_produced']} | "
            f"{r['events_delivered']} / {r['events_expected']} | {r['clients_complete']} | {lat['p50']} | "
            f"{lat['p90']} | {lat['p99']} | {lat['max']} | {' / '.join(r['server_ready'].values())} | "
            f"{' / '.join(r['server_sent'].values())} | {r['server_cpu_cores']} | {r['load_avg_1m']} | "
            f"{rss['idle']} / {rss['connected']} / {rss['peak']} |"
        )
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from config.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000], help="one run per value")
    parser.add_argument("--client-procs", type=int, default=4,
                        help="client processes (each one uvloop event loop); the clients share the server's cores")
    parser.add_argument("--rate", type=float, nargs="+", default=[],
                        help="steady records/s, one run per value (default 20 when no --step-every-s)")
    parser.add_argument("--step-every-s", type=float, nargs="+", default=[],
                        help="bursts: one whole model step (621 records) every S seconds, one run per value")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--coalesce-ms", type=float, nargs="+", default=[100.0],
                        help="the server's TRAFFIC_API_COALESCE_MS (one run per value)")
    parser.add_argument("--batch", nargs="+", choices=("off", "on"), default=["off"],
                        help="on: clients ask for step frames (/stream?batch=true, api/frames.py); one run per value")
    parser.add_argument("--drain-s", type=float, default=3.0)
    parser.add_argument("--nice", type=int, default=0,
                        help="run the server and clients at this niceness (negative needs root): approximates a "
                             "machine whose cores are not shared with other jobs")
    parser.add_argument("--idle-s", type=float, default=3.0,
                        help="seconds the connected clients idle before producing: the server's idle CPU")
    parser.add_argument("--sample-every", type=int, default=10,
                        help="every n-th client records latencies (all clients count their events)")
    parser.add_argument("--profile", metavar="PATH",
                        help="run the server under cProfile (CPU time) and write its stats to PATH")
    parser.add_argument("--bootstrap", default=get_settings().bootstrap_servers)
    parser.add_argument("--write-doc", action="store_true",
                        help="also write the report to .work/benchmarks/api.md (record it in docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if max(args.clients) > 5000 or args.duration_s > 300:
        parser.error("keep it bounded: at most 5000 clients and 300 s")
    results = []
    rates = args.rate or ([] if args.step_every_s else [20.0])
    workloads = [{"rate": r, "step_every_s": 0.0} for r in rates] + \
        [{"rate": 0.0, "step_every_s": s} for s in args.step_every_s]
    runs = [{**w, "coalesce_ms": c, "clients": n, "batch": b} for n in args.clients for w in workloads
            for c in args.coalesce_ms for b in args.batch]
    for overrides in runs:
        one = argparse.Namespace(**{**vars(args), **overrides})
        result = run(one)
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    if args.write_doc:
        command = "python benchmarks/sse_fanout.py " + " ".join(argv if argv is not None else sys.argv[1:])
        (REPO / ".work" / "benchmarks").mkdir(parents=True, exist_ok=True)
        (REPO / ".work" / "benchmarks" / "api.md").write_text(_doc(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
