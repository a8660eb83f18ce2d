"""The S3 API driven by the command-line clients people use, run as they run them: the AWS CLI
(cp, sync, ls, rm, a 64 MiB multipart upload), s3cmd, rclone (sync both ways, check) and
restic (init, backup, check --read-data, restore). `.ci/run` installs them (Debian packages);
one 3-peer cluster serves the whole module."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_s3_api import S3Cluster, s3_cluster

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[S3Cluster]:
    yield from s3_cluster(tmp_path_factory.mktemp("s3clients"), "clients")


@pytest.fixture(scope="module")
def key(s3: S3Cluster) -> dict[str, str]:
    return s3.new_key("dora")


@pytest.fixture
def env(key, tmp_path) -> dict[str, str]:
    """A clean environment for a client: the key, a private HOME, no proxies or CA bundles."""
    kept = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
    return {
        **kept,
        "HOME": str(tmp_path / "home"),
        "AWS_ACCESS_KEY_ID": key["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": key["secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    }


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return found


def run(argv: list[str], env: dict[str, str], timeout: float = 180) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def make_tree(root: Path, big: int = 0) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "with space+plus.bin").write_bytes(os.urandom(70_000))
    (root / "sub" / "b.bin").write_bytes(os.urandom(3000))
    (root / "sub" / "deeper" / "c").write_bytes(b"")
    if big:
        (root / "big.bin").write_bytes(os.urandom(big))
    return root


def same_tree(left: Path, right: Path) -> bool:
    compared = filecmp.dircmp(left, right)
    if compared.left_only or compared.right_only or compared.diff_files or compared.funny_files:
        return False
    files = [f for f in compared.common_files]
    _, mismatch, errors = filecmp.cmpfiles(left, right, files, shallow=False)
    return (
        not mismatch
        and not errors
        and all(same_tree(left / d, right / d) for d in compared.common_dirs)
    )


def test_aws_cli_cp_sync_ls_rm_and_a_64_mib_multipart_upload(s3, env, tmp_path) -> None:
    aws = [tool("aws"), "--endpoint-url", s3.endpoint("p2")]
    source = make_tree(tmp_path / "src")
    run([*aws, "s3", "mb", "s3://cli-bucket"], env)
    run([*aws, "s3", "sync", "--no-progress", str(source), "s3://cli-bucket/tree"], env)
    listed = run([*aws, "s3", "ls", "--recursive", "s3://cli-bucket/tree/"], env)
    assert "tree/with space+plus.bin" in listed and "tree/sub/deeper/c" in listed
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 * MiB))
    run([*aws, "s3", "cp", "--no-progress", str(big), "s3://cli-bucket/big.bin"], env)
    head = run([*aws, "s3api", "head-object", "--bucket", "cli-bucket", "--key", "big.bin"], env)
    assert '-8\\"' in head  # eight 8 MiB parts: a multipart ETag
    back = tmp_path / "back.bin"
    run([*aws, "s3", "cp", "--no-progress", "s3://cli-bucket/big.bin", str(back)], env)
    assert filecmp.cmp(big, back, shallow=False)
    restored = tmp_path / "restored"
    run([*aws, "s3", "sync", "--no-progress", "s3://cli-bucket/tree", str(restored)], env)
    assert same_tree(source, restored)
    run([*aws, "s3", "rm", "--recursive", "s3://cli-bucket/tree"], env)
    assert "tree/" not in run([*aws, "s3", "ls", "s3://cli-bucket/"], env)


def test_s3cmd_put_get_ls_del(s3, env, key, tmp_path) -> None:
    host = s3.endpoint("p3").removeprefix("http://")
    config = tmp_path / "s3cfg"
    config.write_text(
        "[default]\n"
        f"access_key = {key['access_key_id']}\nsecret_key = {key['secret_access_key']}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\n"
        "signature_v2 = False\nbucket_location = us-east-1\n"
    )
    s3cmd = [tool("s3cmd"), "-c", str(config), "--no-progress"]
    source = tmp_path / "file.bin"
    source.write_bytes(os.urandom(200_000))
    run([*s3cmd, "mb", "s3://s3cmd-bucket"], env)
    run([*s3cmd, "put", str(source), "s3://s3cmd-bucket/dir/file.bin"], env)
    assert "s3://s3cmd-bucket/dir/file.bin" in run([*s3cmd, "ls", "-r", "s3://s3cmd-bucket"], env)
    back = tmp_path / "back.bin"
    run([*s3cmd, "get", "s3://s3cmd-bucket/dir/file.bin", str(back)], env)
    assert back.read_bytes() == source.read_bytes()
    run([*s3cmd, "del", "s3://s3cmd-bucket/dir/file.bin"], env)
    run([*s3cmd, "rb", "s3://s3cmd-bucket"], env)
    assert "s3cmd-bucket" not in run([*s3cmd, "ls"], env)


def test_rclone_sync_both_ways_and_check(s3, env, key, tmp_path) -> None:
    remote_env = {
        **env,
        "RCLONE_CONFIG_Q_TYPE": "s3",
        "RCLONE_CONFIG_Q_PROVIDER": "Other",
        "RCLONE_CONFIG_Q_ACCESS_KEY_ID": key["access_key_id"],
        "RCLONE_CONFIG_Q_SECRET_ACCESS_KEY": key["secret_access_key"],
        "RCLONE_CONFIG_Q_ENDPOINT": s3.endpoint("p1"),
        "RCLONE_CONFIG_Q_REGION": "us-east-1",
    }
    rclone = [tool("rclone"), "--config", str(tmp_path / "none.conf")]
    source = make_tree(tmp_path / "src", big=12 * MiB)
    run([*rclone, "mkdir", "q:rclone-bucket"], remote_env)
    run([*rclone, "sync", str(source), "q:rclone-bucket/data"], remote_env)
    run([*rclone, "check", str(source), "q:rclone-bucket/data"], remote_env)
    (source / "a.txt").write_bytes(b"changed\n")
    (source / "sub" / "b.bin").unlink()
    run([*rclone, "sync", str(source), "q:rclone-bucket/data"], remote_env)
    run([*rclone, "check", str(source), "q:rclone-bucket/data"], remote_env)
    back = tmp_path / "back"
    run([*rclone, "sync", "q:rclone-bucket/data", str(back)], remote_env)
    (source / "sub" / "deeper" / "c").unlink()  # rclone does not sync empty directories
    (back / "sub" / "deeper" / "c").unlink()
    assert same_tree(source, back)


def test_restic_init_backup_check_read_data_and_restore(s3, env, tmp_path) -> None:
    restic = [tool("restic"), "--no-cache"]
    restic_env = {
        **env,
        "RESTIC_REPOSITORY": f"s3:{s3.endpoint('p2')}/restic-bucket",
        "RESTIC_PASSWORD": "correct horse battery staple",
    }
    source = make_tree(tmp_path / "src", big=6 * MiB)
    run([*restic, "init"], restic_env)
    run([*restic, "backup", str(source)], restic_env)
    (source / "a.txt").write_bytes(b"second snapshot\n")
    run([*restic, "backup", str(source)], restic_env)
    run([*restic, "check", "--read-data"], restic_env)
    target = tmp_path / "restore"
    run([*restic, "restore", "latest", "--target", str(target)], restic_env)
    assert same_tree(source, target / source.relative_to(source.anchor))
