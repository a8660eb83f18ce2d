"""Membership updates as they travel: compact CBOR arrays, and their validation.

Piggybacked updates (short form, one per member):
    ["a", name, incarnation, node_id, host, port, http_host, http_port, version]   alive
    ["s", name, incarnation, from]                                                  suspect
    ["d", name, incarnation, from]                                                  dead
    ["l", name, incarnation]                                                        left
Push-pull records (full state of one member) always use the alive layout with the member's
state code in front. Anything else raises BadMessage; one bad update rejects its whole message.

Names and addresses are checked before they are believed, since peers print them and connect
to them: a member name is what `qfs peer --name` accepts (NAME_PATTERN), a host is an IP
address or a DNS name, a node id is printable ASCII; error messages never quote more than a
short escaped prefix of what arrived.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from gossip.cbor import excerpt

ALIVE = "alive"
SUSPECT = "suspect"
DEAD = "dead"
LEFT = "left"

_CODE_OF = {ALIVE: "a", SUSPECT: "s", DEAD: "d", LEFT: "l"}
_STATE_OF = {code: state for state, code in _CODE_OF.items()}

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
NODE_ID_PATTERN = re.compile(r"[!-~]{1,256}")  # printable ASCII, no spaces
MAX_INCARNATION = 2**63 - 1

Addr = tuple[str, int]


class BadMessage(ValueError):
    """A gossip message, update or record that is not well formed."""


@dataclass(frozen=True, slots=True)
class Meta:
    """What a member says about itself: stable identity and where to reach it."""

    node_id: str
    addr: Addr
    http: Addr
    version: int


class Update(NamedTuple):
    """One parsed update: ``origin`` for suspect/dead, ``meta`` for alive (and records)."""

    state: str
    name: str
    incarnation: int
    origin: str | None
    meta: Meta | None


def alive_update(name: str, incarnation: int, meta: Meta) -> list[Any]:
    """The update announcing ``name`` alive at ``incarnation``."""
    return record(name, ALIVE, incarnation, meta)


def suspect_update(name: str, incarnation: int, origin: str) -> list[Any]:
    """The update saying ``origin`` suspects ``name`` at ``incarnation``."""
    return ["s", name, incarnation, origin]


def dead_update(name: str, incarnation: int, origin: str) -> list[Any]:
    """The update saying ``origin`` declared ``name`` dead at ``incarnation``."""
    return ["d", name, incarnation, origin]


def left_update(name: str, incarnation: int) -> list[Any]:
    """The update saying ``name`` left the cluster gracefully at ``incarnation``."""
    return ["l", name, incarnation]


def record(name: str, state: str, incarnation: int, meta: Meta) -> list[Any]:
    """The full-state record of one member, as sent in push-pull."""
    host, port = meta.addr
    http_host, http_port = meta.http
    return [_CODE_OF[state], name, incarnation, meta.node_id, host, port, http_host, http_port,
            meta.version]


def check_name(value: Any) -> str:
    """``value`` if it is a valid member name (NAME_PATTERN), else BadMessage."""
    if type(value) is not str or not NAME_PATTERN.fullmatch(value):
        raise BadMessage(f"member name {excerpt(value)} is not {NAME_RULE}")
    return value


def check_host(value: Any) -> str:
    """``value`` if it is an IP address or a DNS host name, else BadMessage."""
    if type(value) is str and (_is_host_name(value) or _is_ip(value)):
        return value
    raise BadMessage(f"host {excerpt(value)} is not an IP address or a host name")


def _is_host_name(text: str) -> bool:
    if not 0 < len(text) <= 253:
        return False
    labels = text.removesuffix(".").split(".")
    return all(HOST_LABEL.fullmatch(label) for label in labels)


def _is_ip(text: str) -> bool:
    if len(text) > 45:  # the longest IPv6 text
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_int(value: Any, what: str, high: int) -> int:
    """``value`` if it is an integer in ``0..high`` (not a bool), else BadMessage."""
    if type(value) is not int or not 0 <= value <= high:
        raise BadMessage(f"{what} must be an integer in 0..{high}")
    return value


def _incarnation(value: Any) -> int:
    return check_int(value, "incarnation", MAX_INCARNATION)


def _meta(raw: list[Any]) -> Meta:
    node_id, host, port, http_host, http_port, version = raw[3:9]
    if type(node_id) is not str or not NODE_ID_PATTERN.fullmatch(node_id):
        raise BadMessage(f"node id {excerpt(node_id)} is not 1-256 printable ASCII characters")
    return Meta(
        node_id,
        (check_host(host), check_int(port, "port", 65535)),
        (check_host(http_host), check_int(http_port, "http port", 65535)),
        check_int(version, "version", 2**31),
    )


def parse_update(raw: Any) -> Update:
    """Validate one piggybacked update."""
    if type(raw) is not list or not raw:
        raise BadMessage("update must be a non-empty array")
    code = raw[0]
    n = len(raw)
    if code == "a" and n == 9:
        return Update(ALIVE, check_name(raw[1]), _incarnation(raw[2]), None, _meta(raw))
    if (code == "s" or code == "d") and n == 4:
        return Update(_STATE_OF[code], check_name(raw[1]), _incarnation(raw[2]),
                      check_name(raw[3]), None)
    if code == "l" and n == 3:
        name = check_name(raw[1])
        return Update(LEFT, name, _incarnation(raw[2]), name, None)
    raise BadMessage(f"unknown update kind or length: {excerpt(code, 8)}/{n}")


def parse_record(raw: Any) -> Update:
    """Validate one push-pull record (full state of a member)."""
    if type(raw) is not list or len(raw) != 9 or raw[0] not in _STATE_OF:
        raise BadMessage("record must be a 9-element array starting with a state code")
    return Update(_STATE_OF[raw[0]], check_name(raw[1]), _incarnation(raw[2]), None, _meta(raw))
