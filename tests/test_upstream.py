"""Tests of the fake Weave trace server in tests/upstream.py (not of the bridge)."""

from __future__ import annotations

import copy
import gzip
import json
import socket
import threading
import time

import httpx
import pytest

from upstream import UpstreamServer

API_KEY = "k-123"
PATH = "/v2/ent/proj/calls/complete"
CALL = {
    "project_id": "ent/proj", "id": "00f067aa0ba902b7", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "parent_id": None, "op_name": "chat gpt-4o",
    "started_at": "2026-01-01T00:00:00.000000Z", "ended_at": "2026-01-01T00:00:01.500000Z",
    "attributes": {}, "inputs": {}, "output": None,
    "summary": {"usage": {"gpt-4o": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}}},
    "exception": None, "otel_dump": {"name": "x"},
}


def make_call(call_id: str = CALL["id"], **changes) -> dict:
    call = copy.deepcopy(CALL)
    call["id"] = call_id
    call.update(changes)
    return call


def body_of(*calls: dict) -> dict:
    return {"batch": list(calls)}


@pytest.fixture
def server():
    with UpstreamServer(api_key=API_KEY) as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, auth=("api", API_KEY), timeout=5.0) as c:
        yield c


# ----------------------------------------------------------------- happy path

def test_valid_body_is_accepted_and_recorded(server, client):
    second = make_call("b7ad6b7169203331", parent_id=CALL["id"], display_name=None,
                       wb_user_id=None, output={"anything": [1, "two"]},
                       summary={"status_counts": {"success": 1, "descendant_error": 0}})
    resp = client.post(PATH, json=body_of(CALL, second))

    assert resp.status_code == 200
    assert resp.json() == {}
    [req] = server.requests
    assert req.path == PATH
    assert req.project == "ent/proj"
    assert req.body == body_of(CALL, second)
    assert req.raw_size == len(resp.request.content)
    assert req.headers["authorization"].startswith("Basic ")
    assert server.calls == [CALL, second]
    assert set(server.calls_by_id()) == {CALL["id"], second["id"]}
    assert server.duplicate_ids() == {}
    assert [a.status for a in server.attempts] == [200]
    assert server.attempts[0].call_ids == [CALL["id"], second["id"]]
    server.assert_no_errors()


def test_uuid_ids_and_keep_alive_requests(server, client):
    uuid = "3f2b8c1e-9a4d-4e6f-8b7a-0c1d2e3f4a5b"
    for call in (make_call(uuid), make_call("b7ad6b7169203331", trace_id=uuid)):
        assert client.post(PATH, json=body_of(call)).status_code == 200
    assert len(server.requests) == 2
    server.assert_no_errors()


def test_chunked_body_is_read(server, client):
    payload = json.dumps(body_of(CALL)).encode()
    resp = client.post(PATH, content=iter([payload[:50], payload[50:]]),
                       headers={"Content-Type": "application/json"})
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert resp.status_code == 200
    assert server.calls == [CALL]


def test_duplicates_are_counted(server, client):
    client.post(PATH, json=body_of(CALL))
    client.post(PATH, json=body_of(CALL, make_call("b7ad6b7169203331")))
    assert len(server.calls) == 3
    assert len(server.calls_by_id()) == 2
    assert server.duplicate_ids() == {CALL["id"]: 2}


def test_wait_for_calls(server, client):
    timer = threading.Timer(0.2, lambda: client.post(PATH, json=body_of(CALL)))
    started = time.monotonic()
    timer.start()
    assert server.wait_for_calls(1, timeout=5) == [CALL]
    assert time.monotonic() - started < 2  # woken by the arrival, not by the timeout
    timer.join()
    with pytest.raises(AssertionError, match=r"for 2 calls, only 1 arrived"):
        server.wait_for_calls(2, timeout=0.2)


# ----------------------------------------------------------------- auth

@pytest.mark.parametrize("auth", [None, ("api", "wrong"), ("user", API_KEY)],
                         ids=["missing", "wrong-key", "wrong-user"])
def test_bad_auth_is_401(server, auth):
    with httpx.Client(base_url=server.url, auth=auth) as c:
        resp = c.post(PATH, json=body_of(CALL))
    assert resp.status_code == 401
    assert server.calls == []
    assert [a.status for a in server.attempts] == [401]
    assert server.errors == []  # a wrong key is configuration, not an invalid body


# ----------------------------------------------------------------- invalid bodies

def _without(field: str) -> dict:
    call = make_call()
    del call[field]
    return call


