"""The model card's loop, one image at a time in fp32, as the parity reference; and a tie check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image


@dataclass
class Reference:
    text: str
    token_ids: list[int]


class CardLoop:
    """processor(images=...) -> model.generate -> processor.batch_decode, exactly as a model card does it."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import TrOCRProcessor, VisionEncoderDecoderModel

        self.processor = TrOCRProcessor.from_pretrained(model_dir)
        self.model = VisionEncoderDecoderModel.from_pretrained(model_dir).eval()

    @torch.inference_mode()
    def read(self, path: Path) -> Reference:
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
