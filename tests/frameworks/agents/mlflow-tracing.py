"""mlflow-tracing: mlflow.openai.autolog() on agent_kit's tool loop, @mlflow.trace on the agent and the tools.

With OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set (protocol from OTEL_EXPORTER_OTLP_PROTOCOL), MLflow exports its spans
over OTLP instead of to a tracking server, as its OpenTelemetry docs show. The last model call is streamed.
"""

import json
import os
from functools import partial

# Traces only, as MLflow's docs set it: with the base endpoint MLflow also records span metrics, and in the
# mlflow-tracing package (no tracking client) that fails every span's end, so nothing is exported.
os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT") + "/v1/traces"
# Without a tracking URI mlflow-tracing looks for a local ./mlruns store, which needs the full mlflow package
# (sqlparse, yaml), and drops every span; with OTLP export the tracking server is never contacted.
os.environ.setdefault("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")

import mlflow
from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, get_forecast, get_weather, run_tool_loop
from mlflow.entities import SpanType
from openai import OpenAI

mlflow.openai.autolog()
client = OpenAI(base_url=OPENAI_BASE_URL, api_key="sk-fake")

TOOLS = {f.__name__: mlflow.trace(f, name=f"execute_tool {f.__name__}", span_type=SpanType.TOOL) for f in (get_weather, get_forecast)}


@mlflow.trace(name="weather agent", span_type=SpanType.AGENT)
def run_agent(prompt: str) -> str:
    return run_tool_loop(partial(client.chat.completions.create, model=OPENAI_MODEL), lambda name, args, _: TOOLS[name](**json.loads(args)), prompt)


print(f"final output: {run_agent(PROMPT)!r}")  # MLflow's own TracerProvider flushes its OTLP batch at exit
