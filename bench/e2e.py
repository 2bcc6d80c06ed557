"""End-to-end benchmark: load generator -> real bridge subprocess (OTLP/gRPC) -> local Weave sink.

    python bench/e2e.py [--seconds 10] [--concurrency 4] [--spans-per-request 512]

Three processes besides this one: the sink (asyncio HTTP/1.1 server counting calls), the bridge
(`python -m otel_bridge serve`), and the load generator (grpc.aio sending pre-serialized requests).
Everything listens on 127.0.0.1 only and is stopped on exit, Ctrl-C or error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

API_KEY = "bench-api-key"
ENTITY, PROJECT = "bench-entity", "bench-project"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from mapping import default_weave_python  # noqa: E402


# --------------------------------------------------------------------------------------------- sink


def _sink_main(conn, calls, requests, bad, expected_auth: str, delay: float) -> None:
    """A minimal HTTP/1.1 keep-alive server: POST .../calls/complete -> count the calls in body["batch"]."""
    import orjson

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; Ctrl-C must not kill us mid-run
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    def reply(status: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.split(b"\r\n")
                method, _, rest = lines[0].partition(b" ")
                path = rest.partition(b" ")[0]
                length, auth, close = 0, b"", False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"authorization":
                        auth = value.strip()
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                body = await reader.readexactly(length) if length else b""
                if method == b"GET" and path == b"/count":
                    answer = reply(b"200 OK", orjson.dumps({"calls": calls.value, "requests": requests.value}))
                elif method != b"POST" or not path.startswith(b"/v2/") or not path.endswith(b"/calls/complete"):
                    with bad.get_lock():
                        bad.value += 1
                    answer = reply(b"404 Not Found", b'{"detail":"not found"}')
                elif auth != expected_auth.encode():
                    with bad.get_lock():
                        bad.value += 1
                    answer = reply(b"401 Unauthorized", b'{"detail":"bad api key"}')
                else:
                    # Counting: every call object the bridge writes starts with {"project_id": and no
                    # generated span carries a key of that name, so a byte count is exact and ~30x
                    # cheaper than parsing. Every 16th body is also parsed in full to check that.
                    n = body.count(b'{"project_id":')
                    if not body.startswith(b'{"batch":['):
                        n = -1
                    elif requests.value % 16 == 0:
                        try:
                            if len(orjson.loads(body)["batch"]) != n:
                                n = -1
                        except (orjson.JSONDecodeError, KeyError, TypeError):
                            n = -1
                    if n < 0:
                        with bad.get_lock():
                            bad.value += 1
                        answer = reply(b"400 Bad Request", b'{"detail":"bad body"}')
                    else:
                        if delay:
                            await asyncio.sleep(delay)  # a slow upstream (--sink-delay)
                        # Only this process writes calls/requests: no lock needed for the writes.
                        calls.value += n
                        requests.value += 1
                        answer = ok
                writer.write(answer)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 20, backlog=128)
        conn.send(server.sockets[0].getsockname()[1])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------- generator

_WORDS = (
    "the quick brown fox jumps over lazy dog weather forecast travel itinerary budget hotel flight museum "
    "dinner reservation summary customer order refund policy shipping address invoice python function "
    "database query index latency error retry cache token model prompt answer context window"
).split()


def _text(rng: random.Random, nbytes: int) -> str:
    out: list[str] = []
    size = 0
    while size < nbytes:
        word = rng.choice(_WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def _messages_in(rng: random.Random) -> str:
    messages = [
        {"role": "system", "parts": [{"type": "text", "content": "You are a helpful assistant. " + _text(rng, 250)}]},
        {"role": "user", "parts": [{"type": "text", "content": _text(rng, 220)}]},
        {"role": "assistant", "parts": [{"type": "text", "content": _text(rng, 200)}]},
        {"role": "user", "parts": [{"type": "text", "content": _text(rng, 120)}]},
    ]
    return json.dumps(messages)  # ~1 KB


def _messages_out(rng: random.Random) -> str:
    return json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": _text(rng, 200)}], "finish_reason": "stop"}]
    )  # ~300 B


def build_requests(count: int, spans_per_request: int, seed: int = 1) -> list[bytes]:
    """`count` distinct serialized ExportTraceServiceRequests of `spans_per_request` LLM-sized spans each.

    Spans come in traces of 4: one root `invoke_agent` span and three `chat` children. Span ids are unique
    across all requests; trace ids are unique within the set (they repeat only when a request is re-sent).
    """
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    def value(v) -> AnyValue:
        if isinstance(v, bool):
            return AnyValue(bool_value=v)
        if isinstance(v, int):
            return AnyValue(int_value=v)
        if isinstance(v, float):
            return AnyValue(double_value=v)
        if isinstance(v, (list, tuple)):
            return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
        return AnyValue(string_value=str(v))

    def kvs(d: dict) -> list[KeyValue]:
        return [KeyValue(key=k, value=value(v)) for k, v in d.items()]

    rng = random.Random(seed)
    used: set[bytes] = set()

    def new_id(n: int) -> bytes:
        while True:
            b = rng.randbytes(n)
            if any(b) and b not in used:
                used.add(b)
                return b

    resource = Resource(attributes=kvs({"service.name": "bench-agent", "wandb.entity": ENTITY, "wandb.project": PROJECT}))
    scope = InstrumentationScope(name="opentelemetry.instrumentation.openai_v2", version="2.1b0")
    models = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-pro")
    now = time.time_ns()
    out: list[bytes] = []
    for r in range(count):
        spans: list[Span] = []
        root_id = b""
        trace_id = b""
        root_start = 0
        for i in range(spans_per_request):
            is_root = i % 4 == 0
            if is_root:
                trace_id = new_id(16)
                root_id = new_id(8)
                root_start = now - rng.randint(5, 600) * 1_000_000_000 - r * 1_000_000
                start, duration, span_id, parent = root_start, rng.randint(3_000, 20_000) * 1_000_000, root_id, b""
            else:
                start = root_start + (i % 4) * rng.randint(50, 900) * 1_000_000
                duration, span_id, parent = rng.randint(200, 2_500) * 1_000_000, new_id(8), root_id
            model = rng.choice(models)
            attributes = {
                "gen_ai.operation.name": "invoke_agent" if is_root else "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": model + "-2024-08-06",
                "gen_ai.request.temperature": round(rng.uniform(0, 1), 2),
                "gen_ai.request.max_tokens": 1024,
                "gen_ai.response.id": "chatcmpl-" + rng.randbytes(12).hex(),
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.usage.input_tokens": rng.randint(200, 4000),
                "gen_ai.usage.output_tokens": rng.randint(20, 800),
                "gen_ai.usage.cache_read.input_tokens": rng.randint(0, 2000),
                "gen_ai.input.messages": _messages_in(rng),
                "gen_ai.output.messages": _messages_out(rng),
                "gen_ai.conversation.id": "conv-" + trace_id[:6].hex(),
                "server.address": "api.openai.com",
            }
            spans.append(
                Span(
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_span_id=parent,
                    name=("invoke_agent planner" if is_root else f"chat {model}"),
                    kind=Span.SPAN_KIND_INTERNAL if is_root else Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + duration,
                    attributes=kvs(attributes),
                    status=Status(code=Status.STATUS_CODE_UNSET),
                )
            )
        message = ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])]
        )
        out.append(message.SerializeToString())
    return out


class _GrpcExporter:
    """Export over OTLP/gRPC, on a connection of its own (a local subchannel pool: channels to the same
    target would otherwise share one connection, and SO_REUSEPORT spreads connections, not requests)."""

    def __init__(self, target: str) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        self.error = grpc.aio.AioRpcError
        self.channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", 256 << 20),
                ("grpc.max_receive_message_length", 16 << 20),
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        self.call = self.channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
        )

    async def ready(self) -> None:
        await asyncio.wait_for(self.channel.channel_ready(), 20)

    async def export(self, payload: bytes) -> tuple[int, str | None]:
        """(rejected spans, error name or None)."""
        try:
            response = await self.call(payload, timeout=30)
        except self.error as exc:
            return 0, exc.code().name
        return response.partial_success.rejected_spans, None

    async def close(self) -> None:
        await self.channel.close()


class _HttpExporter:
    """Export over OTLP/HTTP (protobuf), on a keep-alive connection of its own."""

    def __init__(self, target: str) -> None:
        import aiohttp
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        self.url = f"http://{target}/v1/traces"
        self.parse = ExportTraceServiceResponse.FromString
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))

    async def ready(self) -> None:
        pass  # the bench waited for the port

    async def export(self, payload: bytes) -> tuple[int, str | None]:
        async with self.session.post(
            self.url, data=payload, headers={"Content-Type": "application/x-protobuf"}, timeout=None
        ) as response:
            body = await response.read()
            if response.status != 200:
                return 0, f"HTTP {response.status}"
        return self.parse(body).partial_success.rejected_spans, None

    async def close(self) -> None:
        await self.session.close()


def _generator_main(conn, target: str, http: bool, seconds: float, concurrency: int, spans_per_request: int, distinct: int, go) -> None:
    """Build the requests, warm up with one, report ready; on `go`, send for `seconds`; report results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    payloads = build_requests(distinct, spans_per_request)
    avg_bytes = sum(map(len, payloads)) / len(payloads)

    async def main() -> dict:
        # One exporter (connection) per request in flight, as separate exporting processes would have.
        exporters = [(_HttpExporter if http else _GrpcExporter)(target) for _ in range(concurrency)]
        try:
            await asyncio.gather(*(exporter.ready() for exporter in exporters))
            _, error = await exporters[0].export(payloads[0])  # warm-up: its calls reach the sink before the window opens
            if error:
                raise RuntimeError(f"warm-up Export failed: {error}")
            conn.send(("ready", avg_bytes))
            await asyncio.get_running_loop().run_in_executor(None, go.wait)

            stats = {"requests": 0, "spans_sent": 0, "spans_acked": 0, "spans_rejected": 0, "errors": {}}
            latencies: list[float] = []
            deadline = time.monotonic() + seconds
            counter = iter(range(1 << 62))

            async def worker(exporter) -> None:
                while time.monotonic() < deadline:
                    payload = payloads[next(counter) % len(payloads)]
                    started = time.perf_counter()
                    rejected, error = await exporter.export(payload)
                    stats["spans_sent"] += spans_per_request
                    if error:
                        stats["errors"][error] = stats["errors"].get(error, 0) + 1
                        await asyncio.sleep(0.1)  # a real exporter backs off before retrying
                        continue
                    latencies.append(time.perf_counter() - started)
                    stats["requests"] += 1
                    stats["spans_acked"] += spans_per_request - rejected
                    stats["spans_rejected"] += rejected

            started = time.monotonic()
            await asyncio.gather(*(worker(exporter) for exporter in exporters))
            stats["send_seconds"] = time.monotonic() - started
            latencies.sort()
            stats["latencies_ms"] = [x * 1000 for x in latencies]
            return stats
        finally:
            for exporter in exporters:
                await exporter.close()

    try:
        conn.send(("done", asyncio.run(main())))
    except Exception as exc:  # report, do not hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


