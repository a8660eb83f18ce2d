"""A secure cluster of real peers, made with `qfs cluster init` / `qfs cluster cert`: HTTPS for
clients, mutual TLS between peers, sealed gossip; what an outsider on the network gets (nothing);
and rotating the gossip key and a certificate on the running cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509

from gossip.crypto import DatagramSealer, Keyring, new_key
from gossip.membership import GOSSIP
from gossip.updates import Meta, alive_update
from gossip.wire import PROTOCOL_VERSION, Codec, WireError
from peer.client import launcher
from peer.cluster_setup import issue_cert
from tests.support import LocalCluster, free_port, make_cluster_dir, wait_for

NAMES = ["p1", "p2", "p3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("tls")
    folder = root / "cluster"
    token = make_cluster_dir(folder, NAMES)
    extra = ["--admin-token-file", str(folder / "admin.token"), "--probe-interval", "0.5"]
    running = LocalCluster(root, 3, extra, token, tls_dir=folder)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def snapshot(cluster: LocalCluster, name: str) -> dict:
    with cluster.client(name) as client:
        return client.cluster()


def test_a_cluster_from_qfs_cluster_init_works_over_https_and_mutual_tls(
    cluster: LocalCluster,
) -> None:
    with cluster.client("p1") as client:
        client.put("/secure/hello", b"over TLS" * 1000)
    with cluster.client("p3") as client:  # R=3: every replica answers over peer mTLS
        assert client.get_bytes("/secure/hello", r=3) == b"over TLS" * 1000
    blocks = os.urandom(3 * 1024 * 1024 + 12345)  # whole 1 MiB block frames through TLS
    with cluster.client("p2") as client:
        client.put("/secure/blocks", blocks)
    with cluster.client("p1") as client:
        assert client.get_bytes("/secure/blocks", r=3) == blocks
    view = snapshot(cluster, "p2")
    assert view["security"]["insecure"] is False
    assert len(view["security"]["gossip_keys"]) == 1
    assert {m["state"] for m in view["members"]} == {"alive"}
    assert all(m["http"].startswith("https://") for m in view["members"])


def test_the_cli_refuses_a_peer_whose_certificate_does_not_verify(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFS_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this tree, run elsewhere
    url = cluster.peer("p1").http_url
    for ca in ([], ["--ca", str(other)]):
        refused = subprocess.run(
            [*launcher.qfs_command(), "ls", "--peer", url, *ca],
            capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path,
        )
        assert refused.returncode == 3, refused.stderr
        assert "certificate" in refused.stderr
    accepted = subprocess.run(
        [*launcher.qfs_command(), "ls", "/secure", "--peer", url],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**env, "QFS_CA": str(cluster.ca), "QFS_TOKEN": str(cluster.token)},
    )
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.split() == ["blocks", "hello"]


def rpc_port(cluster: LocalCluster, name: str) -> int:
    return cluster.ports[name][0]


def test_a_plain_tcp_client_on_the_rpc_port_gets_no_record_data(cluster: LocalCluster) -> None:
    request = Codec().frame("record.range", {"id": 1, "args": {"start": "", "limit": 100}})
    received = b""
    with socket.create_connection(("127.0.0.1", rpc_port(cluster, "p1")), timeout=5) as sock:
        sock.sendall(request)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
    assert b"/secure" not in received and b"hello" not in received
    with contextlib.suppress(WireError):  # a TLS alert at most: never a reply frame
        assert Codec().frame_decoder().feed(received) == []


def test_a_certificate_from_another_ca_gets_no_rpc(cluster: LocalCluster, tmp_path: Path) -> None:
    outsider = trustme.CA().issue_cert("p9")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cluster.ca)  # the outsider even trusts the real CA
    context.check_hostname = False
    outsider.configure_cert(context)
    request = Codec().frame("record.range", {"id": 1, "args": {"start": "", "limit": 100}})
    received = b""
    with (
        socket.create_connection(("127.0.0.1", rpc_port(cluster, "p2")), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError, OSError)),
        context.wrap_socket(raw) as sock,
    ):
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
        raise ConnectionError("closed without a reply")
    assert received == b""


def test_a_peer_with_a_certificate_from_another_ca_cannot_join(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    folder = tmp_path / "other"
    make_cluster_dir(folder, ["p4"])
    shutil.copy(cluster.tls_dir / "gossip.keys", folder / "gossip.keys")  # even with the key
    port, http = free_port(), free_port()
    argv = launcher.peer_argv(
        "p4", tmp_path / "p4", port, http, join=[rpc_port(cluster, "p1")],
        extra=["--tls-dir", str(folder), "--probe-interval", "0.5"],
    )
    p4 = launcher.PeerProcess("p4", argv, launcher.http_url_of(argv))
    launcher.start(p4, log_dir=tmp_path / "logs")
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert p4.running()
            for name in NAMES:
                assert "p4" not in {m["name"] for m in snapshot(cluster, name)["members"]}
            time.sleep(0.3)
    finally:
        launcher.stop([p4])


def gossip_datagram(name: str, port: int) -> bytes:
    """A wire-codec gossip message announcing a fake member `name` alive."""
    meta = Meta("f" * 32, ("127.0.0.1", port), ("127.0.0.1", port + 1), PROTOCOL_VERSION)
    return Codec().encode(GOSSIP, {"from": "p2", "u": [alive_update(name, 1, meta)]})


def members_of(cluster: LocalCluster, name: str) -> set[str]:
    return {m["name"] for m in snapshot(cluster, name)["members"]}


def test_a_datagram_without_the_gossip_key_or_replayed_changes_no_membership(
    cluster: LocalCluster,
) -> None:
    keyring = Keyring.loads((cluster.tls_dir / "gossip.keys").read_text())
    target = ("127.0.0.1", rpc_port(cluster, "p1"))
    now = time.time()
    genuine, replayer = DatagramSealer(keyring, "p2x"), DatagramSealer(keyring, "p2x")
    foreign = DatagramSealer(Keyring((new_key(),)), "p2x")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(gossip_datagram("evil-plain", 9000), target)
        udp.sendto(foreign.seal(gossip_datagram("evil-foreign", 9002), now), target)
        udp.sendto(genuine.seal(gossip_datagram("evil-first", 9004), now), target)
        # the same sender and sequence number again, carrying another change: a replay
        udp.sendto(replayer.seal(gossip_datagram("evil-replay", 9006), now), target)
        # control: the same message with a fresh sequence number gets through
        udp.sendto(genuine.seal(gossip_datagram("evil-control", 9008), now + 0.001), target)
    try:
        wait_for(lambda: "evil-control" in members_of(cluster, "p1"), 10, "the control datagram")
        seen = members_of(cluster, "p1")
        assert "evil-first" in seen
        assert not {"evil-plain", "evil-foreign", "evil-replay"} & seen
    finally:  # the module's later tests need every home of a key to answer: no fake one up
        wait_for(lambda: not fakes_up(cluster), 40, "the fake members declared dead")


def fakes_up(cluster: LocalCluster) -> set[tuple[str, str]]:
    """(observer, member) for every member not in NAMES that an observer holds alive or
    suspect: such a member is a home of some keys, and a read with R=3 would wait for it."""
    return {(name, m["name"]) for name in NAMES for m in snapshot(cluster, name)["members"]
            if m["name"] not in NAMES and m["state"] in ("alive", "suspect")}


@contextlib.contextmanager
def watch_states(cluster: LocalCluster) -> Iterator[list[tuple[str, str, str]]]:
    """Every (observer, member, state) seen among the cluster's peers that was not alive."""
    bad: list[tuple[str, str, str]] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(verify=cluster.verify(), timeout=2,
                          headers={"Authorization": f"Bearer {cluster.token}"}) as http:
            while not stop.is_set():
                for name in NAMES:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        answer = http.get(cluster.peer(name).http_url + "/v1/cluster").json()
                        bad.extend((name, m["name"], m["state"]) for m in answer["members"]
                                   if m["name"] in NAMES and m["state"] != "alive")
                stop.wait(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield bad
    finally:
        stop.set()
        thread.join(5)


def qfs_cluster(*argv: str) -> str:
    done = subprocess.run([*launcher.qfs_command(), "cluster", *argv], capture_output=True,
                          text=True, timeout=30, check=True)
    return done.stdout.strip()


def wait_keys(cluster: LocalCluster, names: list[str], keys: list[str]) -> None:
    for name in names:
        wait_for(lambda n=name: snapshot(cluster, n)["security"]["gossip_keys"] == keys, 10,
                 f"{name} holding the keys {keys}")


def test_the_gossip_key_is_rotated_on_a_running_cluster_with_no_member_marked_dead(
    cluster: LocalCluster,
) -> None:
    folder = str(cluster.tls_dir)
    (old,) = snapshot(cluster, "p1")["security"]["gossip_keys"]
    with watch_states(cluster) as bad:
        new = qfs_cluster("key", "add", folder)
        for peer in cluster.peers:
            peer.signal(signal.SIGHUP)
        wait_keys(cluster, NAMES, [old, new])
        qfs_cluster("key", "use", folder, new)
        cluster.peer("p1").signal(signal.SIGHUP)  # p1 seals with the new key, p2 and p3 the old
        wait_keys(cluster, ["p1"], [new, old])
        time.sleep(3)  # several probe rounds with mixed primaries
        for name in ("p2", "p3"):
            cluster.peer(name).signal(signal.SIGHUP)
        wait_keys(cluster, NAMES, [new, old])
        qfs_cluster("key", "remove", folder, old)
        for peer in cluster.peers:
            peer.signal(signal.SIGHUP)
        wait_keys(cluster, NAMES, [new])
        time.sleep(3)
    dead = [entry for entry in bad if entry[2] in ("dead", "left")]
    assert not dead, bad
    with cluster.client("p2") as client:
        client.put("/secure/after-rotation", b"ok")
        assert client.get_bytes("/secure/after-rotation", r=3) == b"ok"


def served_certificate(url: str, ca: str) -> bytes:
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        return sock.getpeercert(binary_form=True)


def der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_a_certificate_replaced_and_reloaded_is_used_for_new_connections(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    folder = cluster.tls_dir
    url = cluster.peer("p2").http_url
    assert served_certificate(url, str(cluster.ca)) == der(folder / "p2.crt")
    renewal = tmp_path / "renewal"
    issue_cert(folder, "p2", ["127.0.0.1", "localhost"], out=renewal)
    for suffix in ("key", "crt"):
        os.replace(renewal / f"p2.{suffix}", folder / f"p2.{suffix}")
    cluster.peer("p2").signal(signal.SIGHUP)
    wait_for(lambda: served_certificate(url, str(cluster.ca)) == der(folder / "p2.crt"), 10,
             "p2 serving its new certificate")
    serial = snapshot(cluster, "p2")["security"]["certificate"]["serial"]
    new = x509.load_pem_x509_certificate((folder / "p2.crt").read_bytes())
    assert int(serial, 16) == new.serial_number
    with cluster.client("p1") as client:  # peers dial p2 anew and accept the new certificate
        client.put("/secure/after-renewal", b"renewed")
    with cluster.client("p3") as client:
        assert client.get_bytes("/secure/after-renewal", r=3) == b"renewed"


def test_a_peer_refuses_to_start_without_its_tls_files_naming_the_command(tmp_path: Path) -> None:
    base = ["--name", "p1", "--data", str(tmp_path / "d"), "--port", "7001", "--http", "8001"]
    for extra, status, named in (
        ([], 2, "--insecure"),
        (["--tls-dir", str(tmp_path / "none")], 1, "qfs cluster init"),
    ):
        refused = subprocess.run([*launcher.qfs_command(), "peer", *base, *extra],
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode == status and named in refused.stderr, refused.stderr
    assert not (tmp_path / "d").exists()  # refused before the data directory was touched


def test_an_insecure_peer_says_so_in_its_log_and_in_v1_cluster(tmp_path: Path) -> None:
    single = ["--replicas", "1", "--read-quorum", "1", "--write-quorum", "1"]
    solo = LocalCluster(tmp_path, 1, single)
    try:
        solo.start()
        with solo.client("p1") as client:
            security = client.cluster()["security"]
        assert security["insecure"] is True and "INSECURE" in security["warning"]
        assert "INSECURE" in solo.log("p1")
    finally:
        solo.stop()


def pushpull_as(cluster: LocalCluster, cert_of: str, claimed: str) -> list:
    """Send one push-pull to p1's RPC port over TLS with `cert_of`'s certificate, claiming to
    be `claimed`; the messages p1 answers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cluster.ca)
    context.check_hostname = False
    folder = cluster.tls_dir
    context.load_cert_chain(folder / f"{cert_of}.crt", folder / f"{cert_of}.key")
    codec = Codec()
    decoder = codec.frame_decoder()
    messages: list = []
    with (
        socket.create_connection(("127.0.0.1", rpc_port(cluster, "p1")), timeout=5) as raw,
        context.wrap_socket(raw) as sock,
    ):
        sock.sendall(codec.frame("gossip.pushpull", {"from": claimed, "join": False, "m": []}))
        while not messages and (chunk := sock.recv(65536)):
            messages += decoder.feed(chunk)
    return messages


def test_a_member_certificate_cannot_speak_for_another_member(cluster: LocalCluster) -> None:
    (answer,) = pushpull_as(cluster, "p3", "p3")
    assert answer.type == "gossip.pushpull"
    (refused,) = pushpull_as(cluster, "p3", "p2")
    assert refused.type == "error" and "certified for 'p3'" in refused.body["message"]
