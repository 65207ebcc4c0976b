"""The API's one error model and the helper every router uses to document its error responses.

Every error the API answers has the body ``{"detail": "<one-line cause>"}``
(:class:`ErrorBody`); a ``422`` adds ``errors``, one entry per bad parameter
(:class:`ValidationErrorBody`). The same shape comes from route code
(``HTTPException``), from FastAPI's own parameter validation (the handler
installed by :func:`install_error_handlers`) and from the guards in
:mod:`api.security` (``400``, ``413``, ``429``).

Routers declare what they can answer with :func:`error_responses`, so the
OpenAPI document lists every status code a route can return with its real
body and headers; ``docs/api-contract.md`` explains the codes.

Parameter patterns are registered with :func:`pattern` together with a
sentence saying what they mean, which the ``422`` body gives instead of the
bare regular expression.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

__all__ = [
    "COMMON_ERRORS",
    "ErrorBody",
    "FieldError",
    "ValidationErrorBody",
    "error_responses",
    "install_error_handlers",
    "pattern",
    "validation_detail",
]


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="what went wrong, in one line", examples=["unknown sensor id '42'"])


class FieldError(BaseModel):
    """One request parameter that failed validation."""

    loc: list[str | int] = Field(description="where: the part of the request, then the parameter name",
                                 examples=[["query", "horizon"]])
    msg: str = Field(description="why it was refused", examples=["Input should be 15, 30 or 60"])
    type: str = Field(description="a machine-readable error kind", examples=["enum"])


class ValidationErrorBody(ErrorBody):
    """The body of a ``422``: the one-line cause plus every bad parameter."""

    errors: list[FieldError] = Field(description="every parameter that failed validation")


_RETRY_AFTER = {"Retry-After": {"description": "seconds until the client's bucket has a token again",
                                "schema": {"type": "integer", "minimum": 1}, "required": True}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "the scheme the key is expected in",
                                          "schema": {"type": "string", "enum": ["APIKey"]}, "required": True}}

_ERRORS: dict[int, tuple[str, type[BaseModel], dict[str, Any] | None]] = {
    400: ("malformed request (an invalid Content-Length header)", ErrorBody, None),
    401: ("X-API-Key header missing or wrong", ErrorBody, _WWW_AUTHENTICATE),
    403: ("admin endpoints are disabled: no admin key is configured", ErrorBody, None),
    404: ("unknown sensor id(s)", ErrorBody, None),
    409: ("the model registry holds no usable model", ErrorBody, None),
    413: ("request body larger than max_request_bytes", ErrorBody, None),
    422: ("a parameter is invalid (see errors)", ValidationErrorBody, None),
    429: ("rate limit exceeded for this client; retry after Retry-After seconds", ErrorBody, _RETRY_AFTER),
    503: ("the API is starting up or shutting down; retry in a moment", ErrorBody, None),
}

COMMON_ERRORS: tuple[int, ...] = (422, 429, 503)
"""What every rate-limited route with parameters can answer: invalid input, too many requests, not ready."""


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a router or route: each status code with its description, body and headers."""
    unknown = sorted(set(codes) - set(_ERRORS))
    if unknown:
        raise ValueError(f"no documented error body for status {unknown}")
    responses: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        description, model, headers = _ERRORS[code]
        responses[code] = {"description": description, "model": model, **({"headers": headers} if headers else {})}
    return responses


_PATTERN_HINTS: dict[str, str] = {}


def pattern(regex: str, meaning: str) -> str:
    """Register ``regex`` (for ``Query(pattern=...)``) with what it means; returns ``regex``."""
    _PATTERN_HINTS[regex] = meaning
    return regex


def _field_error(error: dict[str, Any]) -> FieldError:
    msg = str(error.get("msg", "invalid value"))
    if error.get("type") == "string_pattern_mismatch":
        msg = _PATTERN_HINTS.get(str((error.get("ctx") or {}).get("pattern")), msg)
    return FieldError(loc=[p if isinstance(p, int) else str(p) for p in error.get("loc", ())], msg=msg,
                      type=str(error.get("type", "value_error")))


def validation_detail(errors: list[FieldError]) -> str:
    """``"horizon: Input should be 15, 30 or 60; limit: ..."``: every bad parameter in one line."""
    parts = []
    for error in errors:
        name = ".".join(str(p) for p in error.loc[1:]) or ".".join(map(str, error.loc)) or "request"
        parts.append(f"{name}: {error.msg}")
    return " ".join("; ".join(parts).split())


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(e) for e in exc.errors()]
    body = ValidationErrorBody(detail=validation_detail(errors), errors=errors)
    return JSONResponse(body.model_dump(), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Answer FastAPI's parameter validation errors with :class:`ValidationErrorBody`."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)
