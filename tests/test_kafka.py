"""receiver.kafka against a real Kafka-protocol broker (Tansu, tests/tansu.py) fed with the real SDK's spans
encoded as the Collector's Kafka exporter writes them (tests/collector_kafka.py), delivering to the test
upstream: at least once through kill -9, rebalances, poison messages, a full queue and an upstream outage."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from pathlib import Path

import httpx
import pytest
from collector_kafka import call_ids, collector_messages, record_traces
from conftest import API_KEY, bridge_settings, free_port
from confluent_kafka import Consumer, Producer, TopicPartition
from tansu import Tansu

from otel_bridge.app import Bridge
from otel_bridge.errors import ConfigError
from otel_bridge.telemetry.metrics import total

TOPIC = "otlp_spans"
QUEUE_BYTES = 200_000  # exporter.queue.max_bytes of start_paused: small, so the test traces fill it
GROUP = "otel-bridge"
# Short, so a killed member's partitions move within seconds (Tansu also waits about half of it to join).
KAFKA = {"session_timeout": "2s", "heartbeat_interval": "500ms", "initial_offset": "earliest"}


@pytest.fixture
def broker(tmp_path):
    with Tansu(tmp_path / "tansu.log") as tansu:
        yield tansu


def produce(broker: Tansu, messages) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for key, value, partition in messages:
        kwargs = {} if partition is None else {"partition": partition}
        producer.produce(TOPIC, value, key=key, **kwargs)
    assert producer.flush(30) == 0


def committed(broker: Tansu, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": GROUP})
    try:
        return [tp.offset for tp in consumer.committed([TopicPartition(TOPIC, p) for p in range(partitions)], timeout=10)]
    finally:
        consumer.close()


def wait_until(condition, timeout: float = 30.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(0.05)


def wait_for_ids(upstream, expected: set[str], timeout: float = 60.0) -> None:
    def arrived() -> bool:
        return expected <= set(upstream.calls_by_id())

    wait_until(arrived, timeout, f"{len(expected - set(upstream.calls_by_id()))} of {len(expected)} calls")


def kafka_settings(upstream, broker, **sections):
    receiver = {"grpc": None, "http": None, "kafka": {"brokers": [broker.bootstrap], **KAFKA, **sections.pop("kafka", {})}}
    return bridge_settings(upstream, receiver=receiver, **sections)


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_the_collectors_messages_become_calls_and_are_committed(upstream, broker, start_bridge, encoding):
    broker.create_topic(TOPIC, 3)
    spans = record_traces(30, 3)
    messages = collector_messages(spans, encoding=encoding, partitions=3)
    assert len({partition for _, _, partition in messages}) == 3  # partition_traces_by_id spread the traces
    produce(broker, messages)
    # The queue in memory: offsets move only once the upstream accepted the calls.
    running = start_bridge(kafka_settings(upstream, broker, kafka={"encoding": encoding}))
    wait_for_ids(upstream, call_ids(spans))
    upstream.assert_no_errors()
    by_partition = [sum(1 for _, _, p in messages if p == partition) for partition in range(3)]
    wait_until(lambda: committed(broker, 3) == by_partition, message=f"offsets {by_partition} committed")
    ready = httpx.get(f"{running.telemetry_url}/readyz").json()
    assert ready["checks"]["receivers"]["listening"] == {"kafka": True}
    metrics = running.bridge.metrics
    assert total(metrics.accepted_spans, transport=("kafka",)) == len(spans)
    wait_until(lambda: _lag(metrics) == {(TOPIC, str(p)): 0.0 for p in range(3)}, message="lag 0 on every partition")
    text = httpx.get(f"{running.telemetry_url}/metrics").text
    assert 'otelbridge_receiver_kafka_consumer_lag{partition="0",topic="otlp_spans"} 0.0' in text


def start_paused(upstream, broker, start_bridge, tmp_path):
    """A bridge on a 200 kB durable queue with the upstream down, once the full queue paused consumption."""
    upstream.set_down(True)
    running = start_bridge(
        kafka_settings(
            upstream,
            broker,
            exporter={
                "queue": {"directory": str(tmp_path / "queue"), "max_bytes": QUEUE_BYTES, "max_project_share": 1},
                "batch": {"max_calls": 20, "max_bytes": 100_000},
            },
        )
    )
    wait_until(lambda: running.bridge.metrics.kafka_paused._value.get() == 1, message="consumption paused")
    return running


def _lag(metrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in metrics.kafka_consumer_lag.collect()
        for s in family.samples
    }


def test_consumer_lag_per_partition_counts_what_is_not_committed(upstream, broker, start_bridge):
    """Before the first commit (the queue in memory, the upstream down) the lag is what was read and not
    committed, per partition; it grows as more arrives, and is 0 once everything was delivered."""
    broker.create_topic(TOPIC, 2)
    spans = record_traces(14, 2)
    messages = collector_messages(spans, encoding="otlp_proto", partitions=1)
    produce(broker, [(k, v, 0) for k, v, _ in messages[:10]] + [(k, v, 1) for k, v, _ in messages[10:]])
    upstream.set_down(True)
    running = start_bridge(kafka_settings(upstream, broker))
    metrics = running.bridge.metrics
    wait_until(lambda: _lag(metrics) == {(TOPIC, "0"): 10.0, (TOPIC, "1"): 4.0}, message="lag 10 and 4")
    more = record_traces(5, 2, first=14)
    produce(broker, [(k, v, 0) for k, v, _ in collector_messages(more, encoding="otlp_proto", partitions=1)])
    wait_until(lambda: _lag(metrics) == {(TOPIC, "0"): 15.0, (TOPIC, "1"): 4.0}, message="lag 15 and 4")
    upstream.set_down(False)
    wait_for_ids(upstream, call_ids(spans) | call_ids(more))
    wait_until(lambda: _lag(metrics) == {(TOPIC, "0"): 0.0, (TOPIC, "1"): 0.0}, message="lag 0 on both")


def test_consumer_lag_grows_while_paused(upstream, broker, start_bridge, tmp_path):
    """Paused partitions are not fetched: the lag still counts what arrives meanwhile."""
    broker.create_topic(TOPIC, 1)
    spans = record_traces(100, 2, payload=2000)
    produce(broker, [(k, v, 0) for k, v, _ in collector_messages(spans, encoding="otlp_proto", partitions=1)])
    running = start_paused(upstream, broker, start_bridge, tmp_path)
    metrics = running.bridge.metrics

    def lag_is_what_is_not_committed(produced: int) -> bool:
        return _lag(metrics) == {(TOPIC, "0"): float(produced - max(committed(broker, 1)[0], 0))}

    wait_until(lambda: lag_is_what_is_not_committed(100), message="the lag of the 100 messages")
    more = record_traces(20, 2, first=100)
    # One produce request per message: Tansu answers ListOffsets(latest) with the last batch's base offset
    # + 1, not the high watermark (a Kafka broker answers the latter); for batches of one they agree.
    for key, value, _ in collector_messages(more, encoding="otlp_proto", partitions=1):
        produce(broker, [(key, value, 0)])
    wait_until(lambda: lag_is_what_is_not_committed(120), timeout=20, message="the lag of 20 more")
    assert metrics.kafka_paused._value.get() == 1  # still paused: the lag was asked for, not fetched
    upstream.set_down(False)
    wait_for_ids(upstream, call_ids(spans) | call_ids(more), timeout=90)


def test_readyz_is_false_until_the_group_is_joined(upstream, broker, start_bridge):
    broker.create_topic(TOPIC, 1)
    broker.stop()  # no broker: the consumer cannot join
    running = start_bridge(kafka_settings(upstream, broker))
    time.sleep(1.0)
    answer = httpx.get(f"{running.telemetry_url}/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["receivers"]["listening"] == {"kafka": False}


def test_readyz_turns_false_when_the_group_is_lost(upstream, broker, start_bridge, tmp_path):
    """Joined, then the broker goes away: once no heartbeat got through for session_timeout the member is out
    of its group (its partitions are another's), so /readyz says so; it is back once the member rejoins."""
    broker.create_topic(TOPIC, 1)
    running = start_bridge(kafka_settings(upstream, broker))

    def ready() -> bool:
        return httpx.get(f"{running.telemetry_url}/readyz").status_code == 200

    wait_until(ready, message="joined")
    broker.stop()
    wait_until(lambda: not ready(), timeout=20, message="/readyz false without the group")
    answer = httpx.get(f"{running.telemetry_url}/readyz").json()
    assert answer["checks"]["receivers"]["listening"] == {"kafka": False}
    with Tansu(tmp_path / "tansu-again.log", port=broker.port) as again:  # a new broker on the same address
        again.create_topic(TOPIC, 1)
        wait_until(ready, timeout=30, message="joined again")


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"ca_file": "/does/not/exist.pem"}, "`receiver.kafka.tls.ca_file` ('/does/not/exist.pem'): cannot read"),
        ("ca is a key", "`receiver.kafka.tls.ca_file`"),
        ("swapped", "`receiver.kafka.tls."),
    ],
)
def test_bad_tls_files_fail_before_any_port_opens(certs, tls, message):
    """librdkafka reads the files when the consumer is made: its errors come out naming the bridge's keys."""
    if tls == "ca is a key":
        tls = {"ca_file": str(certs.client.key)}
    elif tls == "swapped":
        tls = {"ca_file": str(certs.ca), "cert_file": str(certs.client.key), "key_file": str(certs.client.cert)}
    settings = bridge_settings(receiver={"grpc": None, "http": None, "kafka": {"tls": tls}})

    async def build() -> None:  # as `serve` does: inside the event loop, before start() binds anything
        Bridge(settings)

    with pytest.raises(ConfigError) as raised:
        asyncio.run(build())
    assert message in str(raised.value) and "ssl." not in str(raised.value)


