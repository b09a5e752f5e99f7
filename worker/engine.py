"""The inference engine: one VisionEncoderDecoderModel, batched generate, per-line confidence.

Confidence follows ``worker/confidence.py`` (the rule, in one place); this module gathers the
log-probabilities it needs: the text tokens', the first end token's, and every generated token's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from pisar.errors import FatalError, GenerationFailed, LineError
from pisar.flags import generation_flags
from pisar.model_ref import ModelRef, load_target
from pisar.processor import load_processor
from pisar.worker.attention import use_sdpa
from pisar.worker.batch_size import MemoryCost
from pisar.worker.confidence import line_confidence
from pisar.worker.engine_options import DecodeOptions, prepare_encoder
from pisar.worker.greedy import GreedyLoop
from pisar.worker.preprocess import LinePreprocessor
from pisar.worker.word_confidence import word_confidences

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_BATCH = 16  # lines per generate call on CPU when the setting is unset: larger batches gain nothing on a few cores


@dataclass
class DecodeSteps:
    """Decoder work since the engine loaded: row-steps paid for, and those that produced a real token.

    A row that has ended keeps costing a step until every row of its batch has ended, so
    ``1 - useful / paid`` is the share of decoder work spent on finished lines; grouping lines of
    similar length into a batch (``ShardRunner``) is what keeps it small.
    """

    paid: int = 0
    useful: int = 0


@dataclass(frozen=True)
class Recognition:
    """What the model read on one line, and how sure it was."""

    text: str
    confidence: float  # in (0, 1], for every reading (worker/confidence.py)
    min_token_prob: float
    token_count: int
    flags: tuple[str, ...] = ()  # generation-failure signs (``pisar/flags.py``): max_length, repetition
    word_confidences: tuple[float, ...] = ()  # one per word of ``pisar.words.words(text)`` (worker/word_confidence.py)


def pick_device(preference: str) -> torch.device:
    """CUDA when present (and not refused), else CPU; called only in the worker child."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise FatalError("PISAR_DEVICE=cuda but no CUDA device is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(preference: str, device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA that supports it, float16 on older CUDA, float32 on CPU."""
    if preference != "auto":
        return _DTYPES[preference]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


#: Weights a checkpoint may lack: the encoder's pooler, which VisionEncoderDecoderModel never reads
#: (the decoder attends to the encoder's last hidden state). Any other missing weight would be random.
UNUSED_WEIGHTS = ("encoder.pooler.",)


def load_model(ref: ModelRef, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    """The processor and the model in eval mode on ``device``; ``FatalError`` if they cannot be had whole.

    Whatever goes wrong while loading is this node's failure, not a shard's: weights truncated or
    corrupt (safetensors' own error), a tensor of the wrong shape, out of memory, a processor that
    will not build. A checkpoint that lacks a weight the model reads loads in transformers with
    that weight left random and a warning; here it is refused, since every line would read as noise.
    """
    from transformers import VisionEncoderDecoderModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load floods worker logs
    try:
        processor = load_processor(ref)
        name, revision = load_target(ref)
        model, info = VisionEncoderDecoderModel.from_pretrained(
            name,
            revision=revision,
            dtype=dtype,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # refused below, by name
        )
        missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(UNUSED_WEIGHTS))
        mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ()))
        if missing or mismatched:
            what = f"{len(missing)} weights missing" if missing else f"{len(mismatched)} weights of the wrong shape"
            raise FatalError(f"cannot load model {ref}: its checkpoint is incomplete ({what}, e.g. {(missing or mismatched)[0]})")
        model.to(device).eval()
    except FatalError:
        raise
    except Exception as exc:  # any failure to load, by any library: the node cannot serve with this model
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FatalError(f"cannot load model {ref}: {type(exc).__name__}: {reason}"[:1000]) from exc
    return processor, model


class Engine:
    """A loaded model and processor; ``recognize`` turns preprocessed pixels into text."""

    def __init__(
        self, ref: ModelRef, *, device: str = "auto", dtype: str = "auto", decoder: str = "auto", options: DecodeOptions | None = None
    ) -> None:
        self.ref = ref
        self.options = options or DecodeOptions(decoder=decoder)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.processor, self.model = load_model(ref, self.dtype, self.device)
        self.sdpa_layers = use_sdpa(self.model)  # TrOCR decoders run eager attention otherwise
        self.encoder_variant = prepare_encoder(self.model, self.device, self.options)
        static = self.options.graphs == "on" or (self.options.graphs == "auto" and self.device.type == "cuda")
        self.greedy = GreedyLoop.of(self.model, static=static) if self.options.decoder == "auto" else None  # generate() otherwise
        tokenizer = self.processor.tokenizer
        config = self.model.generation_config
        special = set(tokenizer.all_special_ids)
        special.update(i for i in (config.pad_token_id, config.bos_token_id, config.decoder_start_token_id) if isinstance(i, int))
        eos = config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        special.update(eos_ids)
        self._eos_ids = torch.tensor(eos_ids, dtype=torch.long, device=self.device)
        self._special_ids = torch.tensor(sorted(special), device=self.device)
        self.max_batch: int | None = None  # set (and only lowered) by an out-of-memory error
        self.steps = DecodeSteps()
        self._fitted: dict[tuple[Any, Any], int] = {}
        self.fast_preprocess = LinePreprocessor.build(self.processor.image_processor)
        log.info("engine ready: %s on %s, %s preprocessing", ref, self.describe(), "table" if self.fast_preprocess else "processor")

    def describe(self, generation: dict[str, Any] | None = None) -> str:
        """Device, dtype, decode loop and encoder variant, e.g. ``cuda:bfloat16:greedy-loop+graphs``; stored on each shard."""
        loop = self.decoder_for(generation)
        if loop == "greedy-loop" and self.greedy.static:
            loop += "+graphs" if self.device.type == "cuda" else "+static"
        return f"{self.device.type}:{str(self.dtype).removeprefix('torch.')}:{loop}{self.encoder_variant}"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One line image (``L`` or ``RGB``) to model input (C, H, W); thread-safe, runs in the fetch pool.

        From the fast path: uint8 for a GPU (normalized there, in ``to_device``), float32 for the CPU.
        Without it: the processor's float32.
        """
        if self.fast_preprocess is not None:
            pixels = self.fast_preprocess(image)
            return pixels if self.device.type == "cuda" else self.fast_preprocess.normalize_array(pixels)
        return self.processor(images=image.convert("RGB"), return_tensors="np").pixel_values[0]

    def to_device(self, pixel_values: np.ndarray) -> torch.Tensor:
        """A preprocessed batch as the model's input tensor: copied (uint8 when it can be), then normalized there."""
        batch = torch.from_numpy(np.ascontiguousarray(pixel_values))
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True)
        if batch.dtype == torch.uint8:
            if self.fast_preprocess is None:
                raise ValueError("uint8 pixels need the fast preprocessor's table")
            batch = self.fast_preprocess.normalize(batch)
        return batch.to(self.dtype)

    def batch_size(self, generation: dict[str, Any], requested: int | None, cap: int, share: float) -> int:
        """Lines per generate call: ``requested`` when set; on CPU ``CPU_BATCH``; on CUDA what fits in
        ``share`` of the free memory at the full token budget (``worker/batch_size.py``), at most ``cap``.

        Measured once per token budget and beam count, on the first shard that needs it.
        """
        if requested:
            return requested
        if self.device.type != "cuda":
            return min(cap, CPU_BATCH)
        key = (generation.get("max_new_tokens"), generation.get("num_beams"))
        if key not in self._fitted:
            cost = MemoryCost.measure(lambda lines: self._probe_peak(lines, generation))
            torch.cuda.empty_cache()
            free, _total = torch.cuda.mem_get_info()
            self._fitted[key] = cost.lines_that_fit(free, share, cap)
            log.info(
                "batch size %s: %.0f MiB free, %.1f MiB a line, %.0f MiB fixed",
                self._fitted[key],
                free / 2**20,
                cost.per_line / 2**20,
                cost.fixed / 2**20,
            )
        return self._fitted[key]

    def _probe_peak(self, lines: int, generation: dict[str, Any]) -> int:
        """Peak CUDA bytes, beyond what is already held, of one batch of blank lines at the full token budget."""
        config = self.model.generation_config
        budget = generation.get("max_new_tokens") or config.max_new_tokens or config.max_length
        blank = self.preprocess(Image.new("L", (1024, 64), 255))
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
        self._generate(np.stack([blank] * lines), {**generation, "max_new_tokens": budget, "min_new_tokens": budget})
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - held
        if self.greedy is not None:
            self.greedy.release()  # a probe's buffers are not the batch's
        return peak

    def recognize(self, pixel_values: np.ndarray, generation: dict[str, Any] | None = None) -> list[Recognition | LineError]:
        """Transcribe a batch with the campaign's generation overrides.

        Out of memory: the batch limit halves for the rest of this engine's life (logged once per
        halving), and the batch goes on in pieces that fit. Any other error splits the batch in
        halves until the bad line stands alone; that line becomes ``GenerationFailed``, the rest go on.
        """
        generation = generation or {}
        if self.max_batch is not None and len(pixel_values) > self.max_batch:
            step = self.max_batch
            return [
                r for start in range(0, len(pixel_values), step) for r in self.recognize(pixel_values[start : start + step], generation)
            ]
        try:
            return list(self._generate(pixel_values, generation))
        except torch.OutOfMemoryError as exc:
            if self.greedy is not None:
                self.greedy.release()  # the kept fixed-shape buffers are sized for the batch that did not fit
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(pixel_values) == 1:
                log.warning("out of memory on a single line: %s", exc)
                return [GenerationFailed(f"out of memory on a single line: {exc}")]
            self.max_batch = max(1, len(pixel_values) // 2)
            log.warning("out of memory at %s lines a batch; batches are now at most %s", len(pixel_values), self.max_batch)
            return self.recognize(pixel_values, generation)
        except Exception as exc:  # a model error: isolate the line
            if len(pixel_values) == 1:
                log.warning("generation failed on one line: %s", exc)
                return [GenerationFailed(f"{type(exc).__name__}: {exc}")]
            half = len(pixel_values) // 2
            return self.recognize(pixel_values[:half], generation) + self.recognize(pixel_values[half:], generation)

    def decoder_for(self, generation: dict[str, Any] | None = None) -> str:
        """Which decode loop reads with these settings: Pisar's greedy loop where it serves, else generate()."""
        if self.greedy is not None and self.greedy.serves(generation or {}):
            return "greedy-loop"
        return "generate"

    @torch.inference_mode()
    def _generate(self, pixel_values: np.ndarray, generation: dict[str, Any]) -> list[Recognition]:
        inputs = self.to_device(pixel_values)
        if self.decoder_for(generation) == "greedy-loop":
            decoded = self.greedy.run(inputs, generation)
            chosen, log_probs = decoded.tokens, decoded.log_probs
            start = torch.full((len(chosen), 1), self.model.generation_config.decoder_start_token_id or 0, device=chosen.device)
            texts = self.processor.batch_decode(torch.cat([start, chosen], dim=1), skip_special_tokens=True)
            paid = decoded.row_steps
        else:
            texts, chosen, log_probs, paid = self._generate_hf(inputs, generation)
        text_mask = ~torch.isin(chosen, self._special_ids)
        is_eos = torch.isin(chosen, self._eos_ids)
        ended = is_eos.any(dim=1)
        end_log_prob = log_probs.gather(1, is_eos.int().argmax(dim=1, keepdim=True)).squeeze(1)  # at the first end token
        if paid is not None:  # greedy: a row's useful steps run up to and including its first end token
            self.steps.paid += paid
            self.steps.useful += int(torch.where(ended, is_eos.int().argmax(dim=1) + 1, chosen.shape[1]).sum())
        # One copy to the host per batch: indexing GPU tensors row by row would wait on the device per line.
        chosen, text_mask, log_probs, end_log_prob = chosen.cpu(), text_mask.cpu(), log_probs.cpu(), end_log_prob.cpu()
        ended = ended.tolist()
        rows = [chosen[i][text_mask[i]] for i in range(len(texts))]
        row_log_probs = [log_probs[i][text_mask[i]] for i in range(len(texts))]
        ids = [row.tolist() for row in rows]
        per_word = word_confidences(self._decode_ids, ids, [row.tolist() for row in row_log_probs], texts)
        results = []
        for i, text in enumerate(texts):
            end = float(end_log_prob[i]) if ended[i] else None
            text_logs = row_log_probs[i].tolist()
            confidence, least = line_confidence(text_logs, end, [] if text_logs or ended[i] else log_probs[i].tolist())
            results.append(
                Recognition(
                    text=text,
                    confidence=confidence,
                    min_token_prob=least,
                    token_count=len(text_logs),
                    flags=generation_flags(text, ids[i], ended[i]),
                    word_confidences=per_word[i],
                )
            )
        return results

    def _decode_ids(self, rows: list[list[int]]) -> list[str]:
        """Token id rows as texts, special tokens skipped: in one call to a fast tokenizer's Rust decoder where there is one."""
        tokenizer = self.processor.tokenizer
        rust = getattr(tokenizer, "_tokenizer", None)
        if rust is not None and hasattr(rust, "decode_batch"):
            return rust.decode_batch(rows, skip_special_tokens=True)
        return tokenizer.batch_decode(rows, skip_special_tokens=True)

    def _generate_hf(self, inputs: torch.Tensor, generation: dict[str, Any]) -> tuple[list[str], torch.Tensor, torch.Tensor, int | None]:
        """generate(): texts, the chosen tokens after the start, their log-probabilities, and the row-steps paid (greedy only)."""
        greedy = generation.get("num_beams", self.model.generation_config.num_beams or 1) == 1
        out = self.model.generate(
            pixel_values=inputs,
            return_dict_in_generate=True,
            output_logits=greedy,
            **generation,
        )
        sequences = out.sequences
        texts = self.processor.batch_decode(sequences, skip_special_tokens=True)
        if greedy:
            chosen = sequences[:, -len(out.logits) :]
            steps = out.logits
        else:
            # Beam scores are renormalised after logits processors; score the chosen sequences
            # with one teacher-forced pass instead, so the formula is the same in both modes.
            chosen = sequences[:, 1:]
            logits = self.model(pixel_values=inputs, decoder_input_ids=sequences[:, :-1]).logits
            steps = logits.unbind(dim=1)
        # log p(chosen) = logit(chosen) - logsumexp(logits): the same number as log_softmax + gather,
        # without writing a batch x vocabulary tensor per step.
        log_probs = torch.stack(
            [
                step.gather(1, chosen[:, i : i + 1]).squeeze(1).float() - torch.logsumexp(step.float(), dim=-1)
                for i, step in enumerate(steps)
            ],
            dim=1,
        )
        return texts, chosen, log_probs, chosen.numel() if greedy else None


class EngineCache:
    """The model last used in this process; campaigns on the same model and dtype share it."""

    def __init__(self, device: str, options: DecodeOptions | None = None) -> None:
        self.device = device
        self.options = options or DecodeOptions()
        self._key: tuple[str, str | None, str] | None = None
        self._engine: Engine | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> EngineCache:
        return cls(settings.device, DecodeOptions.from_settings(settings))

    def get(self, ref: ModelRef, dtype: str) -> Engine:
        """The engine for ``ref``; a folder is checked against its recorded content hash first."""
        from pisar.model_ref import verify_folder

        key = (ref.source, ref.revision, dtype)
        if key != self._key or self._engine is None:
            self._engine = None  # free the old model before loading the next
            verify_folder(ref)
            self._engine = Engine(ref, device=self.device, dtype=dtype, options=self.options)
            self._key = key
        return self._engine

    def __call__(self, campaign: Any) -> Engine:
        return self.get(ModelRef(campaign.model_id, campaign.model_revision), campaign.dtype)
