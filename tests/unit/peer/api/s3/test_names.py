"""Pure pieces of the S3 operations: key -> path mapping, ranges, conditions."""

from __future__ import annotations

import pytest

from peer.api.s3.errors import S3Error
from peer.api.s3.names import bucket_path, iso_time, object_path
from peer.api.s3.objects import byte_range, etag_matches, parse_range
from peer.manifest import Block, Manifest


def test_keys_map_to_paths_or_are_refused_with_the_reason() -> None:
    assert object_path("photos", "a/b/c.txt") == ("/photos/a/b/c.txt", False)
    assert object_path("photos", "a/b/") == ("/photos/a/b", True)
    for key, reason in [
        ("a//b", "empty name"),
        ("/a", "empty name"),
        ("a/../b", "'..'"),
        ("./a", "'.'"),
        ("a\x00b", "control character"),
        ("x" * 300, "longer than 255"),
        ("a//", "empty name"),
    ]:
        with pytest.raises(S3Error, match=reason) as e:
            object_path("photos", key)
        assert e.value.code == "InvalidArgument"
    with pytest.raises(S3Error) as e:
        object_path("photos", "k" * 1025)
    assert e.value.code == "KeyTooLongError"
    for bad in ("ab", "Upper", "a_b", "-ab", "a..b"):
        with pytest.raises(S3Error) as e:
            bucket_path(bad, new=True)
        assert e.value.code == "InvalidBucketName"
    with pytest.raises(S3Error):
        bucket_path(".s3-uploads")  # the uploads area is never a bucket


def test_ranges_follow_http_and_pick_only_the_blocks_needed() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=10-19", 100) == (10, 19)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=50-1000", 100) == (50, 99)
    assert parse_range("bytes=5-1", 100) is None  # invalid: ignored, as HTTP says
    assert parse_range("bytes=1-2,4-5", 100) is None
    with pytest.raises(S3Error) as e:
        parse_range("bytes=100-", 100)
    assert e.value.code == "InvalidRange"
    blocks = tuple(Block(f"{i:064x}", 10) for i in range(5))
    manifest = Manifest(50, 0.0, 0o644, "", blocks)
    part, skip = byte_range(manifest, 15, 32)
    assert [b.hash for b in part.blocks] == [blocks[1].hash, blocks[2].hash, blocks[3].hash]
    assert skip == 5
    inline = Manifest(5, 0.0, 0o644, "", (), b"hello")
    assert byte_range(inline, 1, 3)[0].inline == b"ell"


def test_etag_lists_and_timestamps() -> None:
    assert etag_matches('"abc"', "abc") and etag_matches("*", "abc")
    assert etag_matches('"x", W/"abc"', "abc") and not etag_matches('"abd"', "abc")
    assert iso_time(0.5) == "1970-01-01T00:00:00.500Z"
