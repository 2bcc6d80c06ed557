"""logfire.instrument_openai on agent_kit's tool loop; the last model call is streamed (with usage).

Logfire exports OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT by itself when that variable is set; send_to_logfire=False
keeps it off Logfire's own service, as its "alternative backends" docs show.
"""

import json
from functools import partial

import logfire
from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, get_forecast, get_weather, run_tool_loop
from openai import OpenAI

logfire.configure(send_to_logfire=False, console=False, service_name="logfire-openai")
client = OpenAI(base_url=OPENAI_BASE_URL, api_key="sk-fake")
logfire.instrument_openai(client)

TOOLS = {f.__name__: logfire.instrument("execute_tool {city=}", span_name=f"execute_tool {f.__name__}", record_return=True)(f) for f in (get_weather, get_forecast)}


@logfire.instrument("weather agent", record_return=True)
def run_agent(prompt: str) -> str:
    # The streamed answer: logfire opens a "Chat Completion" span and a separate "streaming response" span.
    return run_tool_loop(partial(client.chat.completions.create, model=OPENAI_MODEL), lambda name, args, _: TOOLS[name](**json.loads(args)), prompt)


print(f"final output: {run_agent(PROMPT)!r}")
logfire.shutdown()
