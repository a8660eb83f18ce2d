"""Membership updates and records from outside: anything the wire decoder lets through is
either a valid update or BadMessage with a short message; names and hosts are checked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.updates import BadMessage, check_host, check_name, parse_record, parse_update
from tests.hostile_cbor import plain_values

codes = st.sampled_from(["a", "s", "d", "l", "x"])
shaped = st.builds(lambda code, rest: [code, *rest], codes, st.lists(plain_values, max_size=9))


@given(plain_values | shaped)
def test_anything_decoded_is_an_update_or_a_short_bad_message(raw) -> None:
    for parse in (parse_update, parse_record):
        try:
            parse(raw)
        except BadMessage as e:
            assert len(str(e)) < 200


@pytest.mark.parametrize(
    "name", ["p1", "a" * 64, "node-7.eu_west", "A0"]
)
def test_names_the_cli_accepts_are_member_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a" * 65, "-p", ".p", "p 1", "p\x1b[2J", "p\n", "é", 7, None, ["p"]]
)
def test_other_names_are_refused_with_an_escaped_excerpt(name: object) -> None:
    with pytest.raises(BadMessage) as caught:
        check_name(name)
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "fe80::1", "peer-1.example.org", "p1"])
def test_ip_addresses_and_host_names_are_hosts(host: str) -> None:
    assert check_host(host) == host


@pytest.mark.parametrize(
    "host", ["", "a" * 254, "-x", "x..y", "h\x1b", "h\n", "a b", "1.2.3.4:80", "[::1]", "x" * 64]
)
def test_other_hosts_are_refused(host: str) -> None:
    with pytest.raises(BadMessage):
        check_host(host)
