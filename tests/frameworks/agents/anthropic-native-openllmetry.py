"""anthropic >= 2's own tracing (the default, with content) AND opentelemetry-instrumentation-anthropic:
what a user who adds OpenLLMetry gets, each model call traced twice (issue 18, item 7)."""

import os

os.environ["ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE"] = "content"

from agent_kit import ANTHROPIC_BASE_URL, anthropic_tool_runner_run, tracer_provider  # noqa: E402
from anthropic import Anthropic  # noqa: E402
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor  # noqa: E402

provider = tracer_provider()
AnthropicInstrumentor().instrument(tracer_provider=provider)
answer = anthropic_tool_runner_run(Anthropic(base_url=ANTHROPIC_BASE_URL, api_key="sk-ant-fake"))
print(f"final output: {answer!r}")
provider.shutdown()
