"""Throughput of the Python-native Kafka IO: a bounded Kafka -> Kafka copy on a runner preset.

    .venv/bin/python benchmarks/kafka_io.py --runner prism --records 100000

Produces ``--records`` small records (~100 bytes) into a fresh 4-partition topic,
runs ReadFromKafka(bounded=True) -> WriteToKafka into another fresh topic, checks
that the copy is complete, prints the figures and deletes both topics. Needs the
local Kafka (``traffic platform up kafka``; plus ``flink jobserver`` for
``--runner flink``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import apache_beam as beam  # noqa: E402
from confluent_kafka import Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from config.settings import get_settings  # noqa: E402
from kafka_client import make_consumer  # noqa: E402
from runners.presets import add_runner_argument, pipeline_options  # noqa: E402
from transforms.kafka_io import ReadFromKafka, WriteToKafka  # noqa: E402


def _count(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = make_consumer(bootstrap)
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_runner_argument(parser)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    settings = get_settings()
    bootstrap = settings.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    source, sink = (f"bench-{name}-{uuid.uuid4().hex[:8]}" for name in ("src", "dst"))
    for future in admin.create_topics([NewTopic(t, args.partitions, 1) for t in (source, sink)]).values():
        future.result(timeout=60)
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
        now_ms = int(time.time() * 1000)
        started = time.monotonic()
        for i in range(args.records):
            while True:
                try:
                    producer.produce(source, key=str(i % 207).encode(), value=b"%08d" % i + b"x" * 92,
                                     timestamp=now_ms)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(120)
        produce_s = time.monotonic() - started
        options = pipeline_options(args.runner, False, [], settings)
        started = time.monotonic()
        with beam.Pipeline(options=options) as p:
            _ = (p
                 | "Read" >> ReadFromKafka(bootstrap, source, bounded=True)
                 | "Write" >> WriteToKafka(bootstrap, sink, key_fn=lambda m: m.key, value_fn=lambda m: m.value))
        copy_s = time.monotonic() - started
        copied = _count(bootstrap, sink, args.partitions)
    finally:
        for future in admin.delete_topics([source, sink]).values():
            future.result(timeout=60)
    print(f"runner={args.runner} records={args.records} partitions={args.partitions}")
    print(f"produce (plain confluent-kafka): {produce_s:.1f} s, {args.records / produce_s:,.0f} records/s")
    print(f"pipeline ReadFromKafka(bounded) -> WriteToKafka: {copy_s:.1f} s wall (including job start), "
          f"{args.records / copy_s:,.0f} records/s; copied {copied} of {args.records}")
    return 0 if copied == args.records else 1


if __name__ == "__main__":
    sys.exit(main())
