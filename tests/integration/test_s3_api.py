"""The S3 API on real `qfs peer` processes, driven by boto3 with its default settings: objects,
listings, copies, multipart uploads, errors, presigned URLs, key revocation and hostile bodies,
and the same files seen through the qfs API. One 3-peer cluster serves the whole module."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from peer.client.api_client import Client
from tests.support import LocalCluster, boto_client, free_port, make_cluster_dir, wait_for

ADMIN = secrets.token_urlsafe(24)
MiB = 1024 * 1024
DOMAIN = "s3.test"  # the peers' --s3-domain: BUCKET.s3.test is a virtual-host request


class S3Cluster:
    """A started LocalCluster whose peers also serve S3, with helpers for keys and clients."""

    def __init__(self, cluster: LocalCluster, s3_ports: dict[str, int]) -> None:
        self.cluster = cluster
        self.s3_ports = s3_ports

    def endpoint(self, peer: str = "p1") -> str:
        return f"http://127.0.0.1:{self.s3_ports[peer]}"

    def qfs(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "QFS_TOKEN": ADMIN}
        return subprocess.run(
            [sys.executable, "-m", "peer.main", "--peer", self.cluster.peer("p1").http_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    def new_key(self, user: str, groups: str = "") -> dict[str, str]:
        made = self.qfs("s3", "key", "create", user, "--groups", groups, "--json")
        assert made.returncode == 0, made.stderr
        return json.loads(made.stdout)

    def client(self, key: dict[str, str], peer: str = "p1", **config: object):
        return boto_client(
            self.endpoint(peer), key, config=Config(**{"retries": {"max_attempts": 2}, **config})
        )


def s3_cluster(root, name: str, extra: tuple[str, ...] = ()) -> Iterator[S3Cluster]:
    """A 3-peer cluster with an admin token and an S3 port on every peer (and `extra` flags)."""
    token_file = root / "admin.token"
    token_file.write_text(ADMIN + "\n")
    token_file.chmod(0o600)  # a token file others may read is refused
    cluster = LocalCluster(root, 3, extra=["--admin-token-file", str(token_file)], token=ADMIN)
    ports = {}
    for peer in cluster.peers:
        ports[peer.name] = free_port()
        peer.argv += ["--s3-port", str(ports[peer.name]), "--s3-domain", DOMAIN, *extra]
    try:
        cluster.start()
        yield S3Cluster(cluster, ports)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[S3Cluster]:
    yield from s3_cluster(tmp_path_factory.mktemp("s3"), "s3")


@pytest.fixture(scope="module")
def alice(s3: S3Cluster) -> dict[str, str]:
    return s3.new_key("alice", "staff")


@pytest.fixture(scope="module")
def boto(s3: S3Cluster, alice):
    client = s3.client(alice)
    client.create_bucket(Bucket="alice-bucket")
    return client


def code(error: pytest.ExceptionInfo) -> str:
    return error.value.response["Error"]["Code"]


def test_objects_round_trip_with_metadata_ranges_and_conditions(boto) -> None:
    data = os.urandom(3 * MiB + 17)
    put = boto.put_object(
        Bucket="alice-bucket",
        Key="photos/2026/cat.jpg",
        Body=data,
        ContentType="image/jpeg",
        ContentDisposition="inline",
        Metadata={"camera": "x100", "Trip": "alps"},
    )
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = boto.get_object(Bucket="alice-bucket", Key="photos/2026/cat.jpg")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/jpeg" and got["ContentDisposition"] == "inline"
    assert got["Metadata"] == {"camera": "x100", "trip": "alps"}
    assert got["ETag"] == put["ETag"]
    head = boto.head_object(Bucket="alice-bucket", Key="photos/2026/cat.jpg")
    assert head["ContentLength"] == len(data)
    over = boto.head_object(
        Bucket="alice-bucket", Key="photos/2026/cat.jpg", ResponseContentType="text/x-override"
    )
    assert over["ContentType"] == "text/x-override"
    ranged = boto.get_object(
        Bucket="alice-bucket", Key="photos/2026/cat.jpg", Range="bytes=1048570-1048600"
    )
    assert ranged["Body"].read() == data[1048570:1048601]
    assert ranged["ContentRange"] == f"bytes 1048570-1048600/{len(data)}"
    tail = boto.get_object(Bucket="alice-bucket", Key="photos/2026/cat.jpg", Range="bytes=-5")
    assert tail["Body"].read() == data[-5:]
    with pytest.raises(ClientError) as e:
        boto.get_object(
            Bucket="alice-bucket", Key="photos/2026/cat.jpg", Range=f"bytes={len(data)}-"
        )
    assert code(e) == "InvalidRange"
    with pytest.raises(ClientError) as e:
        boto.get_object(Bucket="alice-bucket", Key="photos/2026/cat.jpg", IfMatch='"nope"')
    assert code(e) == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        boto.get_object(Bucket="alice-bucket", Key="photos/2026/cat.jpg", IfNoneMatch=put["ETag"])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as e:
        boto.get_object(
            Bucket="alice-bucket", Key="photos/2026/cat.jpg", IfModifiedSince=head["LastModified"]
        )
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as e:
        boto.get_object(
            Bucket="alice-bucket",
            Key="photos/2026/cat.jpg",
            IfUnmodifiedSince=head["LastModified"].replace(year=2000),
        )
    assert code(e) == "PreconditionFailed"
    small = boto.put_object(Bucket="alice-bucket", Key="tiny", Body=b"")
    assert small["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert boto.get_object(Bucket="alice-bucket", Key="tiny")["Body"].read() == b""


def test_listings_v1_and_v2_in_key_order_with_pages_prefixes_and_url_encoding(boto) -> None:
    boto.create_bucket(Bucket="lists")
    keys = sorted(
        ["a-b", "a/b", "a/c/d", "a.txt", "a0", "b/x y", "b/é+%", "c", "d/e/f/g", "dir/"]
        + [f"many/{i:03d}" for i in range(25)]
    )
    for key in keys:
        boto.put_object(Bucket="lists", Key=key, Body=b"" if key.endswith("/") else key.encode())
    v2 = boto.get_paginator("list_objects_v2").paginate(
        Bucket="lists", PaginationConfig={"PageSize": 4}
    )
    assert [o["Key"] for page in v2 for o in page.get("Contents", [])] == keys
    v1 = boto.get_paginator("list_objects").paginate(
        Bucket="lists", PaginationConfig={"PageSize": 7}
    )
    assert [o["Key"] for page in v1 for o in page.get("Contents", [])] == keys
    top = boto.list_objects_v2(Bucket="lists", Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a-b", "a.txt", "a0", "c"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "d/", "dir/", "many/"]
    under = boto.list_objects_v2(Bucket="lists", Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in under["Contents"]] == ["a/b"]
    assert [p["Prefix"] for p in under["CommonPrefixes"]] == ["a/c/"]
    encoded = boto.list_objects_v2(Bucket="lists", Prefix="b/", EncodingType="url")
    # asked for explicitly, boto3 leaves the keys as sent (it decodes when it asks itself)
    assert [o["Key"] for o in encoded["Contents"]] == ["b/x%20y", "b/%C3%A9%2B%25"]
    after = boto.list_objects_v2(Bucket="lists", StartAfter="many/020", Prefix="many/")
    assert [o["Key"] for o in after["Contents"]] == [f"many/{i:03d}" for i in range(21, 25)]
    listed = boto.list_objects_v2(Bucket="lists", Prefix="many/", MaxKeys=3)
    assert listed["IsTruncated"] and listed["KeyCount"] == 3
    assert boto.head_object(Bucket="lists", Key="dir/")["ContentLength"] == 0


def test_copy_object_shares_blocks_and_follows_the_metadata_directive(s3, boto) -> None:
    data = os.urandom(2 * MiB + 5)
    boto.put_object(Bucket="alice-bucket", Key="orig.bin", Body=data, ContentType="a/b")
    copied = boto.copy_object(
        Bucket="alice-bucket", Key="copies/one.bin", CopySource="alice-bucket/orig.bin"
    )
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    one = boto.get_object(Bucket="alice-bucket", Key="copies/one.bin")
    assert one["Body"].read() == data and one["ContentType"] == "a/b"
    boto.copy_object(
        Bucket="alice-bucket",
        Key="copies/two.bin",
        CopySource={"Bucket": "alice-bucket", "Key": "orig.bin"},
        MetadataDirective="REPLACE",
        ContentType="text/plain",
        Metadata={"new": "1"},
    )
    two = boto.head_object(Bucket="alice-bucket", Key="copies/two.bin")
    assert two["ContentType"] == "text/plain" and two["Metadata"] == {"new": "1"}
    api = s3.cluster.client()
    blocks = [b["hash"] for b in api.stat("/alice-bucket/orig.bin")["blocks"]]
    assert [b["hash"] for b in api.stat("/alice-bucket/copies/two.bin")["blocks"]] == blocks
    with pytest.raises(ClientError) as e:
        boto.copy_object(Bucket="alice-bucket", Key="orig.bin", CopySource="alice-bucket/orig.bin")
    assert code(e) == "InvalidRequest"


def test_multipart_upload_writes_one_manifest_of_the_parts_blocks(s3, boto) -> None:
    parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB + 3), b"last part"]
    upload = boto.create_multipart_upload(
        Bucket="alice-bucket", Key="mp/big.bin", ContentType="x/y"
    )
    upload_id = upload["UploadId"]
    listed = boto.list_multipart_uploads(Bucket="alice-bucket")
    assert [u["UploadId"] for u in listed["Uploads"]] == [upload_id]
    etags = []
    for number, data in enumerate(parts_data, 1):
        answer = boto.upload_part(
            Bucket="alice-bucket",
            Key="mp/big.bin",
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        etags.append(answer["ETag"])
    parts = boto.list_parts(Bucket="alice-bucket", Key="mp/big.bin", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [
        (i + 1, etags[i], len(d)) for i, d in enumerate(parts_data)
    ]
    with pytest.raises(ClientError) as e:
        boto.complete_multipart_upload(
            Bucket="alice-bucket",
            Key="mp/big.bin",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00"'}]},
        )
    assert code(e) == "InvalidPart"
    with pytest.raises(ClientError) as e:
        boto.complete_multipart_upload(
            Bucket="alice-bucket",
            Key="mp/big.bin",
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": 3, "ETag": etags[2]}, {"PartNumber": 1, "ETag": etags[0]}]
            },
        )
    assert code(e) == "InvalidPartOrder"
    done = boto.complete_multipart_upload(
        Bucket="alice-bucket",
        Key="mp/big.bin",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": t} for i, t in enumerate(etags)]},
    )
    md5s = b"".join(bytes.fromhex(t.strip('"')) for t in etags)
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    got = boto.get_object(Bucket="alice-bucket", Key="mp/big.bin")
    assert got["Body"].read() == b"".join(parts_data)
    assert got["ETag"] == done["ETag"] and got["ContentType"] == "x/y"
    stat = s3.cluster.client().stat("/alice-bucket/mp/big.bin")
    assert stat["size"] == sum(map(len, parts_data))
    assert boto.list_multipart_uploads(Bucket="alice-bucket").get("Uploads", []) == []
    with pytest.raises(ClientError) as e:
        boto.list_parts(Bucket="alice-bucket", Key="mp/big.bin", UploadId=upload_id)
    assert code(e) == "NoSuchUpload"

    small = boto.create_multipart_upload(Bucket="alice-bucket", Key="mp/small.bin")["UploadId"]
    tags = [
        boto.upload_part(
            Bucket="alice-bucket", Key="mp/small.bin", UploadId=small, PartNumber=n, Body=b"x" * 100
        )["ETag"]
        for n in (1, 2)
    ]
    with pytest.raises(ClientError) as e:
        boto.complete_multipart_upload(
            Bucket="alice-bucket",
            Key="mp/small.bin",
            UploadId=small,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": t} for n, t in zip((1, 2), tags, strict=True)]
            },
        )
    assert code(e) == "EntityTooSmall"
    boto.abort_multipart_upload(Bucket="alice-bucket", Key="mp/small.bin", UploadId=small)
    assert boto.list_multipart_uploads(Bucket="alice-bucket").get("Uploads", []) == []


def test_upload_part_copy_and_boto3_managed_transfer(boto) -> None:
    data = os.urandom(12 * MiB)
    boto.upload_fileobj(io.BytesIO(data), "alice-bucket", "managed.bin")  # multipart, 8 MiB parts
    assert boto.head_object(Bucket="alice-bucket", Key="managed.bin")["ETag"].endswith('-2"')
    out = io.BytesIO()
    boto.download_fileobj("alice-bucket", "managed.bin", out)
    assert out.getvalue() == data
    upload_id = boto.create_multipart_upload(Bucket="alice-bucket", Key="pc.bin")["UploadId"]
    first = boto.upload_part_copy(
        Bucket="alice-bucket",
        Key="pc.bin",
        UploadId=upload_id,
        PartNumber=1,
        CopySource="alice-bucket/managed.bin",
        CopySourceRange=f"bytes=0-{6 * MiB - 1}",
    )["CopyPartResult"]["ETag"]
    second = boto.upload_part_copy(
        Bucket="alice-bucket",
        Key="pc.bin",
        UploadId=upload_id,
        PartNumber=2,
        CopySource="alice-bucket/managed.bin",
        CopySourceRange=f"bytes={6 * MiB}-{8 * MiB}",
    )["CopyPartResult"]["ETag"]
    boto.complete_multipart_upload(
        Bucket="alice-bucket",
        Key="pc.bin",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]
        },
    )
    assert (
        boto.get_object(Bucket="alice-bucket", Key="pc.bin")["Body"].read() == data[: 8 * MiB + 1]
    )


def test_buckets_deletes_and_the_errors_clients_expect(s3, boto) -> None:
    boto.create_bucket(Bucket="short-lived")
    with pytest.raises(ClientError) as e:
        boto.create_bucket(Bucket="short-lived")
    assert code(e) == "BucketAlreadyOwnedByYou"
    assert "short-lived" in [b["Name"] for b in boto.list_buckets()["Buckets"]]
    boto.head_bucket(Bucket="short-lived")
    assert boto.get_bucket_location(Bucket="short-lived")["LocationConstraint"] is None
    boto.put_object(Bucket="short-lived", Key="deep/er/file", Body=b"1")
    boto.put_object(Bucket="short-lived", Key="top", Body=b"2")
    with pytest.raises(ClientError) as e:
        boto.delete_bucket(Bucket="short-lived")
    assert code(e) == "BucketNotEmpty"
    result = boto.delete_objects(
        Bucket="short-lived",
        Delete={
            "Objects": [{"Key": "deep/er/file"}, {"Key": "top"}, {"Key": "never"}, {"Key": "a//b"}]
        },
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["deep/er/file", "never", "top"]
    assert [(x["Key"], x["Code"]) for x in result["Errors"]] == [("a//b", "InvalidArgument")]
    assert s3.cluster.client().ls("/short-lived") == []  # emptied directories went too
    boto.delete_object(Bucket="short-lived", Key="not-there")  # deleting nothing is fine
    boto.delete_bucket(Bucket="short-lived")
    for call, expected in [
        (lambda: boto.head_bucket(Bucket="short-lived"), "404"),
        (lambda: boto.get_object(Bucket="short-lived", Key="x"), "NoSuchBucket"),
        (lambda: boto.put_object(Bucket="short-lived", Key="x", Body=b""), "NoSuchBucket"),
        (lambda: boto.list_objects_v2(Bucket="short-lived"), "NoSuchBucket"),
        (lambda: boto.get_object(Bucket="alice-bucket", Key="missing"), "NoSuchKey"),
        (lambda: boto.create_bucket(Bucket="Bad_Name"), "InvalidBucketName"),
        (lambda: boto.put_object(Bucket="alice-bucket", Key="a/../b", Body=b""), "InvalidArgument"),
        (lambda: boto.put_object(Bucket="alice-bucket", Key="a//b", Body=b""), "InvalidArgument"),
        (lambda: boto.put_object(Bucket="alice-bucket", Key="x\x01y", Body=b""), "InvalidArgument"),
        (
            lambda: boto.put_object(Bucket="alice-bucket", Key="tiny/under", Body=b""),
            "PathConflict",
        ),
        (lambda: boto.get_bucket_versioning(Bucket="alice-bucket"), "NotImplemented"),
        (
            lambda: boto.put_object_tagging(
                Bucket="alice-bucket", Key="tiny", Tagging={"TagSet": []}
            ),
            "NotImplemented",
        ),
    ]:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == expected


def test_qfs_api_and_s3_see_one_namespace_with_the_same_permissions(s3, alice, boto) -> None:
    api: Client = s3.cluster.client()
    api.put("/alice-bucket/from-qfs/hello.txt", b"written by qfs put")
    got = boto.get_object(Bucket="alice-bucket", Key="from-qfs/hello.txt")
    assert got["Body"].read() == b"written by qfs put"
    assert got["ETag"].endswith('-1"')  # not an MD5: clients do not check it as one
    listed = boto.list_objects_v2(Bucket="alice-bucket", Prefix="from-qfs/")["Contents"]
    assert [(o["Key"], o["ETag"]) for o in listed] == [("from-qfs/hello.txt", got["ETag"])]
    boto.put_object(Bucket="alice-bucket", Key="from-s3/note.txt", Body=b"written by boto3")
    assert api.get_bytes("/alice-bucket/from-s3/note.txt") == b"written by boto3"
    assert api.stat("/alice-bucket/from-s3/note.txt")["owner"] == "alice"
    names = [e["name"] for e in api.ls("/alice-bucket")]
    assert "from-s3" in names and "from-qfs" in names
    bob = s3.client(s3.new_key("bob"))
    assert bob.get_object(Bucket="alice-bucket", Key="from-s3/note.txt")["Body"].read()
    with pytest.raises(ClientError) as e:
        bob.put_object(Bucket="alice-bucket", Key="intruder", Body=b"x")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:  # refused before any part is sent
        bob.create_multipart_upload(Bucket="alice-bucket", Key="intruder")
    assert code(e) == "AccessDenied"
    api.chmod("/alice-bucket/from-s3/note.txt", 0o600)
    with pytest.raises(ClientError) as e:
        bob.get_object(Bucket="alice-bucket", Key="from-s3/note.txt")
    assert code(e) == "AccessDenied"


def test_qfs_api_directory_listing_pages(s3, boto) -> None:
    boto.create_bucket(Bucket="pages")
    for i in range(7):
        boto.put_object(Bucket="pages", Key=f"f{i}", Body=b"")
    url = s3.cluster.peer("p2").http_url + "/v1/dirs/pages"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    first = httpx.get(url, params={"limit": 3}, headers=headers).json()
    assert [e["name"] for e in first["entries"]] == ["f0", "f1", "f2"] and first["next"] == "f2"
    rest = httpx.get(url, params={"limit": 10, "after": "f2"}, headers=headers).json()
    assert [e["name"] for e in rest["entries"]] == ["f3", "f4", "f5", "f6"] and "next" not in rest
    bad = httpx.get(url, params={"after": "a/b"}, headers=headers)
    assert bad.status_code == 400


def test_presigned_urls_signatures_and_anonymous_requests(s3, alice, boto) -> None:
    boto.put_object(Bucket="alice-bucket", Key="shared.txt", Body=b"presigned content")
    v4 = s3.client(alice, signature_version="s3v4")
    made = time.monotonic()
    urls = [  # boto3's default (Signature Version 2 query strings) and SigV4
        client.generate_presigned_url(
            "get_object", Params={"Bucket": "alice-bucket", "Key": "shared.txt"}, ExpiresIn=3
        )
        for client in (boto, v4)
    ]
    assert "AWSAccessKeyId=" in urls[0] and "X-Amz-Signature=" in urls[1]
    for url in urls:
        assert httpx.get(url).content == b"presigned content"
        other = httpx.get(url.replace("shared.txt", "other.txt"))
        assert other.status_code == 403 and b"SignatureDoesNotMatch" in other.content
        forged = httpx.get(url.replace("Signature=", "Signature=A"))
        assert forged.status_code in (400, 403)
    for client in (boto, v4):
        put_url = client.generate_presigned_url(
            "put_object", Params={"Bucket": "alice-bucket", "Key": "via-url.txt"}, ExpiresIn=60
        )
        assert httpx.put(put_url, content=b"uploaded").status_code == 200
        assert (
            boto.get_object(Bucket="alice-bucket", Key="via-url.txt")["Body"].read() == b"uploaded"
        )
    time.sleep(max(0.0, made + 4.5 - time.monotonic()))  # real URLs, replayed once expired
    for url in urls:
        expired = httpx.get(url)
        assert expired.status_code == 403 and b"expired" in expired.content
    anonymous = httpx.get(s3.endpoint() + "/alice-bucket/shared.txt")
    assert anonymous.status_code == 403 and b"<Code>AccessDenied</Code>" in anonymous.content
    wrong = s3.client({**alice, "secret_access_key": "wrong"})
    with pytest.raises(ClientError) as e:
        wrong.list_buckets()
    assert code(e) == "SignatureDoesNotMatch"
    unknown = s3.client({"access_key_id": "QFS" + "X" * 17, "secret_access_key": "x"})
    with pytest.raises(ClientError) as e:
        unknown.list_buckets()
    assert code(e) == "InvalidAccessKeyId"


def test_virtual_host_style_requests_name_the_bucket_in_the_host(
    s3, alice, boto, monkeypatch
) -> None:
    """boto3 with virtual-host addressing sends `Host: alice-bucket.s3.test:PORT` and a path
    without the bucket. The test resolves s3.test and *.s3.test to 127.0.0.1, as DNS records
    for the domain would; the requests themselves are boto3's."""
    resolve = socket.getaddrinfo

    def to_loopback(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == DOMAIN or (isinstance(host, str) and host.endswith("." + DOMAIN)):
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", to_loopback)
    port = s3.s3_ports["p2"]
    endpoint = f"http://{DOMAIN}:{port}"
    virtual = boto_client(
        endpoint,
        alice,
        config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}),
    )
    virtual.put_object(Bucket="alice-bucket", Key="vhost/a b.txt", Body=b"by host")
    assert boto.get_object(Bucket="alice-bucket", Key="vhost/a b.txt")["Body"].read() == b"by host"
    listed = virtual.list_objects_v2(Bucket="alice-bucket", Prefix="vhost/")
    assert [o["Key"] for o in listed["Contents"]] == ["vhost/a b.txt"]
    for url in (  # a presigned URL of either signature version carries the host too
        virtual.generate_presigned_url(
            "get_object", Params={"Bucket": "alice-bucket", "Key": "vhost/a b.txt"}
        ),
        boto_client(
            endpoint,
            alice,
            config=Config(s3={"addressing_style": "virtual"}, signature_version="s3v4"),
        ).generate_presigned_url(
            "get_object", Params={"Bucket": "alice-bucket", "Key": "vhost/a b.txt"}
        ),
    ):
        assert f"//alice-bucket.{DOMAIN}:{port}/vhost/" in url
        assert httpx.get(url).content == b"by host"
    with pytest.raises(ClientError) as e:
        virtual.head_bucket(Bucket="no-such-bucket")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "alice-bucket" in [b["Name"] for b in virtual.list_buckets()["Buckets"]]
    # Path-style requests to the same port go on working beside them.
    assert boto.get_object(Bucket="alice-bucket", Key="vhost/a b.txt")["Body"].read() == b"by host"


