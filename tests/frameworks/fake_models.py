"""Fake model APIs on 127.0.0.1 for the framework recordings: OpenAI, OpenAI Responses, Anthropic, Gemini.

Standard library only: the recorder imports it, and so can any framework's virtualenv. Every API follows
one deterministic script, chosen by how many tool results the conversation already holds (0: ask for
get_weather, 1: ask for get_forecast, 2 or more: answer), and the n-th response a server instance sends
reports fixed usage (see `usage_of`), in each API's own shape, so a test knows the exact real counts.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROMPT = "What is the weather in Paris?"
SYSTEM = "You are a weather assistant."
WEATHER = "sunny, 21 C"
FORECAST_ERROR = "forecast service down"
ANSWER = "It is sunny in Paris, 21 C."
TOOL_ARGS = {"city": "Paris"}
TOOLS_IN_ORDER = ("get_weather", "get_forecast")


def usage_of(n: int) -> dict[str, int]:
    """The real counts of the n-th response (1-based): input includes the cached tokens, output the reasoning."""
    return {
        "input_tokens": n * 100 + 7,
        "cached_input_tokens": n * 10,
        "cache_creation_input_tokens": n * 5,
        "output_tokens": n * 20 + 3,
        "reasoning_tokens": n,
    }


def next_step(tool_results: int) -> str | None:
    """The tool the model asks for next, or None for the final answer."""
    return TOOLS_IN_ORDER[tool_results] if tool_results < len(TOOLS_IN_ORDER) else None


def _chunks(text: str, parts: int = 3) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


# OpenAI chat completions ----------------------------------------------------------------------------


def _chat_tool_results(body: dict) -> int:
    return sum(1 for m in body.get("messages", []) if m.get("role") == "tool")


def _chat_usage(n: int) -> dict:
    u = usage_of(n)
    return {
        "prompt_tokens": u["input_tokens"],
        "completion_tokens": u["output_tokens"],
        "total_tokens": u["input_tokens"] + u["output_tokens"],
        "prompt_tokens_details": {"cached_tokens": u["cached_input_tokens"], "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u["reasoning_tokens"], "audio_tokens": 0},
    }


def _chat(body: dict, n: int, rid: str, tool: str | None) -> tuple[dict, list[dict]]:
    """(the complete response, its stream chunks without the usage chunk)."""
    model = body.get("model", "")
    base = {"id": rid, "object": "chat.completion", "created": 1767225600, "model": model, "system_fingerprint": "fp_fake"}
    if tool:
        call = {"id": f"call_{n}", "type": "function", "function": {"name": tool, "arguments": json.dumps(TOOL_ARGS)}}
        message = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
        finish = "tool_calls"
        deltas = [
            {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call, "function": {"name": tool, "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": json.dumps(TOOL_ARGS)}}]},
        ]
    else:
        message = {"role": "assistant", "content": ANSWER, "refusal": None}
        finish = "stop"
        deltas = [{"role": "assistant", "content": ""}] + [{"content": c} for c in _chunks(ANSWER)]
    full = {**base, "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}], "usage": _chat_usage(n)}
    chunk = {**base, "object": "chat.completion.chunk"}
    chunks = [{**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": None, "logprobs": None}]} for d in deltas]
    chunks.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None}]})
    return full, chunks


# OpenAI Responses -----------------------------------------------------------------------------------


def _responses_tool_results(body: dict) -> int:
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    return sum(1 for i in items if isinstance(i, dict) and i.get("type") == "function_call_output")


def _responses_usage(n: int) -> dict:
    u = usage_of(n)
    return {
        "input_tokens": u["input_tokens"],
        "input_tokens_details": {"cached_tokens": u["cached_input_tokens"]},
        "output_tokens": u["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": u["reasoning_tokens"]},
        "total_tokens": u["input_tokens"] + u["output_tokens"],
    }


def _responses(body: dict, n: int, rid: str, tool: str | None) -> tuple[dict, list[dict]]:
    if tool:
        item = {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "name": tool, "arguments": json.dumps(TOOL_ARGS), "status": "completed"}
    else:
        part = {"type": "output_text", "text": ANSWER, "annotations": [], "logprobs": []}
        item = {"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed", "content": [part]}
    done = {
        "id": rid, "object": "response", "created_at": 1767225600, "status": "completed", "model": body.get("model", ""),
        "output": [item], "parallel_tool_calls": True, "tool_choice": "auto", "tools": body.get("tools", []),
        "instructions": body.get("instructions"), "temperature": 1.0, "top_p": 1.0, "truncation": "disabled",
        "text": {"format": {"type": "text"}}, "error": None, "incomplete_details": None, "metadata": {},
        "usage": _responses_usage(n),
    }
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    events = [{"type": "response.created", "response": started}, {"type": "response.in_progress", "response": started}]
    if tool:
        events.append({"type": "response.output_item.added", "output_index": 0, "item": {**item, "arguments": "", "status": "in_progress"}})
        events.append({"type": "response.function_call_arguments.delta", "output_index": 0, "item_id": item["id"], "delta": item["arguments"]})
        events.append({"type": "response.function_call_arguments.done", "output_index": 0, "item_id": item["id"], "arguments": item["arguments"]})
    else:
        empty = {**part, "text": ""}
        events.append({"type": "response.output_item.added", "output_index": 0, "item": {**item, "status": "in_progress", "content": []}})
        events.append({"type": "response.content_part.added", "output_index": 0, "content_index": 0, "item_id": item["id"], "part": empty})
        for c in _chunks(ANSWER):
            events.append({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "item_id": item["id"], "delta": c, "logprobs": []})
        events.append({"type": "response.output_text.done", "output_index": 0, "content_index": 0, "item_id": item["id"], "text": ANSWER, "logprobs": []})
        events.append({"type": "response.content_part.done", "output_index": 0, "content_index": 0, "item_id": item["id"], "part": part})
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    events.append({"type": "response.completed", "response": done})
    for seq, event in enumerate(events):
        event["sequence_number"] = seq
    return done, events


# Anthropic Messages ---------------------------------------------------------------------------------


def _anthropic_tool_results(body: dict) -> int:
    count = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for block in content if isinstance(block, dict) and block.get("type") == "tool_result")
    return count


def _anthropic_usage(n: int, output_tokens: int | None = None) -> dict:
    """Anthropic's input_tokens exclude the cache reads and writes, which it reports apart."""
    u = usage_of(n)
    return {
        "input_tokens": u["input_tokens"] - u["cached_input_tokens"] - u["cache_creation_input_tokens"],
        "cache_read_input_tokens": u["cached_input_tokens"],
        "cache_creation_input_tokens": u["cache_creation_input_tokens"],
        "output_tokens": u["output_tokens"] if output_tokens is None else output_tokens,
    }


