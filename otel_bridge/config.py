"""Settings: YAML + environment -> typed, validated settings.

Every key has its default here, on the field; `config/bridge.yaml` documents the same keys and a test
checks that it loads to exactly `Settings()`. `${env:NAME}` and `${env:NAME:-default}` are expanded once,
while loading; components receive settings that are already valid.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from otel_bridge.errors import ConfigError
from otel_bridge.notation import format_duration, parse_duration, split_endpoint
from otel_bridge.project import PROJECT_FORM, parse_project
from otel_bridge.rule_tables import TABLES, TableKind

__all__ = ["Settings", "load_settings", "mask_url"]

Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]


def _check_endpoint(value: str | None) -> str | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid endpoint {value!r}: expected host:port, e.g. 0.0.0.0:4317")
    return value


Endpoint = Annotated[str, BeforeValidator(_check_endpoint)]


class _Section(BaseModel):
    # Unknown keys are errors, not silently ignored: a typo like `htttp:` must fail check-config.
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Tls(_Section):
    cert_file: str
    key_file: str
    # Set: clients must present a certificate signed by this CA (mutual TLS).
    client_ca_file: str | None = None


def _trimmed(value: Any) -> Any:
    # A secret read from a file or a Kubernetes Secret often ends in a newline: kept, it makes every client
    # 401 (a bearer token) or is sent inside Basic auth (the API key). No credential has surrounding spaces.
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value.strip() if isinstance(value, str) else value


Secret = Annotated[SecretStr, BeforeValidator(_trimmed)]


class Auth(_Section):
    bearer_token: Secret

    @field_validator("bearer_token")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        # An unset ${env:...} gives "": refuse it rather than silently accept every client.
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty; remove `auth` to accept every client")
        return value


class GrpcReceiver(_Section):
    endpoint: Endpoint = "0.0.0.0:4317"
    max_recv_msg_size_mib: int = Field(64, gt=0, le=2047)
    # A connection must finish its TLS and HTTP/2 handshake within handshake_timeout; one with no call for
    # max_connection_idle is closed (GOAWAY); keepalive pings every keepalive_time find peers that are gone
    # (a ping unanswered for keepalive_timeout closes the connection).
    handshake_timeout: Duration = Field(10.0, gt=0)
    max_connection_idle: Duration = Field(300.0, gt=0)
    keepalive_time: Duration = Field(60.0, gt=0)
    keepalive_timeout: Duration = Field(20.0, gt=0)
    # grpc.health.v1 Watch streams open at once (they need no token); one more gets RESOURCE_EXHAUSTED.
    max_health_watches: int = Field(100, gt=0)
    # Connections open at once; null: derived from the open-file limit (Receiver.max_connections).
    max_connections: int | None = Field(None, gt=0)
    tls: Tls | None = None
    auth: Auth | None = None


class HttpReceiver(_Section):
    endpoint: Endpoint = "0.0.0.0:4318"
    max_request_body_size_mib: int = Field(64, gt=0, le=2047)
    # A connection is closed when it has not sent a whole request head within idle_timeout of connecting or
    # of its last answer (idle keep-alive connections and slowloris alike); a body not received within
    # read_timeout is answered 408.
    idle_timeout: Duration = Field(60.0, gt=0)
    read_timeout: Duration = Field(60.0, gt=0)
    # Connections open at once (one more is answered 503); null: derived (Receiver.max_connections).
    max_connections: int | None = Field(None, gt=0)
    tls: Tls | None = None
    auth: Auth | None = None


class KafkaTls(_Section):
    # null: the system's CAs verify the brokers' certificates.
    ca_file: str | None = None
    # Both or neither: a client certificate, for brokers that require one (mutual TLS).
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> KafkaTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("`cert_file` and `key_file` go together: set both, or neither")
        return self


class KafkaSasl(_Section):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    username: str = Field(min_length=1)
    password: Secret

    @field_validator("password")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():  # an unset ${env:...}
            raise ValueError("must not be empty")
        return value


class KafkaReceiver(_Section):
    brokers: list[Endpoint] = Field(["localhost:9092"], min_length=1)
    topics: list[str] = Field(["otlp_spans"], min_length=1)
    group_id: str = Field("otel-bridge", min_length=1)
    client_id: str = Field("otel-bridge", min_length=1)
    encoding: Literal["otlp_proto", "otlp_json"] = "otlp_proto"
    # Where a group with no committed offset for a partition starts reading it.
    initial_offset: Literal["latest", "earliest"] = "latest"
    session_timeout: Duration = Field(10.0, gt=0)
    heartbeat_interval: Duration = Field(3.0, gt=0)
    max_poll_interval: Duration = Field(300.0, gt=0)
    tls: KafkaTls | None = None
    sasl: KafkaSasl | None = None

    @model_validator(mode="after")
    def _timeouts(self) -> KafkaReceiver:
        if self.heartbeat_interval >= self.session_timeout:
            raise ValueError("`heartbeat_interval` must be less than `session_timeout`")
        if self.max_poll_interval < self.session_timeout:
            raise ValueError("`max_poll_interval` must not be less than `session_timeout`")
        return self


# Connections the telemetry endpoint holds at once (fixed: probes and a scraper need a few; one more gets 503).
TELEMETRY_MAX_CONNECTIONS = 32
# File descriptors a bridge needs besides its receivers' connections: the telemetry endpoint's connections,
# the upstream's (one per queue consumer, up to 64), queue and log files, gRPC's and Python's own.
RESERVED_FILES = 160
# The derived bound of one receiver's connections: an idle connection costs memory too, and a sidecar or a
# gateway of a few thousand clients stays far below it.
MAX_DERIVED_CONNECTIONS = 4096


class Receiver(_Section):
    grpc: GrpcReceiver | None = GrpcReceiver()
    http: HttpReceiver | None = HttpReceiver()
    kafka: KafkaReceiver | None = None
    # Processes that share the receivers' ports (SO_REUSEPORT): the mapping is CPU-bound Python, so one
    # process uses one core.
    workers: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _one_receiver(self) -> Receiver:
        if self.grpc is None and self.http is None and self.kafka is None:
            raise ValueError("every receiver is disabled: enable receiver.grpc, receiver.http or receiver.kafka")
        if self.workers > 1:
            for name, receiver in (("grpc", self.grpc), ("http", self.http)):
                if receiver is not None and split_endpoint(receiver.endpoint)[1] == 0:
                    raise ValueError(
                        f"`{name}.endpoint` ({receiver.endpoint}) has port 0: with `workers` > 1 every worker "
                        "must bind the same port, so give a port number"
                    )
        return self

    def max_connections(self, open_files: int) -> dict[str, int]:
        """Each enabled receiver's bound on open connections ("grpc", "http"), for a process that may open
        `open_files` files (RLIMIT_NOFILE): as configured, or, when null, an equal share of what is left
        after RESERVED_FILES (at least 1, at most MAX_DERIVED_CONNECTIONS)."""
        receivers = {name: r for name, r in (("grpc", self.grpc), ("http", self.http)) if r is not None}
        share = min(MAX_DERIVED_CONNECTIONS, max(1, (open_files - RESERVED_FILES) // max(1, len(receivers))))
        return {name: r.max_connections or share for name, r in receivers.items()}


def _env_or(name: str, default: str) -> str:
    return os.environ.get(name) or default


class WeaveExporter(_Section):
    base_url: str = Field(default_factory=lambda: _env_or("WF_TRACE_SERVER_URL", "https://trace.wandb.ai"))
    api_key: Secret = Field(default_factory=lambda: SecretStr(os.environ.get("WANDB_API_KEY", "")))
    project: str = Field(default_factory=lambda: os.environ.get("WEAVE_PROJECT", ""))
    timeout: Duration = Field(30.0, gt=0)
    max_redirects: int = Field(5, ge=0, le=20)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"invalid URL {value!r}: expected http(s)://host[:port][/path]")
        return value.rstrip("/")

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if value and parse_project(value) is None:
            raise ValueError(f"invalid project {value!r}: expected {PROJECT_FORM}")
        return value.strip()


class FileExporter(_Section):
    path: str = "otel-bridge-calls.jsonl"


# The upstream refuses request bodies over 31 MiB (the Weave SDK keeps under it too).
UPSTREAM_MAX_BODY_BYTES = 31 * 1024 * 1024


class Batch(_Section):
    max_calls: int = Field(1000, gt=0)
    max_bytes: int = Field(10 * 1024 * 1024, gt=0, le=UPSTREAM_MAX_BODY_BYTES)
    flush_interval: Duration = Field(1.0, gt=0)


class Queue(_Section):
    directory: str | None = None
    max_bytes: int | None = Field(None, gt=0)  # null: see Exporter.queue_max_bytes
    num_consumers: int = Field(4, gt=0, le=64)
    max_project_share: float = Field(0.5, gt=0, le=1)

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("empty directory: give a path, or null to keep the queue in memory")
        return value


# queue.max_bytes when the config leaves it null. In memory the bound is the bridge's memory: with 32 MiB a
# worker peaks near 150 MiB under sustained overload (bench/e2e.py --sink-delay), and the default batches
# in flight (4 consumers of up to 1000 LLM calls) still leave room, so a fast upstream sees no refusals
# (16 MiB refused Exports at full speed). A durable
# queue keeps the calls on disk and only their sizes in memory, so it can ride out a longer outage.
_QUEUE_MAX_BYTES_IN_MEMORY = 32 * 1024 * 1024
_QUEUE_MAX_BYTES_DURABLE = 256 * 1024 * 1024

# max_elapsed_time when the config leaves it null: with a durable queue nothing is lost by waiting, so
# retry until the upstream is back; in memory, give up (to the dead-letter file) after 5 minutes.
_MAX_ELAPSED_TIME_IN_MEMORY = 300.0


class Retry(_Section):
    enabled: bool = True
    initial_interval: Duration = Field(1.0, gt=0)
    max_interval: Duration = Field(30.0, gt=0)
    max_elapsed_time: Duration | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _intervals(self) -> Retry:
        if self.max_interval < self.initial_interval:
            raise ValueError("`max_interval` must not be less than `initial_interval`")
        if self.max_elapsed_time and self.max_elapsed_time < self.initial_interval:
            raise ValueError("`max_elapsed_time` must not be less than `initial_interval`")
        return self


class DeadLetter(_Section):
    path: str = "otel-bridge-dead-letter.jsonl"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty path: calls the upstream refuses must be written somewhere")
        return value


class Exporter(_Section):
    weave: WeaveExporter = Field(default_factory=WeaveExporter)
    file: FileExporter = FileExporter()
    batch: Batch = Batch()
    queue: Queue = Queue()
    retry: Retry = Retry()
    dead_letter: DeadLetter = DeadLetter()

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> Exporter:
        if self.queue_max_bytes < self.batch.max_bytes:
            default = "" if self.queue.max_bytes is not None else ", the default when null"
            raise ValueError(
                f"`queue.max_bytes` ({self.queue_max_bytes}{default}) must be >= `batch.max_bytes` ({self.batch.max_bytes})"
            )
        return self

    @property
    def queue_max_bytes(self) -> int:
        """`queue.max_bytes` in effect: when null, 32 MiB in memory, 256 MiB with a durable queue."""
        if self.queue.max_bytes is not None:
            return self.queue.max_bytes
        return _QUEUE_MAX_BYTES_DURABLE if self.queue.directory else _QUEUE_MAX_BYTES_IN_MEMORY

    @property
    def max_elapsed_time(self) -> float:
        """`retry.max_elapsed_time` in effect, in seconds; 0 means retry forever."""
        if self.retry.max_elapsed_time is not None:
            return self.retry.max_elapsed_time
        return 0.0 if self.queue.directory else _MAX_ELAPSED_TIME_IN_MEMORY


class Readiness(_Section):
    queue_high_water: float = Field(0.8, gt=0, le=1)
    upstream_grace: Duration = Field(60.0, ge=0)


class Telemetry(_Section):
    endpoint: Endpoint | None = "0.0.0.0:13133"
    log_level: str = "info"
    # While delivery is degraded (retries, dead letters, a full queue, a refused key), one summary line
    # per interval rather than one per failure.
    degraded_log_interval: Duration = Field(30.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    readiness: Readiness = Readiness()

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        levels = ("debug", "info", "warning", "error")
        if value.lower() not in levels:
            raise ValueError(f"invalid log level {value!r}: expected one of {', '.join(levels)}")
        return value.lower()


def _attribute_key(value: Any) -> str:
    if type(value) is not str or not value:
        raise ValueError(f"expected an attribute key such as gen_ai.usage.input_tokens, found {value!r}")
    if value != value.strip() or "" in value.split("."):
        raise ValueError(f"attribute key {value!r} has an empty part or surrounding spaces")
    return value


def _attribute_value(value: Any) -> str:
    if type(value) is not str or not value:
        raise ValueError(f"expected a non-empty string, found {value!r}")
    return value


def _list_edit(check: Any) -> Any:
    """A validator of one table edit: a list (it replaces the table) or {prepend: [...], append: [...]}."""

    def items(value: Any, where: str) -> list[str]:
        if type(value) is not list:
            raise ValueError(f"{where}expected a list, found {value!r}")
        return [check(item) for item in value]

    def validate(value: Any) -> Any:
        if value is None or type(value) is list:
            return value if value is None else items(value, "")
        if type(value) is dict:
            unknown = sorted(set(value) - {"prepend", "append"})
            if unknown:
                raise ValueError(f"unknown key {unknown[0]!r}: a table is edited with prepend and append")
            return {name: items(keys, f"{name}: ") for name, keys in value.items()}
        raise ValueError("expected a list (it replaces the table) or {prepend: [...], append: [...]}")

    return PlainValidator(validate, json_schema_input_type=Any)


class Limits(_Section):
    """mapping.limits: past each, values are cut with a visible marker and counted; the span is kept."""

    max_attribute_value_length: int = Field(1024 * 1024, gt=0)
    max_attributes: int = Field(1024, gt=0)
    max_events: int = Field(1024, ge=0)
    max_links: int = Field(1024, ge=0)
    # Calls are JSON and the encoder stops at 255 levels; 200 leaves room for the call's own structure.
    max_depth: int = Field(32, gt=0, le=200)


class Redact(_Section):
    """mapping.redact: what never leaves the bridge."""

    default_rules: bool = True
    keys: list[str] = []
    patterns: list[str] = []

    @field_validator("keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not key.strip():
                raise ValueError("an empty key matches nothing: remove it")
        return keys

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
            if compiled.fullmatch(""):
                raise ValueError(f"regex {pattern!r} matches the empty string, so it would redact between every character")
        return patterns


# An edit of a list table: a list replaces it, {prepend: [...], append: [...]} extends it.
KeysEdit = Annotated[Any, _list_edit(_attribute_key)]
ValuesEdit = Annotated[Any, _list_edit(_attribute_value)]
AttributeKey = Annotated[str, PlainValidator(_attribute_key, json_schema_input_type=str)]


# The edit each kind of rule table (rule_tables.py) takes, and its default (no edit). In a table of named
# entries, an entry set to null is removed and an entry not there yet is added.
_TABLE_EDITS: dict[TableKind, tuple[Any, Any]] = {
    "sources": (KeysEdit, None),
    "keys": (KeysEdit, None),
    "values": (ValuesEdit, None),
    "names": (dict[str, str | None], {}),
    "named_sources": (dict[str, KeysEdit], {}),
    "value_sets": (dict[AttributeKey, ValuesEdit], {}),
    "renames": (dict[AttributeKey, AttributeKey | None], {}),
}

if TYPE_CHECKING:
    TableEdits = _Section
else:
    TableEdits = create_model(
        "TableEdits",
        __base__=_Section,
        __doc__="Edits of the rule tables in otel_bridge/mapping/rules.yaml, one field per table of "
        "rule_tables.TABLES; an omitted table keeps its default.",
        __module__=__name__,
        **{name: _TABLE_EDITS[kind] for name, kind in TABLES.items()},
    )


class Mapping(TableEdits):
    """The rule tables' edits, the edits per instrumentation scope, redaction and limits."""

    scopes: dict[str, TableEdits | None] = {}  # scope name -> its edits (replacing the default ones), null: none
    # Not tables: what never leaves the bridge, and how much one span may carry.
    redact: Redact = Redact()
    limits: Limits = Limits()

    def edits(self) -> dict[str, Any]:
        """The tables the config edits, as plain data."""
        return self.model_dump(exclude_unset=True, exclude={"redact", "limits"})


