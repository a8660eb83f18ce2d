"""Peer configuration: flags, TOML, precedence, and settings that can never work."""

import argparse
from pathlib import Path

import pytest

from peer.config import ConfigError, MiB, add_peer_arguments, config_from_args, parse_size

BASE = ["--name", "p1", "--data", "d", "--port", "7001", "--http", "8001", "--tls-dir", "tls"]


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_peer_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_defaults_and_flags() -> None:
    config = parse(*BASE, "--join", "127.0.0.1:7002", "--join", "localhost:7003")
    assert (config.replicas, config.read_quorum, config.write_quorum) == (3, 2, 2)
    assert config.block_size == MiB
    assert config.join == (("127.0.0.1", 7002), ("localhost", 7003))
    assert config.http_bind == "127.0.0.1"
    assert parse(*BASE, "--block-size", "256KiB").block_size == 256 * 1024


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--read-quorum", "4"], "read-quorum"),
        (["--write-quorum", "4"], "write-quorum"),
        (["--read-quorum", "0"], "read-quorum"),
        (["--replicas", "0"], "replicas"),
        (["--block-size", "1"], "block-size"),
        (["--block-size", "lots"], "block-size"),
        (["--port", "70000"], "port"),
        (["--port", "seven"], "port"),
        (["--join", "nohost"], "join"),
        (["--name", "bad name!"], "name"),
        (["--http", "7001"], "http"),
        (["--http-bind", "0.0.0.0"], "http-bind"),
        (["--bind", "0.0.0.0"], "bind"),
        (["--dead-after", "-1"], "dead-after"),
        (["--scrub-rate", "0"], "scrub-rate"),
        (["--s3-domain", "S3.Example.com"], "s3-domain"),
        (["--s3-domain", "s3..example.com"], "s3-domain"),
        (["--s3-domain", "s3.example.com:9000"], "s3-domain"),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_the_setting(extra, named) -> None:
    with pytest.raises(ConfigError, match=named):
        parse(*BASE, *extra)


def test_a_peer_without_tls_needs_insecure() -> None:
    plain = BASE[:-2]
    with pytest.raises(ConfigError, match=r"tls-dir.*--insecure"):
        parse(*plain)
    assert parse(*plain, "--insecure").insecure is True
    assert parse(*BASE).tls_dir == Path("tls")


def test_open_api_off_loopback_needs_insecure_or_tokens(tmp_path: Path) -> None:
    assert parse(*BASE, "--http-bind", "0.0.0.0", "--insecure").http_bind == "0.0.0.0"
    token = tmp_path / "admin"
    token.write_text("secret")
    assert (
        parse(*BASE, "--http-bind", "0.0.0.0", "--admin-token-file", str(token)).insecure is False
    )


def test_missing_required_settings_are_listed() -> None:
    with pytest.raises(ConfigError, match="--data, --port"):
        parse("--name", "p1", "--http", "8001")


def test_toml_file_alone_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "peer.toml"
    path.write_text(
        'name = "p9"\ndata = "d9"\nport = 7009\nhttp = 8009\ninsecure = true\n'
        'join = ["127.0.0.1:7001"]\nread-quorum = 1\nblock-size = "64KiB"\n'
    )
    config = parse("--config", str(path))
    assert (config.name, config.port, config.read_quorum, config.block_size) == (
        "p9",
        7009,
        1,
        64 * 1024,
    )
    assert config.join == (("127.0.0.1", 7001),)
    assert parse("--config", str(path), "--read-quorum", "2", "--port", "7100").read_quorum == 2


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ('name = "p"\ndata = "d"\nport = 1\nhttp = 2\nbogus = 1\n', "bogus"),
        ('name = "p"\ndata = "d"\nport = "x"\nhttp = 2\n', "port"),
        ('name = "p"\ndata = "d"\nport = true\nhttp = 2\n', "port"),
        ('name = "p"\ndata = "d"\nport = 1\nhttp = 2\ninsecure = "yes"\n', "insecure"),
        ("name = [", "not valid TOML"),
    ],
)
def test_bad_toml_is_refused_naming_the_key(tmp_path: Path, document: str, named: str) -> None:
    path = tmp_path / "peer.toml"
    path.write_text(document)
    with pytest.raises(ConfigError, match=named):
        parse("--config", str(path))


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse("--config", "/nonexistent/peer.toml")


def test_parse_size_units() -> None:
    assert parse_size("4096") == 4096
    assert parse_size("4K") == 4096
    assert parse_size("1MiB") == MiB
    assert parse_size("2 GiB") == 2 * 1024 * MiB
    with pytest.raises(ValueError):
        parse_size("1.5M")