def test_a_poison_message_is_dead_lettered_and_committed_past(upstream, broker, start_bridge, tmp_path):
    broker.create_topic(TOPIC, 1)
    before, after = record_traces(5, 2, first=0), record_traces(5, 2, first=5)
    poison = b"\x0a\xff\xff\xff\xff garbage"
    produce(broker, [(k, v, 0) for k, v, _ in collector_messages(before, encoding="otlp_proto", partitions=1)])
    produce(broker, [(b"bad-key", poison, 0)])
    produce(broker, [(k, v, 0) for k, v, _ in collector_messages(after, encoding="otlp_proto", partitions=1)])
    dead = tmp_path / "dead.jsonl"
    running = start_bridge(kafka_settings(upstream, broker, exporter={"dead_letter": {"path": str(dead)}}))
    wait_for_ids(upstream, call_ids(before) | call_ids(after))  # the message behind it was not blocked
    wait_until(lambda: committed(broker, 1) == [11], message="committed past all 11 messages")
    (line,) = [json.loads(text) for text in dead.read_text().splitlines()]
    assert line["kafka"] == {"topic": TOPIC, "partition": 0, "offset": 5, "key": "bad-key"}
    assert line["reason"] == "undecodable" and "not an otlp_proto ExportTraceServiceRequest" in line["error"]
    assert base64.b64decode(line["message"]) == poison
    assert total(running.bridge.metrics.kafka_dead_lettered_messages, reason=("undecodable",)) == 1


