"""opentelemetry-instrumentation-openai-v2 on the latest experimental GenAI conventions, content as events only:
one gen_ai.client.inference.operation.details log record per call. A plain chat-completions loop (not
streamed) in the application's own span; the instrumentation traces the model calls only."""

import os

os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "event_only"

from agent_kit import OPENAI_BASE_URL, logger_provider, openai_chat_loop_run, tracer_provider  # noqa: E402
from openai import OpenAI  # noqa: E402
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402

provider, logs = tracer_provider(), logger_provider()
OpenAIInstrumentor().instrument(tracer_provider=provider, logger_provider=logs)

with provider.get_tracer("weather-app").start_as_current_span("weather agent"):
    answer = openai_chat_loop_run(OpenAI(base_url=OPENAI_BASE_URL, api_key="sk-fake"))
print(f"final output: {answer!r}")
provider.shutdown()
logs.shutdown()
