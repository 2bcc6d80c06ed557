"""What every recorded agent shares: the two tools, the environment, the OpenTelemetry SDK set up as the docs show.

Imported by the agents inside the framework virtualenvs (record.py puts this folder on PYTHONPATH), never by
the project; it needs only opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http, which every
framework virtualenv pins.
"""

from __future__ import annotations

import os

from fake_models import ANSWER, FORECAST_ERROR, PROMPT, SYSTEM, TOOL_ARGS, WEATHER  # noqa: F401 - re-exported

OPENAI_BASE_URL = os.environ.get("FAKE_OPENAI_BASE_URL", "")
ANTHROPIC_BASE_URL = os.environ.get("FAKE_ANTHROPIC_BASE_URL", "")
GEMINI_BASE_URL = os.environ.get("FAKE_GEMINI_BASE_URL", "")
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return WEATHER


def get_forecast(city: str) -> str:
    """Get tomorrow's weather forecast for a city."""
    raise RuntimeError(FORECAST_ERROR)


def tracer_provider(set_global: bool = True):
    """A TracerProvider exporting OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (the capture)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def logger_provider(set_global: bool = True):
    """A LoggerProvider exporting OTLP/HTTP log records to the capture (for instrumentations that emit events as logs)."""
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    if set_global:
        set_logger_provider(provider)
    return provider


def anthropic_tool_runner_run(client, stream: bool = False) -> str:
    """The weather run with the anthropic SDK's own agent loop (beta tool runner); returns the answer.

    The runner sends a tool's exception back to the model as an error result, so the run goes on.
    """
    from anthropic import beta_tool

    runner = client.beta.messages.tool_runner(
        model=ANTHROPIC_MODEL,
        max_tokens=1024,
        system=SYSTEM,
        messages=[{"role": "user", "content": PROMPT}],
        tools=[beta_tool(get_weather), beta_tool(get_forecast)],
        stream=stream,
    )
    message = runner.until_done()
    return "".join(block.text for block in message.content if block.type == "text")


def openai_chat_loop_run(client, stream: bool = False) -> str:
    """The weather run as a plain loop over OpenAI chat completions (for instrumentations of the client alone);
    a tool's exception goes back to the model as the tool message. Returns the answer."""
    import json

    tools = {"get_weather": get_weather, "get_forecast": get_forecast}
    schema = [
        {"type": "function", "function": {"name": name, "description": f.__doc__, "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
        for name, f in tools.items()
    ]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    while True:
        extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        response = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=schema, **extra)
        if stream:
            text, calls = "", {}
            for chunk in response:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    for delta in choice.delta.tool_calls or []:
                        call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = delta.id or call["id"]
                        call["name"] = (delta.function and delta.function.name) or call["name"]
                        call["arguments"] += (delta.function and delta.function.arguments) or ""
            calls = list(calls.values())
        else:
            message = response.choices[0].message
            text = message.content or ""
            calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []]
        if not calls:
            return text
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]})
        for c in calls:
            try:
                result = tools[c["name"]](**json.loads(c["arguments"]))
            except RuntimeError as error:
                result = f"error: {error}"
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": result})
