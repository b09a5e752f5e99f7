"""IIIF Presentation 2.1 and 3.0: manifests and collections read into canvases, bounded.

A manifest is input from outside, so reading one is bounded before anything is parsed: its size
(``PISAR_IIIF_MAX_MANIFEST_BYTES``), its JSON nesting (``MAX_JSON_DEPTH``; Python's own parser
would raise ``RecursionError`` somewhere near 1,000 levels), its canvases (``MAX_CANVASES``); a
collection's nesting is bounded by the resolver (``storage.py``). What is not a manifest or a
collection, in either version, is ``UnreadableManifest`` with one sentence saying why.

Of each canvas Pisar keeps what reading it needs: its id, label and size; its image, as an Image
API service (the ``painting`` annotation's body's ``service``) or, without one, the image's own URL;
and a PAGE or ALTO file it links (``seeAlso`` or ``rendering`` with an XML format or a PAGE/ALTO
profile), where its lines come from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from pisar.errors import LineError

MAX_JSON_DEPTH = 64  # a v3 manifest nests about 10 deep; a label or metadata a few more
MAX_CANVASES = 100_000
_LAYOUT_FORMATS = ("application/xml", "text/xml", "application/vnd.prima.page+xml", "application/alto+xml")


class UnreadableManifest(LineError):
    """A manifest or collection is not JSON, too large or too deep, or not IIIF Presentation 2.1 or 3.0."""


@dataclass(frozen=True)
class Canvas:
    """One page of a manifest, as Pisar reads it."""

    ordinal: int  # 1-based, in the manifest's order
    canvas_id: str
    label: str
    width: int | None
    height: int | None
    service: str | None  # the Image API service's base URL (without /info.json)
    service_version: int | None  # 2 or 3
    image: str | None  # the image's own URL: read when there is no service
    layout: str | None  # a PAGE/ALTO file the canvas links


@dataclass(frozen=True)
class Manifest:
    url: str
    manifest_id: str
    version: int
    label: str
    canvases: list[Canvas]
    body: str = ""  # the manifest's JSON, for the annotation export's copy of it


@dataclass(frozen=True)
class Collection:
    url: str
    collection_id: str
    version: int
    members: list[str] = field(default_factory=list)  # manifests' and collections' URLs, in order
    embedded: list[Manifest] = field(default_factory=list)  # manifests given whole inside it


def load_json(data: bytes, name: str, max_bytes: int) -> Any:
    """JSON within ``max_bytes`` and ``MAX_JSON_DEPTH`` levels, or ``UnreadableManifest``."""
    if len(data) > max_bytes:
        raise UnreadableManifest(f"{name}: {len(data):,} bytes, more than a manifest's {max_bytes:,}")
    try:
        document = json.loads(data)
    except RecursionError:
        raise UnreadableManifest(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnreadableManifest(f"{name}: not JSON ({exc})") from None
    _check_depth(document, name)
    if not isinstance(document, dict):
        raise UnreadableManifest(f"{name}: a JSON {type(document).__name__}, not a IIIF manifest or collection")
    return document


def _check_depth(document: Any, name: str) -> None:
    todo: list[tuple[Any, int]] = [(document, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_JSON_DEPTH:
            raise UnreadableManifest(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            todo.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value)


def read_document(data: bytes, url: str, max_bytes: int) -> Manifest | Collection:
    """A manifest or a collection, Presentation 2.1 or 3.0, from its bytes; ``url`` resolves relative links."""
    document = load_json(data, url, max_bytes)
    kind = _type(document)
    version = _version(document)
    if kind == "manifest":
        return _manifest(document, url, version)
    if kind == "collection":
        return _collection(document, url, version)
    raise UnreadableManifest(f"{url}: its type {document.get('type', document.get('@type'))!r} is neither a Manifest nor a Collection")


def _type(document: dict[str, Any]) -> str:
    value = document.get("type", document.get("@type", ""))
    return str(value).lower().removeprefix("sc:") if isinstance(value, str) else ""


def _version(document: dict[str, Any]) -> int:
    contexts = document.get("@context", [])
    contexts = contexts if isinstance(contexts, list) else [contexts]
    text = " ".join(c for c in contexts if isinstance(c, str))
    if "presentation/3" in text:
        return 3
    if "presentation/2" in text:
        return 2
    return 3 if "type" in document and "id" in document else 2


def _id(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        found = value.get("id", value.get("@id", ""))
        return found if isinstance(found, str) else ""
    return ""


def as_list(value: Any) -> list[Any]:
    """A JSON-LD value that may be one item or a list, as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def text_of(value: Any) -> str:
    """A label as one string: v3 language maps, v2 strings, lists and ``@value`` objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "@value" in value:
            return text_of(value["@value"])
        for texts in value.values():  # a language map: the first language given
            return text_of(texts)
        return ""
    if isinstance(value, list):
        return " ".join(t for t in (text_of(v) for v in value) if t)
    return "" if value is None else str(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _manifest(document: dict[str, Any], url: str, version: int) -> Manifest:
    if version == 3:
        raw = as_list(document.get("items"))
    else:
        sequences = as_list(document.get("sequences"))
        raw = as_list(sequences[0].get("canvases")) if sequences and isinstance(sequences[0], dict) else []
    if len(raw) > MAX_CANVASES:
        raise UnreadableManifest(f"{url}: {len(raw):,} canvases, more than {MAX_CANVASES:,}")
    canvases = [_canvas(item, n, url, version) for n, item in enumerate((c for c in raw if isinstance(c, dict)), start=1)]
    body = json.dumps(document, ensure_ascii=False)
    return Manifest(url, _id(document) or url, version, text_of(document.get("label")), canvases, body)


def _canvas(item: dict[str, Any], ordinal: int, base: str, version: int) -> Canvas:
    bodies = []
    if version == 3:
        for page in as_list(item.get("items")):
            for annotation in as_list(page.get("items") if isinstance(page, dict) else None):
                if isinstance(annotation, dict) and annotation.get("motivation", "painting") == "painting":
                    bodies.extend(b for b in as_list(annotation.get("body")) if isinstance(b, dict))
    else:
        for annotation in as_list(item.get("images")):
            if isinstance(annotation, dict):
                bodies.extend(b for b in as_list(annotation.get("resource")) if isinstance(b, dict))
    service, service_version, image = None, None, None
    for body in bodies:
        for candidate in as_list(body.get("service")):
            found = _service(candidate)
            if found is not None:
                service, service_version = found
                break
        image = image or _absolute(base, _id(body))
        if service:
            break
    return Canvas(
        ordinal=ordinal,
        canvas_id=_id(item),
        label=text_of(item.get("label")),
        width=_int(item.get("width")),
        height=_int(item.get("height")),
        service=_absolute(base, service) if service else None,
        service_version=service_version,
        image=image,
        layout=_layout_link(item, base),
    )


def _service(value: Any) -> tuple[str, int] | None:
    """(base URL, version) of an Image API service description, or None for another kind of service."""
    if isinstance(value, str):
        return value.rstrip("/").removesuffix("/info.json"), 2
    if not isinstance(value, dict):
        return None
    kind = str(value.get("type", value.get("@type", "")))
    contexts = " ".join(c for c in as_list(value.get("@context")) if isinstance(c, str))
    profile = " ".join(p for p in as_list(value.get("profile")) if isinstance(p, str))
    if kind == "ImageService3" or "image/3" in contexts:
        version = 3
    elif kind == "ImageService2" or "image/2" in contexts or "image/2" in profile:
        version = 2
    elif kind.startswith("ImageService") or profile.startswith("level"):
        version = 3
    else:
        return None
    base = _id(value)
    return (base.rstrip("/").removesuffix("/info.json"), version) if base else None


def _layout_link(item: dict[str, Any], base: str) -> str | None:
    """The first PAGE or ALTO file the canvas links by ``seeAlso`` or ``rendering``."""
    for link in (*as_list(item.get("seeAlso")), *as_list(item.get("rendering"))):
        target = _id(link)
        if not target:
            continue
        if isinstance(link, dict):
            form = str(link.get("format", "")).lower()
            profile = " ".join(str(p) for p in as_list(link.get("profile"))).lower()
            if form in _LAYOUT_FORMATS or "primaresearch.org/page" in profile or "alto" in profile or "page" in profile:
                return _absolute(base, target)
        if target.lower().split("?", 1)[0].endswith(".xml"):
            return _absolute(base, target)
    return None


def _collection(document: dict[str, Any], url: str, version: int) -> Collection:
    members: list[str] = []
    embedded: list[Manifest] = []
    if version == 3:
        entries = as_list(document.get("items"))
    else:
        entries = [*as_list(document.get("collections")), *as_list(document.get("manifests")), *as_list(document.get("members"))]
    for entry in entries:
        if isinstance(entry, dict) and _type(entry) == "manifest" and (entry.get("items") or entry.get("sequences")):
            embedded.append(_manifest(entry, _id(entry) or url, version))
            continue
        target = _id(entry)
        if target:
            members.append(_absolute(url, target))
    return Collection(url, _id(document) or url, version, list(dict.fromkeys(members)), embedded)


def _absolute(base: str, link: str) -> str:
    return urljoin(base, link) if link and "://" in base else link
