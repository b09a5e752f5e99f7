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
from pathlib import Path

ALPHABET = "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдеёжзийклмнопрстуфхцчшщъыьэюяѢѣІіѲѳѴѵ0123456789.,;:!?-—()«»\"' "
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
INPUT_SIZE = {"height": 182, "width": 1022}


def read_texts(folders: Iterable[Path]) -> list[str]:
    """Every ``*.gt.txt`` transcription under the folders."""
    return [p.read_text(encoding="utf-8").strip() for folder in folders for p in sorted(folder.rglob("*.gt.txt"))]


def build_tokenizer(texts: list[str], vocab_size: int):  # noqa: ANN201 - PreTrainedTokenizerFast
    """A BPE tokenizer over characters (no byte fallback, so every token decodes to text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=list(ALPHABET))
    tokenizer.train_from_iterator([*texts, ALPHABET], trainer)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def build_random_model(
    out_dir: Path,
    texts: list[str],
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 600,
    max_new_tokens: int = 24,
    min_new_tokens: int = 4,
    init_std: float = 1.0,
) -> Path:
    """Build, save (``save_pretrained``) and return a random model folder loadable like any other.

    ``init_std`` is large so the random decoder's choices depend on the image rather than
    collapsing to one repeated token, which keeps parity tests meaningful.
    """
    import torch
    from transformers import (
        BitImageProcessor,
        Dinov2Config,
        GenerationConfig,
        TrOCRConfig,
        TrOCRProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = build_tokenizer(texts, vocab_size)
    image_processor = BitImageProcessor(
        size=dict(INPUT_SIZE),
        do_center_crop=False,
        crop_size=None,
        resample=3,  # bicubic
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    encoder = Dinov2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=2, patch_size=14, image_size=182
    )
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.bos_token_id,
    }
    decoder = TrOCRConfig(
        vocab_size=len(tokenizer),
        d_model=hidden,
        decoder_layers=layers,
        decoder_attention_heads=heads,
        decoder_ffn_dim=hidden * 2,
        max_position_embeddings=max(64, max_new_tokens + 8),
        **ids,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    for name, value in ids.items():
        setattr(config, name, value)
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, init_std, generator=generator)
    model.generation_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        suppress_tokens=[tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id],
        **ids,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    TrOCRProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
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
