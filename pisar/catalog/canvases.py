"""A IIIF campaign's manifests and canvases in the catalog: written once at listing, read by workers and exports.

They are data, not state: a manifest row records what was read (or why not), a canvas row where a
page's image and layout come from. Workers read a shard's canvases here instead of the manifests,
so a manifest that changes (or vanishes) during a campaign changes nothing about its pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, or_, select

from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, IiifCanvas, IiifManifest

_MANIFEST = IiifManifest.__table__
_CANVAS = IiifCanvas.__table__
_CAMPAIGN = Campaign.__table__

#: The error class of a manifest whose server did not answer (refused, unresolvable, 429 or 5xx past
#: the retries): an outage, not the manifest's fault, so unlike the others it is asked again when
#: the campaign's listing is (``pisar resume``), and its row then holds what was read.
UNANSWERED = "NoAnswer"


@dataclass(frozen=True)
class CanvasRow:
    """A stored canvas, with its manifest's URL: what a worker needs to read the page, and its provenance."""

    key: str
    manifest_url: str
    canvas_id: str
    ordinal: int
    label: str | None
    width: int | None
    height: int | None
    service: str | None
    service_version: int | None
    image: str | None
    layout: str | None
    layout_key: str | None = None


def recorded_urls(url: str, campaign_id: int) -> set[str]:
    """The manifests recorded for good (read, or unreadable): a resumed listing does not read them
    again. Those whose server did not answer are not among them: they are asked again."""
    with get_engine(url).connect() as conn:
        for_good = or_(_MANIFEST.c.error_class.is_(None), _MANIFEST.c.error_class != UNANSWERED)
        query = select(_MANIFEST.c.url).where(_MANIFEST.c.campaign_id == campaign_id, for_good)
        return set(conn.execute(query).scalars())


def last_ordinal(url: str, campaign_id: int) -> int:
    """The highest manifest ordinal recorded so far (0 for none): the next one recorded follows it."""
    with get_engine(url).connect() as conn:
        found = conn.execute(select(func.max(_MANIFEST.c.ordinal)).where(_MANIFEST.c.campaign_id == campaign_id)).scalar_one()
    return int(found or 0)


def unanswered(url: str, campaign_id: int) -> list[tuple[str, str | None]]:
    """(url, error) of the manifests (or collections) that did not answer the last listing, in source order."""
    with get_engine(url).connect() as conn:
        query = select(_MANIFEST.c.url, _MANIFEST.c.error).where(
            _MANIFEST.c.campaign_id == campaign_id, _MANIFEST.c.error_class == UNANSWERED
        )
        return [(u, e) for u, e in conn.execute(query.order_by(_MANIFEST.c.ordinal))]


def used_slugs(url: str, campaign_id: int) -> set[str]:
    with get_engine(url).connect() as conn:
        query = select(_MANIFEST.c.slug).where(_MANIFEST.c.campaign_id == campaign_id, _MANIFEST.c.slug.is_not(None))
        return set(conn.execute(query).scalars())


def record_manifest(url: str, campaign_id: int, ordinal: int, manifest_url: str, **values: object) -> int:
    """One manifest's row (``values``: slug, version, label, body; or error_class and error); its id.

    A manifest that did not answer at an earlier listing keeps its row (and its place): the row
    takes what this listing found, read or not."""
    with get_engine(url).begin() as conn:
        earlier = conn.execute(select(_MANIFEST.c.id).where(*_unanswered_row(campaign_id, manifest_url))).scalar_one_or_none()
        if earlier is not None:
            cleared = {"slug": None, "version": None, "label": None, "body": None, "error_class": None, "error": None}
            conn.execute(_MANIFEST.update().where(_MANIFEST.c.id == earlier).values({**cleared, **values}))
            return int(earlier)
        row = conn.execute(
            insert(_MANIFEST)
            .values(campaign_id=campaign_id, ordinal=ordinal, url=manifest_url, canvas_count=0, **values)
            .returning(_MANIFEST.c.id)
        )
        return int(row.scalar_one())


def drop_unanswered(url: str, campaign_id: int, manifest_url: str) -> None:
    """Forget that ``manifest_url`` did not answer (a collection that now did: it has no row of its own)."""
    with get_engine(url).begin() as conn:
        conn.execute(delete(_MANIFEST).where(*_unanswered_row(campaign_id, manifest_url)))


def _unanswered_row(campaign_id: int, manifest_url: str) -> tuple:
    """The conditions that pick ``manifest_url``'s row, if it is one that did not answer."""
    return (_MANIFEST.c.campaign_id == campaign_id, _MANIFEST.c.url == manifest_url, _MANIFEST.c.error_class == UNANSWERED)


def record_canvases(url: str, campaign_id: int, manifest_id: int, rows: list[dict[str, object]]) -> None:
    """A read manifest's canvases (``IiifCanvas`` columns), and their count on the manifest: one transaction."""
    with get_engine(url).begin() as conn:
        for start in range(0, len(rows), 1000):
            conn.execute(
                insert(_CANVAS), [{"campaign_id": campaign_id, "manifest_id": manifest_id, **r} for r in rows[start : start + 1000]]
            )
        conn.execute(_MANIFEST.update().where(_MANIFEST.c.id == manifest_id).values(canvas_count=len(rows)))