# ----------------------------------------------------------------------------------- /proc helpers

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (via /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split())
    return out


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _CLK_TCK


def rss_by_process(pid: int) -> list[int]:
    """VmRSS of pid and each of its descendants, bytes."""
    found = []
    for p in _tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    return found


def rss_bytes(pid: int) -> int:
    return sum(rss_by_process(pid))


class RssPoller(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="rss-poller")
        self.pid, self.interval = pid, interval
        self.peak = 0  # of the process tree
        self.peak_process = 0  # of its largest process (a worker, when there are workers)
        self.samples: list[tuple[float, int]] = []  # (monotonic time, tree RSS)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            sizes = rss_by_process(self.pid)
            self.peak = max(self.peak, sum(sizes))
            self.peak_process = max(self.peak_process, max(sizes, default=0))
            self.samples.append((time.monotonic(), sum(sizes)))
            self._stop_event.wait(self.interval)

    def peak_between(self, start: float, end: float) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(2)


# ------------------------------------------------------------------------------------------- main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n: int) -> int:
    """A port p with p..p+n-1 all free (worker i serves telemetry on p + i)."""
    for _ in range(100):
        first = _free_port()
        try:
            for port in range(first + 1, first + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {n} consecutive free ports")


def _wait_workers(telemetry_port: int, workers: int, proc: subprocess.Popen, timeout: float) -> None:
    """Until every worker answers /healthz on its telemetry port: connections made before a worker listens
    would all go to the others."""
    import httpx

    deadline = time.monotonic() + timeout
    for port in range(telemetry_port, telemetry_port + workers):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the bridge exited with code {proc.returncode} before listening")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {port - telemetry_port} did not answer /healthz within {timeout:.0f}s")
            time.sleep(0.05)


