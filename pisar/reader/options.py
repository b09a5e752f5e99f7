"""What a reader is asked to do beyond its model: generation options per campaign, decode options per node.

``GenerationOptions`` belong to a campaign: ``pisar submit`` stores them (as the campaign's
``generation.overrides``, the fields set here and nothing else, so the model's own
``generation_config.json`` decides the rest), every shard reads with them, and every batch hands
them back in its provenance. ``DecodeOptions`` belong to a node (its settings): which decode loop
and encoder variants the torch back-end uses; they change how fast a line is read, never what.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pisar.settings import Settings

_NAMED = ("num_beams", "do_sample", "max_new_tokens")


@dataclass(frozen=True)
class GenerationOptions:
    """Overrides of the model's generation config; ``None`` leaves the model's own value.

    ``extra`` holds any further ``generation_config`` field by name (``no_repeat_ngram_size``,
    ``suppress_tokens``...): Pisar's greedy loop follows the ones it knows, generate() the rest.
    """

    num_beams: int | None = None
    do_sample: bool | None = None
    max_new_tokens: int | None = None
    extra: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def greedy(cls, max_new_tokens: int | None = None, num_beams: int = 1) -> GenerationOptions:
        """A campaign's options as ``pisar submit`` sets them: no sampling, ``num_beams`` beams (1: greedy)."""
        return cls(num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens)

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None) -> GenerationOptions:
        """The options a stored ``overrides`` mapping describes (a campaign's ``generation["overrides"]``)."""
        given = dict(overrides or {})
        named = {name: given.pop(name) for name in _NAMED if name in given}
        return cls(**named, extra=tuple(given.items()))

    @classmethod
    def of_campaign(cls, generation: Mapping[str, Any] | None) -> GenerationOptions:
        """The options stored with a campaign (``Campaign.generation``)."""
        return cls.from_overrides((generation or {}).get("overrides"))

    def overrides(self) -> dict[str, Any]:
        """The set fields as ``generate()`` keyword arguments, in a stable order: the stored form."""
        named = {name: getattr(self, name) for name in _NAMED if getattr(self, name) is not None}
        return {**named, **dict(self.extra)}

    def budget_key(self) -> tuple[int | None, int | None]:
        """What a batch's memory depends on: its token budget and beam count."""
        return self.max_new_tokens, self.num_beams


@dataclass(frozen=True)
class DecodeOptions:
    """``decoder``: auto (Pisar's greedy loop where it serves) or generate; ``graphs``: auto, on or off
    (``decode_steps.py``); ``compile_encoder`` and ``encoder_fp8``: the encoder variants
    (``encoder_variants.py``); ``threads``: torch's intra-op threads on a CPU (unset: torch's default)."""

    decoder: str = "auto"
    graphs: str = "auto"
    compile_encoder: bool = False
    encoder_fp8: bool = False
    threads: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeOptions:
        return cls(settings.decoder, settings.decode_graphs, settings.compile_encoder, settings.encoder_fp8, settings.torch_threads)
