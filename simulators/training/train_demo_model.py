"""Train the demo defect classifier on synthetic views and export it to ONNX with its model card.

    python -m simulators.training.train_demo_model --out recipes/models

Deterministic from its seeds: running it again reproduces the model and the figures in the
card (held-out per-view accuracy, per-part escape and false-reject rates under any-fail fusion).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from simulators.parts import DEFECTS
from simulators.render import SIZE
from simulators.training.dataset import make_parts, render_views

MEAN, STD = 127.5, 64.0
N_VIEWS = 3


class DefectNet(nn.Module):
    """Four strided conv blocks, global average and max pooling, one linear layer (multi-label)."""

    def __init__(self, classes: int) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride=2, padding=1), nn.BatchNorm2d(o), nn.ReLU())

        self.features = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64))
        self.head = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return torch.sigmoid(self.head(pooled))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    x = (images.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def part_rates(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Per-view accuracy, and per-part escape / false-reject rates under any-fail fusion."""
    pred_view = (scores >= threshold).any(axis=1)
    true_view = labels.any(axis=1)
    pred_part = pred_view.reshape(-1, N_VIEWS).any(axis=1)
    true_part = true_view.reshape(-1, N_VIEWS).any(axis=1)
    exact = ((scores >= threshold) == (labels > 0.5)).all(axis=1)
    return {
        "view_accuracy_pass_fail": float((pred_view == true_view).mean()),
        "view_accuracy_exact_classes": float(exact.mean()),
        "part_escape_rate": float((~pred_part & true_part).sum() / max(1, true_part.sum())),
        "part_false_reject_rate": float((pred_part & ~true_part).sum() / max(1, (~true_part).sum())),
        "held_out_parts": int(true_part.size),
        "held_out_defective_parts": int(true_part.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("recipes/models"))
    ap.add_argument("--train-parts", type=int, default=8000)
    ap.add_argument("--test-parts", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    train_parts = make_parts(args.seed, args.train_parts, N_VIEWS, defect_rate=0.5)
    test_parts = make_parts(args.seed + 1, args.test_parts, N_VIEWS, defect_rate=0.3)
    x_train, y_train = render_views(train_parts, N_VIEWS)
    x_test, y_test = render_views(test_parts, N_VIEWS)
    print(f"rendered {len(x_train)} train / {len(x_test)} test views in {time.time() - t0:.0f} s")

    xt, yt = to_tensor(x_train), torch.from_numpy(y_train)
    model = DefectNet(len(DEFECTS))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=args.epochs * (len(xt) // 128 + 1)
    )
    loss_fn = nn.BCELoss()
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 128):
            idx = perm[i : i + 128]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        print(f"epoch {epoch + 1}/{args.epochs} loss {total / len(xt):.4f} ({time.time() - t0:.0f} s)")

    model.eval()
    with torch.no_grad():
        scores = torch.cat(
            [model(to_tensor(x_test[i : i + 512])) for i in range(0, len(x_test), 512)]
        ).numpy()
    rates = part_rates(scores, y_test)
    print(json.dumps(rates, indent=2))

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "demo_defects.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, SIZE, SIZE),),
        str(onnx_path),
        input_names=["images"],
        output_names=["scores"],
        dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    import onnx

    proto = onnx.load(str(onnx_path))
    proto.ir_version = 8  # onnxruntime refuses the newest IR versions that onnx writes by default
    meta = proto.metadata_props.add()
    meta.key, meta.value = "class_names", json.dumps(list(DEFECTS))
    onnx.save(proto, str(onnx_path))
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    card = {
        "model": onnx_path.name,
        "sha256": digest,
        "kind": "multilabel_classifier",
        "input": {"name": "images", "layout": "NCHW", "size": [SIZE, SIZE], "mean": MEAN, "std": STD},
        "class_names": list(DEFECTS),
        "threshold": 0.5,
        "trained_on": {"parts": args.train_parts, "views": N_VIEWS, "seed": args.seed, "epochs": args.epochs},
        "held_out": rates,
    }
    (args.out / "demo_defects.json").write_text(json.dumps(card, indent=2) + "\n")
    print(
        f"wrote {onnx_path} ({onnx_path.stat().st_size} B, sha256 {digest[:12]}) in {time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
