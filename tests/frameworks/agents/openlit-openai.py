"""OpenLIT's auto-instrumentation (openlit.init) on a hand-written OpenAI tool loop, @openlit.trace on the agent and tools.

openlit.init exports OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT. It downloads its price list from GitHub unless
pricing_json names a file: a local one (gpt-4o-mini's prices per 1000 tokens) keeps the run offline and still
gives the spans a gen_ai.usage.cost. The last model call is streamed.
"""

import json
import tempfile

import openlit
from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, get_forecast, get_weather
from openai import OpenAI

with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as prices:
    json.dump({"chat": {OPENAI_MODEL: {"promptPrice": 0.00015, "completionPrice": 0.0006}}}, prices)
openlit.init(application_name="openlit-openai", pricing_json=prices.name, disable_metrics=True)
client = OpenAI(base_url=OPENAI_BASE_URL, api_key="sk-fake")

TOOLS = {f.__name__: openlit.trace(f) for f in (get_weather, get_forecast)}
SCHEMA = [
    {"type": "function", "function": {"name": name, "description": f.__doc__, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    for name, f in zip(TOOLS, (get_weather, get_forecast))
]


@openlit.trace
def run_agent(prompt: str) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    while True:
        if sum(m["role"] == "tool" for m in messages) < 2:
            message = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=SCHEMA).choices[0].message
        else:
            stream = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=SCHEMA, stream=True, stream_options={"include_usage": True})
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls or []:
            try:
                result = TOOLS[call.function.name](**json.loads(call.function.arguments))
            except RuntimeError as error:
                result = f"error: {error}"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})


print(f"final output: {run_agent(PROMPT)!r}")
from opentelemetry import trace  # noqa: E402 - the provider openlit.init set

trace.get_tracer_provider().shutdown()
