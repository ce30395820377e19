"""Request bodies parsed straight from bytes on the hot path.

FastAPI parses a body with `json.loads` and then validates the Python
objects; pydantic's `model_validate_json` does both in Rust, about three
times faster on a 40-row window (bench/serve.py). Routes that use it read
the raw body themselves, so their OpenAPI request schema and examples are
declared here, and errors are re-raised as FastAPI's own validation errors
(same 422 and message as every other route).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Body = TypeVar("Body", bound=BaseModel)

# Models whose JSON schema must appear in the OpenAPI components.
DOCUMENTED_BODIES: list[type[BaseModel]] = []


def parse_body(model: type[Body], raw: bytes) -> Body:
    """Validate raw JSON bytes as `model`; a 422 with `body.`-prefixed locations otherwise."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        errors = [{**item, "loc": ("body", *item["loc"])} for item in error.errors(include_url=False)]
        raise RequestValidationError(errors) from None


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
