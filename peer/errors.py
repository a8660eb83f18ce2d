"""Errors a client request can end in, each with its HTTP status and a JSON-able message."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request that cannot be served: `status` for HTTP, `error` a short code, `detail` why."""

    status = 500
    error = "internal"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        """The error body clients receive: {"error", "detail", ...}."""
        return {"error": self.error, "detail": self.detail, **self.extra}


class BadRequest(ApiError):
    status = 400
    error = "bad_request"


class NotFound(ApiError):
    status = 404
    error = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    error = "method_not_allowed"


class AlreadyExists(ApiError):
    status = 409
    error = "exists"


class ConflictingVersions(ApiError):
    """Concurrent writes left siblings; the client picks one or writes with the context."""

    status = 300
    error = "conflict"


class Unavailable(ApiError):
    """A quorum could not be met: the operation was not acknowledged."""

    status = 503
    error = "unavailable"


class InsufficientStorage(ApiError):
    """A write was not acknowledged because replicas' disks are full (named in `peers`)."""

    status = 507
    error = "insufficient_storage"


class PayloadTooLarge(ApiError):
    """A body past its route's limit; the connection is closed after the answer."""

    status = 413
    error = "payload_too_large"


class Unauthorized(ApiError):
    """No valid token: missing, malformed, unknown or revoked."""

    status = 401
    error = "unauthorized"


class TooManyRequests(ApiError):
    """This client address failed to authenticate too often; `retry_after` whole seconds."""

    status = 429
    error = "too_many_requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class Forbidden(ApiError):
    """The token is valid but the permission check failed."""

    status = 403
    error = "forbidden"


class NotADirectory(ApiError):
    """A directory operation on a file, or a path below a file."""

    status = 409
    error = "not_a_directory"


class IsADirectory(ApiError):
    """A file operation on a directory."""

    status = 409
    error = "is_a_directory"


class NotEmpty(ApiError):
    """rmdir of a directory that still has entries (without recursive)."""

    status = 409
    error = "not_empty"