def signed_post(s3: S3Cluster, key: dict[str, str], path: str, body: bytes) -> httpx.Response:
    """A SigV4-signed POST of a raw body (what no well-behaved client would send)."""
    url = s3.endpoint() + path
    request = AWSRequest(method="POST", url=url, data=body)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    credentials = Credentials(key["access_key_id"], key["secret_access_key"])
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    return httpx.post(url, content=body, headers=dict(prepared.headers), timeout=30)


def test_hostile_xml_bodies_are_refused_and_the_peer_keeps_serving(s3, alice, boto) -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<Delete><Object><Key>&c;</Key></Object></Delete>"
    )
    answer = signed_post(s3, alice, "/alice-bucket?delete", laughs)
    assert answer.status_code == 400 and b"MalformedXML" in answer.content
    huge = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 100_000 + b"</Delete>"
    answer = signed_post(s3, alice, "/alice-bucket?delete", huge)
    assert answer.status_code == 400 and b"MalformedXML" in answer.content
    assert boto.list_buckets()["Buckets"]


def test_a_revoked_key_is_refused_on_every_peer_within_seconds(s3) -> None:
    key = s3.new_key("carol")
    clients = {peer: s3.client(key, peer) for peer in ("p1", "p2", "p3")}
    for client in clients.values():
        client.list_buckets()  # every peer has the key cached
    listed = s3.qfs("s3", "key", "list", "--json")
    assert key["access_key_id"] in listed.stdout and key["secret_access_key"] not in listed.stdout
    assert s3.qfs("s3", "key", "revoke", key["access_key_id"]).returncode == 0
    start = time.monotonic()

    def refused(client) -> bool:
        try:
            client.list_buckets()
        except ClientError as e:
            return e.response["Error"]["Code"] == "InvalidAccessKeyId"
        return False

    for peer, client in clients.items():
        wait_for(lambda c=client: refused(c), 10, f"revoked key refused on {peer}", poll=0.2)
    assert time.monotonic() - start < 6


