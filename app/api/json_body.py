"""OpenAPI request bodies for the routes that parse their own body from bytes (`app.api.predict.parse_body`).

pydantic's `model_validate_json` parses and validates in one pass, so
/predict and /predict/batch read the raw body themselves; FastAPI then
cannot see their request schema, which is declared here instead.
See docs/design.md, "Serving path".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Models whose JSON schema must appear in the OpenAPI components.
DOCUMENTED_BODIES: list[type[BaseModel]] = []


def documented_body(model: type[BaseModel], examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`openapi_extra` for a route that parses `model` itself."""
    DOCUMENTED_BODIES.append(model)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"},
                    "examples": examples,
                }
            },
        }
    }


def add_documented_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """Put the JSON schemas of self-parsed bodies (and their sub-models) into an OpenAPI document."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in DOCUMENTED_BODIES:
        body_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in body_schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[model.__name__] = body_schema
    return schema
