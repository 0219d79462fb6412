"""CLIP-CAER: academic emotion from a face stream and a context stream (Neutrality ... Distraction).

Built on open_clip's ``CLIP`` class, with a module tree whose ``state_dict`` has exactly
the keys of the official ``GenerateModel`` (zgsfer/CLIP-CAER), so official checkpoints
load strictly and ours load in the official code. Forward pass (SPEC.md section 4):

- one CLIP image encoder (QuickGELU) encodes the 16 face frames and, in a second call,
  the 16 context frames -> (B, 16, 512) each;
- a temporal transformer per stream (CLS token, one pre-norm block, tanh-GELU) -> (B, 512);
- concat -> ``project_fc`` (1024 -> 512) -> L2 normalise;
- text: per class ``[SOT, 8 learnable ctx, descriptor tokens, EOT, pad]`` through the
  CLIP text tower, taken at EOT, projected, L2 normalised;
- logits = 100 * cosine (CLIP's ``logit_scale`` is stored but unused).

Input pixels are only divided by 255: the official model never applies CLIP's mean/std.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectline.types import ACADEMIC_CLASSES
from recognition.academic import caer_checkpoint as ckpt
from recognition.academic.caer_data import fit_frames

LOGIT_SCALE = 100.0  # the official model divides by a fixed temperature of 0.01
EMBED_DIM = 512  # forced by the official hard-coded temporal nets and project_fc


def build_clip(dims: ckpt.ClipDims):
    """An open_clip CLIP (QuickGELU, as OpenAI trained it) of the given dimensions, randomly initialised."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    if dims.vision_width < 64:
        raise ValueError(f"vision width {dims.vision_width} < 64: CLIP uses width // 64 vision heads")
    vision = CLIPVisionCfg(
        layers=dims.vision_layers,
        width=dims.vision_width,
        head_width=64,
        patch_size=dims.vision_patch,
        image_size=dims.image_size,
    )
    text = CLIPTextCfg(
        context_length=dims.context_length,
        vocab_size=dims.vocab_size,
        width=dims.text_width,
        heads=dims.text_heads,
        layers=dims.text_layers,
    )
    return CLIP(dims.embed_dim, vision, text, quick_gelu=True)


# Named CLIP shapes for random initialisation (benchmarks, tests, smoke runs). "tiny" keeps the
# official 512-d embedding (forced by the temporal nets) but shrinks both towers to one layer
# and the images to 32 px.
CLIP_ARCHS: dict[str, ckpt.ClipDims] = {
    "vit-b-32": ckpt.ClipDims(512, 768, 12, 32, 7, 512, 12, 8, 77, 49408),
    "tiny": ckpt.ClipDims(512, 64, 1, 8, 4, 64, 1, 1, 77, 49408),
}


