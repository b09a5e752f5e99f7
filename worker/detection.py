"""Detecting one scan: claim, fetch, decode, detect, commit; every way it ends sorted here, by type.

The detect counterpart of ``runner.py``, shared by the embedded ``pisar run --layout detect`` and
(next) the Celery detect task. A scan that cannot be decoded (a ``LineError``) is quarantined at
once with its error; a detector failure spends an attempt and is retried; an outage or a stopping
worker gives the scan back without spending one; a node whose detector cannot load
(``FatalError``) gives it back and stops taking work. The lease is renewed while the detector runs
(tens of seconds a page on a CPU), and the commit is fenced (``pisar/catalog/pages.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from sqlalchemy import select

from pisar.catalog import pages
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign
from pisar.catalog.pages import PageClaim, PageFacts
from pisar.detect import Detector, load_detector
from pisar.errors import FatalError, LineError, is_outage
from pisar.images import ImageLimits, decode_line
from pisar.settings import Settings
from pisar.sources.detected_pages import page_key, scan_frame
from pisar.storage import OpenStorages
from pisar.worker import stopping
from pisar.worker.lease import LeaseKeeper
from pisar.worker.outcomes import Outcome, ShardOutcome
from pisar.worker.serving import NodeHealth
from pisar.worker.settle import settle

log = logging.getLogger(__name__)


def detector_from_settings(settings: Settings, name: str | None = None) -> Detector:
    """The detector ``name`` (default: the configured one, with its model) on ``PISAR_DEVICE`` (auto: the GPU where there is one)."""
    model = settings.detector_model if name in (None, settings.detector) else None
    return load_detector(name or settings.detector, model=model, device=settings.device, polygon_workers=settings.detect_polygon_workers)


class PageRunner:
    """Detects scans for one worker identity against one catalog."""

    def __init__(self, settings: Settings, detector: Callable[[str | None], Detector], worker: str, node: NodeHealth | None = None) -> None:
        self.settings = settings
        self.url = settings.catalog_url
        self.worker = worker
        self.node = node or NodeHealth()
        self.limits = ImageLimits.from_settings(settings)
        self._make_detector = detector  # a detector by name (None: the configured one)
        self._detectors: dict[str | None, Detector] = {}
        self._storages = OpenStorages(self.settings)

    def close(self) -> None:
        for detector in self._detectors.values():
            detector.close()

    def run(self, page_id: int) -> ShardOutcome:
        """One delivery of a scan; never raises for a bad scan or a failed detection. What its message
        needs is the outcome's ``resend_after``, as for a shard."""
        if self.node.reason is not None:
            return ShardOutcome(page_id, Outcome.BROKEN, error=str(self.node.reason))
        try:
            held = pages.claim(self.url, page_id, self.worker, self.settings.lease_seconds, self.settings.max_attempts)
        except Exception as exc:
            if is_outage(exc):
                return ShardOutcome(page_id, Outcome.STALLED, error=f"{type(exc).__name__}: {exc}")
            self.node.cannot_serve(FatalError(f"cannot claim scans: {type(exc).__name__}: {exc}"))
            return ShardOutcome(page_id, Outcome.BROKEN, error=str(self.node.reason))
        if held is None:
            until = pages.held_until(self.url, page_id)
            return ShardOutcome(page_id, Outcome.HELD if until is not None else Outcome.SKIPPED, held_until=until)
        try:
            return ShardOutcome(page_id, self._detect_and_commit(held), attempts=held.attempts)
        except LineError as exc:  # the scan itself: the same bytes would fail again
            return ShardOutcome(page_id, self._fail(held, exc, final=True), error=str(exc), attempts=held.attempts)
        except stopping.WorkerStopping as exc:
            self._release(held)
            return ShardOutcome(page_id, Outcome.STOPPED, error=str(exc))
        except FatalError as exc:
            self._release(held)
            self.node.cannot_serve(exc)
            return ShardOutcome(page_id, Outcome.BROKEN, error=str(exc))
        except Exception as exc:
            if is_outage(exc):
                self._release(held)
                return ShardOutcome(page_id, Outcome.STALLED, error=f"{type(exc).__name__}: {exc}")
            return ShardOutcome(page_id, self._fail(held, exc, final=False), error=str(exc), attempts=held.attempts)
        except BaseException:
            try:
                pages.release(self.url, held)
            except Exception:  # the lease expires and a later claim takes the scan
                log.warning("%s interrupted; the release failed", held.key)
            raise

    def _detect_and_commit(self, held: PageClaim) -> Outcome:
        source_url = self._source_url(held.campaign_id)
        started = time.perf_counter()
        file_key, frame = scan_frame(held.key)  # a later page of a multi-page TIFF: its file and frame
        data = self._storages.of(source_url, held.campaign_id).read(file_key)
        scan = decode_line(data, self.limits, frame)
        detector = self._loaded(held.detector)
        with LeaseKeeper.for_scan(self.url, held, self.settings.lease_seconds):
            found = detector.detect(scan.line)
        from pisar.detect.page_xml import page_xml

        facts = PageFacts(
            layout=page_xml(found, file_key, frame).decode(),
            line_ids=[line.line_id for line in found.lines],
            width=found.width,
            height=found.height,
            detector=found.detector,
            seconds=time.perf_counter() - started,
            more_pages=[page_key(held.key, page) for page in range(2, scan.frames + 1)] if frame == 0 else [],
        )
        if not pages.finish(self.url, held, facts):
            log.warning("%s: a newer claim holds the scan; its detection is discarded", held.key)
            return Outcome.FENCED
        log.info("%s: %s lines detected in %.1fs", held.key, len(facts.line_ids), facts.seconds)
        return Outcome.DONE

    def _release(self, held: PageClaim) -> None:
        """Give the scan back (attempt refunded), retrying through a catalog outage for up to its lease."""
        settle(partial(pages.release, self.url, held), self.settings.lease_seconds, held.key)

    def _fail(self, held: PageClaim, exc: BaseException, *, final: bool) -> Outcome:
        state = settle(
            partial(pages.fail, self.url, held, exc, self.settings.max_attempts, final=final), self.settings.lease_seconds, held.key
        )
        log.warning("%s: detection failed (%s): %s: %s", held.key, state or "fenced", type(exc).__name__, exc)
        if state is None:
            return Outcome.FENCED
        return Outcome.QUARANTINED if state == pages.QUARANTINED else Outcome.FAILED

    def _loaded(self, name: str | None) -> Detector:
        """The scan's detector, loaded once per process (a retry may name another than the worker's)."""
        if name not in self._detectors:
            self._detectors[name] = self._make_detector(name)
        return self._detectors[name]

    def _source_url(self, campaign_id: int) -> str:
        table = Campaign.__table__
        with get_engine(self.url).connect() as conn:
            return conn.execute(select(table.c.source_url).where(table.c.id == campaign_id)).scalar_one()
