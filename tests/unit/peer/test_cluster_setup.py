"""`qfs cluster init|cert|key`: the files made, their modes, their contents, and refusals."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gossip.crypto import Keyring
from peer.main import main as qfs_main


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_the_ca_gossip_key_and_token_0600_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cluster"
    assert qfs_main(["cluster", "init", str(folder)]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 32
    assert (folder / "admin.token").read_text().strip() == token
    for name in ("ca.crt", "ca.key", "gossip.keys", "admin.token"):
        assert mode(folder / name) == 0o600, name
    assert mode(folder) == 0o700
    ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert len(Keyring.loads((folder / "gossip.keys").read_text()).keys) == 1
    before = (folder / "ca.key").read_bytes()
    assert qfs_main(["cluster", "init", str(folder)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (folder / "ca.key").read_bytes() == before


def test_cert_names_the_peer_and_its_addresses_for_server_and_client_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "c"
    assert qfs_main(["cluster", "init", str(folder), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    argv = ["cluster", "cert", str(folder), "p1", "--addr", "10.0.0.5", "--addr", "p1.example"]
    assert qfs_main(argv) == 0
    cert = x509.load_pem_x509_certificate((folder / "p1.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "p1"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["p1", "p1.example"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert mode(folder / "p1.key") == 0o600 and mode(folder / "p1.crt") == 0o600
    assert qfs_main(argv) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    renewal = tmp_path / "renewal"
    assert qfs_main([*argv, "--out", str(renewal)]) == 0
    assert (renewal / "p1.crt").read_bytes() != (folder / "p1.crt").read_bytes()
    assert qfs_main(["cluster", "cert", str(tmp_path / "none"), "p2"]) == 1
    assert "qfs cluster init" in capsys.readouterr().err


def test_key_rotation_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "c"
    qfs_main(["cluster", "init", str(folder), "--quiet"])
    keys = folder / "gossip.keys"
    (old,) = Keyring.loads(keys.read_text()).ids()
    capsys.readouterr()
    assert qfs_main(["cluster", "key", "add", str(folder)]) == 0
    new = capsys.readouterr().out.strip()
    assert Keyring.loads(keys.read_text()).ids() == [old, new]
    assert qfs_main(["cluster", "key", "remove", str(folder), old]) == 1
    assert "primary" in capsys.readouterr().err
    assert qfs_main(["cluster", "key", "use", str(folder), new[:6]]) == 0
    assert qfs_main(["cluster", "key", "remove", str(folder), old]) == 0
    assert mode(keys) == 0o600
    capsys.readouterr()
    assert qfs_main(["cluster", "key", "list", str(folder)]) == 0
    assert capsys.readouterr().out.split() == [new, "primary"]
    assert qfs_main(["cluster", "key", "use", str(folder)]) == 1
    assert list(folder.glob(".gossip.keys.*")) == []
