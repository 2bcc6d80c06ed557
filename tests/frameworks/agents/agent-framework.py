"""Microsoft Agent Framework's Agent on OpenAIChatCompletionClient (chat completions), traced by its own observability, as its docs show.

configure_otel_providers() sets up OTLP exporters for traces, logs and metrics from OTEL_EXPORTER_OTLP_ENDPOINT
(protocol from OTEL_EXPORTER_OTLP_PROTOCOL); enable_sensitive_data puts the messages and tool arguments in.
"""

import asyncio

from agent_framework import Agent
from agent_framework.observability import configure_otel_providers
from agent_framework.openai import OpenAIChatCompletionClient
from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, get_forecast, get_weather
from opentelemetry import _logs, trace

configure_otel_providers(enable_sensitive_data=True)

agent = Agent(
    OpenAIChatCompletionClient(model=OPENAI_MODEL, api_key="sk-fake", base_url=OPENAI_BASE_URL),
    instructions=SYSTEM,
    name="weather_agent",
    tools=[get_weather, get_forecast],
)


async def main() -> str:
    return (await agent.run(PROMPT)).text


try:
    print(f"final output: {asyncio.run(main())!r}")
finally:
    trace.get_tracer_provider().shutdown()
    _logs.get_logger_provider().shutdown()