def test_a_full_queue_pauses_consumption_until_the_upstream_is_back(upstream, broker, start_bridge, tmp_path):
    """The upstream is down for a while: the durable queue fills, the partitions pause (nothing is
    dropped or dead-lettered), and once the upstream is back consumption resumes and every span arrives."""
    broker.create_topic(TOPIC, 2)
    spans = record_traces(200, 2, payload=2000)
    produce(broker, collector_messages(spans, encoding="otlp_proto", partitions=2))
    running = start_paused(upstream, broker, start_bridge, tmp_path)
    metrics = running.bridge.metrics
    assert running.bridge.queue.size_bytes <= QUEUE_BYTES
    time.sleep(0.5)  # what was queued before the pause is committed by then
    paused_at = sum(o for o in committed(broker, 2) if o > 0)
    assert paused_at < 200  # not everything was taken: the rest waits in Kafka
    time.sleep(1.0)
    assert sum(o for o in committed(broker, 2) if o > 0) == paused_at  # and stays there while paused
    upstream.set_down(False)
    wait_for_ids(upstream, call_ids(spans), timeout=90)
    wait_until(lambda: metrics.kafka_paused._value.get() == 0, message="consumption resumed")
    wait_until(lambda: sum(committed(broker, 2)) == 200, message="every message committed")
    assert total(metrics.kafka_dead_lettered_messages) == 0