def canvas_pages(url: str, campaign_id: int, start: str | None, page_size: int = 1000) -> Iterator[list[CanvasRow]]:
    """Every canvas of the campaign in the order it was recorded, from the canvas keyed ``start``
    on (that one included), a page at a time.

    Recorded order, not key order: a manifest that answers only at a later listing has its canvases
    recorded after every other, so a listing resumed after the last canvas it listed reaches them,
    whatever their keys.
    """
    with get_engine(url).connect() as conn:
        after = None
        if start is not None:
            first = conn.execute(select(_CANVAS.c.id).where(_CANVAS.c.campaign_id == campaign_id, _CANVAS.c.key == start)).scalar_one()
            after = first - 1
    while True:
        query = _select_rows().add_columns(_CANVAS.c.id).where(_CANVAS.c.campaign_id == campaign_id)
        if after is not None:
            query = query.where(_CANVAS.c.id > after)
        with get_engine(url).connect() as conn:
            found = conn.execute(query.order_by(_CANVAS.c.id).limit(page_size)).all()
        if not found:
            return
        yield [CanvasRow(**{k: v for k, v in row._mapping.items() if k != "id"}) for row in found]
        after = found[-1].id


def layouts_url(url: str, campaign_id: int) -> str | None:
    """The folder or S3 prefix of layout files matched to the campaign's canvases (``--layouts``), if any."""
    with get_engine(url).connect() as conn:
        return conn.execute(select(_CAMPAIGN.c.layouts_url).where(_CAMPAIGN.c.id == campaign_id)).scalar_one_or_none()


def set_layout_keys(url: str, campaign_id: int, layouts: dict[str, str]) -> None:
    """Record the layout file matched to each canvas (canvas key -> layout key), in one transaction."""
    with get_engine(url).begin() as conn:
        for canvas_key, layout_key in layouts.items():
            conn.execute(
                _CANVAS.update().where(_CANVAS.c.campaign_id == campaign_id, _CANVAS.c.key == canvas_key).values(layout_key=layout_key)
            )


def canvases(url: str, campaign_id: int, keys: Iterable[str]) -> dict[str, CanvasRow]:
    """The canvases of these page keys, where the campaign has them."""
    wanted = sorted(set(keys))
    found: dict[str, CanvasRow] = {}
    with get_engine(url).connect() as conn:
        for start in range(0, len(wanted), 500):
            query = _select_rows().where(_CANVAS.c.campaign_id == campaign_id, _CANVAS.c.key.in_(wanted[start : start + 500]))
            found.update((row.key, CanvasRow(**row._mapping)) for row in conn.execute(query))
    return found


def manifests(url: str, campaign_id: int) -> list[IiifManifest]:
    """The campaign's manifest rows in source order (bodies included)."""
    with get_engine(url).connect() as conn:
        query = select(_MANIFEST).where(_MANIFEST.c.campaign_id == campaign_id).order_by(_MANIFEST.c.ordinal)
        return [IiifManifest(**row._mapping) for row in conn.execute(query)]


def unread_manifests(url: str, campaign_id: int, limit: int = 20) -> list[tuple[str, str, str | None]]:
    """(url, error class, error) of the first ``limit`` manifests that could not be read, in source
    order; without their neighbours' bodies, which can be megabytes each (`pisar status --watch` asks every few seconds)."""
    with get_engine(url).connect() as conn:
        query = (
            select(_MANIFEST.c.url, _MANIFEST.c.error_class, _MANIFEST.c.error)
            .where(_MANIFEST.c.campaign_id == campaign_id, _MANIFEST.c.error_class.is_not(None))
            .order_by(_MANIFEST.c.ordinal)
            .limit(limit)
        )
        return [tuple(row) for row in conn.execute(query)]


def manifest_counts(url: str, campaign_id: int) -> tuple[int, int, int]:
    """(manifests read, manifests that could not be read, canvases) of a campaign."""
    with get_engine(url).connect() as conn:
        read, failed, canvas_total = conn.execute(
            select(
                func.count().filter(_MANIFEST.c.error_class.is_(None)),
                func.count().filter(_MANIFEST.c.error_class.is_not(None)),
                func.coalesce(func.sum(_MANIFEST.c.canvas_count), 0),
            ).where(_MANIFEST.c.campaign_id == campaign_id)
        ).one()
    return int(read), int(failed), int(canvas_total)


def forget(conn: Connection, campaign_id: int) -> None:
    """Remove a campaign's manifests and canvases (a campaign that turned out to hold nothing)."""
    conn.execute(delete(_CANVAS).where(_CANVAS.c.campaign_id == campaign_id))
    conn.execute(delete(_MANIFEST).where(_MANIFEST.c.campaign_id == campaign_id))


def _select_rows():
    return select(
        _CANVAS.c.key,
        _MANIFEST.c.url.label("manifest_url"),
        _CANVAS.c.canvas_id,
        _CANVAS.c.ordinal,
        _CANVAS.c.label,
        _CANVAS.c.width,
        _CANVAS.c.height,
        _CANVAS.c.service,
        _CANVAS.c.service_version,
        _CANVAS.c.image,
        _CANVAS.c.layout,
        _CANVAS.c.layout_key,
    ).join(_MANIFEST, _MANIFEST.c.id == _CANVAS.c.manifest_id)
