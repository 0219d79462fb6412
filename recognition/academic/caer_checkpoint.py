"""Safe reading and writing of CLIP-CAER checkpoints in the official layout.

An official ``model.pth`` is ``torch.save`` of a dict with ``epoch``, ``state_dict``,
``best_acc`` (a numpy float64), ``optimizer`` and ``recorder`` (a pickled
``__main__.RecorderMeter``). torch's ``weights_only`` unpickler refuses the last two
unless their globals are allow-listed; we allow exactly those globals (for files
written under numpy 2 *and* numpy 1) and never fall back to ``weights_only=False``,
so a file that needs anything else (``os.system``, ...) is refused instead of run.

Also here: reading the CLIP dimensions back from the state-dict shapes, and
recovering what the file does not store (end-of-text positions, descriptor text).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recognition.registry import sha256_of  # noqa: F401  (re-exported: provenance of checkpoint files)

SOT_TOKEN = 49406
EOT_TOKEN = 49407
CLIP_PREFIX = "clip_model_."
META_KEY = "affectline"  # our extra top-level entry (text heads, class names, descriptors); official code ignores it
# Modules of the official GenerateModel that are second names for parts of clip_model_.
ALIASES = {"image_encoder.": CLIP_PREFIX + "visual.", "text_encoder.": CLIP_PREFIX}


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: unsafe, unreadable or of another layout."""


class RecorderMeter:
    """Inert stand-in for the official training-log class pickled as ``__main__.RecorderMeter``.

    Unpickling only fills ``__dict__`` (total_epoch, current_epoch, epoch_losses,
    epoch_accuracy); it has no behaviour, so loading it runs none of the author's code.
    """

    def __repr__(self) -> str:
        return f"RecorderMeter({', '.join(sorted(vars(self)))})"


def _allowed_globals() -> list[Any]:
    core = np._core.multiarray
    allowed: list[Any] = [
        (RecorderMeter, "__main__.RecorderMeter"),
        np.dtype,
        np.ndarray,
        np.dtypes.Float64DType,
        np.dtypes.Float32DType,
        np.dtypes.Int64DType,
        core.scalar,
        core._reconstruct,
    ]
    # Files written under numpy 1 (the official Python 3.8 environment) name numpy.core.*;
    # register the numpy 2 objects under those names instead of importing the deprecated shim.
    allowed += [
        (core.scalar, "numpy.core.multiarray.scalar"),
        (core._reconstruct, "numpy.core.multiarray._reconstruct"),
    ]
    return allowed


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict without executing code; a bare state dict is wrapped as ``{"state_dict": ...}``.

    Raises CheckpointError naming the file and the refused global when the file needs
    anything beyond plain tensors, numpy scalars/arrays and the RecorderMeter stand-in.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{p}: refused to load: it needs Python objects outside the allow-list ({', '.join(_refused(p)) or '?'}); "
            "official CLIP-CAER checkpoints only need tensors, numpy scalars and RecorderMeter"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{p}: not a readable torch checkpoint ({str(e).splitlines()[0]})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        return dict(obj)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise CheckpointError(f"{p}: expected a dict with a 'state_dict' entry, got {type(obj).__name__}")


