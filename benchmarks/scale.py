"""Peak memory and speed of `vlbench run` as the dataset grows: memory must not grow with the number of images.

    python benchmarks/scale.py [--sizes 400 4000] [--out DIR] [--threads 1]

For each N, writes N COCO-like 640x480 JPEGs (``COCO_train2014_<id>.jpg``) and a dataset in the official VQA v2
format (3 questions per image, 10 answers each; val and test 100 images each at every N, train the rest), then
runs ``vlbench run --model pixelbert --task vqa --epochs 1 --pretraining none --checkpoint-every 10`` on it in a
fresh process and reports that process's peak RSS (``ru_maxrss``) and the training samples/s from its run.json.
The issue's target: peak RSS grows by at most 100 MB from N = 400 to N = 4,000. Not a pytest file (minutes of CPU).

What grows with the dataset is what is measured, so the constant transients occur at both sizes: the evaluation
splits keep one size (300 questions: full evaluation batches of 256 at both N; with 10% splits, N = 400 evaluated
one batch of 120 and its smaller activations showed as +100 MB of "growth"), and resume points are written every
10 steps at both (a resume point briefly holds the serialized model and optimiser, about 65 MB here; with the
default every 100 steps only the larger N wrote one mid-epoch).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from decode import write_jpegs  # benchmarks/decode.py: COCO-like JPEGs

_RUNNER = """
import resource, sys
from harness.cli.main import cli
try:
    cli(sys.argv[1:], standalone_mode=False)
finally:
    print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


_EVAL_IMAGES = 100  # val and test images at every N (300 questions each)


def write_dataset(root: Path, images: int, seed: int = 0) -> Path:
    """N JPEGs and a VQA v2-format spec over them (train / val / test by image)."""
    folder = root / "train2014"
    folder.mkdir(parents=True)
    for index, path in enumerate(write_jpegs(folder, images, seed)):
        path.rename(folder / f"COCO_train2014_{index + 1:012d}.jpg")
    rng = random.Random(seed)
    kinds = (("is there a dog?", ("yes", "no"), "yes/no"), ("how many cats are there?", ("1", "2", "3"), "number"),
             ("what color is the car?", ("red", "blue", "green"), "other"))
    if images <= 2 * _EVAL_IMAGES:
        raise SystemExit(f"--sizes: each N must exceed {2 * _EVAL_IMAGES} (the val and test images)")
    splits = {"val": range(1, _EVAL_IMAGES + 1), "test": range(_EVAL_IMAGES + 1, 2 * _EVAL_IMAGES + 1),
              "train": range(2 * _EVAL_IMAGES + 1, images + 1)}
    spec = {"task": "vqa", "name": f"scale-{images}", "splits": {}}
    for split, ids in splits.items():
        questions, annotations = [], []
        for image_id in ids:
            for k, (text, answers, kind) in enumerate(kinds):
                qid = image_id * 10 + k
                answer = rng.choice(answers)
                questions.append({"question_id": qid, "image_id": image_id, "question": text})
                annotations.append({"question_id": qid, "image_id": image_id, "question_type": text.rsplit(" ", 2)[0],
                                    "answer_type": kind, "multiple_choice_answer": answer,
                                    "answers": [{"answer": answer if i < 8 else rng.choice(answers),
                                                 "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)]})
        (root / f"q_{split}.json").write_text(json.dumps({"questions": questions}))
        (root / f"a_{split}.json").write_text(json.dumps({"annotations": annotations}))
        spec["splits"][split] = {"questions": f"q_{split}.json", "annotations": f"a_{split}.json",
                                 "images": "train2014/COCO_train2014_{image_id:012d}.jpg"}
    path = root / "vqa.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def measure(spec: Path, run_dir: Path, threads: int) -> tuple[float, float]:
    args = ["run", "--model", "pixelbert", "--task", "vqa", "--data", str(spec), "--epochs", "1",
            "--pretraining", "none", "--checkpoint-every", "10", "--threads", str(threads), "--run-dir", str(run_dir),
            "--no-progress"]
    result = subprocess.run([sys.executable, "-c", _RUNNER, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"vlbench run failed:\n{result.stdout}\n{result.stderr}")
    peak_kb = next(int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    record = json.loads((run_dir / "run.json").read_text())
    return peak_kb / 1024, float(record["train"]["samples_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 4000])
    parser.add_argument("--out", type=Path, default=None, help="keep the datasets and runs here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        rows = []
        for size in args.sizes:
            spec = write_dataset(out / f"data-{size}", size)
            peak, speed = measure(spec, out / f"run-{size}", args.threads)
            rows.append((size, peak, speed))
            print(f"N = {size:6d} images: peak RSS {peak:8.1f} MB, training {speed:7.1f} samples/s", flush=True)
        if len(rows) > 1:
            print(f"peak RSS growth from N = {rows[0][0]} to N = {rows[-1][0]}: {rows[-1][1] - rows[0][1]:+.1f} MB "
                  "(target: at most +100 MB)")


if __name__ == "__main__":
    main()
