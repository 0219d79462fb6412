"""``affectline eval expressions DIR``: the expression model against human labels, per face size."""

from __future__ import annotations

import json
from pathlib import Path

import click


def _sizes(_ctx, _param, value: str) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for part in value.replace(" ", "").split(","):
        if part == "native":
            out.append(None)
        elif part.isdigit() and 8 <= int(part) <= 1080:
            out.append(int(part))
        else:
            raise click.BadParameter(f"expected face sizes in px (8-1080) or 'native', comma-separated; got {part!r}")
    if not out:
        raise click.BadParameter("no face size given")
    return tuple(out)


@click.group("eval")
def eval_() -> None:
    """Measure the models against human labels."""


@eval_.command("expressions")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--sizes", default="16,24,32,48,64,native", show_default=True, callback=_sizes,
              help="Face widths in px (the image shrunk into a 1080p frame) and/or 'native'.")  # fmt: skip
@click.option("--sample", type=click.IntRange(1), default=None,
              help="Score a seeded, class-proportional sample of this many images (the 1080p search costs ~0.4 s a frame).")  # fmt: skip
@click.option("--cache", "cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keep the detector's faces in this JSON file and reuse them on the next run.")  # fmt: skip
@click.option("--cv", "cv", type=click.IntRange(2, 20), default=None,
              help="Out-of-fold figures: refit the calibrated head on K identity-grouped folds of FOLDER, score each "
                   "held-out fold (use on the data the head was fitted on).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def expressions(folder: Path, sizes, sample: int | None, cache: Path | None, cv: int | None, as_json: bool) -> None:
    """Accuracy, macro-F1, recall, confusion, calibration and coverage of the expression model on
    FOLDER (labels.csv: file,label with FER2013 names; images beside it or under images/).
    On the development set the shipped head is in-sample: quote the figures of --cv 5."""
    from tqdm import tqdm

    from affectline.settings import get_settings
    from pipeline.eval_expressions import EvalInputError, evaluate, read_labels, subsample, table
    from pipeline.analyse import Pipeline

    try:
        n = len(subsample(read_labels(folder), sample))
    except EvalInputError as e:
        raise click.ClickException(str(e)) from None
    s = get_settings()
    with Pipeline(s) as pipe, tqdm(total=n, unit="img", disable=as_json, leave=False) as bar:
        def progress(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        try:
            result = evaluate(folder, pipe, sizes, cache, s.uncertain_threshold, sample, progress, cv)
        except EvalInputError as e:
            raise click.ClickException(str(e)) from None
        model = pipe.expression_name
    if as_json:
        click.echo(json.dumps({"model": model, "threshold": s.uncertain_threshold, "cv": cv,
                               "sizes": {k: v.as_dict() for k, v in result.items()}}, indent=1))  # fmt: skip
    else:
        how = f"; out-of-fold: head refitted on {cv} identity-grouped folds" if cv else ""
        click.echo(f"expression model {model}; uncertain below {s.uncertain_threshold:.2f}{how}")
        click.echo(table(result))
