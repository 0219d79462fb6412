"""Training and evaluation of CLIP-CAER with the published recipe.

Recipe (zgsfer/CLIP-CAER train.sh): 16-segment TSN sampling, batch 8, 20 epochs, SGD
momentum 0.9 and weight decay 1e-4 over five groups (temporal nets 1e-2, image
encoder 1e-5, prompt context 1e-3, project_fc 1e-5), MultiStepLR x0.1 at epochs 10
and 15, cross-entropy, the clip-level rotation/flip augmentation. One deliberate
change: the official script keeps the epoch with the best *test* UAR; here the best
epoch is chosen on a validation split and the test split is only evaluated once.

Checkpoints are written in the official layout (``model.pth`` after every epoch,
``model_best.pth`` for the best validation UAR) plus our ``affectline`` entry, so
``ClipCaer.from_official_checkpoint`` and the official code can both read them,
and ``train(..., resume=True)`` continues from ``model.pth``.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recognition.academic import caer_checkpoint as ckpt
from recognition.academic.clip_caer import ClipCaer


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are the published ones."""

    epochs: int = 20
    batch_size: int = 8
    lr_temporal: float = 1e-2
    lr_image: float = 1e-5
    lr_prompt: float = 1e-3
    lr_fc: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (10, 15)
    gamma: float = 0.1
    workers: int = 0
    seed: int = 42
    amp: str = "auto"  # auto (bf16, else fp16, on CUDA; off on CPU) | off | bf16 | fp16
    progress: bool = True


@dataclass
class EvalResult:
    """Clip-level scores: UAR (mean per-class recall over classes present) and WAR (accuracy), in %."""

    uar: float
    war: float
    confusion: np.ndarray  # (n_classes, n_classes) counts, rows = true class
    loss: float
    n: int

    def as_dict(self) -> dict:
        return {"uar": self.uar, "war": self.war, "loss": self.loss, "n": self.n, "confusion": self.confusion.tolist()}

    def format(self, class_names: tuple[str, ...]) -> str:
        w = max(len(c) for c in class_names)
        lines = [
            f"UAR {self.uar:.2f}%  WAR {self.war:.2f}%  loss {self.loss:.4f}  clips {self.n}",
            "confusion (rows: true, cols: predicted)",
        ]
        lines.append(" " * (w + 1) + " ".join(f"{c[:6]:>6}" for c in class_names))
        for c, row in zip(class_names, self.confusion):
            lines.append(f"{c:>{w}} " + " ".join(f"{v:6d}" for v in row))
        return "\n".join(lines)


