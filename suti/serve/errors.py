"""Typed HTTP errors of the server. Every one becomes `{"error": {"code", "message"}}` with its status."""

from __future__ import annotations

from suti.errors import InputError, SutiError


class ApiError(SutiError):
    """An error with an HTTP status, a stable machine-readable code and a message naming the problem."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else type(self).status
        self.code = code if code is not None else type(self).code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class PayloadTooLarge(ApiError, InputError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError, InputError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(ApiError, InputError):
    status, code = 422, "invalid_input"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class QueueFull(ApiError):
    status, code = 429, "queue_full"


class Timeout(ApiError):
    status, code = 504, "timeout"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


class StoreFull(ApiError):
    status, code = 507, "store_full"