def clip_from_weights(path: str | Path):
    """An open_clip CLIP of the file's dimensions with its weights.

    Reads OpenAI's ``.pt`` and open_clip's ``.bin``/``.safetensors`` files.
    """
    sd = ckpt.load_clip_state_dict(path)
    clip = build_clip(ckpt.infer_clip_dims(sd, prefix=""))
    missing, unexpected = clip.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ckpt.CheckpointError(
            f"{path}: does not fit an OpenAI-style CLIP: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return clip


# ----------------------------------------------------------------------------- temporal transformer
# Submodule names (fn, norm, to_qkv, to_out.0, net.0, net.3) are fixed by the official key layout.


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class _SelfAttention(nn.Module):
    """Multi-head self-attention, no mask, qkv without bias, heads split head-major."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(dim_head), as the official code
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(approximate="tanh"),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Blocks(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    _Residual(_PreNorm(dim, _SelfAttention(dim, heads, dim_head, dropout))),
                    _Residual(_PreNorm(dim, _FeedForward(dim, mlp_dim, dropout))),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = ff(attn(x))
        return x


class TemporalTransformer(nn.Module):
    """(B, T, D) frame features -> (B, D): a CLS token and learned positions, pre-norm blocks, CLS output."""

    def __init__(
        self,
        num_frames: int = 16,
        dim: int = EMBED_DIM,
        depth: int = 1,
        heads: int = 8,
        dim_head: int = 64,
        mlp_dim: int = 1024,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_frames + 1, dim))
        self.temporal_transformer = _Blocks(dim, depth, heads, dim_head, mlp_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        x = x + self.pos_embedding[:, : t + 1]
        return self.temporal_transformer(x)[:, 0]


# ----------------------------------------------------------------------------- text side


class PromptLearner(nn.Module):
    """Per-class prompts [SOT | ctx (learned, one set per class) | descriptor tokens, EOT, padding]."""

    def __init__(self, ctx: torch.Tensor, token_prefix: torch.Tensor, token_suffix: torch.Tensor):
        super().__init__()
        self.ctx = nn.Parameter(ctx.clone())
        self.register_buffer("token_prefix", token_prefix.clone())
        self.register_buffer("token_suffix", token_suffix.clone())

    def forward(self) -> torch.Tensor:
        return torch.cat([self.token_prefix, self.ctx, self.token_suffix], dim=1)


class TextEncoder(nn.Module):
    """CLIP's text tower applied to prompt embeddings (second names for the CLIP's own modules)."""

    def __init__(self, clip):
        super().__init__()
        self.positional_embedding = clip.positional_embedding
        self.text_projection = clip.text_projection
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        n = clip.positional_embedding.shape[0]
        self.register_buffer("causal_mask", torch.full((n, n), float("-inf")).triu(1), persistent=False)

    def forward(self, prompts: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        x = prompts + self.positional_embedding.to(prompts.dtype)
        x = self.transformer(x, attn_mask=self.causal_mask)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), eot_index] @ self.text_projection


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class CaerDims:
    """Everything needed to rebuild the module tree.

    All of it is readable from a state dict except ``clip.text_heads``.
    """

    clip: ckpt.ClipDims
    n_classes: int = 5
    n_ctx: int = 8
    num_frames: int = 16
    temporal_depth: int = 1
    temporal_heads: int = 8

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], text_heads: int | None = None) -> CaerDims:
        try:
            ctx = sd["prompt_learner.ctx"]
            pos = sd["temporal_net.pos_embedding"]
        except KeyError as e:
            raise ckpt.CheckpointError(f"state dict has no {e.args[0]!r}: not a CLIP-CAER layout") from None
        depth = len({k.split(".")[3] for k in sd if k.startswith("temporal_net.temporal_transformer.layers.")})
        return cls(
            clip=ckpt.infer_clip_dims(sd, text_heads=text_heads),
            n_classes=int(ctx.shape[0]),
            n_ctx=int(ctx.shape[1]),
            num_frames=int(pos.shape[1]) - 1,
            temporal_depth=depth,
        )


class ClipCaer(nn.Module):
    """The CLIP-CAER model. Attribute order mirrors the official state-dict key order.

    Use ``from_official_checkpoint`` for inference, ``for_training`` to start from a CLIP.
    ``logits(face, context)`` takes uint8 RGB arrays (B, T, H, W, 3) and returns a numpy
    float32 (B, n_classes) array; ``forward`` takes float tensors (B, T, 3, S, S) in [0, 1].
    """

    name = "clip-caer"

    def __init__(
        self,
        clip,
        prompt_learner: PromptLearner,
        eot_index: Sequence[int],
        dims: CaerDims,
        class_names: Sequence[str] = ACADEMIC_CLASSES,
        descriptors: Sequence[str] | None = None,
    ):
        super().__init__()
        if len(class_names) != dims.n_classes:
            raise ValueError(f"{len(class_names)} class names for {dims.n_classes} classes")
        if dims.clip.embed_dim != EMBED_DIM:
            raise ValueError(
                f"CLIP embed dim {dims.clip.embed_dim}: CLIP-CAER's temporal nets and project_fc are {EMBED_DIM}-d"
            )
        self.prompt_learner = prompt_learner
        self.text_encoder = TextEncoder(clip)
        self.image_encoder = clip.visual
        self.temporal_net = TemporalTransformer(dims.num_frames, depth=dims.temporal_depth, heads=dims.temporal_heads)
        self.temporal_net_body = TemporalTransformer(
            dims.num_frames, depth=dims.temporal_depth, heads=dims.temporal_heads
        )
        self.clip_model_ = clip
        self.project_fc = nn.Linear(2 * EMBED_DIM, EMBED_DIM)
        self.register_buffer("eot_index", torch.as_tensor(list(eot_index), dtype=torch.long), persistent=False)
        self.dims = dims
        self.class_names = tuple(class_names)
        self.descriptors = tuple(descriptors) if descriptors is not None else None
        self.sha256: str | None = None  # of the checkpoint file it was loaded from
        self.source: str | None = None

    @property
    def image_size(self) -> int:
        return self.dims.clip.image_size

    @property
    def device(self) -> torch.device:
        return self.project_fc.weight.device

    # -- building

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        text_heads: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> ClipCaer:
        """Build a model of the state dict's dimensions and load it strictly.

        ``text_heads``: see ``caer_checkpoint.infer_clip_dims`` (default text_width // 64).
        End-of-text positions are recovered from the buffers (SPEC.md section 5).
        """
        sd = ckpt.canonical_state_dict(state_dict)
        dims = CaerDims.from_state_dict(sd, text_heads)
        eot = ckpt.recover_eot_positions(
            sd["prompt_learner.token_suffix"], sd[ckpt.CLIP_PREFIX + "token_embedding.weight"], dims.n_ctx
        )
        clip = build_clip(dims.clip)
        prompts = PromptLearner(
            sd["prompt_learner.ctx"], sd["prompt_learner.token_prefix"], sd["prompt_learner.token_suffix"]
        )
        model = cls(clip, prompts, eot, dims, class_names or ACADEMIC_CLASSES[: dims.n_classes])
        try:
            missing, unexpected = model.load_state_dict(sd, strict=False)
        except RuntimeError as e:  # shape mismatches: keep the first offending tensor
            detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
            raise ckpt.CheckpointError(f"state dict does not fit the CLIP-CAER layout: {detail}") from None
        if missing or unexpected:
            raise ckpt.CheckpointError(
                "state dict does not fit the CLIP-CAER layout: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        return model.eval()

    @classmethod
    def from_official_checkpoint(
        cls, path: str | Path, text_heads: int | None = None, device: str | torch.device = "cpu"
    ) -> ClipCaer:
        """Load an official-layout CLIP-CAER checkpoint (``model_best.pth``) safely, in eval mode.

        ``text_heads`` overrides the stored value (checkpoints we write record it) and the
        width // 64 default; the official fixture needs ``text_heads=2``.
        """
        data = ckpt.load_checkpoint(path)
        meta = data.get(ckpt.META_KEY) or {}
        model = cls.from_state_dict(data["state_dict"], text_heads or meta.get("text_heads"), meta.get("class_names"))
        if meta.get("descriptors"):
            model.descriptors = tuple(meta["descriptors"])
        model.sha256 = ckpt.sha256_of(Path(path))
        model.source = str(path)
        return model.to(device)

    @classmethod
    def for_training(
        cls,
        clip,
        descriptors: Sequence[str],
        class_names: Sequence[str] = ACADEMIC_CLASSES,
        n_ctx: int = 8,
        temporal_depth: int = 1,
        num_frames: int = 16,
        text_heads: int | None = None,
    ) -> ClipCaer:
        """A fresh CLIP-CAER around ``clip`` (an open_clip CLIP with QuickGELU), prompts from ``descriptors``.

        Each class prompt is ``"X " * n_ctx + descriptor`` tokenised with CLIP's BPE; the
        placeholder embeddings are replaced by learnable per-class context vectors.
        """
        from open_clip.tokenizer import SimpleTokenizer

        if len(descriptors) != len(class_names):
            raise ValueError(f"{len(descriptors)} descriptors for {len(class_names)} classes")
        sd = {ckpt.CLIP_PREFIX + k: v for k, v in clip.state_dict().items()}
        heads = text_heads or clip.transformer.resblocks[0].attn.num_heads
        dims = CaerDims(
            clip=ckpt.infer_clip_dims(sd, text_heads=heads),
            n_classes=len(class_names),
            n_ctx=n_ctx,
            num_frames=num_frames,
            temporal_depth=temporal_depth,
        )
        tok = SimpleTokenizer(context_length=dims.clip.context_length)
        texts = [" ".join(["X"] * n_ctx) + " " + d for d in descriptors]
        for d, t in zip(descriptors, texts):
            if len(tok.encode(t)) + 2 > dims.clip.context_length:
                raise ValueError(f"descriptor too long for a {dims.clip.context_length}-token prompt: {d!r}")
        ids = tok(texts)
        with torch.no_grad():
            emb = clip.token_embedding(ids).float()
        ctx = torch.randn(len(class_names), n_ctx, dims.clip.text_width) * 0.02
        prompts = PromptLearner(ctx, emb[:, :1], emb[:, 1 + n_ctx :])
        return cls(clip, prompts, ids.argmax(dim=-1).tolist(), dims, class_names, descriptors)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in the official key order (aliases included, sharing storage).

        open_clip registers a residual block's ``ln_1`` before ``attn``; OpenAI's CLIP (and
        so the official file) lists ``attn`` first. Order does not matter for loading;
        keeping it makes our files diff cleanly against official ones.
        """
        sd = self.state_dict()
        rank = {"attn": 0, "ln_1": 1, "mlp": 2, "ln_2": 3}
        first: dict[str, int] = {}
        order = []
        for i, k in enumerate(sd):
            head, sep, tail = k.partition(".resblocks.")
            block, _, rest = tail.partition(".")
            group = head + sep + block if sep else k
            order.append((first.setdefault(group, i), rank.get(rest.split(".")[0], 0) if sep else 0, i, k))
        return {k: sd[k] for *_, k in sorted(order)}

    def save_checkpoint(
        self,
        path: str | Path,
        epoch: int = 0,
        best_acc: float = 0.0,
        optimizer_state: dict | None = None,
        recorder: dict | None = None,
        extra: dict | None = None,
        with_meta: bool = True,
    ) -> Path:
        """Write the official layout: epoch, state_dict, best_acc (numpy float64), optimizer, recorder.

        ``optimizer_state`` defaults to a fresh SGD state over the five official groups
        (empty ``state``, like the fixture). ``recorder`` is a plain dict with the official
        RecorderMeter fields, since pickling a ``__main__`` class would tie the file to a
        script. With ``with_meta`` an extra ``affectline`` entry records text_heads, class
        names and descriptors (the official loader ignores it).
        """
        if optimizer_state is None:
            optimizer_state = torch.optim.SGD(
                self.param_groups(), lr=1e-2, momentum=0.9, weight_decay=1e-4
            ).state_dict()
        state = {
            "epoch": int(epoch),
            "state_dict": self.official_state_dict(),
            "best_acc": np.float64(best_acc),
            "optimizer": optimizer_state,
            "recorder": recorder if recorder is not None else {"total_epoch": 0, "current_epoch": int(epoch)},
        }
        if with_meta:
            state[ckpt.META_KEY] = {
                "text_heads": self.dims.clip.text_heads,
                "class_names": list(self.class_names),
                "descriptors": list(self.descriptors or []),
                **(extra or {}),
            }
        return ckpt.save_checkpoint(path, state)

    def recovered_descriptors(self) -> list[str]:
        """The descriptor text, decoded from the prompt buffers and the token table (SPEC.md section 5)."""
        pl = self.prompt_learner
        return ckpt.recover_descriptors(
            pl.token_prefix, pl.token_suffix, self.clip_model_.token_embedding.weight, self.dims.n_ctx
        )

    # -- training setup

    def freeze_for_training(self) -> None:
        """Trainable: image encoder, both temporal nets, the prompt context, project_fc (the official choice)."""
        self.requires_grad_(False)
        for m in (self.image_encoder, self.temporal_net, self.temporal_net_body, self.project_fc):
            m.requires_grad_(True)
        self.prompt_learner.ctx.requires_grad_(True)

    def param_groups(
        self, lr_temporal: float = 1e-2, lr_image: float = 1e-5, lr_prompt: float = 1e-3, lr_fc: float = 1e-5
    ) -> list[dict]:
        """The five official SGD groups, in the official order (checkpoints store them in this order)."""
        return [
            {"params": list(self.temporal_net.parameters()), "lr": lr_temporal},
            {"params": list(self.temporal_net_body.parameters()), "lr": lr_temporal},
            {"params": list(self.image_encoder.parameters()), "lr": lr_image},
            {"params": list(self.prompt_learner.parameters()), "lr": lr_prompt},
            {"params": list(self.project_fc.parameters()), "lr": lr_fc},
        ]

    # -- forward

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) float in [0, 1] -> (B, T, 512) unnormalised image features."""
        b, t = frames.shape[:2]
        return self.image_encoder(frames.reshape(b * t, *frames.shape[2:])).reshape(b, t, -1)

    def video_features(self, face: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """L2-normalised fused video features (B, 512); face and context go through the encoder separately."""
        vf = self.temporal_net(self.encode_frames(face))
        vc = self.temporal_net_body(self.encode_frames(context))
        return F.normalize(self.project_fc(torch.cat([vf, vc], dim=-1)), dim=-1)

    def text_features(self) -> torch.Tensor:
        """L2-normalised class text features (n_classes, 512); independent of the video."""
        return F.normalize(self.text_encoder(self.prompt_learner(), self.eot_index), dim=-1)

    def forward(self, face: torch.Tensor, context: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n_classes); pass precomputed ``text_features()`` to skip the text tower."""
        t = self.text_features() if text is None else text
        v = self.video_features(face, context)
        return LOGIT_SCALE * v @ t.to(v.dtype).t()

    def to_input(self, frames: np.ndarray | torch.Tensor, stream: str) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) RGB -> float (B, T, 3, S, S) / 255 on the model's device.

        Frames of another size are fitted as the official loader does: faces resized
        (aspect ignored), contexts letterboxed.
        """
        size = (self.image_size, self.image_size)
        if not (isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8 and tuple(frames.shape[2:4]) == size):
            arr = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
            if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[-1] != 3:
                raise ValueError(f"{stream} frames must be uint8 (B, T, H, W, 3) RGB, got {arr.dtype} {arr.shape}")
            if arr.shape[2:4] != size:
                arr = np.stack([fit_frames(clip, self.image_size, stream) for clip in arr])
            frames = torch.from_numpy(np.ascontiguousarray(arr))
        # Reorder while still uint8 (4x less to move), then one float copy divided in place.
        x = frames.to(self.device, non_blocking=True).permute(0, 1, 4, 2, 3).contiguous()
        return x.float().div_(255.0)

    @torch.inference_mode()
    def logits(self, face: np.ndarray, context: np.ndarray) -> np.ndarray:
        """uint8 face and context clips (B, T, H, W, 3) RGB -> float32 numpy logits (B, n_classes)."""
        if len(face) != len(context):
            raise ValueError(f"face has {len(face)} clips, context has {len(context)}")
        was_training = self.training
        self.eval()
        try:
            out = self(self.to_input(face, "face"), self.to_input(context, "context"))
        finally:
            self.train(was_training)
        return out.float().cpu().numpy()

    def probabilities(self, face: np.ndarray, context: np.ndarray) -> np.ndarray:
        """Softmax of ``logits`` over the classes."""
        z = self.logits(face, context)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
