"""anthropic's beta tool runner traced by opentelemetry-instrumentation-anthropic (OpenLLMetry) alone.

The SDK's own tracing (on by default in anthropic >= 2) is turned off here, so the instrumentation's spans
are all there is; the run is wrapped in the application's own span so that it is one trace.
anthropic-native-openllmetry records both at once.
"""

import os

os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "false"

from agent_kit import ANTHROPIC_BASE_URL, anthropic_tool_runner_run, tracer_provider  # noqa: E402
from anthropic import Anthropic  # noqa: E402
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor  # noqa: E402

provider = tracer_provider()
AnthropicInstrumentor().instrument(tracer_provider=provider)

with provider.get_tracer("weather-app").start_as_current_span("weather agent"):
    answer = anthropic_tool_runner_run(Anthropic(base_url=ANTHROPIC_BASE_URL, api_key="sk-ant-fake"))
print(f"final output: {answer!r}")
provider.shutdown()