def _recv(conn, timeout: float, what: str):
    if not conn.poll(timeout):
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
    return conn.recv()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _write_config(path: Path, port: int, telemetry_port: int, sink_port: int, args: argparse.Namespace) -> None:
    receivers = f"grpc: null\n  http:\n    endpoint: 127.0.0.1:{port}" if args.http else f"grpc:\n    endpoint: 127.0.0.1:{port}\n  http: null"
    queue_bound = f"\n    max_bytes: {args.queue_max_bytes}" if args.queue_max_bytes else ""
    path.write_text(
        f"""shutdown_timeout: 5s
receiver:
  workers: {args.workers}
  {receivers}
exporter:
  weave:
    base_url: http://127.0.0.1:{sink_port}
    api_key: {API_KEY}
    project: ""
  batch:
    max_calls: {args.batch_max_calls}
    flush_interval: {args.flush_interval}
  queue:
    num_consumers: {args.consumers}
    directory: {path.parent / "queue" if args.durable else "null"}{queue_bound}
telemetry:
  endpoint: 127.0.0.1:{telemetry_port}
  log_level: warning
""",
        encoding="utf-8",
    )


def run(args: argparse.Namespace) -> int:
    result = measure(args)
    _print_table(result)
    print(json.dumps(result, separators=(",", ":")))
    return 0


