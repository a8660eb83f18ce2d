"""Hostile and malformed XML request bodies are refused before any work."""

from __future__ import annotations

import pytest

from peer.api.s3.errors import S3Error
from peer.api.s3.xml import MAX_XML_BODY, document, parse

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Delete><Object><Key>&lol2;</Key></Object></Delete>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&x;</Key></Object></Delete>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        EXTERNAL,
        b"<Delete><Object>",
        b"<Other/>",
        b"<Delete>" + b"<Object><Key>k</Key></Object>" * (MAX_XML_BODY // 20) + b"</Delete>",
    ],
)
def test_hostile_or_malformed_xml_is_malformed_xml(body: bytes) -> None:
    with pytest.raises(S3Error) as e:
        parse(body, "Delete")
    assert e.value.code == "MalformedXML"


def test_namespaced_documents_parse_and_answers_escape_text() -> None:
    root = parse(
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a&amp;b</Key>'
        b"</Object></Delete>",
        "Delete",
    )
    assert root.find("Object").findtext("Key") == "a&b"
    out = document("R", [("Key", "<&>"), ("Skipped", None), ("Flag", True)])
    assert b"<Key>&lt;&amp;&gt;</Key>" in out and b"Skipped" not in out and b"true" in out
