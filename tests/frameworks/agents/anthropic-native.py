"""anthropic >= 2's own OpenTelemetry tracing (on by default), with content, of its beta tool runner."""

import os

os.environ["ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE"] = "content"

from agent_kit import ANTHROPIC_BASE_URL, anthropic_tool_runner_run, tracer_provider  # noqa: E402
from anthropic import Anthropic  # noqa: E402

provider = tracer_provider()  # the SDK's spans go to the globally registered provider
answer = anthropic_tool_runner_run(Anthropic(base_url=ANTHROPIC_BASE_URL, api_key="sk-ant-fake"))
print(f"final output: {answer!r}")
provider.shutdown()
