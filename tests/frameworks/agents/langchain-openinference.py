"""langchain-openai + langgraph's ReAct agent, traced by openinference-instrumentation-langchain (non-streaming)."""

from agent_kit import OPENAI_BASE_URL, OPENAI_MODEL, PROMPT, SYSTEM, get_forecast, get_weather, tracer_provider
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import ToolNode, create_react_agent
from openinference.instrumentation.langchain import LangChainInstrumentor

provider = tracer_provider()
LangChainInstrumentor().instrument(tracer_provider=provider)

model = ChatOpenAI(model=OPENAI_MODEL, base_url=OPENAI_BASE_URL, api_key="sk-fake")
# handle_tool_errors: the failing tool's error goes back to the model, as the docs show, so the run goes on.
tools = ToolNode([tool(get_weather), tool(get_forecast)], handle_tool_errors=True)
agent = create_react_agent(model, tools, prompt=SYSTEM, name="weather_agent")
result = agent.invoke({"messages": [("user", PROMPT)]})
print(f"final output: {result['messages'][-1].content!r}")
provider.shutdown()
