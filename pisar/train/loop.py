"""The training loop: seeded, resumable from checkpoints, validated on the held-out split.

Each step draws its batch from ``random.Random(seed, step)``, so a resumed run sees exactly the
batches an uninterrupted one would have, without storing any data-order state.
"""

from __future__ import annotations

import json
import math
import platform
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch

from pisar.groundtruth import normalizer
from pisar.settings import Settings
from pisar.train.alignment import CTCHead, init_sinusoidal_positions
from pisar.train.data import Sample, SyntheticLines, augment, load_pairs, reshuffled_lines, split

CHECKPOINT = "checkpoint"
STATE_FILE = "trainer_state.pt"


@dataclass
class TrainConfig:
    """Everything that defines a training run; written into the model card."""

    output: Path
    sources: list[str]
    base_model: str | None = None
    preset: str = "small"
    synthetic_text: Path | None = None
    synthetic_from_train: bool = False
    synthetic_share: float = 0.5
    span_share: float = 0.5
    ctc_weight: float | None = None  # None: 0.5 for a new model, 0 when fine-tuning (see alignment.py)
    augment: bool = False
    normalize: str = "none"
    val_share: float = 0.1
    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 5e-4
    warmup_steps: int = 200
    eval_every: int = 250
    save_every: int = 250
    max_val_lines: int = 200
    seed: int = 0
    save_dtype: str = "float32"
    resume: bool = False


@dataclass
class TrainResult:
    """What the run did: steps, time, and validation CER over time."""

    steps: int
    seconds: float
    train_lines: int
    val_lines: int
    history: list[dict[str, float | None]] = field(default_factory=list)

    @property
    def val_cer(self) -> float | None:
        return self.history[-1]["val_cer"] if self.history else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def labels_for(tokenizer: Any, texts: list[str], start_id: int, max_tokens: int) -> torch.Tensor:
    """Token ids to predict after the decoder start token, padded with -100 (ignored by the loss)."""
    rows = []
    for ids in tokenizer(texts).input_ids:
        if ids and ids[0] == start_id:
            ids = ids[1:]  # the model prepends the start token itself when shifting labels
        rows.append(ids[:max_tokens])
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-100] * (width - len(r)) for r in rows])


def validation_cer(model: Any, processor: Any, samples: list[Sample], batch_size: int = 32) -> float:
    """Corpus CER (jiwer defaults) of greedy decoding on the held-out lines."""
    model.eval()
    hypotheses: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            pixels = processor(images=[s.image for s in batch], return_tensors="pt").pixel_values
            hypotheses.extend(processor.batch_decode(model.generate(pixel_values=pixels), skip_special_tokens=True))
    model.train()
    return float(jiwer.cer([s.text for s in samples], hypotheses))


