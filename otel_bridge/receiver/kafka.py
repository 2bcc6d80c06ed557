"""Kafka: consume the topics the OpenTelemetry Collector's Kafka exporter writes, feed Pipeline.export.

Each message is one ExportTraceServiceRequest, protobuf (`otlp_proto`) or OTLP/JSON (`otlp_json`); a
`project_id` header (the exporter's include_metadata_keys) routes its spans like the gRPC metadata does.
The client is librdkafka (confluent-kafka), called from one thread of its own, so its rebalance callbacks
run there too; the exports run on the loop, up to _CONCURRENT_EXPORTS at a time.

    consume ─> todo ─> Pipeline.export ─> exported ─> settled ─> commit (in offset order) ─> lag
                           │
      queue full: pause ───┤ every partition (consume() keeps serving the group), retry, resume
      poison: ─────────────┘ dead-letter file with topic/partition/offset; settled

At least once: a partition's offset moves past a message only when it and every message before it are
settled: their calls are in the durable queue (exporter.queue.directory), or, with the queue in memory,
delivered or dead-lettered (CallQueue.settled_before). A crash replays what was not committed; the calls
keep their ids and started_at, so the upstream's upsert deduplicates. A rebalance commits what is settled
and forgets the rest of the revoked partitions, which their new owner reads again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from otel_bridge.config import KafkaReceiver
from otel_bridge.decode.otlp import parse_otlp_json
from otel_bridge.errors import BadRequestError, ConfigError, OversizedRequestError, ProjectRefusedError, QueueError
from otel_bridge.exporter.dead_letter import DeadLetterFile
from otel_bridge.pipeline import Pipeline
from otel_bridge.receiver import PROJECT_HEADER

__all__ = ["KafkaTraceReceiver", "client_config"]

log = logging.getLogger("otel_bridge.receiver.kafka")

T = TypeVar("T")
Partition = tuple[str, int]

# Messages taken per consume() call, and how long it waits for the first one.
_BATCH_MESSAGES = 500
_POLL_SECONDS = 0.1
# Exports in flight at once: the mapping runs one at a time anyway (Pipeline), but the queue's commits
# group the puts waiting for them, so a few in flight keep the durable queue busy.
_CONCURRENT_EXPORTS = 16
# A full queue is tried again once it drained this fraction of exporter.queue.max_bytes (a project at its
# share too: the queue's size drops by what the project's calls free), at the latest after its retry_after
# (a project refused while the upstream fails it drains nothing).
_DRAINED = 0.125
# While paused, the high watermarks for the lag are asked of the brokers at most this often, each answer
# awaited at most _LAG_QUERY_TIMEOUT (the consumer thread waits meanwhile).
_LAG_QUERY_SECONDS = 5.0
_LAG_QUERY_TIMEOUT = 1.0
# Wait before retrying a message whose dead-letter line could not be written (disk full, permissions).
_DEAD_LETTER_RETRY_SECONDS = 1.0


def client_config(config: KafkaReceiver) -> dict[str, Any]:
    """receiver.kafka -> librdkafka's configuration. Offsets are committed by the receiver alone."""
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(config.brokers),
        "group.id": config.group_id,
        "client.id": config.client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": config.initial_offset,
        "session.timeout.ms": round(config.session_timeout * 1000),
        "heartbeat.interval.ms": round(config.heartbeat_interval * 1000),
        "max.poll.interval.ms": round(config.max_poll_interval * 1000),
        # A rebalance moves only the partitions that change owner; the others keep being consumed.
        "partition.assignment.strategy": "cooperative-sticky",
        "logger": log,
    }
    if config.tls is not None:
        for name, key in _TLS_FILES.items():
            if getattr(config.tls, name) is not None:
                conf[key] = getattr(config.tls, name)
    if config.sasl is not None:
        conf["sasl.mechanism"] = config.sasl.mechanism
        conf["sasl.username"] = config.sasl.username
        conf["sasl.password"] = config.sasl.password.get_secret_value()
    conf["security.protocol"] = {
        (False, False): "PLAINTEXT",
        (True, False): "SSL",
        (False, True): "SASL_PLAINTEXT",
        (True, True): "SASL_SSL",
    }[(config.tls is not None, config.sasl is not None)]
    return conf


