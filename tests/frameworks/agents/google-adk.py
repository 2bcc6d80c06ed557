"""google-adk's LlmAgent on Gemini (the fake generateContent API), exporting through ADK's own OTel setup, as its docs show.

maybe_set_otel_providers() adds OTLP/HTTP exporters for traces, metrics and logs from OTEL_EXPORTER_OTLP_ENDPOINT.
ADK 2 sends no prompt or answer unless asked: SPAN_AND_EVENT puts them on the spans and on the log records.
"""

import asyncio
import os

os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_AND_EVENT"

from agent_kit import GEMINI_BASE_URL, PROMPT, SYSTEM, get_forecast, get_weather
from google.adk.agents import LlmAgent
from google.adk.models.google_llm import Gemini
from google.adk.runners import InMemoryRunner
from google.adk.telemetry.setup import maybe_set_otel_providers
from google.genai import types
from opentelemetry import _logs, trace

maybe_set_otel_providers()


def tool_error_as_result(tool, args, tool_context, error):
    """ADK ends the run on a tool's exception unless a callback turns it into the tool's response."""
    return {"error": str(error)}


agent = LlmAgent(
    name="weather_agent",
    model=Gemini(model="gemini-2.5-flash", base_url=GEMINI_BASE_URL),
    instruction=SYSTEM,
    tools=[get_weather, get_forecast],
    on_tool_error_callback=tool_error_as_result,
)


async def main() -> str:
    runner = InMemoryRunner(agent=agent, app_name="weather")
    session = await runner.session_service.create_session(app_name="weather", user_id="user-1")
    answer = ""
    message = types.Content(role="user", parts=[types.Part(text=PROMPT)])
    async for event in runner.run_async(user_id="user-1", session_id=session.id, new_message=message):
        if event.is_final_response() and event.content and event.content.parts:
            answer = "".join(p.text or "" for p in event.content.parts)
    return answer


try:
    print(f"final output: {asyncio.run(main())!r}")
finally:
    trace.get_tracer_provider().shutdown()
    _logs.get_logger_provider().shutdown()