def _refused(p: Path) -> list[str]:
    """Globals the file names that the allow-list does not cover (read from the pickle opcodes, nothing run)."""
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(p)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError):
        return []
    allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _allowed_globals()}
    return [g for g in needed if g not in allowed]


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` atomically (a reader never sees half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".{os.getpid()}.part")
    torch.save(dict(state), tmp)
    os.replace(tmp, p)
    return p


def canonical_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Make every alias key equal its ``clip_model_.*`` twin, as the official strict load ends up doing.

    torch's loader visits ``clip_model_`` after ``image_encoder``/``text_encoder``, so if
    a file ever holds different values under the two names, ``clip_model_.*`` wins.
    """
    out = dict(sd)
    for key in sd:
        for alias, target in ALIASES.items():
            if key.startswith(alias):
                twin = target + key[len(alias) :]
                if twin in sd:
                    out[key] = sd[twin]
    return out


@dataclass(frozen=True)
class ClipDims:
    """The shape of a CLIP as read from its state dict (text heads cannot be read: see ``infer_clip_dims``)."""

    embed_dim: int
    vision_width: int
    vision_layers: int
    vision_patch: int
    vision_grid: int
    text_width: int
    text_layers: int
    text_heads: int
    context_length: int
    vocab_size: int

    @property
    def image_size(self) -> int:
        return self.vision_patch * self.vision_grid

    @property
    def vision_heads(self) -> int:
        return self.vision_width // 64

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _count_blocks(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    ids = {k[len(prefix) :].split(".", 1)[0] for k in sd if k.startswith(prefix)}
    return len(ids)


def infer_clip_dims(
    sd: Mapping[str, torch.Tensor], prefix: str = CLIP_PREFIX, text_heads: int | None = None
) -> ClipDims:
    """Read a CLIP's dimensions from the state-dict shapes under ``prefix``.

    The text head count is not visible in any shape. Default rule: ``text_width // 64``
    (OpenAI's ``build_model`` rule, right for every released CLIP, e.g. 512 -> 8 for
    ViT-B/32); pass ``text_heads`` to override it (the official fixture uses 2 heads
    at width 64).
    """

    def get(name: str) -> torch.Tensor:
        try:
            return sd[prefix + name]
        except KeyError:
            raise CheckpointError(f"state dict has no {prefix + name!r}: not a CLIP / CLIP-CAER layout") from None

    conv = get("visual.conv1.weight")
    vis_pos = get("visual.positional_embedding")
    grid = round((vis_pos.shape[0] - 1) ** 0.5)
    if grid * grid + 1 != vis_pos.shape[0]:
        raise CheckpointError(f"visual.positional_embedding has {vis_pos.shape[0]} rows, not a square grid + 1")
    text_pos = get("positional_embedding")
    text_width = int(get("ln_final.weight").shape[0])
    heads = int(text_heads) if text_heads else max(1, text_width // 64)
    if text_width % heads:
        raise CheckpointError(f"text width {text_width} is not divisible by text_heads={heads}")
    return ClipDims(
        embed_dim=int(get("text_projection").shape[1]),
        vision_width=int(conv.shape[0]),
        vision_layers=_count_blocks(sd, prefix + "visual.transformer.resblocks."),
        vision_patch=int(conv.shape[-1]),
        vision_grid=grid,
        text_width=text_width,
        text_layers=_count_blocks(sd, prefix + "transformer.resblocks."),
        text_heads=heads,
        context_length=int(text_pos.shape[0]),
        vocab_size=int(get("token_embedding.weight").shape[0]),
    )


def recover_eot_positions(token_suffix: torch.Tensor, token_embedding: torch.Tensor, n_ctx: int) -> list[int]:
    """End-of-text index per class: the first suffix row equal to the EOT token's embedding, plus 1 + n_ctx.

    Works because the token table is frozen in training, so the prompt buffers built
    from it still match it exactly.
    """
    eot = token_embedding[EOT_TOKEN]
    positions = []
    for c in range(token_suffix.shape[0]):
        hits = torch.nonzero(torch.all(token_suffix[c] == eot, dim=-1)).flatten()
        if len(hits) == 0:
            raise CheckpointError(
                f"class {c}: no row of prompt_learner.token_suffix equals the end-of-text embedding; "
                "the buffers do not come from this checkpoint's token table"
            )
        positions.append(1 + n_ctx + int(hits[0]))
    return positions


def recover_token_ids(rows: torch.Tensor, token_embedding: torch.Tensor) -> list[int]:
    """Token id of each embedding row, by exact match against the table (-1 where none matches).

    A random projection narrows 49408 candidates to a handful before the exact test,
    so this stays cheap for the 512-wide real table.
    """
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(token_embedding.shape[1], generator=g, dtype=torch.float64)
    table_key = token_embedding.double() @ probe
    ids = []
    for row, key in zip(rows, rows.double() @ probe):
        cand = torch.nonzero(torch.isclose(table_key, key, rtol=0, atol=1e-9)).flatten()
        match = [int(i) for i in cand if torch.equal(token_embedding[i], row)]
        ids.append(match[0] if match else -1)
    return ids


def recover_descriptors(
    token_prefix: torch.Tensor, token_suffix: torch.Tensor, token_embedding: torch.Tensor, n_ctx: int
) -> list[str]:
    """Decode each class's descriptor text from the prompt buffers (lower-cased, BPE-spaced)."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    eots = recover_eot_positions(token_suffix, token_embedding, n_ctx)
    out = []
    for c, eot in enumerate(eots):
        ids = recover_token_ids(token_suffix[c, : eot - 1 - n_ctx], token_embedding)
        if -1 in ids:
            raise CheckpointError(f"class {c}: a descriptor token does not match the token table")
        out.append(tok.decode(ids).strip())
    return out


# ----------------------------------------------------------------------------- locating weights (never downloads)


class WeightsNotFound(FileNotFoundError):
    """No local file for a model that needs real weights; the message says what to put where."""


CAER_CHECKPOINT_NAMES = ("clip_caer.pth", "model_best.pth")
CLIP_WEIGHT_NAMES = (
    "ViT-B-32.pt",  # OpenAI's release (TorchScript archive), as clip.load / open_clip cache it
    "ViT-B-32-quickgelu.pt",
    "open_clip_pytorch_model.bin",
    "open_clip_model.safetensors",
)
# open_clip's Hugging Face repos for QuickGELU ViT-B/32 weights (OpenAI first).
CLIP_HF_REPOS = (
    "timm/vit_base_patch32_clip_224.openai",
    "timm/vit_base_patch32_clip_224.laion400m_e32",
    "timm/vit_base_patch32_clip_224.laion400m_e31",
)


def clip_weight_candidates(model_dir: str | os.PathLike, hf_hub_cache: str | os.PathLike) -> list[Path]:
    """Where pretrained CLIP weights are looked for, in order: model_dir, OpenAI's clip cache, the HF hub
    cache (``Settings.resolved_hf_hub_cache``)."""
    out = [Path(model_dir).expanduser() / n for n in CLIP_WEIGHT_NAMES]
    out.append(Path.home() / ".cache" / "clip" / "ViT-B-32.pt")
    hub = Path(hf_hub_cache).expanduser()
    for repo in CLIP_HF_REPOS:
        snaps = hub / ("models--" + repo.replace("/", "--")) / "snapshots"
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            out += sorted(snaps.glob(f"*/{fname}")) or [snaps / "<revision>" / fname]
    return out


def find_clip_weights(path: str | os.PathLike | None = None, model_dir: str | os.PathLike | None = None,
                      settings=None) -> Path:  # fmt: skip
    """A local pretrained CLIP ViT-B/32 (QuickGELU) weight file to initialise training from."""
    if path is not None:
        if Path(path).is_file():
            return Path(path)
        raise WeightsNotFound(f"CLIP weights {path} do not exist")
    from affectline.settings import get_settings

    st = settings or get_settings()
    tried = clip_weight_candidates(model_dir if model_dir is not None else st.model_dir, st.resolved_hf_hub_cache)
    for p in tried:
        if p.is_file():
            return p
    raise WeightsNotFound(
        "no pretrained CLIP ViT-B/32 weights found (nothing is downloaded): put OpenAI's ViT-B-32.pt, or open_clip's "
        "open_clip_pytorch_model.bin / open_clip_model.safetensors for a QuickGELU ViT-B-32, "
        f"into {Path(model_dir if model_dir is not None else st.model_dir).expanduser()} "
        "(AFFECTLINE_MODEL_DIR), or pass its path (--clip-weights); looked at: " + ", ".join(str(p) for p in tried)
    )


def find_caer_checkpoint(path: str | os.PathLike | None = None, model_dir: str | os.PathLike | None = None) -> Path:
    """The trained CLIP-CAER checkpoint for inference.

    ``path``, else AFFECTLINE_CAER_CHECKPOINT, else model_dir/clip_caer.pth (or model_best.pth).
    """
    if path is None or model_dir is None:
        from affectline.settings import get_settings

        s = get_settings()
        path = path if path is not None else s.caer_checkpoint
        model_dir = model_dir if model_dir is not None else s.model_dir
    if path is not None:
        if Path(path).is_file():
            return Path(path)
        raise WeightsNotFound(f"CLIP-CAER checkpoint {path} does not exist")
    tried = [Path(model_dir).expanduser() / n for n in CAER_CHECKPOINT_NAMES]
    for p in tried:
        if p.is_file():
            return p
    raise WeightsNotFound(
        "no trained CLIP-CAER checkpoint found (nothing is downloaded): get the official trained model_best.pth "
        f"(zgsfer/CLIP-CAER) or train one with `affectline caer train`, then put it at {tried[0]} or set "
        "AFFECTLINE_CAER_CHECKPOINT=/path/to/model_best.pth; looked at: " + ", ".join(str(p) for p in tried)
    )


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A CLIP state dict from OpenAI's TorchScript ``.pt``, a torch state dict (``.pt/.bin``) or ``.safetensors``.

    Plain torch files are read with ``weights_only=True``; TorchScript archives hold
    TorchScript (not Python pickles) and are read with ``torch.jit.load`` as OpenAI's
    and open_clip's loaders do.
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    elif _is_torchscript(p):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, but OpenAI ships TorchScript
            sd = torch.jit.load(str(p), map_location="cpu").state_dict()
    else:
        sd = load_checkpoint(p)["state_dict"]
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    # Scalars in OpenAI's archives, and the causal mask (rebuilt, never learned).
    for extra in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
        sd.pop(extra, None)
    if "visual.conv1.weight" not in sd:
        raise CheckpointError(f"{p}: not a ViT CLIP state dict (no visual.conv1.weight)")
    return {k: v.float() for k, v in sd.items()}
