"""A small random-weight model of the reference architecture, built offline.

DINOv2 encoder (patch 14, 182 x 1022 input) + TrOCR decoder + a BPE tokenizer trained on the
given texts plus the Russian alphabet with pre-reform letters. Tests and the quick start use it
because no model hub is reachable here; its output is deterministic noise, not reading.
Its generation config forces a few new tokens (``min_new_tokens``) so every text is non-empty.

    python -m pisar.random_model OUT_DIR [TEXT_FOLDER ...]
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is imported when a model is built, not when presets are read
    from transformers import PreTrainedTokenizerFast, TrOCRProcessor, VisionEncoderDecoderModel

ALPHABET = "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдеёжзийклмнопрстуфхцчшщъыьэюяѢѣІіѲѳѴѵ0123456789.,;:!?-—()«»\"' "
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
INPUT_SIZE = {"height": 182, "width": 1022}


def read_texts(folders: Iterable[Path]) -> list[str]:
    """Every ``*.gt.txt`` transcription under the folders."""
    return [p.read_text(encoding="utf-8").strip() for folder in folders for p in sorted(folder.rglob("*.gt.txt"))]


def build_tokenizer(texts: list[str], vocab_size: int, byte_level: bool = False) -> PreTrainedTokenizerFast:
    """A BPE tokenizer over characters (no byte fallback, so every token decodes to text), or with
    ``byte_level`` over bytes, as the RoBERTa vocabulary of TrOCR decoders is: every one of the 256
    bytes is a token, so a model can emit NUL, control bytes and invalid UTF-8.

    ``vocab_size`` 0 (or anything below the alphabet) learns no merges: one token per letter (or byte).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    if byte_level:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        alphabet = list(ALPHABET)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet)
    tokenizer.train_from_iterator([*texts, ALPHABET], trainer)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a new model: encoder family and size, input size and patch, decoder, tokenizer.

    ``dinov2`` matches the reference architecture (square patches, 182 x 1022 input); ``vit`` with
    a full-height patch reads a line as a sequence of columns, which trains fast on a CPU.
    """

    encoder: str = "dinov2"
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    decoder_layers: int = 2
    ffn_ratio: int = 4
    height: int = INPUT_SIZE["height"]
    width: int = INPUT_SIZE["width"]
    patch: tuple[int, int] = (14, 14)
    vocab_size: int = 600
    model_vocab: int | None = None  # decoder vocabulary when larger than the tokenizer's (a stand-in's output layer)
    max_new_tokens: int = 24
    min_new_tokens: int = 0
    init_std: float | None = None  # None keeps transformers' initialisation
    image_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    image_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    byte_level: bool = False  # a byte-level BPE vocabulary (RoBERTa's kind): any byte can be emitted
    loud_characters: str = ""  # characters (one token each) whose output rows are scaled up, so the noise emits them often


PRESETS: dict[str, ModelSpec] = {
    # The test and quick-start model: reference architecture, tiny, with large random weights so
    # its (meaningless) output depends on the image, and a forced minimum length.
    "test": ModelSpec(init_std=1.0, min_new_tokens=4, ffn_ratio=2),
    # The same over a byte-level vocabulary, as TrOCR decoders have: its noise holds NUL and control bytes.
    "test-bytes": ModelSpec(init_std=1.0, min_new_tokens=4, ffn_ratio=2, byte_level=True, loud_characters="\x00\x1b"),
    # A small CPU-trainable line reader: ViT over 8-px columns of a 40 x 1024 line, TrOCR decoder.
    "small": ModelSpec(
        encoder="vit",
        hidden=192,
        layers=4,
        heads=4,
        decoder_layers=2,
        height=40,
        width=1024,
        patch=(40, 8),
        vocab_size=0,  # letters only: a small model learns single letters faster than BPE merges
        max_new_tokens=160,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
    ),
    # Benchmark stand-ins of the reference model (Kansallisarkisto/cyrillic-large-handwritten): DINOv2
    # encoder over 13 x 73 patches of a 182 x 1022 line, TrOCR decoder with a RoBERTa-sized vocabulary.
    "bench-large": ModelSpec(
        hidden=1024, layers=24, heads=16, decoder_layers=12, vocab_size=8000, model_vocab=50265, max_new_tokens=40, min_new_tokens=40
    ),
    "bench-small": ModelSpec(
        hidden=64, layers=4, heads=4, decoder_layers=2, vocab_size=8000, model_vocab=50265, max_new_tokens=40, min_new_tokens=40
    ),
}


def new_model(texts: list[str], spec: ModelSpec, seed: int = 0) -> tuple[VisionEncoderDecoderModel, TrOCRProcessor]:
    """A freshly initialised VisionEncoderDecoderModel and its processor for ``spec``."""
    import torch
    from transformers import (
        BitImageProcessor,
        Dinov2Config,
        GenerationConfig,
        TrOCRConfig,
        TrOCRProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    tokenizer = build_tokenizer(texts, spec.vocab_size, spec.byte_level)
    size = {"height": spec.height, "width": spec.width}
    common = {"image_mean": list(spec.image_mean), "image_std": list(spec.image_std), "resample": 3}  # bicubic
    if spec.encoder == "dinov2":
        if spec.patch[0] != spec.patch[1]:
            raise ValueError("DINOv2 encoders take square patches")
        image_processor = BitImageProcessor(size=size, do_center_crop=False, crop_size=None, **common)
        encoder = Dinov2Config(
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            mlp_ratio=spec.ffn_ratio,
            patch_size=spec.patch[0],
            image_size=spec.height,
        )
    elif spec.encoder == "vit":
        image_processor = ViTImageProcessor(size=size, **common)
        encoder = ViTConfig(
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            intermediate_size=spec.hidden * spec.ffn_ratio,
            image_size=(spec.height, spec.width),
            patch_size=spec.patch,
        )
    else:
        raise ValueError(f"unknown encoder family {spec.encoder!r}: dinov2 or vit")
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.bos_token_id,
    }
    decoder = TrOCRConfig(
        vocab_size=max(len(tokenizer), spec.model_vocab or 0),
        d_model=spec.hidden,
        decoder_layers=spec.decoder_layers,
        decoder_attention_heads=spec.heads,
        decoder_ffn_dim=spec.hidden * spec.ffn_ratio,
        max_position_embeddings=max(64, spec.max_new_tokens + 8),
        **ids,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    for name, value in ids.items():
        setattr(config, name, value)
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config)
    if spec.init_std is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() > 1:
                    parameter.normal_(0.0, spec.init_std, generator=generator)
    rows = model.decoder.get_output_embeddings().weight
    with torch.no_grad():
        for character in spec.loud_characters:
            [token] = tokenizer.encode(character, add_special_tokens=False)
            rows[token] *= 3.0
    model.generation_config = GenerationConfig(
        max_new_tokens=spec.max_new_tokens,
        min_new_tokens=spec.min_new_tokens or None,
        suppress_tokens=[tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id],
        **ids,
    )
    return model, TrOCRProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_random_model(out_dir: Path, texts: list[str], *, seed: int = 0, preset: str = "test") -> Path:
    """Build, save (``save_pretrained``) and return a random model folder loadable like any other."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model, processor = new_model(texts, PRESETS[preset], seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(
        "# Random-weight Pisar test model\n\nDINOv2 encoder + TrOCR decoder with random weights, built by "
        "`python -m pisar.random_model`. It does not read: its text is deterministic noise.\n",
        encoding="utf-8",
    )
    return out_dir


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    folders = [Path(a) for a in argv[1:]] or [Path(__file__).resolve().parents[1] / "samples"]
    build_random_model(out, read_texts(folders))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
