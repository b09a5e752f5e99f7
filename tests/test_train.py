"""`pisar train`: a few steps make a loadable model folder, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pisar.random_model import read_texts
from pisar.settings import Settings
from pisar.train.data import SyntheticLines, is_held_out
from pisar.train.loop import TrainConfig, Trainer
from tests.helpers.cli import run_pisar
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow

SAMPLES = REPO / "samples" / "print-lines"
TRAIN = ["--preset", "test", "--batch-size", "4", "--eval-every", "2", "--save-every", "2", "--val-share", "0.2", "--warmup", "2"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_a_few_steps_make_a_loadable_model(gt_pairs: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = run_pisar(["train", str(gt_pairs), "-o", str(out), "--steps", "4", *TRAIN], embedded_env)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "training.json").read_text(encoding="utf-8"))
    assert [h["step"] for h in summary["history"]] == [2, 4]
    assert (summary["train_lines"], summary["val_lines"]) == (20, 4)
    assert "Validation CER" in (out / "README.md").read_text(encoding="utf-8")
    transcribed = run_pisar(["run", str(gt_pairs), "--model", str(out), "-o", str(tmp_path / "r.jsonl")], embedded_env)
    assert transcribed.returncode == 0, transcribed.stderr
    assert len((tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()) == 24


class InterruptAt:
    """A progress sink that raises KeyboardInterrupt (Ctrl-C) when step ``n`` is reported."""

    def __init__(self, n: int) -> None:
        self.n, self.done = n, 0

    def add_task(self, *_: object, completed: int = 0, **__: object) -> int:
        self.done = completed
        return 0

    def update(self, _task: int, advance: int = 0, **__: object) -> None:
        self.done += advance
        if self.done == self.n:
            raise KeyboardInterrupt

    console = type("Console", (), {"print": staticmethod(lambda *a, **k: None)})()


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(gt_pairs: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    from pisar.train.loop import train

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_pisar(["train", str(gt_pairs), "-o", str(straight), "--steps", "6", *TRAIN], embedded_env).returncode == 0
    config = TrainConfig(
        output=resumed,
        sources=[str(gt_pairs)],
        preset="test",
        batch_size=4,
        eval_every=2,
        save_every=2,
        val_share=0.2,
        warmup_steps=2,
        steps=6,
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, Settings(), InterruptAt(5))  # dies during step 5; the step-4 checkpoint is on disk
    again = run_pisar(["train", str(gt_pairs), "-o", str(resumed), "--steps", "6", "--resume", *TRAIN], embedded_env)
    assert again.returncode == 0, again.stderr
    history = json.loads((resumed / "training.json").read_text(encoding="utf-8"))["history"]
    assert [h["step"] for h in history] == [2, 4, 6]
    expected, got = weights(straight), weights(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_fine_tuning_starts_from_a_model_folder_and_saves_fp16(
    tiny_model: Path, gt_pairs: Path, embedded_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "tuned"
    args = ["train", str(gt_pairs), "-o", str(out), "--from", str(tiny_model), "--steps", "2", "--save-dtype", "float16", *TRAIN]
    result = run_pisar(args, embedded_env)
    assert result.returncode == 0, result.stderr
    tuned = weights(out)
    assert {t.dtype for t in tuned.values()} == {torch.float16}
    assert tuned.keys() == weights(tiny_model).keys()
    from pisar.model_ref import folder_digest

    assert f"{tiny_model} @ {folder_digest(tiny_model)}" in (out / "README.md").read_text(encoding="utf-8")


def test_no_held_out_split_trains_without_validation(gt_pairs: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m"
    args = [
        "train",
        str(gt_pairs),
        "-o",
        str(out),
        "--steps",
        "2",
        "--preset",
        "test",
        "--batch-size",
        "4",
        "--val-share",
        "0",
        "--warmup",
        "1",
    ]
    result = run_pisar(args, embedded_env)
    assert result.returncode == 0, result.stderr
    assert "held-out CER n/a" in result.stderr
    assert json.loads((out / "training.json").read_text(encoding="utf-8"))["val_cer"] is None


def test_held_out_lines_are_never_trained_on(gt_pairs: Path, tmp_path: Path) -> None:
    config = TrainConfig(output=tmp_path, sources=[str(gt_pairs)], preset="test", val_share=0.3, batch_size=8)
    trainer = Trainer(config, Settings())
    held = {s.key for s in trainer.val_set}
    assert held and all(is_held_out(key, 0.3) for key in held)
    assert not held & {s.key for s in trainer.train_set}
    seen = {id(image) for step in range(20) for image in trainer.batch(step)[1]}
    assert not seen & {id(s.image) for s in trainer.val_set}


def test_synthetic_lines_are_deterministic_and_cover_pre_reform_letters() -> None:
    lines = SyntheticLines(["Вѣра и Іоаннъ", *read_texts([SAMPLES])])
    first = [lines.sample(random.Random(7)) for _ in range(3)]
    again = [lines.sample(random.Random(7)) for _ in range(3)]
    assert [t for t, _ in first] == [t for t, _ in again]
    assert [i.tobytes() for _, i in first] == [i.tobytes() for _, i in again]
    text, image = SyntheticLines(["Вѣра и Іоаннъ"]).sample(random.Random(0))
    assert image.mode == "RGB" and image.width > 2 * image.height
    assert image.convert("L").getextrema()[0] < 100  # ink was drawn


@pytest.mark.parametrize(
    ("option", "message"), [(["--preset", "huge"], "unknown preset 'huge'"), (["--normalize", "x"], "unknown normalization")]
)
def test_bad_training_options_are_one_line(embedded_env: dict[str, str], tmp_path: Path, option: list[str], message: str) -> None:
    from tests.helpers.cli import assert_one_line_error

    assert_one_line_error(run_pisar(["train", str(SAMPLES), "-o", str(tmp_path / "m"), *option], embedded_env), message)


def test_synthetic_text_from_the_training_split_never_leaks_held_out_lines(print_lines: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        output=tmp_path, sources=[str(print_lines)], preset="test", val_share=0.11, synthetic_from_train=True, synthetic_share=0.5
    )
    trainer = Trainer(config, Settings())
    assert len(trainer.val_set) >= 80  # the demo model's fixed held-out split
    train_texts = {s.text for s in trainer.train_set}
    train_words = {w for t in train_texts for w in t.split()}
    synthetic = trainer.synthetic.texts
    assert len(synthetic) == 21 * len(trainer.train_set)
    assert not {s.text for s in trainer.val_set} & (set(synthetic) - train_texts)
    assert all(set(line.split()) <= train_words for line in synthetic)


def test_augmentation_varies_real_lines_deterministically(print_lines: Path) -> None:
    from pisar.train.data import augment

    image = Image.open(sorted(print_lines.glob("*.png"))[5]).convert("RGB")
    first = [augment(image, random.Random(seed)) for seed in range(4)]
    again = [augment(image, random.Random(seed)) for seed in range(4)]
    assert [a.tobytes() for a in first] == [b.tobytes() for b in again]
    assert len({a.tobytes() for a in first}) == 4  # each draw is a different re-scan
    for variant in first:
        assert variant.mode == "RGB"
        assert 0.7 < variant.width / image.width < 1.3
        assert variant.convert("L").getextrema()[0] < 100  # the text survives


def test_augmented_training_runs(gt_pairs: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = run_pisar(["train", str(gt_pairs), "-o", str(out), "--steps", "2", "--augment", *TRAIN], embedded_env)
    assert result.returncode == 0, result.stderr
    assert "real-line augmentation: on" in (out / "README.md").read_text(encoding="utf-8")


def test_fonts_without_cyrillic_are_never_used() -> None:
    import matplotlib

    from pisar.train.data import covers, font_paths

    display = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansDisplay.ttf"
    assert not covers(display, "абв")  # it would draw boxes under a real label
    faces = font_paths()
    assert display not in faces and faces
    assert all(covers(face, "ЖжѢѣІіѲѳ") for face in set(faces))


def test_short_synthetic_spans_are_padded_not_stretched() -> None:
    lines = SyntheticLines(read_texts([SAMPLES]), aspect=1024 / 40, span_share=1.0)
    for seed in range(10):
        text, image = lines.sample(random.Random(seed))
        assert 1 <= len(text.split()) <= 4
        assert image.width / image.height > 15  # a blank right margin (a 1-4 word span alone is 2-12), letters keep their shape


def small_model() -> tuple[object, object]:
    from pisar.random_model import PRESETS, new_model

    return new_model(read_texts([SAMPLES]), PRESETS["small"])


def test_sinusoidal_positions_match_the_patch_scale() -> None:
    from pisar.train.alignment import init_sinusoidal_positions

    model, _ = small_model()
    table = model.encoder.embeddings.position_embeddings
    before = float(table[0, 1:].detach().std())
    init_sinusoidal_positions(model)
    assert float(table[0, 0].detach().abs().max()) == 0.0  # the class token has no position
    columns = table[0, 1:].detach()
    assert float(columns.std()) > 10 * before  # about as strong as the patch embeddings, not 30x weaker
    assert torch.linalg.matrix_rank(columns).item() > 32  # every column is told apart
    assert table.requires_grad


def test_ctc_head_reads_encoder_columns_of_both_encoder_families(tiny_model: Path) -> None:
    from transformers import VisionEncoderDecoderModel

    from pisar.train.alignment import CTCHead, patch_grid

    # ViT over 40 x 1024 lines: one row of 128 columns; DINOv2 interpolated to 182 x 1022: 13 x 73 patches.
    for model, size, grid in (
        (small_model()[0], (40, 1024), (1, 128)),
        (VisionEncoderDecoderModel.from_pretrained(tiny_model), (182, 1022), (13, 73)),
    ):
        config = model.config.encoder
        assert patch_grid(config, size) == grid
        head = CTCHead(config, model.config.decoder.vocab_size)
        states = model.encoder(pixel_values=torch.randn(2, 3, *size)).last_hidden_state
        assert head.columns(states, size).shape == (2, grid[1], config.hidden_size)
        labels = torch.tensor([[5, 6, 7, 2], [8, 9, 2, -100]])
        loss = head.loss(states, size, labels, {2})
        assert torch.isfinite(loss) and loss > 0
        loss.backward()
        assert head.classify.weight.grad is not None


def test_a_new_model_trains_with_ctc_and_saves_without_it(gt_pairs: Path, embedded_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = run_pisar(["train", str(gt_pairs), "-o", str(out), "--steps", "2", *TRAIN], embedded_env)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "training.json").read_text(encoding="utf-8"))["ctc_weight"] == 0.5
    assert not [name for name in weights(out) if "ctc" in name or "classify" in name]  # a plain VisionEncoderDecoderModel
