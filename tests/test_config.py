"""Config loading: one YAML per scenario -> expected settings or the exact error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otel_bridge.config import KafkaReceiver, Settings, load_settings
from otel_bridge.notation import parse_duration
from otel_bridge.errors import ConfigError

ROOT = Path(__file__).parent.parent
TESTDATA = Path(__file__).parent / "testdata" / "config"


def test_documented_config_is_exactly_the_defaults():
    assert load_settings(ROOT / "config" / "bridge.yaml") == Settings()


def test_documented_kafka_receiver_is_exactly_its_defaults():
    """receiver.kafka is off by default, so bridge.yaml shows its keys commented out: they must load too."""
    text = (ROOT / "config" / "bridge.yaml").read_text()
    block = text.split("  #   kafka:\n", 1)[1].split("\n  # An offset", 1)[0]
    lines = [line.removeprefix("  #     ") for line in block.splitlines()]
    documented = yaml.safe_load("\n".join(line for line in lines if not line.startswith("#")))
    assert KafkaReceiver.model_validate(documented) == KafkaReceiver()


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"heartbeat_interval": "10s"}, "`heartbeat_interval` must be less than `session_timeout`"),
        ({"sasl": {"username": "u", "password": ""}}, "must not be empty"),
        ({"tls": {"cert_file": "c.pem"}}, "`cert_file` and `key_file` go together"),
        ({"encoding": "raw"}, "'otlp_proto' or 'otlp_json'"),
        ({"brokers": []}, "at least 1 item"),
    ],
)
def test_kafka_receiver_errors(kafka, message):
    with pytest.raises(ValueError, match=message):
        Settings.model_validate({"receiver": {"kafka": kafka}})


def test_no_file_means_defaults():
    assert load_settings(None) == Settings() == load_settings(TESTDATA / "default.yaml")


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("grpc_only.yaml", lambda s: s.receiver.http is None and s.receiver.grpc is not None),
        ("http_empty.yaml", lambda s: s.receiver.http is None),
        ("http_defaults.yaml", lambda s: s.receiver.http is not None and s.receiver.http.endpoint == "0.0.0.0:4318"),
        (
            "secured.yaml",
            lambda s: s.receiver.grpc.tls.client_ca_file == "/tls/ca.crt"
            and s.receiver.grpc.auth is None
            and s.receiver.http.tls is None
            and s.receiver.http.auth.bearer_token.get_secret_value() == "t0ken"
            and s.receiver.http.max_request_body_size_mib == 8
            and s.telemetry.log_format == "json"
            and (s.telemetry.readiness.queue_high_water, s.telemetry.readiness.upstream_grace) == (1, 0),
        ),
    ],
)
def test_scenarios(name, check):
    assert check(load_settings(TESTDATA / name))


@pytest.mark.parametrize(
    ("name", "messages"),
    [
        ("typo_key.yaml", ["`receiver.htttp`: unknown key"]),
        ("no_receivers.yaml", ["every receiver is disabled"]),
        ("bad_duration.yaml", ["`exporter.batch.flush_interval` ('1 second'): invalid duration"]),
        (
            "bad_values.yaml",
            [
                "`receiver.grpc.endpoint` ('localhost'): invalid endpoint 'localhost': expected host:port",
                "`receiver.grpc.max_recv_msg_size_mib` (0): Input should be greater than 0",
                "`exporter.batch.max_bytes` (40000000): Input should be less than or equal to 32505856",
                "`exporter.weave.project` ('just-a-project'): invalid project 'just-a-project': expected entity/project",
            ],
        ),
        (
            "bad_security.yaml",
            [
                "`receiver.grpc.tls.key_file`: Field required",
                "`receiver.grpc.auth.bearer_token`: must not be empty; remove `auth` to accept every client",
                "`receiver.http.max_request_body_size_mib` (0): Input should be greater than 0",
                "`telemetry.log_format` ('yaml'): Input should be 'text' or 'json'",
                "`telemetry.readiness.queue_high_water` (1.5): Input should be less than or equal to 1",
            ],
        ),
        ("retry_intervals.yaml", ["`max_interval` must not be less than `initial_interval`"]),
        (
            "bad_delivery.yaml",
            [
                "`exporter.queue.directory` (''): empty directory: give a path, or null to keep the queue in memory",
                "`exporter.dead_letter.path` (''): empty path",
                "`exporter.retry.max_elapsed_time`",
                "`telemetry.degraded_log_interval` (0.0): Input should be greater than 0",
            ],
        ),
        ("not_a_mapping.yaml", ["expected a mapping of sections at the top level"]),
    ],
)
def test_errors_name_every_problem_with_its_key(name, messages):
    with pytest.raises(ConfigError) as raised:
        load_settings(TESTDATA / name)
    for message in messages:
        assert message in str(raised.value)


@pytest.mark.parametrize(
    ("exporter", "seconds"),
    [
        ({}, 300.0),  # in memory: give up (to the dead-letter file) after 5 minutes
        ({"queue": {"directory": "/var/lib/otel-bridge/queue"}}, 0.0),  # durable: retry until it works
        ({"queue": {"directory": "/q"}, "retry": {"max_elapsed_time": "1h"}}, 3600.0),
        ({"retry": {"max_elapsed_time": 0}}, 0.0),
    ],
)
def test_max_elapsed_time_in_effect(exporter, seconds):
    assert Settings.model_validate({"exporter": exporter}).exporter.max_elapsed_time == seconds


def test_env_references(monkeypatch):
    settings = load_settings(TESTDATA / "env_default.yaml")
    assert settings.exporter.weave.project == "team/default"
    assert settings.exporter.weave.api_key.get_secret_value() == ""
    assert settings.exporter.file.path == "${literal}/calls.jsonl"
    monkeypatch.setenv("OTEL_BRIDGE_TEST_PROJECT", "team/from-env")
    monkeypatch.setenv("OTEL_BRIDGE_TEST_KEY", "k-123")
    settings = load_settings(TESTDATA / "env_default.yaml")
    assert settings.exporter.weave.project == "team/from-env"
    assert settings.exporter.weave.api_key.get_secret_value() == "k-123"


def test_built_in_defaults_read_the_environment(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "secret-key")
    monkeypatch.setenv("WEAVE_PROJECT", "acme/prod")
    monkeypatch.setenv("WF_TRACE_SERVER_URL", "http://localhost:9999/")
    weave = load_settings(None).exporter.weave
    assert (weave.api_key.get_secret_value(), weave.project, weave.base_url) == ("secret-key", "acme/prod", "http://localhost:9999")


def test_masked_never_shows_the_key(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "secret-key")
    settings = load_settings(None)
    assert "secret-key" not in repr(settings)
    assert "secret-key" not in str(settings.masked())
    assert settings.masked()["exporter"]["weave"]["api_key"] == "**********"


def test_masked_never_shows_bearer_tokens():
    settings = load_settings(TESTDATA / "secured.yaml")
    assert "t0ken" not in repr(settings) and "t0ken" not in str(settings.masked())
    assert settings.masked()["receiver"]["http"]["auth"] == {"bearer_token": "**********"}


def test_missing_and_invalid_files():
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(TESTDATA / "does-not-exist.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("1s", 1.0), ("1m30s", 90.0), ("2h", 7200.0), ("0", 0.0), (3, 3.0), (0.25, 0.25), ("10us", 1e-5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1 second", "s", "1x", "", "1s2", True])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def _billion_laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_nested_yaml_aliases_are_refused_before_they_expand(tmp_path):
    """Issue 12.6: six levels expand to half a million strings (nine: 387 million); refused at once."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_billion_laughs(6))
    with pytest.raises(ConfigError, match=r"aliases expand the document past 100000 values \(at line \d+\)"):
        load_settings(path)
    (tmp_path / "self.yaml").write_text("a: &a [*a]\n")
    with pytest.raises(ConfigError, match=r"alias refers to itself \(line 1\)"):
        load_settings(tmp_path / "self.yaml")


