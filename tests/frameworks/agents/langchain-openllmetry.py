"""langchain-openai + langgraph's ReAct agent, traced by opentelemetry-instrumentation-langchain (OpenLLMetry),
the model streamed with usage (stream_usage)."""

from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, get_forecast, get_weather, tracer_provider
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import ToolNode, create_react_agent
from opentelemetry.instrumentation.langchain import LangchainInstrumentor

provider = tracer_provider()
LangchainInstrumentor().instrument(tracer_provider=provider)

model = ChatOpenAI(model=OPENAI_MODEL, base_url=OPENAI_BASE_URL, api_key="sk-fake", streaming=True, stream_usage=True)
# handle_tool_errors: the failing tool's error goes back to the model, as the docs show, so the run goes on.
tools = ToolNode([tool(get_weather), tool(get_forecast)], handle_tool_errors=True)
agent = create_react_agent(model, tools, prompt=SYSTEM, name="weather_agent")
result = agent.invoke({"messages": [("user", PROMPT)]})
print(f"final output: {result['messages'][-1].content!r}")
provider.shutdown()
