"""The session's open-client check (tests/kafka_clients.py) names the code that made a client left open."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from kafka_clients import client_threads, install

UNREACHABLE = {"bootstrap.servers": "127.0.0.1:1"}  # a client starts its thread whether or not a broker answers


def test_each_kind_of_client_is_traced_to_the_line_that_made_it_until_it_is_closed() -> None:
    ledger = install()  # the ledger tests/conftest.py installed
    before = client_threads()
    producer = Producer(UNREACHABLE)
    consumer = Consumer({**UNREACHABLE, "group.id": "never-joins"})
    admin = AdminClient(UNREACHABLE)
    opened = client_threads() - before
    try:
        assert len(opened) == 3, ledger.report(opened)
        report = ledger.report(opened)
        for kind in ("Producer", "Consumer", "AdminClient"):
            assert f"{kind} made at" in report, report
        assert report.count('test_kafka_clients.py", line') == 3, report  # each one's creating line
        assert report.count("opened during tests/test_kafka_clients.py::test_each_kind") == 3, report
        assert "site-packages" not in report, report
    finally:
        producer.close()
        consumer.close()
        del admin  # an admin client has no close(): destroying it closes it
    assert not client_threads() & opened, "closed clients still have their threads"


def test_a_client_made_between_tests_names_the_test_that_ended_before_it() -> None:
    ledger = install()
    running, last = ledger.running, ledger.last_ended
    ledger.running, ledger.last_ended = None, "tests/x.py::test_that_left_a_job"  # as between two tests
    before = client_threads()
    try:
        producer = Producer(UNREACHABLE)
    finally:
        ledger.running, ledger.last_ended = running, last
    try:
        [tid] = client_threads() - before
        assert ledger.tests[tid].startswith("no test: made after tests/x.py::test_that_left_a_job ended")
        assert "test_kafka_clients.py" in ledger.report({tid})
    finally:
        producer.close()
