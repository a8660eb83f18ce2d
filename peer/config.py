"""A peer's settings: command-line flags, an optional TOML file, and validation.

Precedence: built-in defaults, then `--config FILE` (keys are the flag names without dashes,
e.g. `read-quorum = 2`), then flags given on the command line. Settings that can never work
(R > N, W > N, R < 1, a bad block size, an open HTTP API on a public address) refuse to start
with a `ConfigError` naming the setting. A peer is secure unless told otherwise: without
`--tls-dir` (certificates and gossip keyring, see peer.cluster_setup) it refuses to start unless
`--insecure` is given.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossip.updates import NAME_PATTERN, NAME_RULE

MiB = 1024 * 1024
MIN_BLOCK_SIZE = 4 * 1024
MAX_BLOCK_SIZE = 16 * MiB
SIZE_PATTERN = re.compile(r"(\d+)\s*([KMG]i?B?|B)?", re.IGNORECASE)
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": MiB, "g": 1024 * MiB}
S3_UPLOAD_EXPIRY = 7 * 86400.0  # seconds a multipart upload may stay open
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN_PATTERN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


class ConfigError(ValueError):
    """A setting that cannot work; the message names it."""


@dataclass(frozen=True)
class PeerConfig:
    """Everything one `qfs peer` process needs to start."""

    name: str
    data: Path
    port: int
    http: int
    join: tuple[tuple[str, int], ...] = ()
    replicas: int = 3
    read_quorum: int = 2
    write_quorum: int = 2
    block_size: int = MiB
    cluster_key_file: Path | None = None
    bind: str = "127.0.0.1"
    http_bind: str = "127.0.0.1"
    admin_token_file: Path | None = None
    tls_dir: Path | None = None
    insecure: bool = False
    probe_interval: float = 1.0
    anti_entropy_interval: float = 10.0
    dead_after: float = 60.0
    handover_timeout: float = 20.0
    scrub_rate: int = 8 * MiB
    gc_interval: float = 60.0
    gc_grace: float = 3600.0
    horizon: float = 86400.0
    idle_timeout: float = 30.0
    s3_port: int | None = None
    s3_domain: str | None = None
    s3_upload_expiry: float = S3_UPLOAD_EXPIRY

    def validate(self) -> PeerConfig:
        """Return self, or raise ConfigError naming the first setting that cannot work."""
        if not NAME_PATTERN.fullmatch(self.name):  # what gossip accepts as a member name
            raise ConfigError(f"name: {self.name!r} must be {NAME_RULE}")
        for key in ("port", "http"):
            value = getattr(self, key)
            if not 1 <= value <= 65535:
                raise ConfigError(f"{key}: {value} is not a TCP/UDP port (1-65535)")
        if self.port == self.http:
            raise ConfigError(f"http: {self.http} is the same as port (gossip and RPC)")
        if self.s3_port is not None and (
            not 1 <= self.s3_port <= 65535 or self.s3_port in (self.port, self.http)
        ):
            raise ConfigError(f"s3-port: {self.s3_port} must be a free TCP port (1-65535)")
        if self.s3_domain is not None and not DOMAIN_PATTERN.fullmatch(self.s3_domain):
            raise ConfigError(
                f"s3-domain: {self.s3_domain[:80]!r} must be a lower-case DNS name such as "
                "s3.example.com (buckets are then BUCKET.s3.example.com)"
            )
        if self.replicas < 1:
            raise ConfigError(f"replicas: N must be at least 1, got {self.replicas}")
        for key, value in (("read-quorum", self.read_quorum), ("write-quorum", self.write_quorum)):
            if not 1 <= value <= self.replicas:
                raise ConfigError(
                    f"{key}: {value} must be between 1 and replicas (N={self.replicas})"
                )
        if not MIN_BLOCK_SIZE <= self.block_size <= MAX_BLOCK_SIZE:
            raise ConfigError(
                f"block-size: {self.block_size} must be between {MIN_BLOCK_SIZE} and "
                f"{MAX_BLOCK_SIZE} bytes"
            )
        for key in (
            "probe_interval",
            "anti_entropy_interval",
            "scrub_rate",
            "gc_interval",
            "idle_timeout",
            "s3_upload_expiry",
        ):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key.replace('_', '-')}: {getattr(self, key)} must be positive")
        if self.horizon <= self.dead_after:
            raise ConfigError(
                f"horizon: {self.horizon} must be longer than dead-after ({self.dead_after}): a"
                " peer is forgotten only after it left the ring"
            )
        for key in ("dead_after", "gc_grace", "handover_timeout"):
            if getattr(self, key) < 0:
                raise ConfigError(
                    f"{key.replace('_', '-')}: {getattr(self, key)} must not be negative"
                )
        if self.bind in ("0.0.0.0", "::", ""):
            raise ConfigError(
                f"bind: {self.bind!r} is not an address other peers can reach; give the "
                "address this peer is known by (gossip advertises it)"
            )
        if self.tls_dir is None and not self.insecure:
            raise ConfigError(
                "tls-dir: not given; a peer needs its certificate, key, the cluster CA and the "
                "gossip keyring ('qfs cluster init DIR', then 'qfs cluster cert DIR NAME'); give "
                "--insecure to run an open cluster for tests and development"
            )
        if self.admin_token_file is None and not self.insecure and not _is_loopback(self.http_bind):
            raise ConfigError(
                f"http-bind: {self.http_bind} is not loopback and the API has no tokens; "
                "give --admin-token-file, or --insecure to serve an open cluster anyway"
            )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_size(text: str | int) -> int:
    """'1MiB', '512K', '65536' -> bytes (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = SIZE_PATTERN.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 1MiB, 512KiB or 65536")
    number, unit = match.groups()
    return int(number) * SIZE_UNITS[(unit or "")[:1].lower()]


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port)."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


