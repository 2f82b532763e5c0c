"""Validation messages name the client's JSON values as JSON (`null`, not Python's `None`)."""

from __future__ import annotations

from potok.policies.validate.schema import CompiledSchema

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "ok": {"type": "string"}},
}


def test_null_true_and_false_are_named_as_json() -> None:
    errors = CompiledSchema(SCHEMA, "body").errors({"name": None, "ok": True}, limit=10)
    messages = {error["field"]: error["message"] for error in errors}
    assert messages["body.name"].startswith("null is not of type")
    assert messages["body.ok"].startswith("true is not of type")
    assert "None" not in str(messages) and "True" not in str(messages)
