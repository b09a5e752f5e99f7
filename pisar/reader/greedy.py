"""Pisar's greedy decode loop for TrOCR decoders: the model's own layers, without generate()'s Python per token.

generate() runs its logits processors, stopping criteria, cache objects, masks and output
bookkeeping in Python at every step, and keeps a batch x vocabulary logits tensor per step for the
confidence; on a GPU that host work is what a step costs (the decoder is launch-bound,
docs/performance.md). This loop runs the same modules (the decoder's embeddings, layer norms,
projections and feed-forward, ``output_projection``) with less around them:

- the encoder runs once per batch, and each layer's cross-attention keys and values are projected
  once per batch;
- the self-attention keys and values go into a cache preallocated for the token budget;
- each step chooses the token on the device and keeps only its log-probability (logit minus
  logsumexp over the raw logits, the confidence formula's), never the step's logits; on a CPU the
  plain steps take the vocabulary in cache-sized chunks and never form the logits at all
  (pisar/reader/vocab_chunks.py);
- the end-of-text check stays on the device; every ``SYNC_EVERY`` steps the host asks once whether
  rows have ended, stops when all have, and drops the ended ones from the batch, so they cost no
  more steps;
- the rules generate() applies to greedy logits are applied the same way and in its order, on the
  device: ``repetition_penalty`` and ``no_repeat_ngram_size`` over the tokens so far (the start token
  included, as generate() counts it), the end token masked below ``min_length`` /
  ``min_new_tokens``, ``forced_bos_token_id`` at the first step, ``forced_eos_token_id`` at the
  last, ``suppress_tokens`` at every step and ``begin_suppress_tokens`` at the first.

Any other generation setting (beams, sampling, bad words, sequence biases) or another decoder than
TrOCR's leaves ``GreedyLoop.serves`` False, and the back-end uses generate().
The same token ids as generate() and as the model card's loop (fp32, every real line): tests/test_greedy.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from pisar.reader.decode_steps import EagerSteps, StaticBuffers, StaticSteps, bucket
from pisar.reader.vocab_chunks import ChunkedChoice, chunk_columns

SYNC_EVERY = 4  # steps between the host's looks at which rows have ended

# generate()'s settings this loop follows; any other setting a model or campaign changes sends it to generate().
_FOLLOWED = {
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "decoder_start_token_id",
}
# Settings that do not change a greedy choice (beam-only, output and bookkeeping options).
_IRRELEVANT = {
    "transformers_version",
    "early_stopping",
    "length_penalty",
    "num_beam_groups",
    "use_cache",
    "return_dict_in_generate",
    "output_logits",
    "output_scores",
    "output_attentions",
    "output_hidden_states",
    "renormalize_logits",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "_from_model_config",
}
# Settings that are followed when they hold the value that changes nothing.
_NEUTRAL = {
    "num_beams": 1,
    "do_sample": False,
    "num_return_sequences": 1,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "diversity_penalty": 0.0,
}


@dataclass(frozen=True)
class Decoded:
    """A batch's greedy reading: chosen tokens after the start token, their log-probabilities, and
    the row-steps computed (a row that has ended costs until the next look, then nothing)."""

    tokens: torch.Tensor  # (batch, steps) long; the pad token after a row's end
    log_probs: torch.Tensor  # (batch, steps) float32; log p(chosen) under the raw logits, 0 after the end
    row_steps: int


class GreedyLoop:
    """The loop for one loaded VisionEncoderDecoderModel whose decoder is TrOCR's; ``of`` says whether it is."""

    def __init__(self, model: Any, *, static: bool = False, chunked: bool = True) -> None:
        self.model = model
        self.static = static  # fixed-shape steps, kept buffers, CUDA graphs on CUDA (pisar/reader/decode_steps.py)
        self.chunked = chunked  # the plain loop on a CPU takes the vocabulary in cache-sized chunks (pisar/reader/vocab_chunks.py)
        self.buffers: StaticBuffers | None = None
        self.causal_lm = model.decoder  # TrOCRForCausalLM
        self.decoder = self.causal_lm.model.decoder  # TrOCRDecoder: embeddings and layers
        self.config = self.decoder.config
        learned = self.config.use_learned_position_embeddings
        self._positions = None if learned else self.decoder.embed_positions  # sinusoidal: padding-aware positions

    @classmethod
    def of(cls, model: Any, *, static: bool = False) -> GreedyLoop | None:
        """The loop for ``model``, or ``None`` when its decoder is not one this loop knows (generate() then)."""
        decoder = getattr(model, "decoder", None)
        if type(decoder).__name__ != "TrOCRForCausalLM" or not hasattr(decoder, "output_projection"):
            return None
        return cls(model, static=static)

    def settings(self, overrides: dict[str, Any]) -> Any | None:
        """The effective generation config with ``overrides``, or ``None`` when it asks for something the loop does not do."""
        config = copy.deepcopy(self.model.generation_config)
        config.update(**overrides)
        for name, value in config.to_diff_dict().items():
            if name in _FOLLOWED or name in _IRRELEVANT:
                continue
            if name in _NEUTRAL and (value is None or value == _NEUTRAL[name]):
                continue
            if value in (None, [], {}):
                continue
            return None
        if config.do_sample or (config.num_beams or 1) != 1:
            return None
        return config

    def serves(self, overrides: dict[str, Any]) -> bool:
        return self.settings(overrides) is not None

    @torch.inference_mode()
    def run(self, pixel_values: torch.Tensor, overrides: dict[str, Any]) -> Decoded:
        """Read a batch greedily; ``pixel_values`` already on the model's device and dtype."""
        config = self.settings(overrides)
        if config is None:
            raise ValueError("these generation settings need generate()")
        encoder_states = self.model.encoder(pixel_values=pixel_values).last_hidden_state
        if hasattr(self.model, "enc_to_dec_proj") and getattr(self.config, "cross_attention_hidden_size", None) is None:
            if self.model.encoder.config.hidden_size != self.config.hidden_size:
                encoder_states = self.model.enc_to_dec_proj(encoder_states)
        return self._decode(encoder_states, config)

    def _steps(self, encoder_states: torch.Tensor, steps: int) -> EagerSteps | StaticSteps:
        """The step runner for this batch: fixed shapes (graphs on CUDA) when ``static``, else the plain loop."""
        if not self.static:
            return EagerSteps(self, encoder_states, steps)
        batch, length = encoder_states.shape[:2]
        shape = (batch, steps, length, encoder_states.dtype, encoder_states.device)
        if self.buffers is None or not self.buffers.fits(*shape):
            self.release()
            self.buffers = StaticBuffers(self, bucket(batch), steps, length, encoder_states.dtype, encoder_states.device)
        return StaticSteps(self.buffers, encoder_states)

    def release(self) -> None:
        """Free the kept fixed-shape buffers and graphs (before a memory probe, after running out of memory)."""
        if self.buffers is not None:
            device = self.buffers.key[-1]
            self.buffers = None
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def _decode(self, encoder_states: torch.Tensor, config: Any) -> Decoded:
        device = encoder_states.device
        batch = encoder_states.shape[0]
        start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
        steps = _new_tokens(config)
        rules = _Rules(config, self.config.vocab_size, steps, device)
        runner = self._steps(encoder_states, steps)
        width = runner.width
        sink = batch  # the row that collects what padding slots write; cut off at the end
        tokens = torch.full((batch + 1, steps), rules.pad, dtype=torch.long, device=device)
        log_probs = torch.zeros((batch + 1, steps), dtype=torch.float32, device=device)
        rows = torch.arange(width, device=device).clamp(max=sink)  # the original row of each slot
        ended = rows == sink  # padding slots count as ended from the start
        current = torch.full((width,), start, dtype=torch.long, device=device)
        starts = torch.full((batch + 1, 1), start, dtype=torch.long, device=device)  # generate()'s rules count the start token
        row_steps = 0
        done = 0
        chunks = self._chunks(runner, width)
        for step in range(steps):
            if chunks is not None and rules.plain(step):
                chosen, log_p = chunks.choose(runner.hidden(current, step), rules.banned(step))
            else:
                history = torch.cat([starts[rows], tokens[rows, :step]], dim=1) if rules.needs_history else None
                chosen, log_p = rules.choose(runner.logits(current, step), step, history)
            chosen = torch.where(ended, rules.pad, chosen)
            tokens[rows, step] = chosen
            log_probs[rows, step] = torch.where(ended, 0.0, log_p)
            ended = ended | torch.isin(chosen, rules.eos)
            row_steps += width
            done = step + 1
            if done % SYNC_EVERY == 0 and done < steps:
                live = (~ended).nonzero().squeeze(1)
                if len(live) == 0:
                    break
                target = runner.width_for(len(live))
                if target < width:  # move the live rows into a smaller width; what is left over is padding
                    runner.keep(live, target)
                    rows, current = _padded(rows[live], target, sink), _padded(chosen[live], target, rules.pad)
                    ended = rows == sink
                    width = target
                    continue
            current = chosen
        return Decoded(tokens[:batch, :done], log_probs[:batch, :done], row_steps)

    def _chunks(self, runner: EagerSteps | StaticSteps, width: int) -> ChunkedChoice | None:
        """The vocabulary in cache-sized chunks for the plain loop on a CPU (pisar/reader/vocab_chunks.py); ``None``: full logits."""
        if not self.chunked or not isinstance(runner, EagerSteps) or self.causal_lm.output_projection.weight.device.type != "cpu":
            return None
        return ChunkedChoice(self.causal_lm.output_projection, chunk_columns(width, self.config.vocab_size))

    def embed(self, current: torch.Tensor, step: int) -> torch.Tensor:
        """Token and position embeddings of one step, as ``TrOCRDecoder.forward`` computes them."""
        ids = current[:, None]
        hidden = self.decoder.embed_tokens(ids)
        if self._positions is None:
            position = self.decoder.embed_positions.weight[step + self.decoder.embed_positions.offset]
            hidden = hidden + position
        else:
            hidden = hidden + self._positions(ids, cache_length=step).to(hidden.device)
        if self.decoder.layernorm_embedding is not None:
            hidden = self.decoder.layernorm_embedding(hidden)
        return hidden

    def embed_static(self, current: torch.Tensor, step: torch.Tensor, sinusoids: torch.Tensor | None) -> torch.Tensor:
        """``embed`` with the step as a device tensor (no host value, so a CUDA graph can hold it);
        ``sinusoids``: the table from ``sinusoid_table`` for a model with sinusoidal positions."""
        ids = current[:, None]
        hidden = self.decoder.embed_tokens(ids)
        if self._positions is None:
            table = self.decoder.embed_positions.weight
            hidden = hidden + table.index_select(0, step.view(1) + self.decoder.embed_positions.offset)
        else:  # padding-aware, as TrOCR computes it: a pad token's position is the padding index (a zero row)
            padding = self._positions.padding_idx
            positions = (step + 1) * ids.ne(padding).long() + padding
            hidden = hidden + sinusoids.index_select(0, positions.view(-1)).view(len(ids), 1, -1)
        if self.decoder.layernorm_embedding is not None:
            hidden = self.decoder.layernorm_embedding(hidden)
        return hidden

    def sinusoid_table(self, steps: int, device: torch.device) -> torch.Tensor | None:
        """The sinusoidal position table on ``device``, long enough for ``steps`` (``None`` for learned positions)."""
        if self._positions is None:
            return None
        positions = self._positions
        needed = positions.padding_idx + 2 + steps
        if positions.weights.shape[0] < needed:
            positions.weights = positions.get_embedding(needed, positions.embedding_dim, positions.padding_idx)
        return positions.weights.to(device)


