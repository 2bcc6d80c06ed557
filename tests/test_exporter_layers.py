"""The sender layers one by one, over a scripted inner sender: retry, timeout, split/dead-letter, trim."""

from __future__ import annotations

import asyncio
import email.utils
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from otel_bridge.errors import (
    ExportError,
    InvalidCallsError,
    PermanentError,
    ProjectBlockedError,
    ProjectInRetry,
    RequestTooLargeError,
    RetriesExhaustedError,
    RetryableError,
)
from otel_bridge.exporter.dead_letter import DeadLetterFile
from otel_bridge.exporter.envelope import body
from otel_bridge.exporter.retry import RetrySender, next_backoff, next_wait
from otel_bridge.exporter.split import SplitSender
from otel_bridge.exporter.timeout import TimeoutSender
from otel_bridge.exporter.trim import trim_call
from otel_bridge.exporter.weave import is_retryable, parse_retry_after
from otel_bridge.exporter.queue import Batch
from otel_bridge.telemetry.metrics import Metrics, total


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


class ScriptedSender:
    """Answers each batch with `answer(batch)`: None accepts it, an exception is raised. Records every attempt."""

    def __init__(self, answer: Callable[[Batch], ExportError | None] = lambda batch: None) -> None:
        self.answer = answer
        self.attempts: list[Batch] = []
        self.accepted: list[bytes] = []

    async def send(self, batch: Batch) -> None:
        self.attempts.append(batch)
        error = self.answer(batch)
        if error is not None:
            raise error
        self.accepted.extend(batch.calls)

    async def close(self) -> None:
        pass


def failing(*errors: ExportError) -> Callable[[Batch], ExportError | None]:
    """An answer that raises the given errors in turn, then accepts."""
    pending = list(errors)
    return lambda batch: pending.pop(0) if pending else None


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def call(call_id: str, **fields: Any) -> bytes:
    return orjson.dumps({"id": call_id, "project_id": "e/p", "inputs": {}, "output": None, **fields})


BATCH = Batch("e/p", [call("a"), call("b")])


# ---- retry: pure helpers


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [(0, 0.5, 1.0), (1, 0.5, 1.5), (2, 0.5, 2.25), (10, 0.5, 30.0), (0, 0.0, 0.5), (0, 1.0, 1.5), (10, 1.0, 45.0)],
)
def test_next_backoff_grows_by_half_with_jitter_and_a_cap(attempt, rand, expected):
    assert next_backoff(attempt, 1.0, 30.0, lambda: rand) == pytest.approx(expected)


def test_the_servers_delay_wins_when_longer():
    assert next_wait(2.0, None) == 2.0
    assert next_wait(2.0, 5.0) == 5.0
    assert next_wait(2.0, 1.0) == 2.0


def test_retry_after_seconds_and_http_date():
    now = 1_767_225_600.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(email.utils.formatdate(now + 12, usegmt=True), now) == pytest.approx(12.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0
    assert parse_retry_after("86400", now) == 300.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(408, True), (429, True), (500, True), (502, True), (503, True), (504, True), (599, True),
     (400, False), (401, False), (403, False), (404, False), (413, False), (422, False)],
)
def test_which_statuses_are_retried(status, retryable):
    assert is_retryable(status) is retryable


# ---- retry: the loop


def retry_sender(inner: ScriptedSender, time: FakeTime, max_elapsed_time: float = 0.0, metrics: Metrics | None = None):
    return RetrySender(
        inner,
        initial_interval=1.0,
        max_interval=4.0,
        max_elapsed_time=max_elapsed_time,
        metrics=metrics or Metrics(),
        clock=time.clock,
        sleep=time.sleep,
        rand=lambda: 0.5,  # no jitter: exact waits
    )


def test_retries_with_backoff_until_accepted():
    time, metrics = FakeTime(), Metrics()
    inner = ScriptedSender(failing(*[RetryableError("503", status=503)] * 5))
    run(retry_sender(inner, time, metrics=metrics).send(BATCH))
    assert time.sleeps == [1.0, 1.5, 2.25, 3.375, 4.0]
    assert inner.accepted == BATCH.calls
    assert total(metrics.retried_calls) == 5 * 2
    assert metrics.registry.get_sample_value("otelbridge_exporter_batches_in_retry") == 0


def _holding_sender(inner, time, events, free: bool = True) -> RetrySender:
    def hold(project):
        events.append(("hold", project))
        return free

    return RetrySender(
        inner,
        initial_interval=1.0,
        max_interval=4.0,
        max_elapsed_time=0.0,
        metrics=Metrics(),
        hold=hold,
        release=lambda project: events.append(("release", project)),
        clock=time.clock,
        sleep=time.sleep,
        rand=lambda: 0.5,
    )