@dataclass
class TrainResult:
    best_epoch: int  # 1-based
    best_val: EvalResult
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None  # model_best.pth


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[float, float, np.ndarray]:
    """(UAR %, WAR %, confusion counts). UAR averages recall over the classes that occur in ``y_true``."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    support = cm.sum(axis=1)
    present = support > 0
    uar = float((np.diag(cm)[present] / support[present]).mean() * 100) if present.any() else 0.0
    war = float(np.trace(cm) / max(1, len(y_true)) * 100)
    return uar, war, cm


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_for(device: torch.device, amp: str = "auto"):
    """(context manager, dtype or None): mixed precision on CUDA only; bf16 where supported, else fp16."""
    if device.type != "cuda" or amp == "off":
        return nullcontext(), None
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast("cuda", dtype=dtype), dtype


def _loader(dataset, batch_size: int, shuffle: bool, workers: int, seed: int, drop_last: bool = False):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=g,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )


@torch.no_grad()
def evaluate(
    model: ClipCaer,
    dataset,
    batch_size: int = 8,
    device=None,
    amp: str = "auto",
    workers: int = 0,
    progress: bool = True,
    desc: str = "eval",
) -> EvalResult:
    """Scores ``model`` on a test-mode dataset (segment-centre sampling, no augmentation)."""
    dev = resolve_device(device or model.device)
    model.to(dev).eval()
    cast, _ = autocast_for(dev, amp)
    text = None
    preds, labels, loss_sum = [], [], 0.0
    for face, ctx, y in tqdm(
        _loader(dataset, batch_size, False, workers, 0), desc=desc, disable=not progress, leave=False
    ):
        y = y.to(dev)
        with cast:
            text = model.text_features() if text is None else text
            logits = model(model.to_input(face, "face"), model.to_input(ctx, "context"), text).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        preds.append(logits.argmax(1).cpu())
        labels.append(y.cpu())
    y_true, y_pred = torch.cat(labels).numpy(), torch.cat(preds).numpy()
    uar, war, cm = classification_metrics(y_true, y_pred, model.dims.n_classes)
    return EvalResult(uar, war, cm, loss_sum / max(1, len(y_true)), len(y_true))


def _meta(cfg: TrainConfig, best_epoch: int, history: list[dict]) -> dict:
    """Our resume state, stored beside the official entries."""
    return {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "best_epoch": best_epoch,
        "history": history,
        "torch_rng": torch.get_rng_state(),
        "python_rng": json.dumps(random.getstate()),
    }


def train(
    model: ClipCaer,
    train_set,
    val_set,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    device=None,
    resume: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train with the published recipe; keep the epoch with the best validation UAR.

    ``train_set`` should be a ``CaerClipDataset(train=True)`` and ``val_set`` one with
    ``train=False``. Writes ``out_dir/model.pth`` every epoch and ``out_dir/model_best.pth``
    when validation UAR improves (strictly, like the official code); with ``resume`` an
    existing ``model.pth`` is continued. On return ``model`` holds the best weights.
    """
    cfg = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "model.pth", out / "model_best.pth"
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model.to(dev)
    model.freeze_for_training()
    optim = torch.optim.SGD(
        model.param_groups(cfg.lr_temporal, cfg.lr_image, cfg.lr_prompt, cfg.lr_fc),
        lr=cfg.lr_temporal,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.MultiStepLR(optim, milestones=list(cfg.milestones), gamma=cfg.gamma)
    start, best_uar, best_epoch, history = 0, -1.0, 0, []
    best_val: EvalResult | None = None
    if resume and last_path.exists():
        state = ckpt.load_checkpoint(last_path)
        model.load_state_dict(ckpt.canonical_state_dict(state["state_dict"]))
        optim.load_state_dict(state["optimizer"])  # holds the already-decayed learning rates
        meta = state.get(ckpt.META_KEY) or {}
        start, best_uar = int(state["epoch"]), float(state["best_acc"])
        best_epoch, history = int(meta.get("best_epoch", 0)), list(meta.get("history", []))
        sched.last_epoch = start  # the next step() decays at the right milestone, without a second decay now
        if "torch_rng" in meta:
            torch.set_rng_state(meta["torch_rng"])
            random.setstate(_as_state(json.loads(meta["python_rng"])))
        log(f"resumed from {last_path} after epoch {start} (best validation UAR {best_uar:.2f}% at epoch {best_epoch})")
    cast, dtype = autocast_for(dev, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    rows = max(cfg.epochs, len(history))  # the official RecorderMeter fields, as a plain dict
    recorder = {
        "total_epoch": cfg.epochs,
        "current_epoch": start,
        "epoch_losses": np.zeros((rows, 2), np.float32),
        "epoch_accuracy": np.zeros((rows, 2), np.float32),
    }
    for h in history:
        recorder["epoch_losses"][h["epoch"] - 1] = (h["train_loss"], h["val_loss"])
        recorder["epoch_accuracy"][h["epoch"] - 1] = (h["train_war"], h["val_uar"])

    for epoch in range(start, cfg.epochs):
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        model.train()
        loader = _loader(
            train_set, cfg.batch_size, True, cfg.workers, cfg.seed + epoch, drop_last=len(train_set) > cfg.batch_size
        )
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
        loss_sum, correct, seen = 0.0, 0, 0
        for face, ctx, y in bar:
            y = y.to(dev)
            with cast:
                logits = model(model.to_input(face, "face"), model.to_input(ctx, "context")).float()
            loss = F.cross_entropy(logits, y)
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
        sched.step()
        val = evaluate(model, val_set, cfg.batch_size, dev, cfg.amp, cfg.workers, cfg.progress, desc="validation")
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, seen),
            "train_war": 100 * correct / max(1, seen),
            "val_loss": val.loss,
            "val_uar": val.uar,
            "val_war": val.war,
        }
        history.append(row)
        recorder["epoch_losses"][epoch] = (row["train_loss"], val.loss)
        recorder["epoch_accuracy"][epoch] = (row["train_war"], val.uar)
        recorder["current_epoch"] = epoch + 1
        improved = val.uar > best_uar
        if improved:
            best_uar, best_epoch, best_val = val.uar, epoch + 1, val
        model.save_checkpoint(
            last_path, epoch + 1, best_uar, optim.state_dict(), dict(recorder), _meta(cfg, best_epoch, history)
        )
        if improved:
            shutil.copyfile(last_path, best_path)
        log(
            f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} acc {row['train_war']:.1f}% | "
            f"val UAR {val.uar:.2f}% WAR {val.war:.2f}% loss {val.loss:.4f}" + ("  (best)" if improved else "")
        )

    if not best_path.exists():
        raise RuntimeError(
            f"no epoch was trained: {last_path} already covers {cfg.epochs} epochs and no best file exists"
        )
    best = ckpt.load_checkpoint(best_path)
    model.load_state_dict(ckpt.canonical_state_dict(best["state_dict"]))
    if best_val is None:  # the best epoch predates this run (resumed): score it again
        best_val = evaluate(model, val_set, cfg.batch_size, dev, cfg.amp, cfg.workers, progress=False)
    return TrainResult(best_epoch, best_val, history, best_path)


def _as_state(obj):
    """json turns random.getstate()'s tuples into lists; turn them back."""
    return tuple(_as_state(x) for x in obj) if isinstance(obj, list) else obj