def _padded(values: torch.Tensor, width: int, fill: int) -> torch.Tensor:
    """``values`` extended to ``width`` entries with ``fill``."""
    if len(values) == width:
        return values
    return torch.cat([values, values.new_full((width - len(values),), fill)])


def _new_tokens(config: Any) -> int:
    """The token budget after the start token, as generate() computes it from max_new_tokens or max_length."""
    if config.max_new_tokens is not None:
        return int(config.max_new_tokens)
    return max(1, int(config.max_length or 20) - 1)


class _Rules:
    """generate()'s greedy logits processors, in its order, for one batch."""

    def __init__(self, config: Any, vocab: int, steps: int, device: torch.device) -> None:
        eos = config.eos_token_id
        self.eos = torch.tensor(eos if isinstance(eos, list) else [] if eos is None else [eos], dtype=torch.long, device=device)
        self.pad = config.pad_token_id if config.pad_token_id is not None else (int(self.eos[0]) if len(self.eos) else 0)
        min_new = int(config.min_new_tokens or 0)
        self.eos_blocked_until = max(int(config.min_length or 0) - 1, min_new)  # min_length counts the start token
        self.forced_bos = config.forced_bos_token_id
        self.forced_eos = config.forced_eos_token_id
        self.last = steps - 1
        self.suppress = torch.tensor(config.suppress_tokens or [], dtype=torch.long, device=device)
        self.begin_suppress = torch.tensor(config.begin_suppress_tokens or [], dtype=torch.long, device=device)
        self.begin_index = 1 if self.forced_bos is not None else 0  # generate() moves it past a forced BOS
        penalty = config.repetition_penalty
        self.penalty = float(penalty) if penalty not in (None, 1.0) else None
        self.ngram = int(config.no_repeat_ngram_size or 0)
        self.needs_history = self.penalty is not None or self.ngram > 0
        eos_ids, suppress_ids, begin_ids = (tuple(int(t) for t in ids.tolist()) for ids in (self.eos, self.suppress, self.begin_suppress))
        self._banned = {  # (end token blocked, begin-suppress step) -> the ids masked at such a step
            (blocked, begin): tuple(sorted({*(eos_ids if blocked else ()), *suppress_ids, *(begin_ids if begin else ())}))
            for blocked in (False, True)
            for begin in (False, True)
        }

    def plain(self, step: int) -> bool:
        """Whether this step's choice needs only masks: no rule over the tokens so far, no forced token."""
        forced = (step == 0 and self.forced_bos is not None) or (step == self.last and self.forced_eos is not None)
        return not self.needs_history and not forced

    def banned(self, step: int) -> tuple[int, ...]:
        """The ids a plain step masks, as ``choose`` masks them: the end tokens below the minimum length, the suppressed ones."""
        return self._banned[(step < self.eos_blocked_until, step == self.begin_index)]

    def choose(self, logits: torch.Tensor, step: int, history: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The greedy token of each row and its log-probability under the raw logits.

        The normaliser is taken from the raw logits first; the masking rules then work on ``logits``
        in place (no second batch x vocabulary tensor), and a chosen token is never a masked one, so
        its logit is still the raw one. A repetition penalty rescales scores, so it works on a copy
        and the chosen token's raw logit is read from the original. A forced token is chosen without
        looking. ``history``: the tokens so far, the start token first (for the penalty and n-grams).
        """
        normaliser = torch.logsumexp(logits, dim=-1)
        forced = self.forced_bos if step == 0 else None
        forced = self.forced_eos if step == self.last and self.forced_eos is not None else forced
        if isinstance(forced, list):  # several forced ids tie at 0: argmax takes the smallest
            forced = min(forced)
        if forced is not None:
            chosen = torch.full((len(logits),), forced, dtype=torch.long, device=logits.device)
            return chosen, logits[:, forced] - normaliser
        raw = logits
        if self.penalty is not None and history is not None:
            logits = logits.clone()
            seen = logits.gather(1, history)
            logits.scatter_(1, history, torch.where(seen < 0, seen * self.penalty, seen / self.penalty))
        if self.ngram and history is not None and history.shape[1] >= self.ngram:
            logits.masked_fill_(_repeated_ngrams(history, self.ngram, logits.shape[1]), float("-inf"))
        if step < self.eos_blocked_until and len(self.eos):
            logits.index_fill_(1, self.eos, float("-inf"))
        if len(self.suppress):
            logits.index_fill_(1, self.suppress, float("-inf"))
        if len(self.begin_suppress) and step == self.begin_index:
            logits.index_fill_(1, self.begin_suppress, float("-inf"))
        chosen = logits.argmax(dim=-1)
        return chosen, raw.gather(1, chosen[:, None]).squeeze(1) - normaliser


def _repeated_ngrams(history: torch.Tensor, size: int, vocab: int) -> torch.Tensor:
    """(rows, vocab) True for each token that would repeat an n-gram of ``history`` (generate()'s rule).

    The last ``size - 1`` tokens are matched against every window of ``size``; a matching window
    bans its own last token.
    """
    prefix = history[:, history.shape[1] + 1 - size :]
    windows = history.unfold(dimension=1, size=size, step=1)
    matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)
    banned = torch.zeros((history.shape[0], vocab + 1), dtype=torch.bool, device=history.device)
    banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
    return banned[:, :vocab]
