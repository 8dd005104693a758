"""Rendering Open311 answers in JSON and XML, with the specification's element names."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

FORMATS = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}

# A list inside an element: its wrapper element's name -> the name of each item.
_ITEMS = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
    "notes": "note",
}


# Characters XML 1.0 cannot carry at all (a staff note typed with one must not break a client).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("", str(value))


def _fill(elem: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _fill(ET.SubElement(elem, k), v)
    elif isinstance(value, list):
        item = _ITEMS[elem.tag]
        for v in value:
            _fill(ET.SubElement(elem, item), v)
    else:
        elem.text = _text(value)


def to_xml(root: str, value: Any) -> bytes:
    """The document <root>...</root>, UTF-8 with its XML declaration as the spec requires."""
    elem = ET.Element(root)
    _fill(elem, value)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(elem, encoding="utf-8")


def to_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def render(fmt: str, root: str, value: Any) -> tuple[bytes, str]:
    """(body, content type) of `value` as the document `root` in `fmt` (json or xml)."""
    if fmt == "xml":
        return to_xml(root, value), FORMATS["xml"]
    return to_json(value), FORMATS["json"]


def errors(fmt: str, status: int, description: str) -> tuple[bytes, str]:
    """The specification's error list: [{code, description}] / <errors><error>...</error>."""
    return render(fmt, "errors", [{"code": status, "description": description}])
