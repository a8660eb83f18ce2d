"""S3 errors: the XML error documents S3 clients expect, and how core errors map onto them."""

from __future__ import annotations

from peer.errors import (
    AlreadyExists,
    ApiError,
    ConflictingVersions,
    Forbidden,
    InsufficientStorage,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    Unauthorized,
    Unavailable,
)


class S3Error(Exception):
    """An S3 error answer: HTTP `status`, S3 `code` (what clients switch on) and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def access_denied(message: str) -> S3Error:
    return S3Error(403, "AccessDenied", message)


def bad_request(message: str, code: str = "InvalidArgument") -> S3Error:
    return S3Error(400, code, message)


def from_api_error(error: ApiError, missing: str = "NoSuchKey") -> S3Error:
    """The S3 form of a core error; `missing` is the code a NotFound becomes here."""
    detail = error.detail
    if isinstance(error, NotFound):
        return S3Error(404, missing, detail)
    if isinstance(error, (Forbidden, Unauthorized)):
        return access_denied(detail)
    if isinstance(error, InsufficientStorage):
        return S3Error(507, "InsufficientStorage", f"not stored, disks full: {detail}")
    if isinstance(error, Unavailable):
        return S3Error(503, "SlowDown", f"quorum not met, retry: {detail}")
    if isinstance(error, NotEmpty):
        return S3Error(409, "BucketNotEmpty", detail)
    if isinstance(error, ConflictingVersions):
        return S3Error(409, "OperationAborted", detail)
    if isinstance(error, (NotADirectory, IsADirectory, AlreadyExists)):
        return S3Error(409, "PathConflict", detail)
    if error.status == 400:
        return bad_request(detail)
    return S3Error(500, "InternalError", detail)
