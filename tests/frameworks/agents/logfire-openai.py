"""logfire.instrument_openai on a hand-written tool loop; the last model call is streamed (with usage).

Logfire exports OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT by itself when that variable is set; send_to_logfire=False
keeps it off Logfire's own service, as its "alternative backends" docs show.
"""

import json

import logfire
from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, get_forecast, get_weather
from openai import OpenAI

logfire.configure(send_to_logfire=False, console=False, service_name="logfire-openai")
client = OpenAI(base_url=OPENAI_BASE_URL, api_key="sk-fake")
logfire.instrument_openai(client)

TOOLS = {f.__name__: logfire.instrument("execute_tool {city=}", span_name=f"execute_tool {f.__name__}", record_return=True)(f) for f in (get_weather, get_forecast)}
SCHEMA = [
    {"type": "function", "function": {"name": name, "description": f.__doc__, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    for name, f in zip(TOOLS, (get_weather, get_forecast))
]


@logfire.instrument("weather agent", record_return=True)
def run_agent(prompt: str) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    while True:
        if sum(m["role"] == "tool" for m in messages) < 2:
            message = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=SCHEMA).choices[0].message
        else:  # the answer, streamed: logfire opens a "Chat Completion" span and a separate "streaming response" span
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
logfire.shutdown()
