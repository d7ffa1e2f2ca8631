"""Can the model bind a word to what it sees? The yes/no probe behind NLVR2's chance accuracy at the tiny scale.

    python benchmarks/binding_probe.py --mode fixed          # "there is a red object." every time
    python benchmarks/binding_probe.py --mode word           # the colour word changes per example
    python benchmarks/binding_probe.py --mode word --attribute shape --text "there is a {word}."
    python benchmarks/binding_probe.py --mode word --init RUN/checkpoint.safetensors
    python benchmarks/binding_probe.py --mode word --init CK --head mlp --lr 1e-4   # the NLVR2/VQA classifier
    python benchmarks/binding_probe.py --mode word --init CK --head mlp --head-warmup 200  # linear probe first

Each example is one image of the embedded world's NLVR2 split with the text "there is a {word} object." and
the label "an object of that colour (with ``--attribute shape``: of that shape) is in the image", from the
world's scene records, half true and half false. The model is the tiny preset's Pixel-BERT with an ITM-style
head on pooled [CLS], trained with AdamW like `run`.

- ``fixed``: the word never changes, so the text carries nothing and this is plain image classification.
- ``word``: the answer depends on *which* word the text names: the model must match a word to pixels.
  At initialisation the output depends on neither factor's product, so a balanced yes/no gives no first-order
  gradient towards it (the same holds for NLVR2 statements, ITM, and VQA's yes/no questions).

Prints validation accuracy every ``--eval-every`` steps and a JSON line at the end. Not a pytest file: a few
minutes of CPU. Results and what they mean: docs/results/nlvr2-tiny.md.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.batches import ImageTensors, TextBatcher
from harness.checkpoints import load_checkpoint
from harness.data.nlvr2 import load_nlvr2_split
from harness.models import build_model, load_pretrained_parts, model_setup
from harness.runtime import Runtime
from harness.world.cache import default_world
from harness.world.scene import COLOR_NAMES, SHAPES
from pixelbert.heads import ItmHead, VqaHead
from pixelbert.tokenizer import load_tokenizer


def scene_images(world: Path, split: str, attribute: str = "color") -> list[tuple[Path, frozenset[str]]]:
    """Every NLVR2 image of ``split`` (paths from the NLVR2 loader) with the set of colours (or shapes) its scene
    contains (from the world's scene records, keyed by the pair's ``{split}-{set}-{pair}`` prefix)."""
    pairs = json.loads((world / "meta/scenes.json").read_text())["nlvr2_pairs"]
    out = []
    for example in load_nlvr2_split(world / "nlvr2.yaml", split):
        scenes = pairs[example.identifier.rsplit("-", 1)[0]]
        for path, key in ((example.left_image, "left"), (example.right_image, "right")):
            out.append((path, frozenset(o[attribute] for o in scenes[key]["objects"])))
    return out


def make_examples(images: list[tuple[Path, frozenset[str]]], mode: str, rng: random.Random,
                  template: str = "there is a {word} object.",
                  vocabulary: tuple[str, ...] = COLOR_NAMES) -> list[tuple[Path, str, bool]]:
    """(image, text, label) examples, half true and half false: ``fixed`` keeps every image with the word's
    thing and as many without it; ``word`` gives each image one, drawing the label first."""
    if mode == "fixed":
        # The word never changes ("red" for colours); the label is whether the image has it. Balanced by keeping
        # as many images without it as with it (world v3 scenes of 1-3 objects hold a given colour in about 30%).
        word = vocabulary[0]
        labelled = [(path, template.format(word=word), word in present) for path, present in images]
        positives = sum(label for _, _, label in labelled)
        negatives = set(rng.sample([i for i, (_, _, label) in enumerate(labelled) if not label],
                                   min(positives, len(labelled) - positives)))
        return [e for i, e in enumerate(labelled) if e[2] or i in negatives]
    out = []
    for path, present in images:
        want = rng.random() < 0.5
        pool = sorted(present) if want else sorted(set(vocabulary) - present)
        if not pool:
            continue  # every shape is in the image: it has no "no" to give (rare; colours never run out)
        out.append((path, template.format(word=rng.choice(pool)), want))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("fixed", "word"), default="word")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--init", type=Path, default=None, help="a vlbench checkpoint (pretrain or run)")
    parser.add_argument("--text-init", type=Path, default=None, help="a local BERT-family folder")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--attribute", choices=("color", "shape"), default="color",
                        help="what the word names: an object's colour or its shape")
    parser.add_argument("--text", default="there is a {word} object.",
                        help="the text, with {word} where the colour (or shape) word goes")
    parser.add_argument("--head", choices=("itm", "mlp"), default="itm")
    parser.add_argument("--head-warmup", type=int, default=0,
                        help="train only the head for this many steps first (linear probe, then fine-tune)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    runtime = Runtime.start("cpu", args.precision, join=False)
    world = default_world()
    rng = random.Random(args.seed)
    vocabulary = COLOR_NAMES if args.attribute == "color" else SHAPES
    train = make_examples(scene_images(world, "train", args.attribute), args.mode, rng, args.text, vocabulary)
    val = make_examples(scene_images(world, "val", args.attribute), args.mode, random.Random(args.seed + 1),
                        args.text, vocabulary)

    setup = model_setup("pixelbert", "tiny", text_init=args.text_init)
    model = build_model(setup)
    load_pretrained_parts(model, setup)
    if args.init is not None:
        state, _ = load_checkpoint(args.init)  # a pretrain or run checkpoint: take the shared model's tensors
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    hidden = setup.transformer.hidden_size
    # itm: one linear layer (the ITM head); mlp: Linear-GELU-LayerNorm-Linear, the classifier of the VQA and
    # NLVR2 heads (a VqaHead with two outputs is exactly that)
    head = ItmHead(hidden) if args.head == "itm" else VqaHead(hidden, 2, setup.transformer.layer_norm_eps)
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=args.lr, weight_decay=0.01)
    images = ImageTensors(setup.visual.image_size)
    text = TextBatcher(load_tokenizer(), 40)

    def logits(batch: list[tuple[Path, str, bool]]) -> torch.Tensor:
        tokens = text([t for _, t, _ in batch])
        with runtime.autocast():
            pooled = model(tokens["input_ids"], tokens["attention_mask"], images.batch([p for p, _, _ in batch])).pooled
        return head(pooled.float())

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            predicted = torch.cat([logits(val[i:i + 256]).argmax(1) for i in range(0, len(val), 256)])
        model.train()
        return 100.0 * float((predicted == torch.tensor([int(y) for _, _, y in val])).float().mean())

    curve = []
    start = time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        model.requires_grad_(step > args.head_warmup)
        batch = rng.sample(train, args.batch_size)
        loss = F.cross_entropy(logits(batch), torch.tensor([int(y) for _, _, y in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            curve.append((step, round(accuracy(), 1)))
            print(f"step {step}: loss {loss.item():.4f}, val accuracy {curve[-1][1]} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    print(json.dumps({"mode": args.mode, "attribute": args.attribute, "text": args.text, "head": args.head,
                      "head_warmup": args.head_warmup, "init": str(args.init) if args.init else None,
                      "text_init": str(args.text_init) if args.text_init else None, "lr": args.lr,
                      "precision": runtime.precision_name, "train_examples": len(train), "val_examples": len(val),
                      "val_accuracy_by_step": curve}))


if __name__ == "__main__":
    main()
