"""What the benchmarks share: a subprocess's peak memory, the BLAS found, the median
epoch, PyTorch's eager training loop, and appending a report to bench/RESULTS.md (atomically)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path


def peak_mb() -> float:
    """This process's peak resident memory, in MB."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def blas_info() -> str:
    """Which BLAS libraries (and kernels) numpy and scipy load here (OPENBLAS_CORETYPE changes it)."""
    try:
        import numpy  # noqa: F401 - loads numpy's BLAS, the one the floors call
        import scipy.linalg  # noqa: F401 - loads scipy's BLAS, the one numba calls
        from threadpoolctl import threadpool_info
        found = {f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})" for i in threadpool_info()
                 if i.get("user_api") == "blas"}
        return ", ".join(sorted(found)) or "unknown"
    except ImportError:
        return "unknown"


def median_after_first(seconds: list[float]) -> float:
    """The median epoch, the first (which may compile or warm caches) left out when there are more."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def torch_epochs(model, xs, ys, epochs: int, batch: int, generator=None,
                 track_loss: bool = False) -> tuple[list[float], list[float]]:
    """Train a PyTorch model eagerly as Keras's fit would (Adam with Keras's epsilon, cross-entropy,
    a new shuffle each epoch): the seconds of each epoch and, with `track_loss`, its mean loss
    (reading each batch's loss back costs a synchronisation, so it is off unless asked for)."""
    import torch
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds, losses = [], []
    model.train()
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(xs), generator=generator)
        total = 0.0
        for s in range(0, len(xs), batch):
            idx = order[s:s + batch]
            optimizer.zero_grad()
            loss = loss_fn(model(xs[idx]), ys[idx])
            loss.backward()
            optimizer.step()
            if track_loss:
                total += float(loss.detach()) * len(idx)
        seconds.append(time.perf_counter() - t0)
        if track_loss:
            losses.append(round(total / len(xs), 4))
    model.eval()
    return seconds, losses


def append_report(path: str, report: str) -> None:
    """Add `report` as the last section of the Markdown results file at `path`."""
    from modelc.files import atomic_write
    target = Path(path)
    previous = target.read_text() if target.exists() else "# Benchmark results\n"
    atomic_write(target, (previous.rstrip() + "\n\n" + report + "\n").encode())