def _anthropic(body: dict, n: int, rid: str, tool: str | None) -> tuple[dict, list[dict]]:
    if tool:
        block = {"type": "tool_use", "id": f"toolu_{n}", "name": tool, "input": TOOL_ARGS}
        start_block = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": json.dumps(TOOL_ARGS)}]
        stop = "tool_use"
    else:
        block = {"type": "text", "text": ANSWER}
        start_block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": c} for c in _chunks(ANSWER)]
        stop = "end_turn"
    message = {
        "id": rid, "type": "message", "role": "assistant", "model": body.get("model", ""), "content": [block],
        "stop_reason": stop, "stop_sequence": None, "usage": _anthropic_usage(n),
    }
    # As the real API streams: message_start carries the input counts and a first output count, and
    # message_delta the final (cumulative) output count.
    events = [
        {"type": "message_start", "message": {**message, "content": [], "stop_reason": None, "usage": _anthropic_usage(n, output_tokens=1)}},
        {"type": "content_block_start", "index": 0, "content_block": start_block},
        *({"type": "content_block_delta", "index": 0, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": message["usage"]["output_tokens"]}},
        {"type": "message_stop"},
    ]
    return message, events


# Gemini ---------------------------------------------------------------------------------------------


def _gemini_tool_results(body: dict) -> int:
    count = 0
    for content in body.get("contents", []):
        count += sum(1 for part in content.get("parts", []) if "functionResponse" in part or "function_response" in part)
    return count


def _gemini_usage(n: int) -> dict:
    """Gemini's candidatesTokenCount excludes the thoughts, which it reports apart."""
    u = usage_of(n)
    return {
        "promptTokenCount": u["input_tokens"],
        "cachedContentTokenCount": u["cached_input_tokens"],
        "candidatesTokenCount": u["output_tokens"] - u["reasoning_tokens"],
        "thoughtsTokenCount": u["reasoning_tokens"],
        "totalTokenCount": u["input_tokens"] + u["output_tokens"],
    }


def _gemini(model: str, n: int, rid: str, tool: str | None) -> tuple[dict, list[dict]]:
    if tool:
        parts = [{"functionCall": {"name": tool, "args": TOOL_ARGS}}]
        chunk_parts = [parts]
    else:
        parts = [{"text": ANSWER}]
        chunk_parts = [[{"text": c}] for c in _chunks(ANSWER)]
    def response(ps: list[dict], finish: str | None, usage: dict | None) -> dict:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": ps}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        out: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": rid}
        if usage:
            out["usageMetadata"] = usage
        return out
    usage = _gemini_usage(n)
    chunks = [response(ps, None, None) for ps in chunk_parts[:-1]] + [response(chunk_parts[-1], "STOP", usage)]
    return response(parts, "STOP", usage), chunks


# The server -----------------------------------------------------------------------------------------


class FakeModelServer:
    """A real threaded HTTP server on 127.0.0.1:0. `served` lists each response: {api, model, usage, id}."""

    def __init__(self) -> None:
        self.served: list[dict[str, Any]] = []
        # Anthropic's message threads (anthropic >= 2's tool runner uses them): a request that continues a
        # thread sends only its new messages, so the tool results so far are counted by response id.
        self.thread_tool_results: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-models", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve(self, api: str, model: str, tool_results: int, build: Any) -> tuple[dict, list[dict]]:
        """Number the response, build it (build(n, rid, tool) -> (full, events)), and record it."""
        with self._lock:
            n = len(self.served) + 1
            rid = {"chat": f"chatcmpl-fake{n}", "responses": f"resp_fake{n}", "anthropic": f"msg_fake{n}", "gemini": f"gemini-fake{n}"}[api]
            full, events = build(n, rid, next_step(tool_results))
            usage = full.get("usage") or full.get("usageMetadata")
            self.served.append({"api": api, "model": model, "usage": usage, "id": rid, "real": usage_of(n)})
        return full, events


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "fake"}]})
        else:
            self._json(404, {"error": {"message": f"no such path {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        fake: FakeModelServer = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as error:
            self._json(400, {"error": {"message": f"bad JSON: {error}", "type": "invalid_request_error"}})
            return
        path = self.path.split("?")[0]
        stream = bool(body.get("stream"))
        if path.endswith("/chat/completions"):
            model = body.get("model", "")
            full, chunks = fake.serve("chat", model, _chat_tool_results(body), lambda n, rid, tool: _chat(body, n, rid, tool))
            if not stream:
                self._json(200, full)
                return
            if (body.get("stream_options") or {}).get("include_usage"):
                chunks = [{**c, "usage": None} for c in chunks]
                chunks.append({**chunks[-1], "choices": [], "usage": full["usage"]})
            self._sse([(None, c) for c in chunks] + [(None, "[DONE]")])
        elif path.endswith("/responses"):
            model = body.get("model", "")
            full, events = fake.serve("responses", model, _responses_tool_results(body), lambda n, rid, tool: _responses(body, n, rid, tool))
            self._sse([(e["type"], e) for e in events]) if stream else self._json(200, full)
        elif path.endswith("/messages"):
            model = body.get("model", "")
            previous = (body.get("thread") or {}).get("previous_message_id")
            tool_results = _anthropic_tool_results(body) + fake.thread_tool_results.get(previous, 0)
            full, events = fake.serve("anthropic", model, tool_results, lambda n, rid, tool: _anthropic(body, n, rid, tool))
            fake.thread_tool_results[full["id"]] = tool_results
            self._sse([(e["type"], e) for e in events]) if stream else self._json(200, full)
        elif ":generateContent" in path or ":streamGenerateContent" in path:
            model = path.rsplit("/", 1)[-1].split(":")[0]
            full, chunks = fake.serve("gemini", model, _gemini_tool_results(body), lambda n, rid, tool: _gemini(model, n, rid, tool))
            if ":generateContent" in path:
                self._json(200, full)
            elif "alt=sse" in self.path:
                self._sse([(None, c) for c in chunks])
            else:
                self._json(200, chunks)
        else:
            self._json(404, {"error": {"message": f"no such path {self.path}", "type": "not_found"}})

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[tuple[str | None, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for name, payload in events:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            self.wfile.write((f"event: {name}\n" if name else "").encode() + f"data: {data}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True
