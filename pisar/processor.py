"""Loading a model's processor, and describing preprocessing and generation for provenance.

Shared by ``submit`` (which records them) and the worker (which runs them). The reference model
pairs a DINOv2 image processor with a RoBERTa tokenizer, which its card loads through a
``TrOCRProcessor`` subclass; ``load_processor`` does the same when ``AutoProcessor`` cannot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pisar.errors import ConfigError
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


def describe_preprocessing(ref: ModelRef) -> dict[str, Any]:
    """The image-processor fields that define the model's input, from the model's own files, JSON-ready.

    Read from ``processor_config.json`` (its ``image_processor``) or ``preprocessor_config.json``
    without importing transformers, so the producer never loads torch (it stays ~100 MB).
    The worker loads the same files through transformers.
    """
    config = _image_processor_config(ref)
    described: dict[str, Any] = {"image_processor": config.get("image_processor_type", "(unnamed)"), "exif_transpose": True, "mode": "RGB"}
    for field in _PREPROCESSING_FIELDS:
        if config.get(field) is not None:
            value = config[field]
            described[field] = int(value) if field == "resample" else value
    return described


def check_model_files(ref: ModelRef) -> None:
    """Refuse at submit what no worker could load: not a VisionEncoderDecoder, no image processor, no tokenizer."""
    config = _json_file(ref, "config.json")
    if config is None or config.get("model_type") != "vision-encoder-decoder":
        kind = config.get("model_type") if config else None
        raise ConfigError(f"model {ref.source} is not a VisionEncoderDecoder model (config.json model_type: {kind!r})")
    _image_processor_config(ref)
    if not any(_model_file(ref, name) for name in _TOKENIZER_FILES):
        raise ConfigError(f"model {ref.source} has no tokenizer ({', '.join(_TOKENIZER_FILES)})")


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


def _image_processor_config(ref: ModelRef) -> dict[str, Any]:
    processor = _json_file(ref, "processor_config.json")
    if processor is not None and isinstance(processor.get("image_processor"), dict):
        return processor["image_processor"]
    preprocessor = _json_file(ref, "preprocessor_config.json")
    if preprocessor is None:
        raise ConfigError(f"model {ref.source} has no image processor (processor_config.json or preprocessor_config.json)")
    return preprocessor


def _json_file(ref: ModelRef, name: str) -> dict[str, Any] | None:
    path = _model_file(ref, name)
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model {ref.source}: {name} is not readable JSON: {exc}") from None


def _model_file(ref: ModelRef, name: str) -> Path | None:
    """A file of the model: in its folder, or from the hub cache at the pinned revision; None if it has none."""
    if ref.is_local:
        path = Path(ref.source) / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(ref.source, name, revision=ref.revision))
    except EntryNotFoundError:
        return None


def describe_generation(ref: ModelRef, overrides: dict[str, Any]) -> dict[str, Any]:
    """The effective generation settings: the model's ``generation_config.json`` with the campaign's overrides."""
    base = dict(_json_file(ref, "generation_config.json") or {})
    base.pop("transformers_version", None)
    return {"overrides": overrides, "effective": {**base, **overrides}}