class LogJoin(_Section):
    window: Duration = Field(5.0, ge=0)
    max_pending_bytes: int = Field(64 * 1024 * 1024, gt=0)


class Traces(_Section):
    """The per-trace stage between mapping and the queue (otel_bridge/traces/)."""

    idle_timeout: Duration = Field(300.0, gt=0)
    max_spans: int = Field(50_000, gt=0)
    dedupe_usage_by_response_id: bool = True
    logs: LogJoin = LogJoin()


class Settings(_Section):
    shutdown_timeout: Duration = Field(10.0, ge=0)
    receiver: Receiver = Receiver()
    exporter: Exporter = Field(default_factory=Exporter)
    traces: Traces = Traces()
    telemetry: Telemetry = Telemetry()
    mapping: Mapping = Mapping()

    @model_validator(mode="after")
    def _telemetry_port_per_worker(self) -> Settings:
        workers, endpoint = self.receiver.workers, self.telemetry.endpoint
        if workers > 1 and endpoint is not None:
            port = split_endpoint(endpoint)[1]
            if port == 0 or port + workers - 1 > 65535:
                raise ValueError(
                    f"`telemetry.endpoint` ({endpoint}): with `receiver.workers` = {workers}, worker i serves it on "
                    f"port + i, so the port must be between 1 and {65536 - workers}"
                )
        return self

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets masked: what check-config prints.

        Every SecretStr (API key, bearer tokens) dumps as "**********", or "" when it is empty, and a
        password in exporter.weave.base_url as "***".
        """
        dumped = self.model_dump(mode="json")
        weave = dumped["exporter"]["weave"]
        weave["base_url"] = mask_url(weave["base_url"])
        return dumped


def mask_url(url: str) -> str:
    """The URL with the password of its user info (http://user:password@host) masked, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


# `$$`, a well-formed reference, or any other `${` (malformed: refused). A default holds no braces, and a
# reference followed by `}` is refused too: `${env:X:-team/p}}` is a typo, never the default `team/p}`.
_ENV_REF = re.compile(r"\$\$|\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^{}]*))?\}(?!\})|\$\{")
_SHOWN_REFERENCE = re.compile(r"\$\{[^}]{0,60}\}*")
_ENV_FORM = "expected ${env:NAME} or ${env:NAME:-default} (NAME: letters, digits, _; write $$ for a literal $)"


def expand_env(value: Any, environ: dict[str, str] | None = None, path: str = "") -> Any:
    """Expand `${env:NAME}` / `${env:NAME:-default}` in every string of a YAML tree; `$$` is a literal `$`.
    Raises ConfigError naming the key for any other `${`."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            if match.group(1) is None:
                reference = _SHOWN_REFERENCE.match(value, match.start()).group(0)  # type: ignore[union-attr]
                raise ConfigError(f"`{path or '<top level>'}`: malformed reference {reference!r}: {_ENV_FORM}")
            found = env.get(match.group(1), "")
            if not found and match.group(2) is not None:
                return match.group(2)
            return found

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand_env(v, environ, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _describe(error: ErrorDetails) -> str:
    path = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    if error["type"] == "extra_forbidden":
        return f"`{path}`: unknown key"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in ("model_type", "dict_type"):
        return f"`{path}`: expected a mapping of keys, found {error['input']!r}"
    shown = error.get("input")
    if isinstance(shown, (dict, list)) or path.endswith(("api_key", "bearer_token")):
        return f"`{path}`: {message}"
    return f"`{path}` ({shown!r}): {message}"


# What a config may hold once its aliases are expanded: a hand-written one holds hundreds of values, and
# nested aliases ("billion laughs") would otherwise take minutes and gigabytes to expand and validate.
MAX_EXPANDED_YAML_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases expand it past MAX_EXPANDED_YAML_NODES."""

    def construct_document(self, node: yaml.Node) -> Any:
        sizes: dict[int, int] = {}  # id(node) -> its expanded size; -1 while being counted

        def expanded(node: yaml.Node) -> int:
            size = sizes.get(id(node))
            if size == -1:
                raise ConfigError(f"YAML alias refers to itself (line {node.start_mark.line + 1})")
            if size is None:
                sizes[id(node)] = -1
                size = 1
                if isinstance(node, yaml.SequenceNode):
                    size += sum(expanded(item) for item in node.value)
                elif isinstance(node, yaml.MappingNode):
                    size += sum(expanded(key) + expanded(value) for key, value in node.value)
                if size > MAX_EXPANDED_YAML_NODES:
                    raise ConfigError(
                        f"YAML aliases expand the document past {MAX_EXPANDED_YAML_NODES} values "
                        f"(at line {node.start_mark.line + 1}): refusing to expand it"
                    )
                sizes[id(node)] = size
            return size

        expanded(node)
        return super().construct_document(node)


def load_settings(path: str | Path | None = None) -> Settings:
    """Load and validate settings; no path means built-in defaults (and their environment variables)."""
    raw: Any = {}
    source = "built-in defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from None
        try:
            raw = yaml.load(text, Loader=_BoundedLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} is not valid YAML: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of sections at the top level, found {type(raw).__name__}")
    try:
        expanded = expand_env(raw)
    except ConfigError as exc:
        raise ConfigError(f"invalid configuration in {source}:\n  - {exc}") from None
    try:
        return Settings.model_validate(expanded)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_url=False)]
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(f"  - {p}" for p in problems)) from None