# receiver.kafka.tls's files and the librdkafka properties they set (its errors name the property).
_TLS_FILES = {"ca_file": "ssl.ca.location", "cert_file": "ssl.certificate.location", "key_file": "ssl.key.location"}


def _consumer(config: KafkaReceiver) -> Consumer:
    """The consumer, or a ConfigError naming the key to fix: a TLS file that cannot be read, or one that is
    not what it should be (librdkafka reads the files here, before any connection)."""
    for name in _TLS_FILES:
        path = getattr(config.tls, name, None)
        if path is not None:
            try:
                Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"`receiver.kafka.tls.{name}` ({path!r}): cannot read: {exc.strerror or exc}") from None
    try:
        return Consumer(client_config(config))
    except KafkaException as exc:
        reason = _reason(exc)
        for name, key in _TLS_FILES.items():
            reason = reason.replace(key, f"`receiver.kafka.tls.{name}`")
        raise ConfigError(f"receiver.kafka: {reason}") from None


def _as_is(value: bytes) -> bytes:
    return value


def _json_to_protobuf(value: bytes) -> bytes:
    return parse_otlp_json(value).SerializeToString()


def _header(message: Message, name: str) -> str | None:
    headers = message.headers() or []
    for key, value in headers.items() if isinstance(headers, dict) else headers:  # consume() gives a list
        if key == name and value is not None:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


