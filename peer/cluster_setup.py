"""`qfs cluster ...`: the files a secure cluster needs, made locally (no peer is contacted).

peer.main runs these commands (they use gossip.crypto, which the client side may not import).

One folder (the "cluster dir") holds, as `qfs cluster init` and `qfs cluster cert` write them:
``ca.crt`` and ``ca.key`` (the cluster CA; the key never goes to a peer), ``gossip.keys`` (the
gossip keyring, see gossip.crypto), ``admin.token`` (the admin bearer token) and, per peer,
``NAME.crt`` / ``NAME.key`` (its certificate: common name NAME, its names and addresses as
subject alternative names, for TLS servers and clients, signed by the CA). A peer's
``--tls-dir`` is a folder with ``ca.crt``, ``gossip.keys``, ``NAME.crt`` and ``NAME.key``.

Every file is created 0600 and nothing is overwritten, except ``gossip.keys`` by the key
rotation commands (`qfs cluster key add|use|remove`), which replace it atomically.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gossip.crypto import Keyring, key_id, new_key

CA_DAYS = 3650
CERT_DAYS = 825
ORGANIZATION = "quorumfs"


@dataclass(frozen=True)
class ClusterDir:
    """Where each file of a cluster (or peer TLS) folder lives."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def gossip_keys(self) -> Path:
        return self.root / "gossip.keys"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"


class SetupError(Exception):
    """A cluster command that cannot be done; the message says why."""


def write_new(path: Path, data: bytes) -> None:
    """Create `path` 0600 with `data`; SetupError if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SetupError(f"{path} already exists: refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def replace(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a 0600 file holding `data`."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    write_new(temporary, data)
    os.replace(temporary, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def init_cluster(root: Path) -> str:
    """Create a cluster dir: the CA, the gossip keyring and the admin token; returns the token."""
    files = ClusterDir(root)
    existing = [p for p in (files.ca_cert, files.ca_key, files.gossip_keys, files.admin_token)
                if p.exists()]
    if existing:
        raise SetupError(f"{existing[0]} already exists: {root} holds a cluster already")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"quorumfs cluster CA {secrets.token_hex(4)}"),
        ]
    )
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    token = secrets.token_urlsafe(32)
    write_new(files.ca_key, _pem_key(key))
    write_new(files.ca_cert, certificate.public_bytes(serialization.Encoding.PEM))
    write_new(files.gossip_keys, Keyring((new_key(),)).dumps().encode())
    write_new(files.admin_token, (token + "\n").encode())
    return token


def _alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_cert(root: Path, name: str, addrs: list[str], out: Path | None = None,
               days: int = CERT_DAYS) -> Path:
    """Sign a certificate for peer `name` with the CA in `root`, written to `out` (default
    `root`) as NAME.crt and NAME.key; returns the certificate's path."""
    files, target = ClusterDir(root), ClusterDir(out or root)
    try:
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    except FileNotFoundError as e:
        raise SetupError(f"{e.filename} is missing: create the cluster with "
                         f"'qfs cluster init {root}' (the CA key stays there)") from None
    except ValueError as e:
        raise SetupError(f"{root}: the CA files cannot be read: {e}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise SetupError(f"{files.ca_key}: not a quorumfs CA key")
    for path in (target.cert(name), target.key(name)):
        if path.exists():
            raise SetupError(f"{path} already exists: refusing to overwrite it (write a renewal "
                             "elsewhere with --out DIR, then move it into place)")
    key = ec.generate_private_key(ec.SECP256R1())
    hosts = list(dict.fromkeys([name, *addrs]))
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_alternative_name(h) for h in hosts]),
                       critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    target.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_new(target.key(name), _pem_key(key))
    write_new(target.cert(name), certificate.public_bytes(serialization.Encoding.PEM))
    return target.cert(name)


