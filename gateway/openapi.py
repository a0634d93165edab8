"""/openapi.json, generated from the route table and the body models."""

from __future__ import annotations

from typing import Any

from gateway.config import Settings
from gateway.errors import REGISTRY
from gateway.routes import PATH_TEXT_LIMITS, PUBLIC, ROUTES

STATUS_OF = {code: status for status, code in REGISTRY.values()} | {
    "unauthorized": 401,
    "invalid_credentials": 401,
    "forbidden": 403,
    "payload_too_large": 413,
    "conflict": 409,
    "busy": 503,
}
PROBLEM = {"$ref": "#/components/schemas/Problem"}


def openapi_document(settings: Settings) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "detail": {"type": "string"},
                "hint": {"type": "string"},
            },
        }
    }
    for e in ROUTES:
        function = settings.reserve_function if e.function == "reserve" else e.function

        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": function if e.function != "reserve" else "reserve",
            "description": f"Calls `api.{function}`.",
            "responses": {str(e.status): {"description": "success"}},
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "maxLength": PATH_TEXT_LIMITS[name]}
                if name in PATH_TEXT_LIMITS
                else {"type": "string", "format": "uuid"},
            }
            for name in _path_names(e.path)
        ]
        if e.special == "events":
            params.append({"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 200}})
        if params:
            op["parameters"] = params
        if e.body is not None:
            schema = e.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[e.body.__name__] = schema
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{e.body.__name__}"}}},
            }
        if e.auth != PUBLIC:
            op["security"] = [{"bearer": []}]
        for code in e.errors:
            status = str(STATUS_OF.get(code, 400))
            entry = op["responses"].setdefault(
                status, {"description": "", "content": {"application/json": {"schema": PROBLEM}}}
            )
            entry["description"] = ", ".join(filter(None, [entry["description"], code]))
        paths.setdefault(e.path, {})[e.method.lower()] = op
    for path, summary in (("/healthz", "The process is up"), ("/readyz", "The database answers")):
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "ok"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Event ticket booking", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
