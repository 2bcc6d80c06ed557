"""llama-index's FunctionAgent on its OpenAI LLM, traced by openinference-instrumentation-llama-index, as its docs show."""

import asyncio

from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, get_forecast, get_weather, tracer_provider
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor

provider = tracer_provider()
LlamaIndexInstrumentor().instrument(tracer_provider=provider)

# FunctionAgent streams; without stream_options the API sends no usage and no span gets tokens.
llm = OpenAI(
    model=OPENAI_MODEL,
    api_base=OPENAI_BASE_URL,
    api_key="sk-fake",
    additional_kwargs={"stream_options": {"include_usage": True}},
)
agent = FunctionAgent(
    tools=[FunctionTool.from_defaults(get_weather), FunctionTool.from_defaults(get_forecast)],
    llm=llm,
    system_prompt=SYSTEM,
)


async def main() -> str:
    return str(await agent.run(PROMPT))


print(f"final output: {asyncio.run(main())!r}")
provider.shutdown()