@pytest.mark.parametrize("call, loc, type_", [
    (_without("started_at"), ["body", "batch", 0, "started_at"], "missing"),
    (_without("summary"), ["body", "batch", 0, "summary"], "missing"),
    (make_call("00F067AA0BA902B7"), ["body", "batch", 0, "id"], "pattern"),
    (make_call(trace_id="4BF92F3577B34DA6A3CE929D0E0E4736"), ["body", "batch", 0, "trace_id"], "pattern"),
    (make_call(parent_id="ABCDEF0123456789"), ["body", "batch", 0, "parent_id"], "pattern"),
    (make_call(started_at="2026-01-01 00:00:00"), ["body", "batch", 0, "started_at"], "format"),
    (make_call(ended_at="2026-13-01T00:00:00Z"), ["body", "batch", 0, "ended_at"], "format"),
    (make_call(ended_at="2026-01-01T00:00:01"), ["body", "batch", 0, "ended_at"], "format"),  # no offset
    (make_call(project_id="other/proj"), ["body", "batch", 0, "project_id"], "value_error"),
    (make_call(op_name="x" * 129), ["body", "batch", 0, "op_name"], "maxLength"),
    (make_call(wb_user_id="someone"), ["body", "batch", 0, "wb_user_id"], "type"),
    (make_call(summary={"status_counts": {"ok": 1}}), ["body", "batch", 0, "summary", "status_counts"],
     "enum"),
    (make_call(wb_run_step="3"), ["body", "batch", 0, "wb_run_step"], "type"),
], ids=["missing-started_at", "missing-summary", "uppercase-id", "uppercase-trace_id", "uppercase-parent_id",
        "date-time-space", "date-time-month-13", "date-time-no-offset", "project-mismatch",
        "op_name-too-long", "wb_user_id-set", "status_counts-key", "wb_run_step-string"])
def test_invalid_call_is_422_and_recorded_as_error(server, client, call, loc, type_):
    resp = client.post(PATH, json=body_of(make_call("b7ad6b7169203331"), call))
    loc = loc[:2] + [1] + loc[3:]  # the bad call is second in the batch

    assert resp.status_code == 422
    details = resp.json()["detail"]
    assert {"loc": loc, "type": type_} in [{"loc": d["loc"], "type": d["type"]} for d in details], details
    assert all(isinstance(d["msg"], str) and d["msg"] for d in details)
    assert server.calls == [] and server.requests == []
    assert server.errors and all(".".join(map(str, loc)) in e for e in server.errors[:1]), server.errors
    with pytest.raises(AssertionError, match="invalid request"):
        server.assert_no_errors()


def test_project_id_without_slash_is_rejected(server, client):
    resp = client.post("/v2/proj/x/calls/complete", json=body_of(make_call(project_id="proj")))
    assert resp.status_code == 422
    types = {d["type"] for d in resp.json()["detail"]}
    assert types == {"pattern", "value_error"}
    assert len(server.errors) == 2


@pytest.mark.parametrize("content, type_", [(b"{not json", "json_invalid"), (b"[]", "type"),
                                             (b'{"calls": []}', "missing")])
