"""SigV4 checking against AWS's published examples and botocore's own signer."""

from __future__ import annotations

import hashlib

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from peer.api.s3 import sigv4
from peer.api.s3.errors import S3Error
from peer.api.s3.server import parse_query

KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATE = "20130524T000000Z"
AT = sigv4.timestamp(DATE)


def test_aws_example_get_object_with_range() -> None:
    """The "GET Object" example of AWS's SigV4 header documentation."""
    auth = (
        f"AWS4-HMAC-SHA256 Credential={KEY}/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    signed = sigv4.parse_header(auth, DATE)
    headers = {
        "host": ["examplebucket.s3.amazonaws.com"],
        "range": ["bytes=0-9"],
        "x-amz-content-sha256": [sigv4.EMPTY_SHA256],
        "x-amz-date": [DATE],
    }
    sigv4.check_time(signed, AT + 60)
    sigv4.verify(signed, SECRET, "GET", "/test.txt", [], headers, sigv4.EMPTY_SHA256)
    with pytest.raises(S3Error) as wrong:
        sigv4.verify(
            signed,
            SECRET,
            "GET",
            "/test.txt",
            [],
            {**headers, "range": ["bytes=0-8"]},
            sigv4.EMPTY_SHA256,
        )
    assert wrong.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as skewed:
        sigv4.check_time(signed, AT + 3600)
    assert skewed.value.code == "RequestTimeTooSkewed"


def test_aws_example_presigned_url_and_its_expiry() -> None:
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{KEY}/20130524/us-east-1/s3/aws4_request",
        "X-Amz-Date": DATE,
        "X-Amz-Expires": "86400",
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Signature": "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
    }
    signed = sigv4.parse_presigned(query)
    headers = {"host": ["examplebucket.s3.amazonaws.com"]}
    sigv4.verify(signed, SECRET, "GET", "/test.txt", list(query.items()), headers, sigv4.UNSIGNED)
    sigv4.check_time(signed, AT + 86400)
    with pytest.raises(S3Error, match="expired"):
        sigv4.check_time(signed, AT + 86401)
    with pytest.raises(S3Error, match="X-Amz-Expires"):
        sigv4.parse_presigned({**query, "X-Amz-Expires": str(8 * 24 * 3600)})


def test_aws_example_chunk_signatures() -> None:
    """The aws-chunked example: 66560 bytes of 'a' in a 64 KiB chunk, a 1 KiB one, an empty one."""
    auth = (
        f"AWS4-HMAC-SHA256 Credential={KEY}/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;"
        "x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
        "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    )
    signed = sigv4.parse_header(auth, DATE)
    signer = sigv4.ChunkSigner(sigv4.signing_key(SECRET, signed.credential), signed)
    for data, signature in [
        (b"a" * 65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
        (b"a" * 1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
        (b"", "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
    ]:
        signer.check(hashlib.sha256(data).hexdigest(), signature)
    with pytest.raises(S3Error, match="chunk signature"):
        signer.check(sigv4.EMPTY_SHA256, "0" * 64)


def _botocore_request(url: str, method: str = "GET", presign: bool = False) -> AWSRequest:
    request = AWSRequest(method=method, url=url, headers={"x-amz-meta-Color": "  blue   sky "})
    credentials = Credentials("QFSABCDEFGHIJKLMNOPQ", "s3cr3t")
    if presign:
        S3SigV4QueryAuth(credentials, "s3", "eu-west-1", expires=300).add_auth(request)
    else:
        request.headers["x-amz-content-sha256"] = sigv4.UNSIGNED
        S3SigV4Auth(credentials, "s3", "eu-west-1").add_auth(request)
    return request


@pytest.mark.parametrize("presign", [False, True])
@pytest.mark.parametrize(
    "path, query",
    [
        ("/bucket/a%20b/c%2Bd~e.txt", "prefix=x%2Fy&delimiter=%2F&list-type=2"),
        ("/bucket/%E2%82%AC/%21%27%28%29", "uploads="),
        ("/bucket", ""),
    ],
)
def test_botocore_signatures_verify(path: str, query: str, presign: bool) -> None:
    url = "http://127.0.0.1:9000" + path + ("?" + query if query else "")
    request = _botocore_request(url, presign=presign).prepare()
    raw_path, _, raw_query = request.url.split("127.0.0.1:9000", 1)[1].partition("?")
    pairs = parse_query(raw_query)
    headers = {k.lower(): [v] for k, v in request.headers.items()}
    headers["host"] = ["127.0.0.1:9000"]
    if presign:
        signed = sigv4.parse_presigned(dict(pairs))
        payload = sigv4.UNSIGNED
    else:
        signed = sigv4.parse_header(headers["authorization"][0], headers["x-amz-date"][0])
        payload = headers["x-amz-content-sha256"][0]
    sigv4.verify(signed, "s3cr3t", "GET", raw_path, pairs, headers, payload)
    with pytest.raises(S3Error):
        sigv4.verify(signed, "wrong", "GET", raw_path, pairs, headers, payload)
    with pytest.raises(S3Error):
        sigv4.verify(signed, "s3cr3t", "PUT", raw_path, pairs, headers, payload)


@pytest.mark.parametrize(
    "header, complaint",
    [
        ("AWS AKID:sig", "Signature Version 4"),
        ("AWS4-HMAC-SHA256 Credential=K/20130524/us-east-1/s3/aws4_request", "lacks"),
        (
            "AWS4-HMAC-SHA256 Credential=K/2013/us/s3/aws4_request,SignedHeaders=host,"
            "Signature=" + "0" * 64,
            "Credential",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=K/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=date,Signature=" + "0" * 64,
            "host",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=K/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host,Signature=xyz",
            "Signature",
        ),
        ("AWS4-HMAC-SHA256 " + "x" * 5000, "longer"),
    ],
)
def test_malformed_authorization_headers_say_what_is_wrong(header: str, complaint: str) -> None:
    with pytest.raises(S3Error, match=complaint):
        sigv4.parse_header(header, DATE)


def test_request_dates_are_read_as_utc_and_impossible_ones_refused() -> None:
    assert sigv4.timestamp("19700101T000000Z") == 0
    assert sigv4.timestamp("20240229T235959Z") == 1709251199  # a leap day's last second
    for bad in ("20231301T000000Z", "20230230T000000Z", "20230101T240000Z", "2023011T000000Z"):
        with pytest.raises(S3Error, match="is not a date") as refused:
            sigv4.timestamp(bad)
        assert refused.value.code == "AccessDenied"


def test_signing_keys_differ_by_secret_day_region_and_service() -> None:
    """The derived key is cached: a cache keyed on too little would sign for the wrong one."""
    base = sigv4.Credential(KEY, "20130524", "us-east-1", "s3")
    keys = {
        sigv4.signing_key(SECRET, base),
        sigv4.signing_key(SECRET + "x", base),
        sigv4.signing_key(SECRET, sigv4.Credential(KEY, "20130525", "us-east-1", "s3")),
        sigv4.signing_key(SECRET, sigv4.Credential(KEY, "20130524", "eu-west-1", "s3")),
        sigv4.signing_key(SECRET, sigv4.Credential(KEY, "20130524", "us-east-1", "sts")),
    }
    assert len(keys) == 5