def test_check_config_refuses_the_bomb_quickly(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bomb.yaml"
    path.write_text(_billion_laughs(9))
    done = subprocess.run(
        [sys.executable, "-m", "otel_bridge", "check-config", "--config", str(path)], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 2 and "aliases expand the document" in done.stderr


def test_ordinary_aliases_still_work(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text("receiver:\n  grpc: {auth: &auth {bearer_token: t0ken}}\n  http: {auth: *auth}\n")
    receiver = load_settings(path).receiver
    assert receiver.http.auth.bearer_token.get_secret_value() == "t0ken"
    assert receiver.grpc.auth == receiver.http.auth


def test_secrets_from_the_environment_are_trimmed(tmp_path, monkeypatch):
    """Issue 12.18: a Secret mounted from a file ends in a newline; kept, it makes every client 401."""
    monkeypatch.setenv("OTEL_BRIDGE_TEST_TOKEN", "t0ken\n")
    monkeypatch.setenv("WANDB_API_KEY", "  k-123\r\n")
    path = tmp_path / "c.yaml"
    path.write_text('receiver:\n  http: {auth: {bearer_token: "${env:OTEL_BRIDGE_TEST_TOKEN}"}}\n')
    settings = load_settings(path)
    assert settings.receiver.http.auth.bearer_token.get_secret_value() == "t0ken"
    assert settings.exporter.weave.api_key.get_secret_value() == "k-123"
    monkeypatch.setenv("OTEL_BRIDGE_TEST_TOKEN", " \n")
    with pytest.raises(ConfigError, match="bearer_token.*must not be empty"):
        load_settings(path)


@pytest.mark.parametrize(
    "value, shown",
    [
        ("${env:RT-KEY}", "${env:RT-KEY}"),  # not a variable name
        ("${env:X:-team/p}}", "${env:X:-team/p}}"),  # a stray brace
        ("${WEAVE_PROJECT}", "${WEAVE_PROJECT}"),  # the shell's form, not the Collector's
        ("${env:X", "${env:X"),  # unclosed
        ("team/${env:X:-{p}}", "${env:X:-{p}}"),  # braces in the default
    ],
)
def test_malformed_env_references_are_refused_with_the_key(tmp_path, value, shown):
    path = tmp_path / "c.yaml"
    path.write_text(f"exporter:\n  weave:\n    project: '{value}'\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert f"`exporter.weave.project`: malformed reference {shown!r}" in str(error.value)
    assert "${env:NAME:-default}" in str(error.value)


def test_env_references_in_lists_name_the_item(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mapping:\n  redact:\n    keys: [ok, '${env:A B}']\n")
    with pytest.raises(ConfigError, match=r"`mapping\.redact\.keys\[1\]`: malformed reference"):
        load_settings(path)
