"""Mending real-world PAGE and ALTO files on their way out, so what an export writes is valid.

Tools write files their own schema refuses: Transkribus puts the ``https://`` form of the XML
Schema instance namespace on PAGE 2013 files; some PAGE files carry only a ``Creator`` in their
``Metadata``; eScriptorium writes ALTO ``OtherTag``s without the ``LABEL`` ALTO requires. A rewrite
moves such a file to PAGE 2019 or keeps it ALTO 4.4, and mends exactly these defects without
dropping anything it holds, each mend noted. The written file is then checked against the official
schema (``pisar/layout_schemas.py``); what is still wrong is reported, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from pisar.layout_schemas import first_problem
from pisar.producer.export_pages import ALTO_NS, ALTO_SCHEMA, PAGE_NS, PAGE_SCHEMA, XSI, now_utc

XSI_HTTPS = "https://www.w3.org/2001/XMLSchema-instance"  # what Transkribus writes; no schema knows it
_TAG_KINDS = ("LayoutTag", "StructureTag", "RoleTag", "NamedEntityTag", "OtherTag")
_METADATA_ORDER = ("Creator", "Created", "LastChange", "Comments", "UserDefined", "MetadataItem")


@dataclass
class Repairs:
    """What an export mended, file by file, and which files are still not valid."""

    done: dict[str, list[str]] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)

    def note(self, key: str, what: str) -> None:
        self.done.setdefault(key, []).append(what)

    def check(self, key: str, document: etree._Element, fmt: str) -> None:
        """Record whether the file about to be written is valid ``fmt``."""
        problem = first_problem(document, fmt)
        if problem is not None:
            self.invalid[key] = problem

    def describe(self) -> str | None:
        """For the export's summary: how many files were mended and how, and any still invalid."""
        parts = []
        if self.done:
            shown = "; ".join(f"{key}: {', '.join(what)}" for key, what in list(self.done.items())[:3])
            more = f"; and {len(self.done) - 3} more" if len(self.done) > 3 else ""
            parts.append(f"{len(self.done)} files repaired to be valid ({shown}{more})")
        if self.invalid:
            key, problem = next(iter(self.invalid.items()))
            parts.append(f"{len(self.invalid)} files still not valid against the official schema (e.g. {key}: {problem})")
        return "; ".join(parts) or None


def mend_source(data: bytes, key: str, repairs: Repairs) -> bytes:
    """The input's bytes with the ``https://`` XML Schema instance namespace made the real one (a rename
    of one URI, as for PAGE's own namespace: nothing else in the file changes)."""
    if XSI_HTTPS.encode() in data:
        repairs.note(key, "XML Schema instance namespace https:// made http://")
        return data.replace(XSI_HTTPS.encode(), XSI.encode())
    return data


def mend_page(document: etree._Element, key: str, repairs: Repairs) -> None:
    """A PAGE 2019 document's ``schemaLocation`` and ``Metadata`` made what the schema asks.

    ``Metadata`` must hold ``Creator``, ``Created`` and ``LastChange`` first, in that order; a
    missing one is added (``Created``, when unknown, from ``LastChange`` or now), and ``LastChange``
    is now, since this rewrite changes the file.
    """
    ns = f"{{{PAGE_NS}}}"
    location = f"{PAGE_NS} {PAGE_SCHEMA}"
    if document.get(f"{{{XSI}}}schemaLocation") not in (None, location):
        document.set(f"{{{XSI}}}schemaLocation", location)
    metadata = document.find(f"{ns}Metadata")
    if metadata is None:
        metadata = etree.Element(f"{ns}Metadata")
        document.insert(0, metadata)
        repairs.note(key, "Metadata added")
    last_change = metadata.findtext(f"{ns}LastChange")
    stamp = now_utc()
    for name, value in (("Creator", ""), ("Created", last_change or stamp), ("LastChange", stamp)):
        element = metadata.find(f"{ns}{name}")
        if element is None:
            element = etree.Element(f"{ns}{name}")
            element.text = value
            _insert_in_order(metadata, element, ns, _METADATA_ORDER)
            repairs.note(key, f"Metadata given its {name}")
        elif name == "LastChange":
            element.text = stamp


def mend_alto(document: etree._Element, key: str, repairs: Repairs) -> None:
    """An ALTO 4 document's tags given the ``LABEL`` the schema requires (their ``DESCRIPTION``, else
    ``TYPE``, else ``ID``: what they say of themselves), and its ``schemaLocation`` pointed at ALTO 4.4."""
    ns = etree.QName(document).namespace
    unlabelled = [tag for kind in _TAG_KINDS for tag in document.iter(f"{{{ns}}}{kind}") if tag.get("LABEL") is None]
    for tag in unlabelled:
        tag.set("LABEL", tag.get("DESCRIPTION") or tag.get("TYPE") or tag.get("ID") or "")
    if unlabelled:
        repairs.note(key, f"{len(unlabelled)} tags given the LABEL ALTO requires")
    location = document.get(f"{{{XSI}}}schemaLocation")
    if location is not None and location != f"{ALTO_NS} {ALTO_SCHEMA}":
        document.set(f"{{{XSI}}}schemaLocation", f"{ALTO_NS} {ALTO_SCHEMA}")


def _insert_in_order(parent: etree._Element, element: etree._Element, ns: str, order: tuple[str, ...]) -> None:
    """Insert ``element`` before the first child that the schema's ``order`` puts after it."""
    rank = order.index(etree.QName(element).localname)
    for index, child in enumerate(parent):
        name = etree.QName(child).localname if isinstance(child.tag, str) else None
        if name in order and order.index(name) > rank:
            parent.insert(index, element)
            return
    parent.append(element)