def measure(args: argparse.Namespace) -> dict:
    """One run as the options say (see bench/README.md); the figures, as the JSON line prints them."""
    import base64

    ctx = mp.get_context("spawn")
    expected_auth = "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
    tmp = Path(tempfile.mkdtemp(prefix="otel-bridge-bench-"))
    log_path = tmp / "bridge.log"
    sink = generator = bridge = None
    log_file = None
    poller: RssPoller | None = None
    try:
        # 1. the sink
        sink_conn, child = ctx.Pipe()
        calls, requests, bad = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False), ctx.Value("q", 0)
        sink = ctx.Process(target=_sink_main, args=(child, calls, requests, bad, expected_auth, args.sink_delay), name="bench-sink", daemon=True)
        sink.start()
        sink_port = _recv(sink_conn, 20, "the sink to listen")

        # 2. the bridge
        port, telemetry_port = _free_port(), _free_ports(args.workers)
        config = tmp / "bridge.yaml"
        _write_config(config, port, telemetry_port, sink_port, args)
        env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WEAVE_PROJECT", "WF_TRACE_SERVER_URL")}
        log_file = open(log_path, "wb")
        bridge = subprocess.Popen(
            [sys.executable, "-m", "otel_bridge", "serve", "--config", str(config)],
            cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        _wait_workers(telemetry_port, args.workers, bridge, 60)
        poller = RssPoller(bridge.pid)
        poller.start()
        rss_idle = rss_bytes(bridge.pid)

        # 3. the generator: build, warm up, wait for the warm-up calls at the sink
        go = ctx.Event()
        gen_conn, child = ctx.Pipe()
        generator = ctx.Process(
            target=_generator_main,
            args=(child, f"127.0.0.1:{port}", args.http, args.seconds, args.concurrency, args.spans_per_request, args.distinct, go),
            name="bench-generator", daemon=True,
        )
        generator.start()
        kind, avg_request_bytes = _recv(gen_conn, 120, "the generator to build its requests")
        if kind != "ready":
            raise RuntimeError(f"generator failed: {avg_request_bytes}")
        deadline = time.monotonic() + 10
        while calls.value < args.spans_per_request and time.monotonic() < deadline:
            time.sleep(0.02)

        # 4. the measured window
        calls0, requests0, cpu0 = calls.value, requests.value, cpu_seconds(bridge.pid)
        sink_cpu0, gen_cpu0 = cpu_seconds(sink.pid), cpu_seconds(generator.pid)
        t0 = time.monotonic()
        go.set()
        kind, stats = _recv(gen_conn, args.seconds + 90, "the generator's results")
        if kind != "done":
            raise RuntimeError(f"generator failed: {stats}")
        t1 = time.monotonic()
        if bridge.poll() is not None:
            raise RuntimeError(f"the bridge exited with code {bridge.returncode} during the send phase")
        calls1 = calls.value
        gen_cpu = cpu_seconds(generator.pid) - gen_cpu0
        # drain: wait for everything acknowledged to reach the sink (bounded)
        deadline = time.monotonic() + args.drain_seconds
        while calls.value - calls0 < stats["spans_acked"] and time.monotonic() < deadline:
            time.sleep(0.05)
        t2 = time.monotonic()
        calls2, requests2, cpu2 = calls.value, requests.value, cpu_seconds(bridge.pid)
        sink_cpu = cpu_seconds(sink.pid) - sink_cpu0
        poller.stop()

        # RSS early and late in the window: flat under sustained load means the bounds hold (--seconds 600: a soak).
        quarter = (t1 - t0) / 4
        rss_first_quarter = poller.peak_between(t0, t0 + quarter)
        rss_last_quarter = poller.peak_between(t1 - quarter, t1)

        # Weave's own converter on the same spans, while the bridge is idle (it shares the machine).
        from mapping import compare

        converters = compare(build_requests(args.distinct, args.spans_per_request), args.weave_seconds, args.weave_python)

        lat = stats.pop("latencies_ms")
        delivered = calls2 - calls0
        window = t1 - t0
        result = {
            "seconds": round(window, 3),
            "concurrency": args.concurrency,
            "spans_per_request": args.spans_per_request,
            "request_bytes": round(avg_request_bytes),
            "requests_ok": stats["requests"],
            "spans_sent": stats["spans_sent"],
            "spans_acked": stats["spans_acked"],
            "spans_rejected": stats["spans_rejected"],
            "export_errors": stats["errors"],
            "spans_acked_per_s": round(stats["spans_acked"] / window, 1),
            "export_p50_ms": round(_percentile(lat, 0.50), 2),
            "export_p99_ms": round(_percentile(lat, 0.99), 2),
            "calls_delivered_in_window": calls1 - calls0,
            "calls_delivered_per_s": round((calls1 - calls0) / window, 1),
            "calls_delivered_total": delivered,
            "delivered_over_sent": round(delivered / stats["spans_sent"], 4) if stats["spans_sent"] else None,
            "drain_seconds": round(t2 - t1, 2),
            "sink_requests": requests2 - requests0,
            "sink_bad_requests": bad.value,
            "bridge_cpu_s": round(cpu2 - cpu0, 2),
            "bridge_cpu_s_per_10k_spans": round((cpu2 - cpu0) / stats["spans_acked"] * 10_000, 3) if stats["spans_acked"] else None,
            "bridge_spans_per_cpu_s": round(stats["spans_acked"] / (cpu2 - cpu0)) if cpu2 > cpu0 else None,
            "bridge_cpu_util": round((cpu2 - cpu0) / (t2 - t0), 2),
            "bridge_rss_idle_mib": round(rss_idle / 2**20, 1),
            "bridge_rss_peak_mib": round(poller.peak / 2**20, 1),
            "sink_cpu_util": round(sink_cpu / (t2 - t0), 2),
            "generator_cpu_util": round(gen_cpu / window, 2),
            "bridge_rss_peak_per_process_mib": round(poller.peak_process / 2**20, 1),
            "bridge_rss_first_quarter_mib": round(rss_first_quarter / 2**20, 1),
            "bridge_rss_last_quarter_mib": round(rss_last_quarter / 2**20, 1),
            **converters,
            "delivered_over_weave": (
                round((calls1 - calls0) / window / converters["weave_spans_per_s"], 1) if converters["weave_spans_per_s"] else None
            ),
            "mode": _mode(args),
            "cpu_count": os.cpu_count(),
        }
        return result
    finally:
        if poller is not None:
            poller.stop()
        if generator is not None and generator.is_alive():
            generator.terminate()
            generator.join(5)
        if bridge is not None:
            stop_bridge(bridge)
            _report_bridge_log(log_path, bridge.returncode)
        if log_file is not None:
            log_file.close()
        if sink is not None:
            stop_sink(sink)
        shutil.rmtree(tmp, ignore_errors=True)


def stop_bridge(bridge: subprocess.Popen) -> None:
    """SIGTERM, as a pod is stopped; killed if it has not exited within 15 s."""
    if bridge.poll() is None:
        bridge.send_signal(signal.SIGTERM)
        try:
            bridge.wait(15)
        except subprocess.TimeoutExpired:
            bridge.kill()
            bridge.wait(5)


def stop_sink(sink: mp.Process) -> None:
    if sink.is_alive():
        sink.terminate()
        sink.join(5)
        if sink.is_alive():
            sink.kill()


def _report_bridge_log(path: Path, returncode: int | None) -> None:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()
        if lines or returncode not in (0, None):
            print(f"\nbridge exited with {returncode}; its log ({len(lines)} lines at level warning+), last 20:", file=sys.stderr)
            for line in lines[-20:]:
                print("  " + line, file=sys.stderr)


def _print_table(r: dict) -> None:
    errors = ", ".join(f"{k}={v}" for k, v in r["export_errors"].items()) or "none"
    rows = [
        ("window", f"{r['seconds']:.2f}", "s", f"concurrency {r['concurrency']}, {r['spans_per_request']} spans/request, {r['request_bytes'] / 1024:.0f} KiB/request"),
        ("spans sent", f"{r['spans_sent']:,}", "spans", f"{r['requests_ok']:,} Export requests OK; errors: {errors}"),
        ("spans acknowledged", f"{r['spans_acked']:,}", "spans", f"{r['spans_acked_per_s']:,.0f} spans/s; {r['spans_rejected']} rejected (partial success)"),
        ("Export latency p50", f"{r['export_p50_ms']:.1f}", "ms", ""),
        ("Export latency p99", f"{r['export_p99_ms']:.1f}", "ms", ""),
        ("calls delivered/s", f"{r['calls_delivered_per_s']:,.0f}", "calls/s", f"{r['calls_delivered_in_window']:,} delivered during the window"),
        ("delivered / sent", f"{r['delivered_over_sent']:.3f}", "", f"{r['calls_delivered_total']:,} after {r['drain_seconds']:.1f}s drain; {r['sink_requests']:,} POSTs, {r['sink_bad_requests']} bad"),
        ("bridge CPU per 10k spans", f"{r['bridge_cpu_s_per_10k_spans']:.3f}", "cpu-s", f"{r['bridge_cpu_s']:.1f} cpu-s total, {r['bridge_cpu_util']:.2f} cores busy on average"),
        ("bridge spans per CPU-s", f"{r['bridge_spans_per_cpu_s']:,}", "spans", "spans acknowledged per second of the bridge's CPU (user+system)"),
        ("bridge peak RSS", f"{r['bridge_rss_peak_mib']:.0f}", "MiB", f"process tree; idle {r['bridge_rss_idle_mib']:.0f} MiB; largest process {r['bridge_rss_peak_per_process_mib']:.0f} MiB"),
        ("bridge RSS early / late", f"{r['bridge_rss_first_quarter_mib']:.0f} / {r['bridge_rss_last_quarter_mib']:.0f}", "MiB", "peak in the first / last quarter of the window"),
        ("mapping alone", f"{r['mapping_spans_per_s']:,}", "spans/s", "map_request on the same requests, one core, in this process"),
        ("Weave's converter", f"{r['weave_spans_per_s']:,}" if r["weave_spans_per_s"] else "-", "spans/s",
         f"weave {r['weave_version']}, same requests; mapping alone {r['mapping_over_weave']}x (slices {r['mapping_over_weave_range'][0]}x-{r['mapping_over_weave_range'][1]}x), delivered {r['delivered_over_weave']}x"
         if r["weave_spans_per_s"] else "not run: give --weave-python (or WEAVE_PYTHON, or .venv-weave)"),
        ("mode", "", "", r["mode"]),
        ("cores", f"{r['cpu_count']}", "", f"shared; cores busy: sink {r['sink_cpu_util']:.2f}, generator {r['generator_cpu_util']:.2f}"),
    ]
    w0 = max(len(a) for a, *_ in rows)
    w1 = max(len(b) for _, b, *_ in rows)
    w2 = max(len(c) for _, _, c, _ in rows)
    for name, value, unit, note in rows:
        print(f"{name:<{w0}}  {value:>{w1}}  {unit:<{w2}}  {note}".rstrip())


def _mode(args: argparse.Namespace) -> str:
    queue = "durable" if args.durable else "in-memory"
    return f"{'HTTP' if args.http else 'gRPC'}, {queue} queue, {args.workers} worker{'s' if args.workers > 1 else ''}"


def parser() -> argparse.ArgumentParser:
    """The options; bench/kafka.py builds its gRPC run from them too."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the send phase (default 10)")
    parser.add_argument("--concurrency", type=int, default=4, help="Export requests in flight (default 4)")
    parser.add_argument("--spans-per-request", type=int, default=512, help="spans per Export request (default 512)")
    parser.add_argument("--distinct", type=int, default=16, help="distinct pre-built requests, sent round-robin (default 16)")
    parser.add_argument("--drain-seconds", type=float, default=10.0, help="longest wait for the sink to catch up after sending (default 10)")
    parser.add_argument("--batch-max-calls", type=int, default=1000, help="bridge exporter.batch.max_calls (default 1000)")
    parser.add_argument("--flush-interval", default="1s", help="bridge exporter.batch.flush_interval (default 1s)")
    parser.add_argument("--consumers", type=int, default=4, help="bridge exporter.queue.num_consumers (default 4)")
    parser.add_argument(
        "--durable", action="store_true", help="bridge exporter.queue.directory in the run's temporary directory (default: in memory)"
    )
    parser.add_argument("--http", action="store_true", help="send over OTLP/HTTP (protobuf) instead of OTLP/gRPC")
    parser.add_argument("--workers", type=int, default=1, help="bridge receiver.workers (default 1)")
    parser.add_argument("--queue-max-bytes", type=int, default=None, help="bridge exporter.queue.max_bytes (default: the bridge's)")
    parser.add_argument("--sink-delay", type=float, default=0.0, help="seconds the sink waits before answering each POST: a slow upstream, so the queue fills (default 0)")
    parser.add_argument("--weave-seconds", type=float, default=5.0, help="how long each converter runs in the comparison (default 5)")
    parser.add_argument("--weave-python", default=default_weave_python(), help="interpreter with weave==0.53.12 (default: $WEAVE_PYTHON, else .venv-weave; none: comparison skipped)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser_ = parser()
    args = parser_.parse_args(argv)
    if args.weave_python == "none":  # the comparison skipped, as --help says
        args.weave_python = None
    if args.seconds <= 0 or args.concurrency <= 0 or args.spans_per_request <= 0 or args.distinct <= 0:
        parser_.error("--seconds, --concurrency, --spans-per-request and --distinct must be positive")
    return exit_status(run, args)


def exit_status(bench: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """A bench's exit status: its own, 130 on Ctrl-C, 1 with the reason when it fails (RuntimeError)."""
    try:
        return bench(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