@dataclass(frozen=True, slots=True)
class _Message:
    """What the receiver uses of a message consume() returned without an error (where all of it is set)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    project: str | None  # the project_id header

    @classmethod
    def of(cls, message: Message) -> _Message:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        return cls(topic, partition, offset, message.key(), message.value() or b"", _header(message, PROJECT_HEADER))

    def where(self) -> dict[str, Any]:
        key = self.key.decode("utf-8", "replace") if self.key is not None else None
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset, "key": key}


@dataclass(slots=True)
class _Read:
    """A message read and not yet committed past: `settled_at` is None until its calls are queued (or it
    was dead-lettered), then the time.monotonic() of that."""

    offset: int
    settled_at: float | None = None


class KafkaTraceReceiver:
    """One member of the consumer group `receiver.kafka.group_id`. `listening` (for /readyz) is True while
    it is in the group with an assignment, which is empty when the group has more members than partitions."""

    name = "kafka"

    def __init__(self, config: KafkaReceiver, pipeline: Pipeline, *, dead_letter: DeadLetterFile) -> None:
        self.config = config
        self.pipeline = pipeline
        self.queue = pipeline.queue
        self.report = pipeline.metrics.kafka
        self.dead_letter = dead_letter
        self.listening = False
        self._to_protobuf: Callable[[bytes], bytes] = _json_to_protobuf if config.encoding == "otlp_json" else _as_is
        # Durable: the calls are on disk once export returns. In memory: only once delivered.
        self._durable = self.queue.store.durable
        self._consumer = _consumer(config)  # a bad setting fails here, before any port opens
        # librdkafka runs the rebalance callbacks in the thread that calls consume(): always this one.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        self._todo: deque[_Message] = deque()  # read, not yet exported
        self._read: dict[Partition, deque[_Read]] = {}  # per partition, in offset order
        self._settled_to: dict[Partition, int] = {}  # the offset to commit: past every settled message
        self._committed: dict[Partition, int] = {}
        self._paused = False
        self._lag_queried_at = 0.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._in_thread(
            self._consumer.subscribe,
            list(self.config.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._task = asyncio.create_task(self._run(), name="kafka receiver")
        log.info(
            "Kafka receiver consuming %s from %s as group %s (%s)",
            ", ".join(self.config.topics),
            ", ".join(self.config.brokers),
            self.config.group_id,
            self.config.encoding,
        )

    async def stop(self) -> None:
        """Stop consuming, commit what is settled, and leave the group: its partitions move to the other
        members at once, not after session_timeout. What was read and not settled is read again there."""
        self._stopping = True
        if self._task is not None:
            await self._task
        self._advance()
        await self._in_thread(self._close)
        self._thread.shutdown()

    def _close(self) -> None:
        self._commit()  # the loop advanced the offsets after its last exports
        self._consumer.close()
        self.listening = False

    async def _in_thread(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: function(*args, **kwargs))

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._take(_POLL_SECONDS)
                await self._export_todo()
                self._advance()
                await self._in_thread(self._commit)
            except Exception:  # a bug must not stop consumption for good; what is not committed is read again
                log.exception("Kafka receiver: unexpected error, retrying in 1s")
                await asyncio.sleep(1.0)

    async def _take(self, timeout: float) -> None:
        for message in await self._in_thread(self._consumer.consume, _BATCH_MESSAGES, timeout):
            error = message.error()
            if error is not None:  # broker and partition errors; librdkafka retries on its own
                log.warning("Kafka receiver: %s", error.str())
                continue
            read = _Message.of(message)
            reads = self._read.get((read.topic, read.partition))
            if reads is None:  # revoked while consume() returned it
                continue
            reads.append(_Read(read.offset))
            self._todo.append(read)

    async def _export_todo(self) -> None:
        while self._todo and not self._stopping:
            batch = [self._todo.popleft() for _ in range(min(_CONCURRENT_EXPORTS, len(self._todo)))]
            results = await asyncio.gather(*(self._export(message) for message in batch))
            refused = [(message, error) for message, error in zip(batch, results) if error is not None]
            if refused:  # back to the front, in order: retried once the queue has room
                self._todo.extendleft(reversed([message for message, _ in refused]))
                await self._wait(max(error.retry_after for _, error in refused), str(refused[0][1]))
        if self._paused and not self._todo:
            await self._resume()

    async def _export(self, message: _Message) -> QueueError | None:
        """Export one message; None once it is settled or dead-lettered, the QueueError when it must wait."""
        undecodable = f"not an {self.config.encoding} ExportTraceServiceRequest"
        reason = error = None
        try:
            data = self._to_protobuf(message.value)
            result = await self.pipeline.export(data, header_project=message.project, transport="kafka")
            if result.rejected_spans:  # the others are queued; the message keeps every span for a replay
                reason, error = "rejected_spans", f"{result.rejected_spans} spans rejected: {result.error_message}"
        except (ValueError, BadRequestError) as exc:  # not OTLP/JSON, not protobuf of one
            reason, error = "undecodable", f"{undecodable}: {exc}"
        except OversizedRequestError as exc:  # it would never fit the queue: waiting cannot help
            reason, error = "too_large", str(exc)
        except ProjectRefusedError as exc:  # the upstream refuses the key of every project it names
            reason, error = "project_refused", str(exc)
        except QueueError as exc:
            return exc
        if reason is not None and error is not None:
            while not await self._poison(message, reason, error):
                await asyncio.sleep(_DEAD_LETTER_RETRY_SECONDS)
        self._settle(message)
        return None

    def _settle(self, message: _Message) -> None:
        for read in self._read.get((message.topic, message.partition), ()):
            if read.offset == message.offset:
                read.settled_at = time.monotonic()
                return

    async def _poison(self, message: _Message, reason: str, error: str) -> bool:
        where = message.where()
        try:
            await self.dead_letter.write_message(message.value, reason=reason, error=error, kafka=where)
        except OSError as exc:
            log.error("Kafka receiver: cannot write to the dead-letter file %s, retrying: %s", self.dead_letter.path, exc)
            return False
        self.report.dead_lettered(message.topic, reason)
        log.error(
            "Kafka receiver: message %s/%d@%d written to the dead-letter file %s and committed past: %s",
            where["topic"],
            where["partition"],
            where["offset"],
            self.dead_letter.path,
            error,
        )
        return True

    async def _wait(self, seconds: float, why: str) -> None:
        """Keep every assigned partition paused (again each time: a rebalance may assign new ones) and consume
        for `seconds` (the queue's retry_after), or less once the queue drained by _DRAINED of its bound since
        it refused: paused partitions return nothing, and the consumer keeps its place in the group."""
        if not self._paused:
            self._paused = True
            self.report.paused(True)
            log.warning("Kafka receiver: consumption paused: %s", why)
        deadline = time.monotonic() + seconds
        drained = self.queue.size_bytes - max(round(self.queue.max_bytes * _DRAINED), 1)
        while True:
            await self._in_thread(self._pause_all)
            await self._take(min(_POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
            self._advance()
            await self._in_thread(self._commit)
            if self._stopping or time.monotonic() >= deadline or self.queue.size_bytes <= drained:
                return

    async def _resume(self) -> None:
        await self._in_thread(lambda: self._consumer.resume(self._consumer.assignment()))
        self._paused = False
        self.report.paused(False)
        log.info("Kafka receiver: the queue has room again, consumption resumed")

    def _settled(self, read: _Read) -> bool:
        if read.settled_at is None:
            return False
        return self._durable or self.queue.settled_before(read.settled_at)

    def _advance(self) -> None:
        """Move each partition's offset to commit past its settled messages (on the loop, as the queue is)."""
        for partition, reads in self._read.items():
            while reads and self._settled(reads[0]):
                self._settled_to[partition] = reads.popleft().offset + 1

    # In the consumer thread from here on: pausing, commits, watermarks and the rebalance callbacks.

    def _pause_all(self) -> None:
        self._consumer.pause(self._consumer.assignment())

    def _commit(self) -> None:
        """Commit what _advance found settled; a failed commit is tried again the next time."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._settled_to.items() if self._committed.get((t, p)) != o]
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("Kafka receiver: committing offsets failed, trying again: %s", _reason(exc))
            else:
                for tp in offsets:
                    self._committed[(tp.topic, tp.partition)] = tp.offset
        self._report_lag()

    def _report_lag(self) -> None:
        """Per assigned partition: its high watermark - the first offset not committed (the group's committed
        offset; before this member's first commit, the first message read and not settled, else where it
        reads next). The watermark is the last fetch response's, which costs no request, except while paused:
        paused partitions are not fetched, so then it is asked for, at most every _LAG_QUERY_SECONDS."""
        query = self._paused and time.monotonic() >= self._lag_queried_at + _LAG_QUERY_SECONDS
        if query:
            self._lag_queried_at = time.monotonic()
        for (topic, partition), reads in self._read.items():
            tp = TopicPartition(topic, partition)
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if query:
                try:
                    high = max(high, self._consumer.get_watermark_offsets(tp, timeout=_LAG_QUERY_TIMEOUT)[1])
                except KafkaException as exc:
                    log.debug("Kafka receiver: cannot ask for the high watermark of %s/%d: %s", topic, partition, _reason(exc))
            first = self._committed.get((topic, partition))
            if first is None:
                first = reads[0].offset if reads else self._consumer.position([tp])[0].offset
            if high >= 0 and first >= 0:
                self.report.lag(topic, partition, max(high - first, 0))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._read[(tp.topic, tp.partition)] = deque()
        if partitions:  # where the group stands, so the lag is known before this member commits
            try:
                for tp in consumer.committed(partitions, timeout=10):
                    if tp.offset >= 0:
                        self._committed[(tp.topic, tp.partition)] = tp.offset
            except KafkaException as exc:
                log.warning("Kafka receiver: cannot read the committed offsets: %s", _reason(exc))
        self.listening = True
        log.info("Kafka receiver: assigned %s", _describe(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit()  # what is settled stays done for the next owner
        self._forget(partitions)
        log.info("Kafka receiver: revoked %s", _describe(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Already another member's (this one missed its session): a commit would be refused.
        self._forget(partitions)
        self.listening = False
        log.warning("Kafka receiver: lost %s (no heartbeat within session_timeout); rejoining", _describe(partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._todo = deque(m for m in self._todo if (m.topic, m.partition) not in gone)
        for topic, partition in gone:
            self._read.pop((topic, partition), None)
            self._settled_to.pop((topic, partition), None)
            self._committed.pop((topic, partition), None)
            self.report.partition_gone(topic, partition)


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions) or "no partitions"
