"""`run|eval|bench --model region --features CACHE`: training on imported bottom-up features.

The test writes a TSV in bottom-up attention's format (`image_id, image_w, image_h, num_boxes, boxes, features`,
base64 float32, absolute boxes, 2048-d features) for exactly the images a `--limit 8` VQA run uses, imports it
with `vlbench features import`, and runs the region model on it: no detector is trained or run, the tokens are
the file's features, and run.json says where they came from.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from harness.cli.main import cli

FEATURE_DIM = 2048  # bottom-up attention's pool5_flat
LIMIT = 8


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes()).decode()


def _run_images(world: Path) -> list[Path]:
    """Every image a `run --task vqa --limit 8` on the world shows the model (train, val, test)."""
    from harness.batches import ImageTensors, TextBatcher
    from harness.data.spec import load_spec
    from harness.tasks import TASKS
    from harness.training.config import TrainConfig
    from pixelbert.tokenizer import load_tokenizer

    task = TASKS.get("vqa")(load_spec(world / "vqa.yaml"), ImageTensors(64), TextBatcher(load_tokenizer(), 40),
                            TrainConfig(), limit=LIMIT)
    task.prepare_training()
    return list(dict.fromkeys(p for split in ("train", "val", "test") for p in task.image_paths(split)))


def _write_tsv(path: Path, images: list[Path]) -> dict[str, np.ndarray]:
    from baselines.region_setup import image_id_of

    rng = np.random.default_rng(0)
    features = {}
    lines = []
    for n, image in enumerate(images):
        count = 3 + n % 4
        xy = rng.uniform(0, 40, (count, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(4, 24, (count, 2))], axis=1)
        feats = rng.standard_normal((count, FEATURE_DIM)).astype(np.float32)
        image_id = image_id_of(image)
        features[image_id] = feats
        lines.append(f"{image_id}\t64\t64\t{count}\t{_b64(boxes)}\t{_b64(feats)}")
    path.write_text("\n".join(lines) + "\n")
    return features


def _invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def imported(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("imported")
    tsv = folder / "trainval_36.tsv"
    features = _write_tsv(tsv, _run_images(world))
    code, output = _invoke("features", "import", "--tsv", tsv, "--out", folder / "cache", "--no-progress")
    assert code == 0, output
    return tsv, folder / "cache", features


@pytest.fixture(scope="module")
def region_run(world: Path, imported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("region-imported")
    code, output = _invoke("run", "--model", "region", "--task", "vqa", "--data", world / "vqa.yaml", "--features",
                           imported[1], "--limit", LIMIT, "--epochs", 1, "--run-dir", out, "--no-progress")
    assert code == 0, output
    return out


def test_run_reads_the_imported_features_and_records_their_source(region_run: Path, imported) -> None:
    tsv, cache, features = imported
    record = json.loads((region_run / "run.json").read_text())
    region = record["config"]["model"]["region"]
    assert region["features"] == "imported" and region["representation_size"] == FEATURE_DIM
    source = record["visual_encoder"]["features"]
    assert source["source"] == str(tsv) and source["extractor"] == "import-tsv"
    assert source["count"] == len(features) and source["feature_dim"] == FEATURE_DIM
    assert source["images_used"] == len(features)
    assert record["visual_encoder"]["detector"] is None
    assert record["config"]["pretraining"] is None, "world pre-training needs a detector on the world's scenes"
    assert (region_run / "predictions_test.json").is_file()


def test_the_model_has_no_detector_and_its_tokens_are_the_files_features(world: Path, region_run: Path,
                                                                          imported) -> None:
    from baselines.region_setup import attach_imported, image_id_of
    from harness.assembly import assemble, load_init
    from harness.batches import ImageTensors
    from harness.checkpoints import read_checkpoint_meta
    from harness.models import ModelSetup
    from harness.runtime import Runtime

    checkpoint = region_run / "checkpoint.safetensors"
    setup = ModelSetup.from_dict(read_checkpoint_meta(checkpoint)["model_config"])
    model = assemble(setup, Runtime.start("cpu", join=False), load=lambda m: load_init(m, checkpoint)).model
    assert model.visual_encoder.detector is None
    assert not any("detector" in k for k in model.state_dict()), "no detector weights: nothing detects"
    images = ImageTensors(64)
    paths = _run_images(world)[:3]
    attach_imported(model.visual_encoder, imported[1], paths, images, progress=False)
    batch = torch.stack([images.uint8(p) for p in paths]).float().div(255.0)
    regions = model.visual_encoder.regions(batch)
    for path, r in zip(paths, regions, strict=True):
        assert torch.allclose(r.features, torch.from_numpy(imported[2][image_id_of(path)]))


def test_eval_needs_and_uses_the_same_features(world: Path, region_run: Path, imported, tmp_path: Path) -> None:
    checkpoint = region_run / "checkpoint.safetensors"
    base = ("eval", "--checkpoint", checkpoint, "--task", "vqa", "--data", world / "vqa.yaml", "--limit", LIMIT,
            "--split", "test", "--no-progress")
    code, output = _invoke(*base, "--run-dir", tmp_path / "without")
    assert code == 2 and "pass --features CACHE" in output and "Traceback" not in output
    code, output = _invoke(*base, "--features", imported[1], "--run-dir", tmp_path / "with")
    assert code == 0, output
    again = json.loads((tmp_path / "with" / "run.json").read_text())
    first = json.loads((region_run / "run.json").read_text())
    assert again["metrics"]["test"] == first["metrics"]["test"]
    assert again["visual_encoder"]["features"]["source"] == str(imported[0])


def test_an_image_missing_from_the_features_is_a_one_line_error(world: Path, tmp_path: Path) -> None:
    images = _run_images(world)
    _write_tsv(tmp_path / "partial.tsv", images[:-1])
    code, output = _invoke("features", "import", "--tsv", tmp_path / "partial.tsv", "--out", tmp_path / "cache",
                           "--no-progress")
    assert code == 0, output
    code, output = _invoke("run", "--model", "region", "--task", "vqa", "--data", world / "vqa.yaml", "--features",
                           tmp_path / "cache", "--limit", LIMIT, "--epochs", 1, "--run-dir", tmp_path / "run",
                           "--no-progress")
    assert code == 2 and "Traceback" not in output
    assert f"image {images[-1]}" in output and "is not in the imported features" in output
    assert len(output.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (("--boxes", "gt"), "--boxes is for a detector"),
    (("--model", "pixelbert"), "features"),
])
def test_features_with_a_detector_option_or_another_model_is_refused(world: Path, imported, tmp_path: Path,
                                                                     extra: tuple[str, ...], message: str) -> None:
    args = ["run", "--model", "region", "--task", "vqa", "--data", world / "vqa.yaml", "--features", imported[1],
            "--limit", LIMIT, "--epochs", 1, "--run-dir", tmp_path / "r", "--no-progress", *extra]
    code, output = _invoke(*args)
    assert code == 2 and message in output and "Traceback" not in output


def test_bench_times_the_region_model_on_imported_features(world: Path, tmp_path: Path) -> None:
    # bench has no --limit: features (16-d, to stay small) for every image of the world.
    rng = np.random.default_rng(1)
    lines = []
    for image in sorted((world / "images").glob("*.png")):
        boxes, feats = np.array([[0, 0, 32, 32], [16, 16, 60, 60]], np.float32), rng.standard_normal((2, 16))
        lines.append(f"{int(image.stem.split('_')[-1])}\t64\t64\t2\t{_b64(boxes)}\t{_b64(feats)}")
    (tmp_path / "all.tsv").write_text("\n".join(lines) + "\n")
    code, output = _invoke("features", "import", "--tsv", tmp_path / "all.tsv", "--out", tmp_path / "cache",
                           "--no-progress")
    assert code == 0, output
    code, output = _invoke("bench", "--model", "region", "--task", "vqa", "--data", world / "vqa.yaml",
                           "--features", tmp_path / "cache", "--batch-size", 2, "--warmup", 0, "--repeats", 1,
                           "--train-steps", 1, "--overhead-steps", 0, "--run-dir", tmp_path / "bench", "--no-progress")
    assert code == 0, output
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    result = report["models"]["region"]
    assert result["visual_encoder_record"]["features"]["source"] == str(tmp_path / "all.tsv")
    assert "detector_live_images" not in result["split"]["visual_encoder"], "no detector ran, none is claimed"
    assert report["settings"]["features"] == str(tmp_path / "cache")


def test_eval_on_features_imported_from_another_file_is_refused(world: Path, region_run: Path,
                                                               tmp_path: Path) -> None:
    other = tmp_path / "other.tsv"
    _write_tsv(other, _run_images(world))
    other.write_text(other.read_text() + "")  # same ids, another file: another source hash
    code, output = _invoke("features", "import", "--tsv", other, "--out", tmp_path / "cache", "--no-progress")
    assert code == 0, output
    code, output = _invoke("eval", "--checkpoint", region_run / "checkpoint.safetensors", "--task", "vqa", "--data",
                           world / "vqa.yaml", "--limit", LIMIT, "--split", "test", "--features", tmp_path / "cache",
                           "--run-dir", tmp_path / "e", "--no-progress")
    assert code == 2 and "imported from another file" in output


def test_two_images_with_one_id_are_refused(imported, tmp_path: Path) -> None:
    from PIL import Image

    from baselines.region_setup import attach_imported
    from harness.assembly import ModelRequest, resolve_setup
    from harness.batches import ImageTensors
    from harness.errors import VlbenchError
    from harness.models import build_model

    image_id = next(iter(imported[2]))
    paths = []
    for folder, colour in (("train", (255, 0, 0)), ("val", (0, 0, 255))):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / f"x_{int(image_id):06d}.png")
        Image.new("RGB", (64, 64), colour).save(paths[-1])
    setup = resolve_setup(ModelRequest("region", "tiny", options={"features": imported[1]}))
    encoder = build_model(setup).visual_encoder
    with pytest.raises(VlbenchError, match="same id"):
        attach_imported(encoder, imported[1], paths, ImageTensors(64), progress=False)
