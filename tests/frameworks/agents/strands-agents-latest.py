"""strands-agents-latest: strands-agents.py's run with Strands' latest GenAI conventions (gen_ai_latest_experimental)."""

import os
import runpy
from pathlib import Path

os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
runpy.run_path(str(Path(__file__).with_name("strands-agents.py")), run_name="__main__")