# flag name -> (PeerConfig field, converter); the TOML keys are the same flag names.
SETTINGS: dict[str, tuple[str, Any]] = {
    "name": ("name", str),
    "data": ("data", Path),
    "port": ("port", int),
    "http": ("http", int),
    "join": ("join", parse_address),
    "replicas": ("replicas", int),
    "read-quorum": ("read_quorum", int),
    "write-quorum": ("write_quorum", int),
    "block-size": ("block_size", parse_size),
    "cluster-key-file": ("cluster_key_file", Path),
    "bind": ("bind", str),
    "http-bind": ("http_bind", str),
    "admin-token-file": ("admin_token_file", Path),
    "tls-dir": ("tls_dir", Path),
    "insecure": ("insecure", bool),
    "probe-interval": ("probe_interval", float),
    "anti-entropy-interval": ("anti_entropy_interval", float),
    "dead-after": ("dead_after", float),
    "handover-timeout": ("handover_timeout", float),
    "scrub-rate": ("scrub_rate", parse_size),
    "gc-interval": ("gc_interval", float),
    "gc-grace": ("gc_grace", float),
    "horizon": ("horizon", float),
    "idle-timeout": ("idle_timeout", float),
    "s3-port": ("s3_port", int),
    "s3-domain": ("s3_domain", str),
    "s3-upload-expiry": ("s3_upload_expiry", float),
}
REQUIRED = ("name", "data", "port", "http")


def add_peer_arguments(parser: argparse.ArgumentParser) -> None:
    """The `qfs peer` flags. Defaults stay None so the TOML file can fill what is not given."""
    add = parser.add_argument
    add("--config", type=Path, help="TOML file with any of these settings (flags win)")
    add("--name", help="this peer's name, unique in the cluster")
    add("--data", help="data directory (one peer per directory)")
    add("--port", help="gossip (UDP) and peer RPC (TCP) port")
    add("--http", help="client HTTP API port")
    add("--join", action="append", help="HOST:PORT of a peer to join through (repeatable)")
    add("--replicas", help="N: copies of every block and record (default 3)")
    add("--read-quorum", help="R: replies a read waits for (default 2)")
    add("--write-quorum", help="W: durable acks a write waits for (default 2)")
    add("--block-size", help="block size, e.g. 1MiB (default)")
    add("--cluster-key-file", help="file with the shared secret that authenticates peers")
    add("--bind", help="address for gossip and RPC (default 127.0.0.1)")
    add("--http-bind", help="address for the HTTP API (default 127.0.0.1)")
    add("--admin-token-file", help="file with the admin bearer token; turns authentication on")
    add("--tls-dir", help="folder with ca.crt, NAME.crt, NAME.key and gossip.keys")
    add(
        "--insecure",
        action="store_true",
        default=None,
        help="run without TLS and gossip encryption, and allow an open API off loopback",
    )
    add("--probe-interval", help="gossip protocol period in seconds (default 1)")
    add("--anti-entropy-interval", help="seconds between anti-entropy rounds (default 10)")
    add("--dead-after", help="seconds a dead peer keeps its ring share (default 60)")
    add(
        "--handover-timeout",
        help="seconds a graceful leave (SIGTERM) may spend handing this peer's share to the "
        "peers that take it over; anti-entropy copies what is left (default 20)",
    )
    add("--scrub-rate", help="bytes per second the scrubber re-verifies (default 8MiB)")
    add("--gc-interval", help="seconds between garbage collection rounds (default 60)")
    add("--gc-grace", help="seconds an unreferenced block is kept (default 3600)")
    add(
        "--horizon",
        help="seconds a peer may be away and come back with its data; after that it is "
        "forgotten and rebuilds from the others when it returns (default 86400)",
    )
    add(
        "--idle-timeout",
        help="seconds a connection may take to send request headers or a frame (default 30)",
    )
    add("--s3-port", help="serve the S3 API on this port of the HTTP bind address")
    add(
        "--s3-domain",
        help="also take virtual-host style S3 requests: host BUCKET.DOMAIN names the bucket",
    )
    add(
        "--s3-upload-expiry",
        help="seconds a multipart upload may stay open before it and its parts go "
        "(default 604800, 7 days)",
    )


def config_from_args(args: argparse.Namespace) -> PeerConfig:
    """Merge defaults, the TOML file and the flags into a validated PeerConfig."""
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(_read_toml(args.config))
    for flag in SETTINGS:
        given = getattr(args, flag.replace("-", "_"), None)
        if given is not None:
            values[flag] = given
    missing = [flag for flag in REQUIRED if flag not in values]
    if missing:
        raise ConfigError("missing required setting(s): " + ", ".join(f"--{m}" for m in missing))
    fields: dict[str, Any] = {}
    for flag, raw in values.items():
        field_name, convert = SETTINGS[flag]
        try:
            if flag == "join":
                items = raw if isinstance(raw, list) else [raw]
                fields[field_name] = tuple(parse_address(item) for item in items)
            elif convert is bool:
                if not isinstance(raw, bool):
                    raise ValueError(f"{raw!r} is not true or false")
                fields[field_name] = raw
            else:
                fields[field_name] = _convert(convert, raw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{flag}: {e}") from None
    return PeerConfig(**fields).validate()


def _convert(convert: Any, raw: Any) -> Any:
    if isinstance(raw, (bool, list, dict)):
        raise ValueError(f"{raw!r} has the wrong type")
    if convert is int and isinstance(raw, str) and not raw.strip().lstrip("-").isdigit():
        raise ValueError(f"{raw!r} is not an integer")
    return convert(raw)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path} is not valid TOML: {e}") from None
    unknown = sorted(set(document) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"config: unknown key {unknown[0]!r} in {path}")
    return document
