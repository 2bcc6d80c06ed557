"""smolagents' ToolCallingAgent on OpenAIServerModel, traced by openinference-instrumentation-smolagents, as its docs show.

The fake model answers in plain text, not through smolagents' final_answer tool, so the run is capped at the two
tool steps (max_steps=2) and smolagents then asks the model for the answer itself (provide_final_answer):
three model responses, as in every recording.
"""

import agent_kit
from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, tracer_provider
from openinference.instrumentation.smolagents import SmolagentsInstrumentor
from smolagents import OpenAIServerModel, ToolCallingAgent, tool

provider = tracer_provider()
SmolagentsInstrumentor().instrument(tracer_provider=provider)


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: the city's name
    """
    return agent_kit.get_weather(city)


@tool
def get_forecast(city: str) -> str:
    """Get tomorrow's weather forecast for a city.

    Args:
        city: the city's name
    """
    return agent_kit.get_forecast(city)


model = OpenAIServerModel(model_id=OPENAI_MODEL, api_base=OPENAI_BASE_URL, api_key="sk-fake")
agent = ToolCallingAgent(tools=[get_weather, get_forecast], model=model, instructions=SYSTEM, max_steps=2, verbosity_level=0)
print(f"final output: {agent.run(PROMPT)!r}")
provider.shutdown()
