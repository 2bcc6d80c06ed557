"""openai-agents (Responses API) traced by openinference-instrumentation-openai-agents, as its docs show."""

import asyncio

from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, get_forecast, get_weather, tracer_provider
from agents import Agent, Runner, function_tool, set_default_openai_client
from openai import AsyncOpenAI
from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

provider = tracer_provider()
OpenAIAgentsInstrumentor().instrument(tracer_provider=provider)  # replaces the SDK's own OpenAI exporter
set_default_openai_client(AsyncOpenAI(base_url=OPENAI_BASE_URL, api_key="sk-fake"), use_for_tracing=False)

agent = Agent(
    name="Weather agent",
    instructions=SYSTEM,
    model=OPENAI_MODEL,
    tools=[function_tool(get_weather), function_tool(get_forecast)],
)
result = asyncio.run(Runner.run(agent, PROMPT))
print(f"final output: {result.final_output!r}")
provider.shutdown()
