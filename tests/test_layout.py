"""The package map of README "Development": each package imports only what its line there allows."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "otel_bridge"
LEAVES = {"errors", "project", "notation", "private_files", "sqlite_file", "rule_tables", "__init__"}  # __init__: the version

# Unit -> the bridge's modules it may import, as "unit" or "unit.module"; units not named here may import anything.
ALLOWED = {
    **{leaf: {"errors", "private_files", "__init__"} for leaf in LEAVES},
    "config": LEAVES,
    "decode": {"config"} | LEAVES,
    "mapping": {"decode.decoded", "decode.otlp"} | LEAVES,
    "exporter": {"config", "telemetry.metrics"} | LEAVES,
    "telemetry": {"config", "exporter.reachability", "http_server"} | LEAVES,
    "traces": {"config", "decode.logs", "mapping", "exporter.queue", "telemetry.metrics"} | LEAVES,
    "pipeline": {"config", "decode", "mapping", "traces", "exporter.queue", "telemetry"} | LEAVES,
    "receiver": {"config", "pipeline", "http_server", "decode.otlp", "decode.logs", "exporter.dead_letter"} | LEAVES,
    "http_server": {"listener"} | LEAVES,
    "listener": LEAVES,
}


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def _imports(path: Path) -> set[str]:
    """The bridge's modules `path` imports, as dotted names below otel_bridge."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "otel_bridge":  # a submodule, or a name of otel_bridge/__init__.py (the version)
                names.update(alias.name if _is_module(alias.name) else "__init__" for alias in node.names)
            elif node.module.startswith("otel_bridge."):
                names.add(node.module.removeprefix("otel_bridge."))
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("otel_bridge.") for a in node.names if a.name.startswith("otel_bridge."))
    return names


def test_every_package_imports_only_what_the_map_allows() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        allowed = ALLOWED.get(unit)
        if allowed is None:
            continue
        for name in _imports(path):
            target = name.split(".")[0]
            if target == unit or target in allowed or ".".join(name.split(".")[:2]) in allowed:
                continue
            wrong.append(f"{path.relative_to(PACKAGE)} imports otel_bridge.{name}")
    assert not wrong, "imports the README's package map does not allow:\n" + "\n".join(wrong)


def test_the_map_names_every_package() -> None:
    units = {_unit(path) for path in PACKAGE.rglob("*.py")}
    assert units - set(ALLOWED) == {"app", "supervisor", "cli", "__main__"}


def test_a_default_bridge_loads_no_sqlite_no_httpx_and_no_aiohttp() -> None:
    """Each costs idle RSS in every pod (issue 15): sqlite3 only with a durable queue, httpx only with an API
    key (without one the bridge writes a file), aiohttp never."""
    import os
    import subprocess
    import sys

    script = (
        "import asyncio, sys\n"
        "from otel_bridge.app import Bridge\n"
        "from otel_bridge.config import Settings\n"
        "async def main():\n"
        "    bridge = Bridge(Settings.model_validate({'receiver': {'grpc': {'endpoint': '127.0.0.1:0'},"
        " 'http': {'endpoint': '127.0.0.1:0'}}, 'telemetry': {'endpoint': '127.0.0.1:0'}}))\n"
        "    await bridge.start()\n"
        "    await bridge.stop()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('sqlite3', 'httpx', 'aiohttp') if m in sys.modules))\n"
    )
    env = {name: value for name, value in os.environ.items() if name != "WANDB_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=PACKAGE.parent, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
