"""The model card's loop, one image at a time in fp32, as the parity reference; and a tie check.

Readings are kept on disk (``build/reference/<model digest>/<image sha256>.json``), so the fault
scenarios, run after the rest of the suite, reuse what the end-to-end test read with the same
model instead of reading the same 500 lines again; a model or an image that differs is a new key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from pisar.model_ref import folder_digest
from tests.helpers.paths import BUILD

if TYPE_CHECKING:
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

CACHE = BUILD / "reference"


@dataclass
class Reference:
    text: str
    token_ids: list[int]


class CardLoop:
    """processor(images=...) -> model.generate -> processor.batch_decode, exactly as a model card does it."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.cache = CACHE / folder_digest(model_dir).removeprefix("sha256:")

    @cached_property
    def processor(self) -> TrOCRProcessor:  # loaded on the first reading that is not on disk
        from transformers import TrOCRProcessor

        return TrOCRProcessor.from_pretrained(self.model_dir)

    @cached_property
    def model(self) -> VisionEncoderDecoderModel:
        from transformers import VisionEncoderDecoderModel

        return VisionEncoderDecoderModel.from_pretrained(self.model_dir).eval()

    def read(self, path: Path) -> Reference:
        """The card loop's reading of ``path``, from the disk cache when this model read these bytes before."""
        kept = self.cache / f"{hashlib.sha256(path.read_bytes()).hexdigest()}.json"
        if kept.is_file():
            return Reference(**json.loads(kept.read_text(encoding="utf-8")))
        reading = self._read(path)
        kept.parent.mkdir(parents=True, exist_ok=True)
        partial = kept.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(asdict(reading), ensure_ascii=False), encoding="utf-8")
        partial.replace(kept)  # whole or not at all, whichever process writes it first
        return reading

    @torch.inference_mode()
    def _read(self, path: Path) -> Reference:
        image = Image.open(path).convert("RGB")
        pixel_values = self.processor(images=image, return_tensors="pt").pixel_values
        generated_ids = self.model.generate(pixel_values)
        text = self.processor.batch_decode(generated_ids, skip_special_tokens=True)[0]
        return Reference(text, generated_ids[0].tolist())

    @torch.inference_mode()
    def smallest_margin(self, path: Path, token_ids: list[int]) -> float:
        """Smallest gap between the top two log-probs along the greedy path, relative to the step's largest logit.

        fp32 sums taken in another order (a batch of 16 instead of 1) differ in the last bits, and
        through a random model's large activations that grows with the logits' scale: about 5e-5 of
        it on this machine. A flip where the top two are closer than 1e-4 of the scale is such a tie.
        """
        image = Image.open(path).convert("RGB")
        pixel_values = self.processor(images=image, return_tensors="pt").pixel_values
        decoder_input = torch.tensor([token_ids[:-1]])
        logits = self.model(pixel_values=pixel_values, decoder_input_ids=decoder_input).logits[0].float()
        top2 = torch.log_softmax(logits, dim=-1).topk(2, dim=-1).values
        scale = logits.abs().amax(dim=-1).clamp(min=1.0)
        return float(((top2[:, 0] - top2[:, 1]) / scale).min())


PARITY_TIE = 1e-4  # a flipped token's top-2 log-probs were this close, relative to the logits' scale
MAX_TIE_SHARE = 0.005


def assert_same_texts(card: CardLoop, expected: dict[str, Reference], got: dict[str, str | None], paths: dict[str, Path]) -> int:
    """``got`` reads every key of ``expected`` alike, near ties excepted (and bounded); returns the tie count.

    Batches of different sizes sum in different orders, so fp32 logits differ in the last bits; a
    greedy step whose top two tokens are closer than that may flip. Anything else is a real difference.
    """
    mismatches = [(key, card.smallest_margin(paths[key], ref.token_ids)) for key, ref in expected.items() if got.get(key) != ref.text]
    assert all(margin < PARITY_TIE for _, margin in mismatches), mismatches
    assert len(mismatches) <= MAX_TIE_SHARE * len(expected), mismatches
    return len(mismatches)
