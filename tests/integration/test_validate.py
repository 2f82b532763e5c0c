"""Edge validation over real sockets: every failing field named, sizes and types checked
before parsing, valid bodies reach the service untouched."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.support.net import ResponseReader, connect, request

SCHEMA = {
    "type": "object",
    "required": ["name", "price"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "price": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


@pytest.fixture(scope="module")
def gateway(upstream):
    from tests.support.gateway import GatewayProcess

    config = {
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [
            {"name": "items", "match": {"prefix": "/items"}, "service": "up",
             "policies": {"validate": {
                 "body": SCHEMA, "max_body_bytes": "1KiB",
                 "query": {"type": "object", "properties": {"page": {"type": "integer", "minimum": 1}},
                           "additionalProperties": False}}}},
        ],
    }  # fmt: skip
    process = GatewayProcess(config)
    yield process
    process.stop()


def post(gateway, body: bytes, content_type: str = "application/json", path: str = "/items"):
    return request(gateway.port, "POST", path, headers={"Content-Type": content_type}, body=body)


def errors(response) -> dict[str, str]:
    return {e["field"]: e["message"] for e in response.json()["errors"]}


def test_valid_body_reaches_the_service_untouched(gateway):
    body = json.dumps({"name": "widget", "price": 2.5, "tags": ["a"]}).encode()
    response = post(gateway, body)
    assert response.status == 200
    assert response.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_missing_field_and_wrong_type_and_extra_field(gateway):
    response = post(gateway, b'{"price": "free", "color": "red"}')
    assert response.status == 422
    assert response.header("Content-Type") == "application/problem+json"
    assert errors(response) == {
        "body.name": "required",
        "body.price": "\"free\" is not of type 'number'",
        "body.color": "not allowed",
    }
    assert response.json()["request_id"] == response.header("X-Request-ID")


def test_malformed_json_is_400(gateway):
    response = post(gateway, b'{"name": ')
    assert response.status == 400
    assert list(errors(response)) == ["body"]


def test_wrong_content_type_is_415(gateway, upstream):
    before = upstream.hits["/items"]
    assert post(gateway, b"name=x", "application/x-www-form-urlencoded").status == 415
    assert post(gateway, b'{"name": "x", "price": 1}', "application/vnd.api+json").status == 200
    assert upstream.hits["/items"] == before + 1


def test_announced_huge_body_is_refused_before_reading(gateway):
    with connect(gateway.port) as sock:
        # Announce 10 MB, send none of it: the answer comes without waiting for the body.
        sock.sendall(
            b"POST /items HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n"
        )
        response = ResponseReader(sock).read()
    assert response.status == 413


def test_streamed_huge_body_is_refused(gateway):
    chunk = b"[" + b"1," * 2000 + b"1]"
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    with connect(gateway.port) as sock:
        sock.sendall(
            b"POST /items HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body
        )
        response = ResponseReader(sock).read()
    assert response.status == 413


def test_missing_body_on_post(gateway):
    response = request(gateway.port, "POST", "/items", headers={"Content-Type": "application/json"})
    assert response.status == 422
    assert list(errors(response)) == ["body"]


def test_query_is_validated(gateway):
    response = request(gateway.port, "GET", "/items?page=0&sort=x")
    assert response.status == 422
    assert set(errors(response)) == {"query.page", "query.sort"}
    assert request(gateway.port, "GET", "/items?page=2").status == 200
