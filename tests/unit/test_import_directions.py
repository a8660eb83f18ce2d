"""Imports point one way (design.md, "Layout"): a test that walks every module's imports with `ast`.

tui -> peer.client; peer.client imports nothing of the node; peer.api and peer.repair use the
core and the core never imports them; peer -> gossip, storage; gossip and storage import neither
each other nor peer or tui. peer.main (the `qfs` program) and peer.node (the composition root)
are the two places that join the rooms. The pure cores import no Twisted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("peer", "gossip", "storage", "tui")

# The first matching room (longest prefix) decides what a module may import.
ALLOWED: dict[str, tuple[str, ...]] = {
    "tui": ("tui", "peer.client"),
    "peer.client": ("peer.client",),
    "peer.main": ("peer", "tui"),
    "peer.node": ("peer", "gossip", "storage"),
    "peer.api": ("peer.api", "@core", "gossip", "storage"),
    "peer.repair": ("peer.repair", "@core", "gossip", "storage"),
    "peer": ("@core", "gossip", "storage"),
    "gossip": ("gossip",),
    "storage": ("storage",),
}
NOT_CORE = ("peer.api", "peer.repair", "peer.client", "peer.node", "peer.main")

# Protocol logic driven by explicit inputs and a clock: no reactor, no Twisted at all.
PURE = (
    "gossip.membership",
    "gossip.suspicion",
    "gossip.awareness",
    "gossip.broadcasts",
    "gossip.updates",
    "gossip.wire",
    "gossip.crypto",
    "gossip.cbor",
    "gossip.sim",
    "peer.quorum",
    "peer.ring",
    "peer.cluster",
    "peer.lookup",
    "peer.manifest",
    "peer.permissions",
    "peer.paths",
    "peer.repair.digest",
    "storage.vclock",
    "storage.records",
    "storage.blocks",
    "peer.client",
)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _is_core(name: str) -> bool:
    return _within(name, "peer") and not any(_within(name, p) for p in NOT_CORE)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> set[tuple[int, str]]:
    """Every module `path` imports, anywhere in it (lazy imports in functions too)."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # `from peer.client import cli` imports the module peer.client.cli
                submodule = f"{node.module}.{alias.name}"
                found.add((node.lineno, submodule if _ours(submodule, root) else node.module))
    return found


def violations(root: Path = ROOT) -> list[str]:
    """Each import that points the wrong way, as 'file:line: importer -> imported'."""
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            importer = module_name(path, root)
            room = max((r for r in ALLOWED if _within(importer, r)), key=len)
            for line, imported in sorted(imports_of(path, root)):
                top = imported.split(".")[0]
                if top == "twisted" and _pure(importer):
                    problems.append(f"{path}:{line}: {importer} is pure -> twisted")
                elif top in PACKAGES and not any(_may(imported, a) for a in ALLOWED[room]):
                    problems.append(f"{path}:{line}: {importer} -> {imported}")
    return sorted(set(problems))


def _ours(name: str, root: Path) -> bool:
    """Whether `name` is a module or package of ours (not a name imported from one)."""
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _may(imported: str, allowed: str) -> bool:
    return _is_core(imported) if allowed == "@core" else _within(imported, allowed)


def _pure(importer: str) -> bool:
    return any(_within(importer, p) for p in PURE)


def test_every_import_points_the_right_way() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "source", "forbidden"),
    [
        ("peer/quorum.py", "from peer.repair.digest import BUCKETS\n", "peer.repair.digest"),
        ("peer/coordinator.py", "from peer.api.http import ApiResource\n", "peer.api.http"),
        ("peer/client/cli.py", "from peer.node import run_peer\n", "peer.node"),
        ("peer/client/api_client.py", "import storage.vclock\n", "storage.vclock"),
        ("tui/app.py", "from peer.coordinator import Coordinator\n", "peer.coordinator"),
        ("gossip/membership.py", "from peer import ring\n", "peer.ring"),
        ("storage/records.py", "from gossip.wire import Codec\n", "gossip.wire"),
        ("peer/repair/collector.py", "from peer.api import auth\n", "peer.api.auth"),
        ("peer/ring.py", "def f():\n    from twisted.internet import reactor\n", "twisted"),
    ],
)
def test_a_forbidden_import_is_reported(
    tmp_path: Path, module: str, source: str, forbidden: str
) -> None:
    """The checker itself: a copy of the tree with one wrong import added fails."""
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    target = tmp_path / module
    target.write_text(target.read_text() + "\n" + source)
    found = violations(tmp_path)
    assert len(found) == 1
    assert found[0].endswith(f"-> {forbidden}")