def test_malformed_body_is_422(server, client, content, type_):
    resp = client.post(PATH, content=content, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["type"] == type_
    assert len(server.errors) == 1


@pytest.mark.parametrize("method, path, status", [("POST", "/v2/ent/proj/calls/start", 404),
                                                  ("POST", "/v2/ent/calls/complete", 404),
                                                  ("GET", PATH, 405)])
def test_other_routes_are_errors(server, client, method, path, status):
    resp = client.request(method, path, json=body_of(CALL))
    assert resp.status_code == status
    assert server.calls == []
    assert len(server.errors) == 1 and str(status) in server.errors[0]


# ----------------------------------------------------------------- gzip

def test_gzip_body_is_decoded(server, client):
    raw = gzip.compress(json.dumps(body_of(CALL)).encode())
    resp = client.post(PATH, content=raw, headers={"Content-Encoding": "gzip",
                                                   "Content-Type": "application/json"})
    assert resp.status_code == 200
    assert server.calls == [CALL]
    assert server.requests[0].raw_size == len(raw)
    server.assert_no_errors()


def test_bad_gzip_is_an_error(server, client):
    resp = client.post(PATH, content=json.dumps(body_of(CALL)).encode(),
                       headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 400
    assert server.calls == [] and len(server.errors) == 1


# ----------------------------------------------------------------- faults

def test_fail_next_with_retry_after(server, client):
    server.retry_after = "1"
    server.fail_next(2, status=503)
    first, second = (client.post(PATH, json=body_of(CALL)) for _ in range(2))
    assert (first.status_code, second.status_code) == (503, 503)
    assert first.headers["retry-after"] == "1"
    assert server.calls == [] and server.requests == []

    time.sleep(float(second.headers["retry-after"]))  # a client honouring Retry-After
    assert client.post(PATH, json=body_of(CALL)).status_code == 200

    attempts = server.attempts
    assert [a.status for a in attempts] == [503, 503, 200]
    assert [a.call_ids for a in attempts] == [[CALL["id"]]] * 3
    assert attempts[2].at - attempts[1].at >= 1.0
    assert server.calls == [CALL]
    server.assert_no_errors()


def test_fail_next_custom_answer_and_queueing(server, client):
    server.retry_after = "7"
    server.fail_next(1, status=429, headers={"Retry-After": "3"}, body=b"slow down")
    server.fail_next(1, status=500)
    r429, r500, ok = (client.post(PATH, json=body_of(CALL)) for _ in range(3))
    assert (r429.status_code, r429.headers["retry-after"], r429.content) == (429, "3", b"slow down")
    assert r500.status_code == 500 and "retry-after" not in r500.headers
    assert ok.status_code == 200
    assert len(server.calls) == 1


def test_down_then_up_on_same_port(server, client):
    assert client.post(PATH, json=body_of(CALL)).status_code == 200
    port = server.port
    idle = socket.create_connection(("127.0.0.1", port))  # a keep-alive connection open before the outage
    time.sleep(0.1)

    server.set_down(True)
    with pytest.raises(httpx.TransportError):
        client.post(PATH, json=body_of(make_call("b7ad6b7169203331")))
    with pytest.raises(httpx.ConnectError):
        httpx.post(server.url + PATH, json=body_of(CALL), auth=("api", API_KEY))
    idle.settimeout(2)
    assert idle.recv(1) == b""  # cut by the server
    idle.close()

    server.set_down(False)
    assert server.port == port
    assert client.post(PATH, json=body_of(make_call("b7ad6b7169203331"))).status_code == 200
    assert [c["id"] for c in server.calls] == [CALL["id"], "b7ad6b7169203331"]


def test_reject_ids(server, client):
    ids = ["000000000000000" + str(i) for i in range(5)]
    server.reject_ids({ids[3]})
    resp = client.post(PATH, json=body_of(*(make_call(i) for i in ids)))
    assert resp.status_code == 422
    assert [d["loc"] for d in resp.json()["detail"]] == [["body", "batch", 3, "id"]]
    assert server.calls == [] and server.errors == []
    assert server.attempts[-1].reason == "rejected_ids"

    good = [i for i in ids if i != ids[3]]
    assert client.post(PATH, json=body_of(*(make_call(i) for i in good))).status_code == 200
    server.reject_ids({ids[0]}, status=400)
    assert client.post(PATH, json=body_of(make_call(ids[0]))).status_code == 400
    server.reject_ids(())
    assert client.post(PATH, json=body_of(make_call(ids[3]))).status_code == 200
    assert [c["id"] for c in server.calls] == good + [ids[3]]


def test_max_body_bytes_counts_wire_bytes(server, client):
    small = json.dumps(body_of(CALL)).encode()
    big = json.dumps(body_of(*(make_call(f"{i:016x}") for i in range(50)))).encode()
    zipped = gzip.compress(big)
    server.max_body_bytes = max(len(small), len(zipped))
    assert len(big) > server.max_body_bytes
    headers = {"Content-Type": "application/json"}

    assert client.post(PATH, content=small, headers=headers).status_code == 200
    assert client.post(PATH, content=big, headers=headers).status_code == 413
    assert client.post(PATH, content=zipped, headers={**headers, "Content-Encoding": "gzip"}).status_code == 200
    assert len(server.calls) == 51
    assert [a.status for a in server.attempts] == [200, 413, 200]
    server.assert_no_errors()


def test_delay(server, client):
    server.delay = 0.5
    started = time.monotonic()
    assert client.post(PATH, json=body_of(CALL)).status_code == 200
    assert time.monotonic() - started >= 0.5

    # Like the real server, a request whose client timed out may still be accepted.
    with pytest.raises(httpx.ReadTimeout):
        client.post(PATH, json=body_of(make_call("b7ad6b7169203331")), timeout=0.1)
    assert len(server.wait_for_calls(2, timeout=3)) == 2


def test_reset_clears_recordings_and_faults(server, client):
    client.post(PATH, json=body_of(make_call("BAD")))
    server.fail_next(3)
    server.reject_ids({CALL["id"]})
    server.delay, server.max_body_bytes = 0.3, 10
    server.set_down(True)

    server.reset()
    assert (server.calls, server.requests, server.errors, server.attempts) == ([], [], [], [])
    started = time.monotonic()
    assert client.post(PATH, json=body_of(CALL)).status_code == 200
    assert time.monotonic() - started < 0.3


def test_explicit_start_stop():
    srv = UpstreamServer(api_key=API_KEY).start()
    url = srv.url
    assert httpx.post(url + PATH, json=body_of(CALL), auth=("api", API_KEY)).status_code == 200
    srv.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + PATH, json=body_of(CALL), auth=("api", API_KEY))
