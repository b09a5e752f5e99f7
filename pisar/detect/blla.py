"""kraken's baseline segmenter (blla): Pisar's network (``blla_network.py``), kraken's post-processing.

The flow is kraken's ``blla.segment`` (kraken 7.1): the scan as RGB, resized to the network's
height (1,800 px) with LANCZOS, scaled to [0, 1] and inverted; the heatmap brought back to that
size; regions vectorised from their channels, baselines from the start/end separator and baseline
channels; each baseline's polygon grown on the Sobel edges of the scaled scan, bounded by the
other baselines and the regions it lies in; all scaled back to the scan; reading order by
``polygonal_reading_order``. kraken's ``kraken.lib.segmentation`` does each of those steps (it
imports neither torchvision nor lightning); only the network and the transforms are Pisar's.

The polygons cost most (about 19 of 27 CPU-seconds a page here) and each baseline's is
independent of the others', so ``polygon_workers`` processes grow them in parallel (the
network stays in this process, on the GPU where there is one).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pisar.detect.segmentation import DetectedLine, DetectedRegion, PageSegmentation, clamp
from pisar.errors import FatalError


def default_model() -> Path:
    """The ``blla.mlmodel`` inside the installed kraken wheel (no download at run time)."""
    import kraken

    path = Path(kraken.__file__).parent / "blla.mlmodel"
    if not path.is_file():
        raise FatalError(f"kraken {version('kraken')} holds no blla.mlmodel at {path}")
    return path


@dataclass
class _Loaded:
    network: Any
    spec: Any
    describe: str


_LOAD_LOCK = threading.Lock()


@cache
def _load(path: Path, device: str) -> _Loaded:
    """The network of ``path`` on ``device``, once per process."""
    from pisar.detect.blla_network import build_network, read_spec

    proto, spec = read_spec(path)
    network = build_network(proto, spec).to(device)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return _Loaded(network, spec, f"blla@kraken-{version('kraken')}:{path.name}:{digest}")


class BllaDetector:
    """Lines and regions of a page scan, as kraken's blla finds them."""

    name = "blla"

    def __init__(self, model: str | None = None, device: str = "cpu", polygon_workers: int = 1) -> None:
        self.path = Path(model) if model else default_model()
        self.device = device
        with _LOAD_LOCK:
            self._loaded = _load(self.path, device)
        self.polygon_workers = max(1, polygon_workers)
        self._pool: Executor | None = None
        self.timings: dict[str, float] = {}  # the last page's seconds: network (with its transforms), post-processing, polygons

    def describe(self) -> str:
        return self._loaded.describe

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def detect(self, image: Image.Image) -> PageSegmentation:
        import torch

        from pisar.detect.blla_network import heatmap

        spec = self._loaded.spec
        self.timings = {}
        started = time.perf_counter()
        width, height = image.size
        scaled = _scaled(image, spec.height, spec.channels)
        gray = np.asarray(scaled.convert("L"))
        pixels = torch.from_numpy(np.asarray(scaled, dtype=np.float32).copy()) / 255.0
        pixels = pixels.permute(2, 0, 1) if pixels.ndim == 3 else pixels.unsqueeze(0)
        pixels = pixels.max() - pixels  # kraken's networks see ink as high values
        heat = heatmap(self._loaded.network, pixels.to(self.device), gray.shape).cpu().numpy()
        scale = np.divide((width, height), heat.shape[:0:-1])
        network_done = time.perf_counter()
        found = _vectorised(heat, gray, scale, spec, (width, height), self.describe(), self._polygons)
        self.timings["network_s"] = network_done - started
        self.timings["postprocess_s"] = time.perf_counter() - network_done
        return found

    def _polygons(self, jobs: list[tuple[Any, ...]], im_feats: np.ndarray) -> list[Any]:
        """Each baseline's polygon (``None`` where kraken finds none), in parallel where there are workers.

        The edge map every job reads (18 MB a page) goes to the workers once, as a file in memory
        (``/dev/shm``) each maps, not pickled with each job (which made 2 workers slower than 1 here)."""
        started = time.perf_counter()
        try:
            if self.polygon_workers == 1 or len(jobs) < 2:
                return [_polygon(baseline, im_feats, others, topline) for baseline, others, topline in jobs]
            if self._pool is None:  # spawned: the parent may hold threads (a Celery worker does) and a CUDA context
                self._pool = ProcessPoolExecutor(self.polygon_workers, mp_context=get_context("spawn"))
            with tempfile.NamedTemporaryFile(prefix=f"pisar-edges-{uuid.uuid4().hex}-", suffix=".npy", dir=_SHARED_DIR) as held:
                np.save(held, im_feats)
                held.flush()
                return list(self._pool.map(_shared_polygon, [(held.name, *job) for job in jobs]))
        finally:
            self.timings["polygons_s"] = time.perf_counter() - started