def test_a_squatted_uploads_area_is_refused_and_a_write_without_a_quorum_is_503(tmp_path) -> None:
    with contextlib.contextmanager(s3_cluster)(tmp_path, "quorum") as small:
        client = small.client(small.new_key("erin"), retries={"max_attempts": 1})
        client.create_bucket(Bucket="quorum")
        # A user who makes /.s3-uploads first (the root is world-writable) gets no one's parts
        mallory = small.qfs("token", "create", "mallory").stdout.strip()
        small.cluster.client(token=mallory).mkdir("/.s3-uploads")
        with pytest.raises(ClientError) as e:
            client.create_multipart_upload(Bucket="quorum", Key="big")
        assert code(e) == "InternalError" and "mallory" in e.value.response["Error"]["Message"]
        small.cluster.client().rmdir("/.s3-uploads")
        assert client.create_multipart_upload(Bucket="quorum", Key="big")["UploadId"]
        assert small.cluster.client().stat("/.s3-uploads")["mode"] == "0700"
        small.cluster.kill("p2")
        small.cluster.kill("p3")
        with pytest.raises(ClientError) as e:
            client.put_object(Bucket="quorum", Key="k", Body=b"not acknowledged")
        assert code(e) == "SlowDown"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"


def test_an_abandoned_multipart_upload_expires_and_its_parts_are_removed(tmp_path) -> None:
    expiry = 3.0
    with contextlib.contextmanager(s3_cluster)(
        tmp_path, "expiry", ("--s3-upload-expiry", str(expiry))
    ) as small:
        client = small.client(small.new_key("frank"), retries={"max_attempts": 1})
        client.create_bucket(Bucket="tmp")
        started = time.monotonic()
        old = client.create_multipart_upload(Bucket="tmp", Key="abandoned")["UploadId"]
        client.upload_part(Bucket="tmp", Key="abandoned", UploadId=old, PartNumber=1, Body=b"x")
        admin = small.cluster.client()
        assert [e["name"] for e in admin.ls("/.s3-uploads")] == [old]
        time.sleep(max(0.0, started + expiry + 0.5 - time.monotonic()))
        with pytest.raises(ClientError) as e:  # gone for clients once expired
            client.upload_part(
                Bucket="tmp", Key="abandoned", UploadId=old, PartNumber=2, Body=b"y"
            )
        assert code(e) == "NoSuchUpload" and "expired" in e.value.response["Error"]["Message"]
        assert not client.list_multipart_uploads(Bucket="tmp").get("Uploads")
        wait_for(  # and its parts are removed (after a margin as long as the expiry here)
            lambda: not admin.ls("/.s3-uploads"), 4 * expiry, "the expired upload removed"
        )
        fresh = client.create_multipart_upload(Bucket="tmp", Key="kept")["UploadId"]
        part = client.upload_part(
            Bucket="tmp", Key="kept", UploadId=fresh, PartNumber=1, Body=b"kept"
        )
        assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket="tmp")["Uploads"]] == [
            fresh
        ]
        client.complete_multipart_upload(
            Bucket="tmp",
            Key="kept",
            UploadId=fresh,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
        assert client.get_object(Bucket="tmp", Key="kept")["Body"].read() == b"kept"


def test_an_open_cluster_serves_s3_to_any_signature_as_the_admin(tmp_path) -> None:
    """Without --admin-token-file nothing is checked, as on the qfs API."""
    cluster = LocalCluster(
        tmp_path, 1, extra=["--replicas", "1", "--read-quorum", "1", "--write-quorum", "1"]
    )
    port = free_port()
    cluster.peers[0].argv += ["--s3-port", str(port)]
    try:
        cluster.start()
        anyone = boto_client(
            f"http://127.0.0.1:{port}",
            {"access_key_id": "anything", "secret_access_key": "whatever"},
        )
        anyone.create_bucket(Bucket="open-bucket")
        anyone.put_object(Bucket="open-bucket", Key="k", Body=b"open")
        assert anyone.get_object(Bucket="open-bucket", Key="k")["Body"].read() == b"open"
        assert cluster.client().stat("/open-bucket/k")["owner"] == "admin"
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "peer.main",
                "--peer",
                cluster.peer("p1").http_url,
                "s3",
                "key",
                "create",
                "x",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode != 0 and "admin-token-file" in made.stderr
    finally:
        cluster.stop()


def test_s3_over_https_on_a_secure_cluster_with_checksum_trailers(tmp_path) -> None:
    """A peer with --tls-dir serves S3 over HTTPS with its certificate; boto3 there sends its
    uploads as aws-chunked bodies with a CRC-32 trailer (STREAMING-UNSIGNED-PAYLOAD-TRAILER)."""
    folder = tmp_path / "cluster"
    token = make_cluster_dir(folder, ["p1", "p2", "p3"])
    extra = ["--admin-token-file", str(folder / "admin.token")]
    cluster = LocalCluster(tmp_path, 3, extra, token, tls_dir=folder)
    ports = {}
    for peer in cluster.peers:
        ports[peer.name] = free_port()
        peer.argv += ["--s3-port", str(ports[peer.name])]
    try:
        cluster.start()
        key = cluster.client().s3_key_create("frank")
        client = boto_client(
            f"https://127.0.0.1:{ports['p2']}", key, verify=str(folder / "ca.crt")
        )
        sent: list[str] = []
        client.meta.events.register(
            "before-send.s3.PutObject",
            lambda request, **_: sent.append(request.headers["x-amz-content-sha256"]),
        )
        client.create_bucket(Bucket="secure-bucket")
        data = os.urandom(3 * MiB + 1)
        client.put_object(Bucket="secure-bucket", Key="over/tls.bin", Body=data)
        assert sent == [b"STREAMING-UNSIGNED-PAYLOAD-TRAILER"]
        assert client.get_object(Bucket="secure-bucket", Key="over/tls.bin")["Body"].read() == data
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": "secure-bucket", "Key": "over/tls.bin"}
        )
        trusted = ssl.create_default_context(cafile=str(folder / "ca.crt"))
        assert httpx.get(url, verify=trusted).content == data
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets nothing
            httpx.get(f"http://127.0.0.1:{ports['p2']}/secure-bucket/over/tls.bin", timeout=5)
    finally:
        cluster.stop()