class Trainer:
    """Owns the model, optimizer and data of one run."""

    def __init__(self, config: TrainConfig, settings: Settings) -> None:
        from pisar.random_model import PRESETS, new_model

        self.config = config
        seed_everything(config.seed)
        normalize = normalizer(config.normalize)
        samples, self.skipped = load_pairs(config.sources, settings, normalize)
        self.train_set, val = split(samples, config.val_share)
        self.val_set = sorted(val, key=lambda s: s.key)[: config.max_val_lines]
        self.synthetic = None
        texts: list[str] = []
        if config.synthetic_text is not None:
            texts += [normalize(t.strip()) for t in config.synthetic_text.read_text(encoding="utf-8").splitlines() if t.strip()]
        if config.synthetic_from_train:
            texts += reshuffled_lines([s.text for s in self.train_set], count=20 * len(self.train_set), seed=config.seed)
        if texts:
            self.synthetic = SyntheticLines(texts, span_share=config.span_share)
        checkpoint = config.output / CHECKPOINT
        self.base_revision: str | None = None  # what --from resolved to (content hash or hub commit), for the card
        if config.resume and (checkpoint / STATE_FILE).exists():
            self.model, self.processor, _ = self._load(str(checkpoint))
        elif config.base_model:
            self.model, self.processor, self.base_revision = self._load(config.base_model)
        else:
            texts = [s.text for s in self.train_set] + (self.synthetic.texts if self.synthetic else [])
            self.model, self.processor = new_model(texts, PRESETS[config.preset], config.seed)
            init_sinusoidal_positions(self.model)
        if self.synthetic is not None:
            size = self.processor.image_processor.size
            self.synthetic.aspect = size["width"] / size["height"] if "width" in size else None
        self.model.train()
        self.ctc_weight = config.ctc_weight if config.ctc_weight is not None else (0.0 if config.base_model else 0.5)
        self.ctc = CTCHead(self.model.config.encoder, len(self.processor.tokenizer)) if self.ctc_weight > 0 else None
        parameters = list(self.model.parameters()) + (list(self.ctc.parameters()) if self.ctc else [])
        self.optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.01)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.history: list[dict[str, float | None]] = []
        self.seconds = 0.0
        if config.resume and (checkpoint / STATE_FILE).exists():
            self._restore(checkpoint / STATE_FILE)

    @staticmethod
    def _load(name: str) -> tuple[Any, Any, str | None]:
        from transformers import VisionEncoderDecoderModel

        from pisar import model_ref
        from pisar.processor import load_processor

        ref = model_ref.resolve(model_ref.parse(name))
        target, revision = model_ref.load_target(ref)
        model = VisionEncoderDecoderModel.from_pretrained(target, revision=revision, dtype=torch.float32)
        return model, load_processor(ref), ref.revision

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine decay to 5% of the peak."""
        warmup = max(1, self.config.warmup_steps)
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.config.steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    def batch(self, step: int) -> tuple[list[str], list[Any]]:
        """The batch of ``step``: a mix of real and synthetic lines, fixed by (seed, step)."""
        rng = random.Random(self.config.seed * 1_000_003 + step)
        texts, images = [], []
        for _ in range(self.config.batch_size):
            if self.synthetic is not None and rng.random() < self.config.synthetic_share:
                text, image = self.synthetic.sample(rng)
            else:
                sample = rng.choice(self.train_set)
                text, image = sample.text, augment(sample.image, rng) if self.config.augment else sample.image
            texts.append(text)
            images.append(image)
        return texts, images

    def train_step(self, step: int) -> float:
        """One optimizer step; returns the decoder's loss (the CTC loss only steers training)."""
        texts, images = self.batch(step)
        pixels = self.processor(images=images, return_tensors="pt").pixel_values
        config = self.model.generation_config
        labels = labels_for(self.processor.tokenizer, texts, self.model.config.decoder_start_token_id, config.max_new_tokens or 256)
        output = self.model(pixel_values=pixels, labels=labels)
        loss = output.loss
        if self.ctc is not None:
            ctc = self.ctc.loss(output.encoder_last_hidden_state, tuple(pixels.shape[-2:]), labels, {self.model.config.eos_token_id})
            loss = (1 - self.ctc_weight) * loss + self.ctc_weight * ctc
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(output.loss.detach())

    def evaluate(self, loss: float) -> dict[str, float | None]:
        record = {
            "step": self.step,
            "loss": loss,
            "val_cer": validation_cer(self.model, self.processor, self.val_set) if self.val_set else None,  # --val-share 0
            "seconds": self.seconds,
        }
        self.history.append(record)
        return record

    def save_checkpoint(self) -> None:
        folder = self.config.output / CHECKPOINT
        self.model.save_pretrained(folder)
        self.processor.save_pretrained(folder)
        state = {
            "step": self.step,
            "seconds": self.seconds,
            "history": self.history,
            "base_revision": self.base_revision,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "ctc_head": self.ctc.state_dict() if self.ctc else None,
        }
        torch.save(state, folder / STATE_FILE)

    def _restore(self, path: Path) -> None:
        state = torch.load(path, weights_only=False)
        if self.ctc is not None and state.get("ctc_head") is not None:
            self.ctc.load_state_dict(state["ctc_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.seconds, self.history = state["step"], state["seconds"], state["history"]
        self.base_revision = state["base_revision"]

    def save_model(self, result: TrainResult) -> None:
        """The final folder: weights (optionally fp16), processor, model card, training.json."""
        out = self.config.output
        model = self.model.to(torch.float16) if self.config.save_dtype == "float16" else self.model
        model.save_pretrained(out)
        self.processor.save_pretrained(out)
        summary = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.config).items()},
            "command": " ".join(shlex.quote(a) for a in sys.argv),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or platform.platform()}",
            "torch": torch.__version__,
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
            "train_lines": result.train_lines,
            "val_lines": result.val_lines,
            "skipped_files": self.skipped,
            "val_cer": result.val_cer,
            "history": result.history,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "base_revision": self.base_revision,
            "ctc_weight": self.ctc_weight,
        }
        (out / "training.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
        (out / "README.md").write_text(model_card(summary), encoding="utf-8")


def synthetic_source(config: dict[str, Any]) -> str:
    sources = [str(config["synthetic_text"])] if config["synthetic_text"] else []
    if config["synthetic_from_train"]:
        sources.append("training-split texts and reshuffles of their words, rendered in DejaVu faces")
    return "; ".join(sources) or "none"


def start_description(config: dict[str, Any], base_revision: str | None) -> str:
    if not config["base_model"]:
        return f"new model, preset {config['preset']}"
    return f"{config['base_model']} @ {base_revision}" if base_revision else config["base_model"]


def model_card(summary: dict[str, Any]) -> str:
    """A short model card: data, normalization, command, time, validation CER."""
    config = summary["config"]
    cer = summary["val_cer"]
    return "\n".join(
        [
            "# Pisar line-recognition model",
            "",
            "A VisionEncoderDecoderModel (TrOCR-style) trained with `pisar train`.",
            "",
            f"- Data: {', '.join(config['sources'])} ({summary['train_lines']} training lines; {summary['val_lines']} held out by key hash, share {config['val_share']})",
            f"- Synthetic lines: {synthetic_source(config)} (share {config['synthetic_share']})",
            f"- Start: {start_description(config, summary['base_revision'])}",
            f"- Label normalization: {config['normalize']}; real-line augmentation: {'on' if config['augment'] else 'off'}",
            f"- Auxiliary CTC loss weight: {summary['ctc_weight']} (training only; the saved model is a plain VisionEncoderDecoderModel)",
            f"- Steps: {summary['steps']} x batch {config['batch_size']}, seed {config['seed']}; {summary['seconds']:.0f} s on {summary['machine']}",
            f"- Parameters: {summary['parameters']:,}; weights saved as {config['save_dtype']}",
            f"- Validation CER (jiwer, held-out lines): {cer:.4f}" if cer is not None else "- Validation CER: not measured",
            "",
            "Command:",
            "",
            f"    {summary['command']}",
            "",
        ]
    )


def train(config: TrainConfig, settings: Settings, progress: Any = None) -> TrainResult:
    """Run (or resume) training to ``config.steps``; checkpoints and the final model go to ``config.output``."""
    trainer = Trainer(config, settings)
    config.output.mkdir(parents=True, exist_ok=True)
    task = progress.add_task("training", total=config.steps, completed=trainer.step) if progress else None
    loss = float("nan")
    while trainer.step < config.steps:
        started = time.perf_counter()
        loss = trainer.train_step(trainer.step)
        trainer.step += 1
        trainer.seconds += time.perf_counter() - started
        if progress:
            progress.update(task, advance=1, description=f"training loss {loss:.3f}")
        if trainer.step % config.eval_every == 0 or trainer.step == config.steps:
            record = trainer.evaluate(loss)
            if progress:
                cer = "n/a" if record["val_cer"] is None else f"{record['val_cer']:.4f}"
                progress.console.print(f"step {record['step']}: loss {record['loss']:.3f}, held-out CER {cer}")
        if trainer.step % config.save_every == 0 or trainer.step == config.steps:
            trainer.save_checkpoint()
    result = TrainResult(trainer.step, trainer.seconds, len(trainer.train_set), len(trainer.val_set), trainer.history)
    trainer.save_model(result)
    return result
