"""``affectline caer``: train and evaluate CLIP-CAER on a RAER-layout dataset.

A dataset is a label list (``path num_frames label`` per line, labels 1-based in the
order Neutrality, Enjoyment, Confusion, Fatigue, Distraction) whose paths are frame
folders or video files; see ``recognition.academic.caer_data``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from affectline.types import ACADEMIC_CLASSES


def _datasets(list_file: Path, root: Path | None):
    from recognition.academic.caer_data import read_label_list

    try:
        return read_label_list(list_file, root, len(ACADEMIC_CLASSES))
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None


def _milestones(_ctx, _param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"expected epoch numbers like '10,15', got {value!r}") from None


dataset_options = [
    click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        help="Base folder of the clip paths (default: each list's folder).",
    ),
    click.option(
        "--face-boxes",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="JSON {clip: {frame: [l,t,r,b]}}; none = whole frames.",
    ),
    click.option(
        "--context-boxes",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="JSON {clip: [l,t,r,b]}; none = whole frames.",
    ),
    click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1)),
    click.option(
        "--workers", default=0, show_default=True, type=click.IntRange(0), help="DataLoader worker processes."
    ),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option(
        "--amp",
        type=click.Choice(["auto", "off", "bf16", "fp16"]),
        default="auto",
        show_default=True,
        help="Mixed precision (CUDA only).",
    ),
]


def _with(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


@click.group()
def caer() -> None:
    """Train and evaluate the CLIP-CAER academic-emotion model."""


@caer.command()
@click.option(
    "--train-list", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Training label list."
)
@click.option(
    "--val-list", type=click.Path(dir_okay=False, path_type=Path), help="Validation list (picks the best epoch)."
)
@click.option(
    "--val-fraction",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Without --val-list: stratified share of the training list held out for validation.",
)
@click.option(
    "--test-list",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Scored once, with the best-on-validation model.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for model.pth, model_best.pth, metrics.",
)
@click.option(
    "--clip-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pretrained CLIP ViT-B/32 file (OpenAI .pt, open_clip .bin/.safetensors); "
    "default: looked up in the model folder and caches.",
)
@click.option(
    "--random-init",
    type=click.Choice(["vit-b-32", "tiny"]),
    help="Start from a random CLIP instead (smoke tests only).",
)
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(1))
@click.option("--lr", "lr_temporal", default=1e-2, show_default=True, help="Temporal nets.")
@click.option("--lr-image-encoder", default=1e-5, show_default=True)
@click.option("--lr-prompt-learner", default=1e-3, show_default=True)
@click.option("--lr-project-fc", default=1e-5, show_default=True)
@click.option(
    "--milestones", default="10,15", show_default=True, callback=_milestones, help="Epochs where the rates drop x0.1."
)
@click.option("--seed", default=42, show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from OUT/model.pth when present.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_with(dataset_options)
def train(
    train_list,
    val_list,
    val_fraction,
    test_list,
    out,
    clip_weights,
    random_init,
    epochs,
    lr_temporal,
    lr_image_encoder,
    lr_prompt_learner,
    lr_project_fc,
    milestones,
    seed,
    resume,
    quiet,
    root,
    face_boxes,
    context_boxes,
    batch_size,
    workers,
    device,
    amp,
) -> None:
    """Train with the published recipe; the best epoch is chosen on validation, never on test."""
    from recognition.academic import caer_checkpoint as ckpt
    from recognition.academic.caer_data import CaerClipDataset, split_validation
    from recognition.academic.caer_train import TrainConfig, evaluate
    from recognition.academic.caer_train import train as run_training
    from recognition.academic.clip_caer import CLIP_ARCHS, ClipCaer, build_clip, clip_from_weights
    from recognition.academic.descriptors import class_descriptors

    records = _datasets(train_list, root)
    if val_list:
        train_recs, val_recs = records, _datasets(val_list, root)
    else:
        train_recs, val_recs = split_validation(records, val_fraction, seed)
        if not val_recs:
            raise click.ClickException(f"{train_list}: too few clips to hold out a validation split; pass --val-list")
    last = out / "model.pth"
    try:
        if resume and last.exists():
            model = ClipCaer.from_official_checkpoint(last)
            click.echo(f"resuming {last}")
        else:
            if random_init:
                clip = build_clip(CLIP_ARCHS[random_init])
                click.echo(f"random {random_init} CLIP (no pretrained weights): for smoke tests, not for real use")
            else:
                path = ckpt.find_clip_weights(clip_weights)
                clip = clip_from_weights(path)
                click.echo(f"CLIP weights: {path}")
            model = ClipCaer.for_training(clip, class_descriptors())
    except (ckpt.WeightsNotFound, ckpt.CheckpointError) as e:
        raise click.ClickException(str(e)) from None

    size = model.image_size
    boxes = {"face_boxes": face_boxes, "context_boxes": context_boxes}
    train_set = CaerClipDataset(train_recs, size, train=True, seed=seed, **boxes)
    val_set = CaerClipDataset(val_recs, size, **boxes)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr_temporal=lr_temporal,
        lr_image=lr_image_encoder,
        lr_prompt=lr_prompt_learner,
        lr_fc=lr_project_fc,
        milestones=milestones,
        workers=workers,
        seed=seed,
        amp=amp,
        progress=not quiet,
    )
    click.echo(f"{len(train_set)} training clips, {len(val_set)} validation clips, image size {size}")
    result = run_training(model, train_set, val_set, out, cfg, device=device, resume=resume, log=click.echo)
    click.echo(
        f"best epoch {result.best_epoch}: validation UAR {result.best_val.uar:.2f}% "
        f"WAR {result.best_val.war:.2f}% -> {result.checkpoint}"
    )
    metrics = {"best_epoch": result.best_epoch, "validation": result.best_val.as_dict(), "history": result.history}
    if test_list:
        test = evaluate(
            model,
            CaerClipDataset(_datasets(test_list, root), size, **boxes),
            batch_size,
            device,
            amp,
            workers,
            progress=not quiet,
            desc="test",
        )
        click.echo("test (best-on-validation model):\n" + test.format(model.class_names))
        metrics["test"] = test.as_dict()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))


@caer.command("eval")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CLIP-CAER checkpoint (official layout); default: AFFECTLINE_CAER_CHECKPOINT or MODEL_DIR/clip_caer.pth.",
)
@click.option(
    "--list", "list_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Label list to score."
)
@click.option(
    "--text-heads",
    type=click.IntRange(1),
    help="Text-tower heads if not width//64 (e.g. 2 for the official test fixture).",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the metrics here."
)
@_with(dataset_options)
def eval_cmd(
    checkpoint, list_file, text_heads, json_out, root, face_boxes, context_boxes, batch_size, workers, device, amp
) -> None:
    """UAR, WAR and the confusion matrix of a checkpoint on a labelled list."""
    from recognition.academic import caer_checkpoint as ckpt
    from recognition.academic.caer_data import CaerClipDataset
    from recognition.academic.caer_train import evaluate
    from recognition.academic.clip_caer import ClipCaer

    try:
        path = ckpt.find_caer_checkpoint(checkpoint)
        model = ClipCaer.from_official_checkpoint(path, text_heads=text_heads)
    except (ckpt.WeightsNotFound, ckpt.CheckpointError) as e:
        raise click.ClickException(str(e)) from None
    ds = CaerClipDataset(
        _datasets(list_file, root), model.image_size, face_boxes=face_boxes, context_boxes=context_boxes
    )
    res = evaluate(model, ds, batch_size, device, amp, workers, progress=True, desc="eval")
    click.echo(f"{model.name} {path} (sha256 {model.sha256[:12]}…)\n" + res.format(model.class_names))
    if json_out:
        Path(json_out).write_text(
            json.dumps({"checkpoint": str(path), "sha256": model.sha256, **res.as_dict()}, indent=1)
        )