def test_in_memory_offsets_wait_for_the_upstream(upstream, broker, start_bridge):
    """With the queue in memory, a message is committed only once the upstream accepted its calls."""
    broker.create_topic(TOPIC, 1)
    spans = record_traces(10, 2)
    produce(broker, collector_messages(spans, encoding="otlp_proto", partitions=1))
    upstream.set_down(True)
    running = start_bridge(kafka_settings(upstream, broker))
    wait_until(lambda: running.bridge.queue.size_calls == 20, message="the calls queued")
    time.sleep(1.0)
    assert committed(broker, 1) == [-1001]  # nothing committed while the upstream is down
    upstream.set_down(False)
    wait_for_ids(upstream, call_ids(spans))
    wait_until(lambda: committed(broker, 1) == [10], message="committed once delivered")


# --- separate processes: kill -9, two members of one group ----------------------------------------------------


def write_config(tmp_path: Path, name: str, upstream, broker: Tansu, queue_bytes: int = 0) -> tuple[Path, int, int]:
    """A bridge process's config; queue_bytes > 0 bounds its durable queue (and batches to half of that)."""
    grpc_port, telemetry_port = free_port(), free_port()
    queue = f", max_bytes: {queue_bytes}, max_project_share: 1" if queue_bytes else ""
    batch = f", max_bytes: {queue_bytes // 2}" if queue_bytes else ""
    directory = tmp_path / name
    directory.mkdir()
    config = directory / "bridge.yaml"
    config.write_text(
        f"shutdown_timeout: 1s\n"
        f"receiver:\n"
        f"  grpc: {{endpoint: '127.0.0.1:{grpc_port}'}}\n"
        f"  http: null\n"
        f"  kafka: {{brokers: ['{broker.bootstrap}'], session_timeout: 2s, heartbeat_interval: 500ms, "
        f"initial_offset: earliest, client_id: {name}}}\n"
        f"exporter:\n"
        f"  weave: {{base_url: '{upstream.url}', api_key: '{API_KEY}'}}\n"
        f"  queue: {{directory: '{directory / 'queue'}'{queue}}}\n"
        f"  batch: {{flush_interval: 50ms{batch}}}\n"
        f"  retry: {{initial_interval: 50ms, max_interval: 200ms}}\n"
        f"telemetry: {{endpoint: '127.0.0.1:{telemetry_port}'}}\n"
    )
    return config, grpc_port, telemetry_port


def scrape(telemetry_port: int, sample: str) -> float:
    """The value of one sample (name and labels, as /metrics writes them) of a bridge process; 0 if absent."""
    text = httpx.get(f"http://127.0.0.1:{telemetry_port}/metrics").text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def kafka_spans(telemetry_port: int) -> float:
    return scrape(telemetry_port, 'otelbridge_receiver_accepted_spans_total{transport="kafka"}')


