"""Which bucket and key a request names: path-style, or virtual-host style under --s3-domain."""

import pytest

from peer.api.s3.errors import S3Error
from peer.api.s3.server import bucket_of_host, split_path


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("photos.s3.test:9000", "photos"),
        ("Photos.S3.Test", "photos"),  # host names are case-insensitive
        ("my.dotted.bucket.s3.test", "my.dotted.bucket"),
        ("s3.test:9000", None),  # the domain itself: path-style (ListBuckets, /BUCKET/KEY)
        (".s3.test", None),
        ("127.0.0.1:9000", None),
        ("[::1]:9000", None),
        ("photos.s3.test.evil.example", None),
        ("photoss3.test", None),
        ("", None),
        (None, None),
    ],
)
def test_the_host_names_the_bucket_only_under_the_domain(host, bucket) -> None:
    assert bucket_of_host(host, "s3.test") == bucket


def test_without_a_domain_every_request_is_path_style() -> None:
    assert bucket_of_host("photos.s3.test", None) is None


def test_a_virtual_host_path_is_the_whole_key() -> None:
    assert split_path("/a/b%20c.txt", "photos") == ("photos", "a/b c.txt")
    assert split_path("/", "photos") == ("photos", "")
    assert split_path("/photos/a/b.txt") == ("photos", "a/b.txt")
    with pytest.raises(S3Error, match="UTF-8"):
        split_path("/%ff", "photos")
