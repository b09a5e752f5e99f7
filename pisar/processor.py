"""Loading a model's processor, and describing preprocessing and generation for provenance.

Shared by ``submit`` (which records them) and the worker (which runs them). The reference model
pairs a DINOv2 image processor with a RoBERTa tokenizer, which its card loads through a
``TrOCRProcessor`` subclass; ``load_processor`` does the same when ``AutoProcessor`` cannot.
"""

from __future__ import annotations

from typing import Any

from pisar.model_ref import ModelRef, load_target

#: Image-processor fields that decide what the model sees.
_PREPROCESSING_FIELDS = (
    "size",
    "resample",
    "do_resize",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


#: Image processors run on PIL everywhere. transformers picks a torchvision backend whenever torchvision
#: is installed (GPU images usually have it), and its antialiased tensor resize gives other pixels than
#: PIL's: the same model would read differently depending on what else the host has installed.
IMAGE_BACKEND = "pil"


def load_processor(ref: ModelRef, backend: str | None = IMAGE_BACKEND) -> Any:
    """The model's processor: ``AutoProcessor`` when it works, else image processor + tokenizer.

    ``backend=None`` leaves the image backend to transformers (what plain HF code gets).
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, TrOCRProcessor

    name, revision = load_target(ref)
    chosen = {"backend": backend} if backend else {}
    try:
        processor = AutoProcessor.from_pretrained(name, revision=revision, **chosen)
        if hasattr(processor, "image_processor") and hasattr(processor, "tokenizer"):
            return processor
    except (OSError, ValueError, TypeError, KeyError):
        pass

    class LineProcessor(TrOCRProcessor):
        """A TrOCR processor that accepts any image processor (the reference card's approach)."""

        def __init__(self, image_processor: Any, tokenizer: Any) -> None:
            self.image_processor = image_processor
            self.tokenizer = tokenizer
            self.current_processor = image_processor
            self.chat_template = None

    return LineProcessor(
        image_processor=AutoImageProcessor.from_pretrained(name, revision=revision, **chosen),
        tokenizer=AutoTokenizer.from_pretrained(name, revision=revision),
    )


def describe_preprocessing(processor: Any) -> dict[str, Any]:
    """The fields of the image processor that define the model's input, JSON-ready."""
    image_processor = processor.image_processor
    config = image_processor.to_dict()
    described: dict[str, Any] = {"image_processor": type(image_processor).__name__, "exif_transpose": True, "mode": "RGB"}
    for field in _PREPROCESSING_FIELDS:
        if field in config and config[field] is not None:
            value = config[field]
            described[field] = int(value) if field == "resample" else value
    return described


def generation_overrides(max_new_tokens: int | None, num_beams: int) -> dict[str, Any]:
    """What a campaign changes in the model's own generation config (greedy by default)."""
    overrides: dict[str, Any] = {"num_beams": num_beams, "do_sample": False}
    if max_new_tokens is not None:
        overrides["max_new_tokens"] = max_new_tokens
    return overrides


def describe_generation(ref: ModelRef, overrides: dict[str, Any]) -> dict[str, Any]:
    """The effective generation settings: the model's config with the campaign's overrides."""
    from transformers import GenerationConfig

    name, revision = load_target(ref)
    try:
        base = GenerationConfig.from_pretrained(name, revision=revision).to_diff_dict()
    except OSError:
        base = {}
    base.pop("transformers_version", None)
    return {"overrides": overrides, "effective": {**base, **overrides}}