def test_a_batch_waiting_for_a_retry_holds_its_project_until_it_is_settled():
    time, events = FakeTime(), []
    inner = ScriptedSender(failing(RetryableError("503", status=503), RetryableError("503", status=503)))
    sender = _holding_sender(inner, time, events)
    run(sender.send(BATCH))
    assert events == [("hold", BATCH.project), ("release", BATCH.project)]  # once, however many retries
    events.clear()
    run(sender.send(BATCH))  # accepted at once: nothing held
    assert events == []


def test_a_batch_failing_while_its_project_is_held_goes_back_without_waiting():
    time, events = FakeTime(), []
    inner = ScriptedSender(failing(RetryableError("503", status=503)))
    with pytest.raises(ProjectInRetry):
        run(_holding_sender(inner, time, events, free=False).send(BATCH))
    assert events == [("hold", BATCH.project)]  # not released: another batch holds the project
    assert time.sleeps == []


def test_retry_after_is_honoured():
    time = FakeTime()
    inner = ScriptedSender(failing(RetryableError("429", status=429, retry_after=7.0), RetryableError("429", retry_after=0.5)))
    run(retry_sender(inner, time).send(BATCH))
    assert time.sleeps == [7.0, 1.5]


def test_zero_max_elapsed_time_retries_forever():
    time = FakeTime()
    inner = ScriptedSender(failing(*[RetryableError("down")] * 200))
    run(retry_sender(inner, time, max_elapsed_time=0).send(BATCH))
    assert len(time.sleeps) == 200 and time.now - 1000.0 > 700


def test_gives_up_when_the_next_wait_passes_max_elapsed_time():
    time = FakeTime()
    inner = ScriptedSender(lambda batch: RetryableError("503 forever", status=503, answer="busy"))
    with pytest.raises(RetriesExhaustedError, match=r"max_elapsed_time.*503 forever") as raised:
        run(retry_sender(inner, time, max_elapsed_time=10.0).send(BATCH))
    assert sum(time.sleeps) <= 10.0
    assert (raised.value.status, raised.value.answer) == (503, "busy")


@pytest.mark.parametrize(
    "error",
    [PermanentError("400"), InvalidCallsError("422"), RequestTooLargeError("413"), ProjectBlockedError("401")],
)
def test_other_errors_are_not_retried(error):
    time = FakeTime()
    inner = ScriptedSender(failing(error))
    with pytest.raises(type(error)):
        run(retry_sender(inner, time).send(BATCH))
    assert time.sleeps == [] and len(inner.attempts) == 1


# ---- timeout


def test_a_slow_attempt_times_out_as_retryable():
    class Slow(ScriptedSender):
        async def send(self, batch: Batch) -> None:
            await asyncio.sleep(10)

    with pytest.raises(RetryableError, match=r"timed out after 50ms \(exporter\.weave\.timeout\)"):
        run(TimeoutSender(Slow(), 0.05).send(BATCH))


# ---- split and dead-letter


def split_sender(inner: ScriptedSender, tmp_path: Path, limit: int = 1_000_000, metrics: Metrics | None = None) -> SplitSender:
    return SplitSender(
        inner, max_body_bytes=limit, dead_letter=DeadLetterFile(str(tmp_path / "dead.jsonl")), metrics=metrics or Metrics()
    )


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_413_splits_until_every_request_fits(tmp_path):
    calls = [call(f"{i:04d}", inputs={"text": "x" * 100}) for i in range(40)]
    limit = 1500
    inner = ScriptedSender(lambda batch: RequestTooLargeError("413") if len(body(batch.calls)) > limit else None)
    metrics = Metrics()
    run(split_sender(inner, tmp_path, metrics=metrics).send(Batch("e/p", calls)))
    assert sorted(inner.accepted) == sorted(calls) and len(inner.accepted) == 40
    assert total(metrics.sent_calls) == 40
    assert dead_letters(tmp_path) == []


def test_422_bisects_to_the_refused_calls_and_dead_letters_them_with_the_answer(tmp_path):
    calls = [call(f"{i:04d}") for i in range(16)]
    bad = {calls[3], calls[11]}
    answer = '{"detail": [{"loc": ["body", "batch", 0, "id"], "msg": "refused", "type": "value_error"}]}'

    def upstream(batch: Batch) -> ExportError | None:
        if bad & set(batch.calls):
            return InvalidCallsError("POST answered 422", status=422, answer=answer)
        return None

    inner = ScriptedSender(upstream)
    metrics = Metrics()
    run(split_sender(inner, tmp_path, metrics=metrics).send(Batch("e/p", calls)))
    assert sorted(inner.accepted) == sorted(set(calls) - bad)
    assert len(inner.accepted) == 14  # each good call once
    lines = dead_letters(tmp_path)
    assert sorted(orjson.dumps(line["call"]) for line in lines) == sorted(bad)
    assert {(line["project_id"], line["status"], line["reason"]) for line in lines} == {("e/p", 422, "invalid")}
    assert lines[0]["answer"]["detail"][0]["msg"] == "refused"
    assert total(metrics.dead_lettered_calls) == 2 == total(metrics.send_failed_calls, reason=("invalid",))
    assert total(metrics.sent_calls) == 14


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (PermanentError("400 bad request", status=400, answer="bad"), "refused"),
        (RetriesExhaustedError("no more retries left", status=503), "retries_exhausted"),
        (RetryableError("503, and retry is disabled", status=503), "not_retried"),
    ],
)
def test_final_refusals_dead_letter_the_whole_batch(tmp_path, error, reason):
    inner = ScriptedSender(failing(error))
    run(split_sender(inner, tmp_path).send(BATCH))
    assert len(inner.attempts) == 1
    lines = dead_letters(tmp_path)
    assert [orjson.dumps(line["call"]) for line in lines] == BATCH.calls
    assert {line["reason"] for line in lines} == {reason}
    assert str(error) in lines[0]["error"]


