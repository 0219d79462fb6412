"""CLIP-CAER inference throughput: batched windows vs one clip at a time, in the same run.

    .venv/bin/python bench/caer.py [--device cpu|cuda|all] [--arch vit-b-32,fixture] [--repeat 2] [--json out.json]

A clip (window) is 16 face + 16 context frames of 224 x 224. For each architecture and
device, timed after a warm-up:

- batched: ``CaerScorer(batch_size=B).score`` over N windows streamed from a generator;
- loop: the same scorer with batch_size=1 over M windows (the baseline);
  the two alternate ``--repeat`` times and the best of each counts; the ratio is
  given on wall time and on process CPU time (steadier on a shared machine);
- memory: peak above the starting level while scoring N and then 4N streamed windows
  (CPU: resident high-water mark; CUDA: ``max_memory_allocated``). Bounded
  memory means the 4N figure stays near the N figure.

Architectures: ``vit-b-32`` is the real ViT-B/32 shape with random weights (no pretrained
weights exist offline; speed does not depend on the values), ``fixture`` the small CLIP
of ../shared/fixtures/clip_caer. CUDA runs use autocast (bf16 where supported).
Defaults keep a 2-core CPU run under about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

FIXTURE = ROOT.parent / "shared" / "fixtures" / "clip_caer"
# (batched windows, loop windows, batch size) per (arch, device type)
SIZES = {
    ("vit-b-32", "cpu"): (4, 2, 4),
    ("fixture", "cpu"): (32, 16, 16),
    ("vit-b-32", "cuda"): (2048, 64, 256),
    ("fixture", "cuda"): (4096, 64, 512),
}


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakMemory:
    """Peak memory (MB) above the level at entry: the CUDA allocator's peak, or the process's resident
    high-water mark (VmHWM, reset through /proc/self/clear_refs; a sampling thread would slow torch)."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident size
            self.base = _proc_status_mb("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20 - self.base
        else:
            self.peak = _proc_status_mb("VmHWM") - self.base


def build(arch: str, device: torch.device):
    from recognition.academic.clip_caer import CLIP_ARCHS, ClipCaer, build_clip
    from recognition.academic.descriptors import class_descriptors

    if arch == "fixture":
        heads = json.loads((FIXTURE / "config.json").read_text())["small_clip"]["transformer_heads"]
        return ClipCaer.from_official_checkpoint(FIXTURE / "checkpoint.pth", text_heads=heads, device=device)
    torch.manual_seed(0)
    return ClipCaer.for_training(build_clip(CLIP_ARCHS[arch]), class_descriptors()).eval().to(device)


def windows(n: int, seed: int):
    """n windows of (16, 224, 224, 3) uint8, made on demand (only a few distinct ones, to keep it cheap)."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (4, 16, 224, 224, 3), dtype=np.uint8)
    return (pool[i % 4] for i in range(n))


def timed(scorer, n: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) to score n streamed windows."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    c0, t0 = time.process_time(), time.perf_counter()
    out = scorer.score(windows(n, 1), windows(n, 2))
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert out.shape == (n, 5)
    return time.perf_counter() - t0, time.process_time() - c0


def run(arch: str, device: torch.device, repeat: int) -> dict:
    """Batched and loop runs alternate ``repeat`` times (a shared machine's load hits both); best of each."""
    from recognition.academic.caer_runner import CaerScorer

    n, m, bs = SIZES[(arch, device.type)]
    model = build(arch, device)
    batched, single = CaerScorer(model, batch_size=bs), CaerScorer(model, batch_size=1)
    timed(batched, 1, device)  # warm-up (allocator, kernels)
    timed(single, 1, device)
    t_batch, t_loop = [], []
    mem_n = PeakMemory(device)
    for r in range(repeat):
        if r == 0:
            with mem_n:
                t_batch.append(timed(batched, n, device))
        else:
            t_batch.append(timed(batched, n, device))
        t_loop.append(timed(single, m, device))
    (wb, cb), (wl, cl) = min(t_batch), min(t_loop)
    mem_4n = PeakMemory(device)
    if device.type == "cuda" or arch == "fixture":  # ViT-B/32 on CPU: too slow for a second, longer pass
        with mem_4n:
            timed(batched, 4 * n, device)
    row = {
        "arch": arch,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "batch_size": bs,
        "n": n,
        "batched_clips_per_s": n / wb,
        "loop_clips_per_s": m / wl,
        "batched_cpu_s_per_clip": cb / n,
        "loop_cpu_s_per_clip": cl / m,
        "peak_mb_n": mem_n.peak,
        "peak_mb_4n": mem_4n.peak if mem_4n.peak else None,
    }
    row["speedup"] = row["batched_clips_per_s"] / row["loop_clips_per_s"]
    row["cpu_speedup"] = row["loop_cpu_s_per_clip"] / row["batched_cpu_s_per_clip"]
    del model, batched, single
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="all", help="cpu, cuda or all (cuda only when present)")
    ap.add_argument("--arch", default="vit-b-32,fixture")
    ap.add_argument("--repeat", type=int, default=2, help="alternating batched/loop rounds; best of each")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [torch.device(d) for d in devices if d != "cuda" or torch.cuda.is_available()]
    rows = []
    print(
        f"{'arch':9} {'device':22} {'batch':>5} {'batched clip/s':>14} {'loop clip/s':>11} {'ratio':>6} "
        f"{'CPU-time ratio':>14} {'peak MB N':>9} {'peak MB 4N':>10}"
    )
    for dev in devices:
        for arch in args.arch.split(","):
            r = run(arch, dev, args.repeat)
            rows.append(r)
            p2 = f"{r['peak_mb_4n']:10.0f}" if r["peak_mb_4n"] is not None else f"{'-':>10}"
            print(
                f"{r['arch']:9} {r['device'][:22]:22} {r['batch_size']:5d} {r['batched_clips_per_s']:14.2f} "
                f"{r['loop_clips_per_s']:11.2f} {r['speedup']:5.2f}x {r['cpu_speedup']:13.2f}x "
                f"{r['peak_mb_n']:9.0f} {p2}"
                f"  (N={r['n']})",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