def _load_keyring(root: Path) -> Keyring:
    path = ClusterDir(root).gossip_keys
    try:
        return Keyring.loads(path.read_text())
    except FileNotFoundError:
        raise SetupError(f"{path} is missing: create the cluster with 'qfs cluster init'") from None
    except ValueError as e:
        raise SetupError(f"{path}: {e}") from None


def change_keyring(root: Path, action: str, wanted: str | None = None) -> Keyring:
    """`add` a new key, `use` or `remove` the key `wanted`, in the keyring of `root`."""
    keyring = _load_keyring(root)
    try:
        if action == "add":
            changed = keyring.add(new_key())
        elif action == "use":
            changed = keyring.use(wanted or "")
        else:
            changed = keyring.remove(wanted or "")
    except ValueError as e:
        raise SetupError(str(e)) from None
    replace(ClusterDir(root).gossip_keys, changed.dumps().encode())
    return changed


# The command line (peer.main hands it everything after `qfs cluster`)


def add_cluster_commands(parser: argparse.ArgumentParser) -> None:
    """`qfs cluster init|cert|key`."""
    sub = parser.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    s = sub.add_parser("init", help="create DIR with the cluster CA, gossip key and admin token")
    s.add_argument("dir", metavar="DIR", type=Path)
    s.add_argument("--quiet", action="store_true",
                   help="do not print the admin token (it is in DIR/admin.token)")
    s = sub.add_parser("cert", help="issue peer NAME's certificate, signed by the CA in DIR")
    s.add_argument("dir", metavar="DIR", type=Path)
    s.add_argument("name", metavar="NAME")
    s.add_argument("--addr", action="append", default=[], metavar="HOST",
                   help="a host name or IP address clients and peers reach it by (repeatable)")
    s.add_argument("--out", type=Path, metavar="OUT", help="write the files here (default DIR)")
    s.add_argument("--days", type=int, default=CERT_DAYS, help=f"validity (default {CERT_DAYS})")
    s = sub.add_parser("key", help="rotate the gossip key: list, add, use ID, remove ID")
    s.add_argument("action", choices=["list", "add", "use", "remove"])
    s.add_argument("dir", metavar="DIR", type=Path)
    s.add_argument("id", metavar="ID", nargs="?", help="key id (or a prefix) for use / remove")


def run_cluster_command(args: argparse.Namespace) -> int:
    """Run one `qfs cluster` command; returns the exit status (1 when it cannot be done)."""
    try:
        if args.cluster_command == "init":
            token = init_cluster(args.dir)
            if not args.quiet:
                print(token)
            print(f"qfs: cluster created in {args.dir}; the admin token is in "
                  f"{ClusterDir(args.dir).admin_token}. Keep ca.key off the peers.",
                  file=sys.stderr)
        elif args.cluster_command == "cert":
            path = issue_cert(args.dir, args.name, args.addr, args.out, args.days)
            print(f"qfs: wrote {path} and {path.with_suffix('.key')}", file=sys.stderr)
            if not args.addr:
                print("qfs: note: no --addr given: clients can reach this peer over HTTPS only "
                      f"by the name {args.name!r}", file=sys.stderr)
        elif args.action == "list":
            for number, ident in enumerate(_load_keyring(args.dir).ids()):
                print(ident + ("  primary" if number == 0 else ""))
        else:
            if args.action != "add" and not args.id:
                raise SetupError(f"'qfs cluster key {args.action}' needs the key's ID")
            changed = change_keyring(args.dir, args.action, args.id)
            if args.action == "add":
                print(key_id(changed.keys[-1]).hex())
            print(f"qfs: {ClusterDir(args.dir).gossip_keys} now holds {', '.join(changed.ids())} "
                  "(primary first); copy it to every peer's --tls-dir and send them SIGHUP",
                  file=sys.stderr)
    except (SetupError, OSError) as e:
        print(f"qfs: error: {e}", file=sys.stderr)
        return 1
    return 0
