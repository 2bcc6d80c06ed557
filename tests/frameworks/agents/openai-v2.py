"""opentelemetry-instrumentation-openai-v2 with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true, as its
docs say for the legacy (v1.30) path. With opentelemetry-util-genai 1.1b0 that path is gone (the latest
conventions always apply), `true` is not one of their modes, and no content is captured at all: the recording
shows what such a user gets. A plain chat-completions loop (streamed, with usage) in the application's own
span; the instrumentation traces the model calls only."""

import os

os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"

from agent_kit import OPENAI_BASE_URL, logger_provider, openai_chat_loop_run, tracer_provider  # noqa: E402
from openai import OpenAI  # noqa: E402
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402

provider, logs = tracer_provider(), logger_provider()
OpenAIInstrumentor().instrument(tracer_provider=provider, logger_provider=logs)

with provider.get_tracer("weather-app").start_as_current_span("weather agent"):
    answer = openai_chat_loop_run(OpenAI(base_url=OPENAI_BASE_URL, api_key="sk-fake"), stream=True)
print(f"final output: {answer!r}")
print("CAPTURE_MESSAGE_CONTENT=true captures nothing with opentelemetry-util-genai 1.1b0 (modes: span_only, event_only, span_and_event)")
provider.shutdown()
logs.shutdown()
