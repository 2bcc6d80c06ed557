"""pydantic-ai's own OpenTelemetry instrumentation (Agent.instrument_all, no logfire), OpenAI chat completions.

pydantic-ai sends only ModelRetry back to the model: any other exception from a tool ends the run, as here.
"""

from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, get_forecast, get_weather, tracer_provider
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

provider = tracer_provider()
Agent.instrument_all()

model = OpenAIChatModel(OPENAI_MODEL, provider=OpenAIProvider(base_url=OPENAI_BASE_URL, api_key="sk-fake"))
agent = Agent(model, name="weather_agent", instructions=SYSTEM, tools=[get_weather, get_forecast])
try:
    print(f"final output: {agent.run_sync(PROMPT).output!r}")
except RuntimeError as error:
    print(f"the run ended with the tool's error: {error!r}")
provider.shutdown()
