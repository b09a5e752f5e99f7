"""The torch back-end: a VisionEncoderDecoderModel on a CUDA device or the CPU, read in batches.

Pisar's greedy loop (``greedy.py``) where the generation options allow, ``generate()`` otherwise.
Confidence follows ``confidence.py`` (the rule, in one place); this module gathers the
log-probabilities it needs: the text tokens', the first end token's, and every generated token's.
Splitting a batch that fails is ``memory.py``'s, for every back-end alike.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

from pisar.errors import FatalError
from pisar.flags import generation_flags
from pisar.model_ref import ModelRef, load_target
from pisar.processor import load_processor
from pisar.reader.attention import use_sdpa
from pisar.reader.confidence import line_confidence, word_confidences
from pisar.reader.devices import pick_device, pick_dtype, set_threads
from pisar.reader.encoder_variants import prepare_encoder
from pisar.reader.greedy import GreedyLoop
from pisar.reader.memory import MemoryCost
from pisar.reader.options import DecodeOptions, GenerationOptions
from pisar.reader.preprocess import LinePreprocessor
from pisar.reader.reading import DecodeSteps, Reading

log = logging.getLogger(__name__)


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


class TorchBackend:
    """A loaded model and processor on one device; ``read`` turns prepared pixels into readings."""

    def __init__(self, ref: ModelRef, *, device: str = "auto", dtype: str = "auto", options: DecodeOptions | None = None) -> None:
        self.ref = ref
        self.options = options or DecodeOptions()
        if self.options.threads:
            set_threads(self.options.threads)
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
        self.steps = DecodeSteps()
        self._loops: dict[str, str] = {}  # decoder_for's answers, by the options' repr
        self.fast_preprocess = LinePreprocessor.build(self.processor.image_processor)
        log.info("reader ready: %s on %s, %s preprocessing", ref, self.describe(), "table" if self.fast_preprocess else "processor")

    def describe(self, options: GenerationOptions | None = None) -> str:
        """Device, dtype, decode loop and encoder variant, e.g. ``cuda:bfloat16:greedy-loop+graphs``."""
        loop = self.decoder_for(options)
        if loop == "greedy-loop" and self.greedy.static:
            loop += "+graphs" if self.device.type == "cuda" else "+static"
        return f"{self.device.type}:{str(self.dtype).removeprefix('torch.')}:{loop}{self.encoder_variant}"

    def decoder_for(self, options: GenerationOptions | None = None) -> str:
        """Which decode loop reads with these options: Pisar's greedy loop where it serves, else generate().

        Asked per batch (the loop, the provenance); answered once per set of options, since checking
        them copies the model's generation config."""
        key = repr(options)
        if key not in self._loops:
            self._loops[key] = "greedy-loop" if self.greedy is not None and self.greedy.serves(_overrides(options)) else "generate"
        return self._loops[key]

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One line image (``L`` or ``RGB``) to model input (C, H, W); thread-safe, runs in the fetch pool.

        From the fast path: uint8 for a GPU (normalized there, in ``to_device``), float32 for the CPU.
        Without it: the processor's float32.
        """
        if self.fast_preprocess is not None:
            pixels = self.fast_preprocess(image)
            return pixels if self.device.type == "cuda" else self.fast_preprocess.normalize_array(pixels)
        return self.processor(images=image.convert("RGB"), return_tensors="np").pixel_values[0]

    def to_device(self, pixel_values: np.ndarray) -> torch.Tensor:
        """A prepared batch as the model's input tensor: copied (uint8 when it can be), then normalized there."""
        batch = torch.from_numpy(np.ascontiguousarray(pixel_values))
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True)
        if batch.dtype == torch.uint8:
            if self.fast_preprocess is None:
                raise ValueError("uint8 pixels need the fast preprocessor's table")
            batch = self.fast_preprocess.normalize(batch)
        return batch.to(self.dtype)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError)

    def recover(self) -> None:
        if self.greedy is not None:
            self.greedy.release()  # the kept fixed-shape buffers are sized for the batch that did not fit
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def fitted_batch(self, options: GenerationOptions, cap: int, share: float) -> int | None:
        """On CUDA, what fits in ``share`` of the free memory at the full token budget (``memory.py``); ``None`` on a CPU."""
        if self.device.type != "cuda":
            return None
        cost = MemoryCost.measure(lambda lines: self._probe_peak(lines, options))
        torch.cuda.empty_cache()
        free, _total = torch.cuda.mem_get_info()
        fitted = cost.lines_that_fit(free, share, cap)
        log.info(
            "batch size %s: %.0f MiB free, %.1f MiB a line, %.0f MiB fixed", fitted, free / 2**20, cost.per_line / 2**20, cost.fixed / 2**20
        )
        return fitted

    def _probe_peak(self, lines: int, options: GenerationOptions) -> int:
        """Peak CUDA bytes, beyond what is already held, of one batch of blank lines at the full token budget."""
        config = self.model.generation_config
        budget = options.max_new_tokens or config.max_new_tokens or config.max_length
        blank = self.prepare(Image.new("L", (1024, 64), 255))
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
        full = GenerationOptions.from_overrides({**options.overrides(), "max_new_tokens": budget, "min_new_tokens": budget})
        self.read(np.stack([blank] * lines), full)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - held
        if self.greedy is not None:
            self.greedy.release()  # a probe's buffers are not the batch's
        return peak

    @torch.inference_mode()
    def read(self, pixel_values: np.ndarray, options: GenerationOptions | None = None) -> list[Reading]:
        """Read a batch; raises on any failure (``memory.BatchLimit`` splits the batch and retries)."""
        generation = _overrides(options)
        inputs = self.to_device(pixel_values)
        if self.decoder_for(options) == "greedy-loop":
            decoded = self.greedy.run(inputs, generation)
            chosen, log_probs = decoded.tokens, decoded.log_probs
            start = torch.full((len(chosen), 1), self.model.generation_config.decoder_start_token_id or 0, device=chosen.device)
            texts = self.processor.batch_decode(torch.cat([start, chosen], dim=1), skip_special_tokens=True)
            paid = decoded.row_steps
        else:
            texts, chosen, log_probs, paid = self._generate_hf(inputs, generation)
        return self._readings(texts, chosen, log_probs, paid)

    def _readings(self, texts: list[str], chosen: torch.Tensor, log_probs: torch.Tensor, paid: int | None) -> list[Reading]:
        """Each line's reading from its chosen tokens and their log-probabilities (``confidence.py``'s rule)."""
        text_mask = ~torch.isin(chosen, self._special_ids)
        is_eos = torch.isin(chosen, self._eos_ids)
        ended = is_eos.any(dim=1)
        end_log_prob = log_probs.gather(1, is_eos.int().argmax(dim=1, keepdim=True)).squeeze(1)  # at the first end token
        if paid is not None:  # greedy: a row's useful steps run up to and including its first end token
            self.steps.paid += paid
            self.steps.useful += int(torch.where(ended, is_eos.int().argmax(dim=1) + 1, chosen.shape[1]).sum())
        # One copy to the host per batch: indexing GPU tensors row by row would wait on the device per line.
        chosen, text_mask, log_probs, end_log_prob = chosen.cpu(), text_mask.cpu(), log_probs.cpu(), end_log_prob.cpu()
        ended_rows = ended.tolist()
        rows = [chosen[i][text_mask[i]] for i in range(len(texts))]
        row_log_probs = [log_probs[i][text_mask[i]] for i in range(len(texts))]
        ids = [row.tolist() for row in rows]
        per_word = word_confidences(self._decode_ids, ids, [row.tolist() for row in row_log_probs], texts)
        readings = []
        for i, text in enumerate(texts):
            end = float(end_log_prob[i]) if ended_rows[i] else None
            text_logs = row_log_probs[i].tolist()
            confidence, least = line_confidence(text_logs, end, [] if text_logs or ended_rows[i] else log_probs[i].tolist())
            readings.append(
                Reading(
                    text=text,
                    confidence=confidence,
                    min_token_prob=least,
                    token_count=len(text_logs),
                    flags=generation_flags(text, ids[i], ended_rows[i]),
                    word_confidences=per_word[i],
                )
            )
        return readings

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


def _overrides(options: GenerationOptions | None) -> dict[str, Any]:
    return options.overrides() if options is not None else {}
