"""LiteLLM's Weave callback ("weave_otel": OTLP with the attributes Weave reads), on litellm-otel.py's run.

WANDB_HOST points it at the capture: it posts to {WANDB_HOST}/otel/v1/traces, Weave's own OTLP path.
"""

import os
import runpy
from pathlib import Path

os.environ.update(
    LITELLM_CALLBACK="weave_otel",
    WANDB_HOST=os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"],
    WANDB_API_KEY="fake-wandb-key",
    WANDB_PROJECT_ID="team/frameworks",
)
runpy.run_path(str(Path(__file__).with_name("litellm-otel.py")), run_name="__main__")
