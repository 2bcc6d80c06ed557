"""OpenLIT's auto-instrumentation (openlit.init) on agent_kit's OpenAI tool loop, @openlit.trace on the agent and tools.

openlit.init exports OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT. It downloads its price list from GitHub unless
pricing_json names a file: a local one (gpt-4o-mini's prices per 1000 tokens) keeps the run offline and still
gives the spans a gen_ai.usage.cost. The last model call is streamed.
"""

import json
import tempfile
from functools import partial

import openlit
from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, get_forecast, get_weather, run_tool_loop
from openai import OpenAI

with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as prices:
    json.dump({"chat": {OPENAI_MODEL: {"promptPrice": 0.00015, "completionPrice": 0.0006}}}, prices)
openlit.init(application_name="openlit-openai", pricing_json=prices.name, disable_metrics=True)
client = OpenAI(base_url=OPENAI_BASE_URL, api_key="sk-fake")

TOOLS = {f.__name__: openlit.trace(f) for f in (get_weather, get_forecast)}


@openlit.trace
def run_agent(prompt: str) -> str:
    return run_tool_loop(partial(client.chat.completions.create, model=OPENAI_MODEL), lambda name, args, _: TOOLS[name](**json.loads(args)), prompt)


print(f"final output: {run_agent(PROMPT)!r}")
from opentelemetry import trace  # noqa: E402 - the provider openlit.init set

trace.get_tracer_provider().shutdown()