def test_a_refused_api_key_is_passed_on_and_nothing_is_dead_lettered(tmp_path):
    inner = ScriptedSender(failing(ProjectBlockedError("401", status=401)))
    with pytest.raises(ProjectBlockedError):
        run(split_sender(inner, tmp_path).send(BATCH))
    assert dead_letters(tmp_path) == []


def test_an_unwritable_dead_letter_file_raises_so_the_batch_stays_queued(tmp_path):
    (tmp_path / "dir").mkdir()
    inner = ScriptedSender(failing(PermanentError("400")))
    sender = SplitSender(inner, max_body_bytes=10_000, dead_letter=DeadLetterFile(str(tmp_path / "dir")), metrics=Metrics())
    with pytest.raises(OSError):
        run(sender.send(BATCH))


def test_a_lone_call_over_the_limit_is_trimmed_with_a_marker(tmp_path):
    big = call("big", inputs={"prompt": "p" * 50_000, "small": "kept"}, otel_dump={"attributes": {"prompt": "p" * 50_000}})
    inner = ScriptedSender()
    metrics = Metrics()
    run(split_sender(inner, tmp_path, limit=40_000, metrics=metrics).send(Batch("e/p", [big])))
    (sent,) = inner.accepted
    assert len(sent) + len(b'{"batch":[]}') <= 40_000
    data = orjson.loads(sent)
    assert data["id"] == "big" and data["inputs"]["small"] == "kept"
    assert "[truncated by otel-bridge:" in data["inputs"]["prompt"] + data["otel_dump"]["attributes"]["prompt"]
    assert total(metrics.trimmed_calls) == 1 and total(metrics.sent_calls) == 1


def test_a_lone_call_refused_with_413_is_trimmed_until_it_passes(tmp_path):
    big = call("big", inputs={"prompt": "p" * 50_000})
    upstream_limit = 12_000
    inner = ScriptedSender(lambda batch: RequestTooLargeError("413") if len(body(batch.calls)) > upstream_limit else None)
    run(split_sender(inner, tmp_path).send(Batch("e/p", [big])))
    (sent,) = inner.accepted
    assert len(sent) < upstream_limit
    assert orjson.loads(sent)["inputs"]["prompt"].endswith("characters removed]")
    assert dead_letters(tmp_path) == []


def test_a_call_that_cannot_shrink_enough_is_dead_lettered_whole(tmp_path):
    big = call("big", attributes={"huge": "a" * 50_000})  # attributes are never cut
    inner = ScriptedSender()
    run(split_sender(inner, tmp_path, limit=10_000).send(Batch("e/p", [big])))
    assert inner.attempts == []
    (line,) = dead_letters(tmp_path)
    assert line["reason"] == "too_large" and orjson.dumps(line["call"]) == big


# ---- trim


def test_trim_leaves_a_call_that_fits_untouched():
    small = call("a", inputs={"x": "y"})
    assert trim_call(small, len(small)) is small


def test_trim_cuts_the_longest_strings_first_and_keeps_the_rest():
    original = call("a", inputs={"long": "l" * 10_000, "short": "s" * 2000}, output="o" * 3000, otel_dump={"name": "n"})
    trimmed = trim_call(original, len(original) - 5000)
    assert trimmed is not None and len(trimmed) <= len(original) - 5000
    data = orjson.loads(trimmed)
    assert data["inputs"]["long"].startswith("l" * 4000) and "5000" not in data["inputs"]["long"][:4000]
    assert data["inputs"]["short"] == "s" * 2000 and data["output"] == "o" * 3000


def test_trim_replaces_a_list_of_many_small_values_and_keeps_inputs_an_object():
    original = call("a", inputs={"messages": [f"m{i}" for i in range(5000)]})
    trimmed = trim_call(original, 3000)
    assert trimmed is not None and len(trimmed) <= 3000
    inputs = orjson.loads(trimmed)["inputs"]
    assert isinstance(inputs, dict)
    assert inputs["messages"].startswith('["m0","m1"') and inputs["messages"].endswith("characters removed]")


def test_trim_gives_up_when_only_protected_fields_are_large():
    assert trim_call(call("a", op_name="o" * 5000), 1000) is None
