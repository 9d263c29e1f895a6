"""Peak memory of one forward + backward pass: RevNet against an equivalent ResNet, by depth.

Three networks per input kind, at 8, 16, 32 and 64 blocks, with the same stem and head:

* ``revnet``: reversible blocks with the memory-saving backward (activations reconstructed);
* ``revnet_stored``: the same reversible network with ordinary autograd (stored activations);
* ``resnet``: residual blocks ``x + H(x)`` of the same width and parameter count.

Method: CPU tensor memory measured by the PyTorch profiler (``profile_memory=True``), which
records every allocation and free of the CPU allocator with the allocator's running total; the
peak is the largest running total during ``loss = model(x).sum(); loss.backward()`` minus the
total before it. Parameters, the input and pre-allocated parameter gradients (zeros, so backward
accumulates in place) exist before the measured region and are not counted: the number is the
memory of activations and temporaries.

    nice -n 10 .venv/bin/python benchmarks/bench_revnet_memory.py

Prints one JSON line and writes ``benchmarks/results/nn_revnet_memory.{json,png}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from rlkit.nn.revnet import RevNetCNN, RevNetMLP

DEPTHS = (8, 16, 32, 64)
RESULTS = Path(__file__).parent / "results"


class ResidualMLP(nn.Module):
    """``Linear`` stem, blocks ``x + Linear(ReLU(Linear(x)))``, ReLU; RevNetMLP's parameter count."""

    def __init__(self, in_dim: int, width: int, n_blocks: int, inner: int) -> None:
        super().__init__()
        self.stem = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, inner), nn.ReLU(), nn.Linear(inner, width))
            for _ in range(n_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return torch.relu(x)


class ResidualCNN(nn.Module):
    """RevNetCNN's stem and head around blocks ``x + Conv(ReLU(Conv(x)))`` (C -> C/2 -> C), which
    have the parameter count of a reversible block (F and G on C/2 channels)."""

    def __init__(self, like: RevNetCNN, channels: int, n_blocks: int) -> None:
        super().__init__()
        self.stem, self.head, self.scale = like.stem, like.head, like.scale
        half = channels // 2
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, half, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(half, channels, 3, padding=1),
            )
            for _ in range(n_blocks)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.stem(obs * self.scale)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def allocation_totals(prof: profile) -> list[tuple[int, int]]:
    """``(alloc_size, total_allocated)`` of every allocator event, in order."""
    out: list[tuple[int, int, int]] = []

    def walk(node) -> None:  # noqa: ANN001 (profiler tree node)
        fields = node.extra_fields
        if hasattr(fields, "total_allocated"):
            out.append((node.start_time_ns, int(fields.alloc_size), int(fields.total_allocated)))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    out.sort(key=lambda e: e[0])
    return [(size, total) for _, size, total in out]


def peak_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Peak extra CPU tensor memory of forward + backward (see the module docstring)."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x).sum().backward()
    events = allocation_totals(prof)
    if not events:
        raise RuntimeError("the profiler recorded no allocations")
    baseline = events[0][1] - events[0][0]
    return max(total for _, total in events) - baseline


def seconds(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Median wall time of forward + backward."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x).sum().backward()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def models(kind: str, n_blocks: int) -> tuple[dict[str, nn.Module], torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if kind == "vector":
        in_dim, width = 64, 256
        x = torch.randn(1024, in_dim, generator=gen)
        rev = RevNetMLP(in_dim, width=width, n_blocks=n_blocks, inner=width)
        stored = RevNetMLP(
            in_dim, width=width, n_blocks=n_blocks, inner=width, reversible_backward=False
        )
        res = ResidualMLP(in_dim, width, n_blocks, inner=width)
    else:
        channels = 64
        x = 255 * torch.rand(32, 4, 84, 84, generator=gen)
        rev = RevNetCNN((4, 84, 84), channels=channels, n_blocks=n_blocks, features_dim=256)
        stored = RevNetCNN(
            (4, 84, 84),
            channels=channels,
            n_blocks=n_blocks,
            features_dim=256,
            reversible_backward=False,
        )
        res = ResidualCNN(rev, channels, n_blocks)
    stored.load_state_dict(rev.state_dict())
    return {"revnet": rev, "revnet_stored": stored, "resnet": res}, x


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({r["input"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.8))
    for ax, kind in zip(axes, kinds, strict=True):
        for name, style in (("revnet", "o-"), ("revnet_stored", "s--"), ("resnet", "^:")):
            pts = [
                (r["blocks"], r["peak_mb"])
                for r in rows
                if r["input"] == kind and r["model"] == name
            ]
            ax.plot(*zip(*pts, strict=True), style, label=name)
        ax.set(
            title=f"{kind} input",
            xlabel="blocks",
            ylabel="peak activation memory (MB)",
            ylim=(0, None),
        )
        ax.set_xticks(DEPTHS, [str(d) for d in DEPTHS])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Forward + backward peak CPU tensor memory (torch.profiler)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    # no options: --help describes the run instead of starting it
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for kind in ("vector", "image"):
        for n_blocks in DEPTHS:
            nets, x = models(kind, n_blocks)
            for name, net in nets.items():
                rows.append(
                    {
                        "input": kind,
                        "blocks": n_blocks,
                        "model": name,
                        "params": sum(p.numel() for p in net.parameters()),
                        "peak_mb": round(peak_bytes(net, x) / 2**20, 2),
                        "fwd_bwd_s": round(seconds(net, x), 4),
                    }
                )
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(rows, RESULTS / "nn_revnet_memory.png")
    result = {
        "benchmark": "revnet_memory",
        "method": "torch.profiler profile_memory: peak CPU allocator total during forward+backward",
        "vector": "batch 1024, in 64, width 256, inner 256",
        "image": "batch 32, 4x84x84, 64 channels at 9x9 after the stem",
        "rows": rows,
    }
    (RESULTS / "nn_revnet_memory.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
