"""LiteLLM's OpenTelemetry callback (litellm.callbacks = ["otel"]) on agent_kit's tool loop; the last call is streamed.

LITELLM_CALLBACK names another of LiteLLM's OTel callbacks for the same run (litellm-weave.py sets "weave_otel").

LiteLLM traces only the model calls: the agent and tool spans are the application's own, written with the
OpenTelemetry API to the GenAI conventions (invoke_agent, execute_tool). LiteLLM's exporter reads
OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_PROTOCOL, as its docs show.
"""

import json
import os
from functools import partial

# By default LiteLLM writes a call's attributes onto the caller's current span (here the agent's) instead of its
# own litellm_request span, so each call overwrites the last one's usage: the documented switch keeps them apart.
os.environ["USE_OTEL_LITELLM_REQUEST_SPAN"] = "true"

import litellm  # noqa: E402
from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, get_forecast, get_weather, run_tool_loop, tracer_provider  # noqa: E402
from opentelemetry.trace import Status, StatusCode  # noqa: E402

provider = tracer_provider()
tracer = provider.get_tracer("weather-app")
litellm.callbacks = [os.environ.get("LITELLM_CALLBACK", "otel")]

TOOLS = {f.__name__: f for f in (get_weather, get_forecast)}


def call_tool(name: str, arguments: str, call_id: str) -> str:
    with tracer.start_as_current_span(f"execute_tool {name}", record_exception=False, set_status_on_exception=False) as span:
        span.set_attributes({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.call.id": call_id, "gen_ai.tool.call.arguments": arguments})
        try:
            result = TOOLS[name](**json.loads(arguments))
        except RuntimeError as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            span.set_attribute("error.type", type(error).__name__)
            return f"error: {error}"
        span.set_attribute("gen_ai.tool.call.result", result)
        return result


def run_agent(prompt: str) -> str:
    with tracer.start_as_current_span("invoke_agent weather") as span:
        span.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather", "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}])})
        create = partial(litellm.completion, model=f"openai/{OPENAI_MODEL}", api_base=OPENAI_BASE_URL, api_key="sk-fake")
        answer = run_tool_loop(create, call_tool, prompt)
        span.set_attribute("gen_ai.output.messages", json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]))
        return answer


print(f"final output: {run_agent(PROMPT)!r}")
provider.shutdown()
