"""strands-agents with its OpenAI provider (streamed chat completions), traced by Strands' own telemetry, as its docs show."""

from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, get_forecast, get_weather
from strands import Agent, tool
from strands.models.openai import OpenAIModel
from strands.telemetry import StrandsTelemetry

telemetry = StrandsTelemetry().setup_otlp_exporter()  # OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT

model = OpenAIModel(client_args={"api_key": "sk-fake", "base_url": OPENAI_BASE_URL}, model_id=OPENAI_MODEL)
agent = Agent(model=model, system_prompt=SYSTEM, tools=[tool(get_weather), tool(get_forecast)], callback_handler=None)
result = agent(PROMPT)
print(f"final output: {str(result).strip()!r}")
telemetry.tracer_provider.shutdown()