def _scaled(image: Image.Image, height: int, channels: int) -> Image.Image:
    """The scan as the network takes it: RGB (or L), ``height`` px high, its aspect ratio kept."""
    image = image.convert("RGB" if channels == 3 else "L")
    if height <= 0:
        return image
    width, old_height = image.size
    return image.resize((max(1, int(width * height / old_height)), height), Image.Resampling.LANCZOS)


_SHARED_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory, not disk, where there is one
_MAPPED: dict[str, np.ndarray] = {}  # in a pool worker: the page's edge map, mapped once per page


def _shared_polygon(job: tuple[Any, ...]) -> Any:
    """``_polygon`` in a pool worker, the edge map mapped from the file the parent wrote."""
    path, baseline, others, topline = job
    if path not in _MAPPED:
        _MAPPED.clear()  # the previous page's
        _MAPPED[path] = np.load(path, mmap_mode="r")
    return _polygon(baseline, _MAPPED[path], others, topline)


def _polygon(baseline: Any, im_feats: np.ndarray, others: list[Any], topline: bool) -> Any:
    """One baseline's bounding polygon at the network's scale (kraken's ``calculate_polygonal_environment``)."""
    from kraken.lib.segmentation import calculate_polygonal_environment

    return calculate_polygonal_environment(baselines=[baseline], im_feats=im_feats, suppl_obj=others, topline=topline)[0]


def _vectorised(
    heat: np.ndarray,
    gray: np.ndarray,
    scale: np.ndarray,
    spec: Any,
    size: tuple[int, int],
    detector: str,
    polygons: Any,
) -> PageSegmentation:
    """Regions, baselines and polygons from the heatmap, scaled to the scan, in reading order."""
    import shapely.geometry as geom
    from kraken.containers import BaselineLine, Region
    from kraken.lib.segmentation import (
        is_in_region,
        polygonal_reading_order,
        scale_polygonal_lines,
        scale_regions,
        vectorize_lines,
        vectorize_regions,
    )
    from scipy.ndimage import gaussian_filter
    from skimage.filters import sobel

    classes = spec.class_mapping
    width, height = size
    found: list[tuple[str, Any]] = []  # (kind, boundary at the scan's scale)
    for kind, index in classes.get("regions", {}).items():
        found.extend((kind, boundary) for boundary in scale_regions(vectorize_regions(heat[index]), scale))
    at_net_scale = scale_regions([boundary for _, boundary in found], 1 / scale)
    start, end = classes["aux"]["_start_separator"], classes["aux"]["_end_separator"]
    baselines = [
        baseline
        for index in classes.get("baselines", {}).values()
        for baseline in vectorize_lines(heat[(start, end, index), :, :], text_direction="horizontal")
    ]
    im_feats = gaussian_filter(sobel(gray), 0.5)
    region_shapes = [geom.Polygon(boundary) for boundary in at_net_scale]
    jobs = []
    for i, baseline in enumerate(baselines):
        others = baselines[:i] + baselines[i + 1 :]
        line = geom.LineString(baseline)
        others += [at_net_scale[r] for r, shape in enumerate(region_shapes) if is_in_region(line, shape)]
        jobs.append((baseline, others, bool(spec.topline)))
    kept = [(baseline, polygon) for baseline, polygon in zip(baselines, polygons(jobs, im_feats), strict=True) if polygon is not None]
    scaled = scale_polygonal_lines(kept, scale)

    regions = [Region(id=f"r{i}", boundary=boundary, tags={"type": [{"type": kind}]}) for i, (kind, boundary) in enumerate(found, 1)]
    scan_shapes = {region.id: geom.Polygon(region.boundary) for region in regions}
    lines = []
    for i, (baseline, boundary) in enumerate(scaled):
        line = geom.LineString(baseline)
        inside = [region_id for region_id, shape in scan_shapes.items() if is_in_region(line, shape)]
        lines.append(BaselineLine(id=f"_{i}", baseline=baseline, boundary=boundary, regions=inside))
    order = polygonal_reading_order(lines=lines, regions=regions, text_direction="lr") if lines else []
    detected = tuple(
        DetectedLine(
            f"l{n}",
            lines[i].regions[0] if lines[i].regions else None,
            clamp(lines[i].boundary, width, height),
            clamp(lines[i].baseline, width, height),
        )
        for n, i in enumerate(order, 1)
    )
    kinds = dict(zip((region.id for region in regions), (kind for kind, _ in found), strict=True))
    return PageSegmentation(
        width,
        height,
        tuple(DetectedRegion(region.id, kinds[region.id], clamp(region.boundary, width, height)) for region in regions),
        detected,
        detector,
    )
