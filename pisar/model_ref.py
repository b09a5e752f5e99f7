"""Naming a model: a local folder (recorded by content hash) or a hub id at a pinned revision.

Kept free of torch so ``pisar submit`` can resolve and record a model without loading it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pisar.errors import FatalError, NotFound

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelRef:
    """What to pass to ``from_pretrained``: a folder, or a hub id plus revision."""

    source: str
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return self.revision is None or self.revision.startswith("sha256:")

    @classmethod
    def of(cls, model_id: str, revision: str | None) -> ModelRef:
        """The ref a campaign or shard row records, where no revision is stored as ``""``."""
        return cls(model_id, revision or None)

    def __str__(self) -> str:
        return self.source if self.revision is None else f"{self.source}@{self.revision}"


def parse(text: str) -> ModelRef:
    """``DIR``, ``HUB_ID`` or ``HUB_ID@REVISION``; an existing folder always wins."""
    if Path(text).expanduser().exists():
        return ModelRef(str(Path(text).expanduser().resolve()))
    source, _, revision = text.rpartition("@") if "@" in text else (text, "", "")
    if _HUB_ID.match(source):
        return ModelRef(source, revision or None)
    raise NotFound(f"model folder {text} does not exist")


def folder_digest(folder: Path) -> str:
    """sha256 over every non-hidden file's relative path and bytes: a folder's identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def resolve(ref: ModelRef) -> ModelRef:
    """Pin a reference: folders get their content hash, hub ids the commit their revision names."""
    path = Path(ref.source)
    if path.is_absolute() or path.exists():
        if not (path / "config.json").is_file():
            raise NotFound(f"model folder {ref.source} has no config.json: not a saved model")
        return ModelRef(str(path), folder_digest(path))
    return ModelRef(ref.source, _resolve_hub_revision(ref.source, ref.revision))


def _resolve_hub_revision(repo_id: str, revision: str | None) -> str:
    """The commit sha a hub revision points at (from the local cache when offline)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["config.json"]))
    except Exception as exc:  # the hub client raises many types; the message is what matters
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotFound(f"model {repo_id}@{revision or 'main'} is not a folder and the hub could not resolve it: {reason}") from None
    return snapshot.name


def verify_folder(ref: ModelRef) -> None:
    """Refuse to run a campaign on a folder whose content changed since it was submitted.

    ``FatalError``: this node's copy is not the campaign's model (edited, half-copied, gone), so
    the node gives its shard back rather than failing it; another node's copy may be right.
    """
    if ref.revision and ref.revision.startswith("sha256:"):
        folder = Path(ref.source)
        if not folder.is_dir():
            raise FatalError(f"model folder {ref.source} is not on this node")
        actual = folder_digest(folder)
        if actual != ref.revision:
            raise FatalError(f"model folder {ref.source} changed since submit ({actual[:19]}... != {ref.revision[:19]}...)")


def load_target(ref: ModelRef) -> tuple[str, str | None]:
    """(name_or_path, revision) for ``from_pretrained``: folders carry no hub revision."""
    return ref.source, None if ref.is_local else ref.revision