def test_kill_9_mid_stream_then_restart_loses_nothing(upstream, broker, bridge_process, tmp_path):
    """Killed in a state made on purpose, not caught by timing: the upstream has all of the first traces
    and none of the rest (it went down), the small durable queue is full, so consumption is paused with
    messages read and not committed and more not read at all. The restarted bridge delivers what the queue
    held and reads the rest again from the committed offsets."""
    broker.create_topic(TOPIC, 2)
    first, rest = record_traces(50, 3), record_traces(350, 3, first=50, payload=2000)
    config, grpc_port, telemetry_port = write_config(tmp_path, "a", upstream, broker, queue_bytes=200_000)
    killed = bridge_process(config, grpc_port)
    produce(broker, collector_messages(first, encoding="otlp_proto", partitions=2))
    wait_for_ids(upstream, call_ids(first))
    wait_until(lambda: sum(committed(broker, 2)) == 50, message="the first traces committed")
    upstream.set_down(True)
    produce(broker, collector_messages(rest, encoding="otlp_proto", partitions=2))
    wait_until(lambda: scrape(telemetry_port, "otelbridge_receiver_kafka_paused") == 1, message="consumption paused")
    assert killed.signal(signal.SIGKILL) == -signal.SIGKILL
    assert 50 <= sum(committed(broker, 2)) < 400  # mid-stream: the rest of the messages wait in Kafka
    assert not call_ids(rest) & set(upstream.calls_by_id())
    upstream.set_down(False)
    restarted = bridge_process(config, grpc_port)
    wait_for_ids(upstream, call_ids(first) | call_ids(rest), timeout=90)
    wait_until(lambda: sum(committed(broker, 2)) == 400, message="every message committed")
    assert kafka_spans(telemetry_port) > 0  # the restarted bridge read what was not committed
    assert restarted.signal(signal.SIGTERM) == 0


def test_two_bridges_share_the_partitions_and_take_over(upstream, broker, bridge_process, tmp_path):
    """Both members consume; one stopped (SIGTERM) commits what it settled and leaves the group, so the other
    takes its partitions and reads none of their messages again; one killed (-9) loses nothing either: its
    partitions move once its session timed out, and what it had not committed is read again."""
    broker.create_topic(TOPIC, 4)
    config_a, grpc_a, telemetry_a = write_config(tmp_path, "a", upstream, broker)
    config_b, grpc_b, telemetry_b = write_config(tmp_path, "b", upstream, broker)
    a = bridge_process(config_a, grpc_a)
    b = bridge_process(config_b, grpc_b)
    # The group gave each member partitions (cooperative: a's are revoked, then b gets them).
    wait_until(lambda: "assigned otlp_spans" in a.log and "assigned otlp_spans" in b.log, message="both assigned")
    first = record_traces(200, 2, first=0)
    produce(broker, collector_messages(first, encoding="otlp_proto", partitions=4))
    wait_for_ids(upstream, call_ids(first))
    wait_until(lambda: sum(committed(broker, 4)) == 200, message="the first messages committed")
    by_b = kafka_spans(telemetry_b)
    assert kafka_spans(telemetry_a) > 0 and by_b > 0  # both consumed
    assert kafka_spans(telemetry_a) + by_b == len(first)  # and no message twice

    assert a.signal(signal.SIGTERM) == 0
    wait_until(lambda: b.log.count("Kafka receiver: assigned") >= 2, message="b assigned a's partitions")
    second = record_traces(200, 2, first=200)
    produce(broker, collector_messages(second, encoding="otlp_proto", partitions=4))
    wait_for_ids(upstream, call_ids(second))
    wait_until(lambda: sum(committed(broker, 4)) == 400, message="the second messages committed")
    assert kafka_spans(telemetry_b) == by_b + len(second)  # b read a's partitions from where a committed

    c = bridge_process(config_a, grpc_a)  # a new member, then b is killed
    wait_until(lambda: "assigned otlp_spans" in c.log, message="the new member assigned")
    assert b.signal(signal.SIGKILL) == -signal.SIGKILL
    third = record_traces(200, 2, first=400)
    produce(broker, collector_messages(third, encoding="otlp_proto", partitions=4))
    wait_for_ids(upstream, call_ids(third))  # c took b's partitions after b's session timed out
    wait_until(lambda: sum(committed(broker, 4)) == 600, message="every message committed")
    assert kafka_spans(telemetry_a) >= len(third)
    assert c.signal(signal.SIGTERM) == 0
