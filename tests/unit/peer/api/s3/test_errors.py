"""Core errors become the S3 error codes clients switch on."""

from __future__ import annotations

import pytest

from peer import errors
from peer.api.s3.errors import from_api_error
from peer.api.s3.xml import error_document


@pytest.mark.parametrize(
    "error, missing, status, code",
    [
        (errors.NotFound("x"), "NoSuchKey", 404, "NoSuchKey"),
        (errors.NotFound("x"), "NoSuchBucket", 404, "NoSuchBucket"),
        (errors.Forbidden("x"), "NoSuchKey", 403, "AccessDenied"),
        (errors.Unavailable("x"), "NoSuchKey", 503, "SlowDown"),
        (errors.InsufficientStorage("x"), "NoSuchKey", 507, "InsufficientStorage"),
        (errors.NotEmpty("x"), "NoSuchKey", 409, "BucketNotEmpty"),
        (errors.NotADirectory("x"), "NoSuchKey", 409, "PathConflict"),
        (errors.ConflictingVersions("x"), "NoSuchKey", 409, "OperationAborted"),
        (errors.BadRequest("x"), "NoSuchKey", 400, "InvalidArgument"),
    ],
)
def test_core_errors_map_to_s3_codes(error, missing: str, status: int, code: str) -> None:
    mapped = from_api_error(error, missing)
    assert (mapped.status, mapped.code) == (status, code)


def test_error_documents_never_carry_characters_xml_cannot_hold() -> None:
    body = error_document("InvalidArgument", "key 'a\x00b'", "/b/a\x01b", "ID")
    assert b"\x00" not in body and b"\x01" not in body and b"<Code>InvalidArgument</Code>" in body
