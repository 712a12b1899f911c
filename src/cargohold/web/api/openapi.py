"""``/api/v1/openapi.json``: the OpenAPI 3.1 document, generated from the route table and the pydantic models.

Nothing here is written by hand per endpoint: paths, parameters, request and
response schemas and the error answers each operation can give all come from
the ``Operation`` entries the router serves, so the document cannot drift from
the API. It is served without credentials (it holds no secrets).
"""

from __future__ import annotations

import json
import typing
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ... import __version__
from ...auth.service import NAME_PATTERN
from .common import API_PREFIX, BASIC_CHALLENGE, Call, Operation, Problem

_REF = "#/components/schemas/{model}"
_PROBLEM = "application/problem+json"

_ERRORS = {
    400: "The body is not JSON",
    401: "No credentials, or bad ones (`WWW-Authenticate: " + BASIC_CHALLENGE.replace('"', "'") + "`)",
    403: "The caller is not an admin",
    404: "Unknown resource; or the server runs without authentication, so there are no identities",
    409: "Conflict",
    413: "The body is too large",
    415: "The body is not declared as JSON (Content-Type: application/json)",
    422: "The body or query failed validation",
    429: "Too many failed logins from this client or for this user; see Retry-After",
}


def _response_model(op: Operation) -> tuple[type[BaseModel] | None, bool]:
    """The model an operation answers with, and whether the answer is a list of it."""
    if op.response is None:
        return None, False
    if typing.get_origin(op.response) is list:
        return typing.get_args(op.response)[0], True
    return op.response, False


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a value, never null: drop pydantic's ``anyOf [..., null]``."""
    variants = schema.get("anyOf")
    if variants:
        concrete = [v for v in variants if v.get("type") != "null"]
        if len(concrete) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(concrete[0])
            return merged
    return schema


def _query_parameters(op: Operation) -> list[dict[str, Any]]:
    if op.query is None:
        return []
    schema = op.query.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema["properties"].items():
        prop = _non_null({k: v for k, v in prop.items() if k not in ("title", "description")})
        if prop.get("default", 0) is None:
            del prop["default"]
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in schema["properties"][name]:
            param["description"] = schema["properties"][name]["description"]
        params.append(param)
    return params


def _path_parameters(op: Operation) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in op.path.split("/") if part.startswith("{") and part.endswith("}")]
    default = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64}
    return [{"name": n, "in": "path", "required": True, "schema": op.path_params.get(n, default)} for n in names]


def _errors(op: Operation) -> list[int]:
    if op.access == "public":
        return []
    codes = {401, 404, 429}
    if op.access == "admin":
        codes.add(403)
    if op.body is not None:
        codes |= {400, 413, 415, 422}
    if op.query is not None:
        codes.add(422)
    if op.conflict is not None:
        codes.add(409)
    return sorted(codes)


def describe(operations: list[Operation]) -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for op in operations:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        model, _ = _response_model(op)
        if model is not None:
            wanted.append((model, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF)

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        success: dict[str, Any] = {"description": op.summary}
        model, is_list = _response_model(op)
        if model is not None:
            schema = refs[(model, "serialization")]
            if is_list:
                schema = {"type": "array", "items": schema}
            success["content"] = {"application/json": {"schema": schema}}
        if op.location:
            success["headers"] = {"Location": {"description": "the new resource", "schema": {"type": "string"}}}
        responses[str(op.status)] = success
        for code, meaning in op.answers.items():
            if code < 300:
                responses[str(code)] = {**success, "description": meaning}
        for code in sorted({*_errors(op), *(c for c in op.answers if c >= 400)}):
            error: dict[str, Any] = {
                "description": op.answers.get(code) or (op.conflict if code == 409 and op.conflict else _ERRORS[code]),
                "content": {_PROBLEM: {"schema": refs[(Problem, "serialization")]}},
            }
            if code == 401:
                error["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": BASIC_CHALLENGE}}
            responses[str(code)] = error
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": _path_parameters(op) + _query_parameters(op),
            "responses": responses,
        }
        if op.description:
            entry["description"] = op.description
        if op.access == "public":
            entry["security"] = []
        elif op.access == "admin":
            entry["description"] = (op.description + "\n\n" if op.description else "") + "Admins only."
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        if not entry["parameters"]:
            del entry["parameters"]
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = entry

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cargohold management API",
            "version": __version__,
            "description": (
                "Users, robot tokens, scope maps, refresh tokens, signing keys and the audit log. "
                "Authenticate with Basic (a user's password, or a robot token `chr_…` as the password) or a bearer "
                "token (an access token from `/token`, or a robot token). Everything but `/me` and this document "
                "needs an admin. Errors are `application/problem+json` (RFC 9457)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT from /token, or a chr_ robot token"},
            },
        },
        "security": [{"basic": []}, {"bearer": []}],
        "tags": [{"name": t} for t in dict.fromkeys(op.tag for op in operations)],
    }


def operation(operations: list[Operation]) -> Operation:
    """The ``GET /openapi.json`` operation, describing ``operations`` and itself."""
    document: bytes | None = None

    async def get_openapi(call: Call) -> web.Response:
        nonlocal document
        if document is None:
            document = json.dumps(describe(everything), indent=1).encode()
        return web.Response(body=document, headers={"Content-Type": "application/json"})

    this = Operation(
        "GET", "/openapi.json", get_openapi, "getOpenApi", "This document", "meta", access="public",
    )
    everything = [*operations, this]
    return this
