"""XML in and out of the S3 API. Request bodies are parsed by defusedxml (no DTDs, no
entities, no external references) after a size check; answers are built with ElementTree."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from peer.api.s3.errors import S3Error

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BODY = 1024 * 1024  # DeleteObjects with 1000 long keys fits; nothing else comes close


def parse(body: bytes, root: str) -> ET.Element:
    """The root element of an XML request body, which must be named `root` (any namespace);
    MalformedXML for anything too big, ill-formed, or carrying a DTD or entities."""
    if len(body) > MAX_XML_BODY:
        raise S3Error(400, "MalformedXML", f"XML body larger than {MAX_XML_BODY} bytes")
    try:
        element = SafeET.fromstring(body, forbid_dtd=True)
    except (DefusedXmlException, ET.ParseError, ValueError) as e:
        raise S3Error(400, "MalformedXML", f"the XML body is not accepted: {e}") from None
    for node in element.iter():
        node.tag = local(node.tag)
    if element.tag != root:
        raise S3Error(400, "MalformedXML", f"expected a {root} document, got {element.tag}")
    return element


def local(tag: Any) -> str:
    """A tag without its {namespace}."""
    return str(tag).rsplit("}", 1)[-1]


def text_of(element: ET.Element, name: str) -> str | None:
    """The text of the child `name`, if there is one."""
    child = element.find(name)
    return None if child is None else (child.text or "")


Content = str | int | bool | None | list[Any] | tuple[Any, ...]


def document(root: str, children: Iterable[tuple[str, Content]]) -> bytes:
    """An XML answer: `children` are (tag, value) pairs where a value is text, a number, a
    bool, None (omitted) or a list of (tag, value) pairs (a nested element)."""
    element = ET.Element(root, xmlns=NAMESPACE)
    _fill(element, children)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")


def _fill(parent: ET.Element, children: Iterable[tuple[str, Content]]) -> None:
    for tag, value in children:
        if value is None:
            continue
        child = ET.SubElement(parent, tag)
        if isinstance(value, (list, tuple)):
            _fill(child, value)
        elif isinstance(value, bool):
            child.text = "true" if value else "false"
        else:
            child.text = str(value)


def error_document(code: str, message: str, resource: str, request_id: str) -> bytes:
    """The body of an S3 error answer (characters XML cannot hold, such as the control
    characters of a refused key, become U+FFFD)."""
    element = ET.Element("Error")
    for tag, value in (
        ("Code", code),
        ("Message", message),
        ("Resource", resource),
        ("RequestId", request_id),
    ):
        ET.SubElement(element, tag).text = _XML_INVALID.sub("\ufffd", value)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")
