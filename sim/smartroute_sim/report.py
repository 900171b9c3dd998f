"""What a load run saw: latencies, counts and a timeline, and how to show them.

A ``Recorder`` is shared by every client thread of a run. It keeps raw latencies (so
percentiles are exact, not bucketed), a time stamp for every counted event (so
throughput over time can be drawn afterwards), and gauges sampled once a second.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


class Recorder:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.latencies_ms: dict[str, list[float]] = defaultdict(list)
        self.counts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.samples: list[dict] = []

    def elapsed(self, at: float | None = None) -> float:
        return (time.monotonic() if at is None else at) - self.started

    def latency(self, name: str, ms: float) -> None:
        with self._lock:
            self.latencies_ms[name].append(ms)

    def count(self, name: str, n: int = 1) -> None:
        """Count an event now; its time is kept for the throughput chart."""
        at = self.elapsed()
        with self._lock:
            self.counts[name] += n
            self.times[name].extend([at] * n)

    def sample(self, **gauges: float) -> dict:
        """Record the gauges and a snapshot of the counters at this moment."""
        with self._lock:
            row = {"t": round(self.elapsed(), 3), **self.counts, **gauges}
            self.samples.append(row)
        return row

    def percentile(self, name: str, q: float) -> float | None:
        with self._lock:
            values = list(self.latencies_ms.get(name, ()))
        return percentile(values, q)

    def summary(self, name: str) -> dict:
        with self._lock:
            values = list(self.latencies_ms.get(name, ()))
        return latency_summary(values)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values), q)), 1)


def latency_summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": round(max(values), 1) if values else None,
    }


def per_second(times: list[float], end: float) -> tuple[np.ndarray, np.ndarray]:
    """Events per second in one-second bins from 0 to ``end``."""
    bins = np.arange(0, max(1, int(np.ceil(end))) + 1)
    counts, _ = np.histogram(np.asarray(times), bins=bins)
    return bins[:-1], counts


def write_chart(
    path: Path,
    recorder: Recorder,
    title: str,
    latencies: dict[str, str],
    throughput: dict[str, str],
    gauges: dict[str, str],
) -> Path:
    """One PNG: latency distributions (CDF), throughput over time, queue depth over time.

    Each dict maps a recorder name to the label drawn for it.
    """
    import matplotlib

    matplotlib.use("Agg")  # Headless: no display on servers or in CI.
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_rate, ax_depth) = plt.subplots(3, 1, figsize=(9, 11))
    fig.suptitle(title)
    for name, label in latencies.items():
        values = np.sort(np.asarray(recorder.latencies_ms.get(name, []), dtype=float))
        if values.size == 0:
            continue
        values = np.maximum(values, 0.1)  # A log axis cannot show zero.
        ax_lat.plot(
            values,
            np.arange(1, values.size + 1) / values.size,
            label=f"{label} (p99 {np.percentile(values, 99):.0f} ms)",
        )
    ax_lat.set_xscale("log")
    ax_lat.set_xlabel("latency, ms (log scale)")
    ax_lat.set_ylabel("fraction of requests")
    ax_lat.set_title("Latency distribution (cumulative)")
    ax_lat.grid(True, which="both", alpha=0.3)
    ax_lat.legend(loc="lower right")

    end = recorder.samples[-1]["t"] if recorder.samples else recorder.elapsed()
    for name, label in throughput.items():
        x, y = per_second(recorder.times.get(name, []), end)
        ax_rate.plot(x, y, label=label)
    ax_rate.set_xlabel("seconds since start")
    ax_rate.set_ylabel("per second")
    ax_rate.set_title("Throughput")
    ax_rate.grid(True, alpha=0.3)
    ax_rate.legend(loc="upper left")

    t = [s["t"] for s in recorder.samples]
    for name, label in gauges.items():
        ax_depth.plot(t, [s.get(name) or 0 for s in recorder.samples], label=label)
    ax_depth.set_xlabel("seconds since start")
    ax_depth.set_ylabel("count")
    ax_depth.set_title("Queue depth and bookings waiting")
    ax_depth.grid(True, alpha=0.3)
    ax_depth.legend(loc="upper left")

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
