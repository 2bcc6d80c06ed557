"""Commands: serve, check-config, convert. Nothing else lives here."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import sys
from pathlib import Path

import orjson
import yaml

from otel_bridge import __version__
from otel_bridge.config import load_settings
from otel_bridge.project import PROJECT_FORM, parse_project
from otel_bridge.errors import ConfigError
from otel_bridge.telemetry.logs import setup_logging
from otel_bridge.mapping import as_config, build_rules
from otel_bridge.pipeline import Mapper
from otel_bridge.traces import TraceStage
from otel_bridge.decode.otlp import parse_request

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-bridge", description="OpenTelemetry traces in, W&B Weave calls out.")
    parser.add_argument("--version", action="version", version=f"otel-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("--config", metavar="FILE", help="YAML config file (default: built-in defaults)")
        return command

    with_config(commands.add_parser("serve", help="run the bridge until SIGTERM/SIGINT"))
    with_config(commands.add_parser("check-config", help="validate a config and print the effective one"))
    convert = with_config(
        commands.add_parser("convert", help="map an OTLP file to the calls-complete request body; sends nothing")
    )
    convert.add_argument("--project", metavar="ENTITY/PROJECT", help="project for spans that name none")
    convert.add_argument("input", metavar="INPUT", help="OTLP/JSON (object or JSON lines) or binary protobuf file")
    return parser


# glibc's mallopt(M_ARENA_MAX): the default, 8 arenas per core, lets each of grpc's and asyncio's threads
# keep its own free memory, which under sustained load left ~10 MiB more resident (bench/e2e.py --sink-delay 1).
_M_ARENA_MAX = -8
_ARENAS = 2


def _limit_malloc_arenas() -> None:
    """Two malloc arenas for this process and its workers, unless MALLOC_ARENA_MAX says otherwise."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return  # glibc read it at start-up, in this process as in the workers it is inherited by
    os.environ["MALLOC_ARENA_MAX"] = str(_ARENAS)  # for the worker processes (spawned: a new glibc)
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, _ARENAS)
    except (OSError, AttributeError):
        pass  # not glibc (musl has no arenas to limit)


def _serve(args: argparse.Namespace) -> int:
    _limit_malloc_arenas()  # before grpc and asyncio start their threads
    from otel_bridge.app import serve  # grpc is only needed here

    settings = load_settings(args.config)
    setup_logging(settings.telemetry.log_level, settings.telemetry.log_format)
    if settings.receiver.workers > 1:
        from otel_bridge.supervisor import supervise

        return supervise(settings)
    asyncio.run(serve(settings))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    effective = settings.masked()
    # The effective rule tables rather than the edits; loaded as a config, they give the same rules.
    effective["mapping"] = {
        **as_config(build_rules(settings.mapping.edits()).tables),
        "redact": effective["mapping"]["redact"],
        "limits": effective["mapping"]["limits"],
    }
    sys.stdout.write(yaml.safe_dump(effective, sort_keys=False))
    return 0


def _convert(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    project = args.project or settings.exporter.weave.project
    if args.project and parse_project(args.project) is None:
        raise ConfigError(f"--project {args.project!r}: expected {PROJECT_FORM}")
    try:
        requests = parse_request(Path(args.input).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {args.input}: {exc.strerror or exc}") from None
    except ValueError as exc:
        print(f"otel-bridge convert: {args.input}: {exc}", file=sys.stderr)
        return 1
    mapper = Mapper.from_config(settings.mapping)
    stage = TraceStage(settings.traces)  # as serve's: status_counts and usage once per response, over the file
    calls: list[bytes] = []
    rejected = 0
    for request in requests:
        mapped = mapper.map(
            request.SerializeToString(), header_project=None, default_project=project, on_call=stage.begin().on_call
        )
        for project_calls in mapped.calls.values():
            calls.extend(project_calls)
        if mapped.rejected or mapped.warnings or mapped.value_warnings:
            rejected += mapped.rejected
            print(f"otel-bridge convert: {mapped.error_message()}", file=sys.stderr)
    body = orjson.loads(b'{"batch":[' + b",".join(calls) + b"]}")
    sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    return 1 if rejected else 0


_COMMANDS = {"serve": _serve, "check-config": _check_config, "convert": _convert}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"otel-bridge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a port that cannot be bound; the message names its config key
        print(f"otel-bridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()
