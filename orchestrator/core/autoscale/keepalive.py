"""Learned keep-alive and pre-warm: the hybrid histogram policy of Shahrad et al. (USENIX ATC 2020).

Per endpoint we keep a histogram of *idle gaps*: the time from the endpoint running out of work (nothing
queued, nothing running) to the next arrival. Gaps do not depend on how many replicas we kept, so the
histogram learns the workload, not our own past choices. From it:

- keep replicas warm until the ``tail_quantile`` (99th percentile) gap, times ``tail_margin``;
- when even the ``head_quantile`` (5th percentile) gap is long compared with a cold start, release the
  replicas as soon as the endpoint goes quiet and pre-warm them so they are ready just before the head;
- fall back to the endpoint's fixed ``scale_down_idle_s`` when the histogram is not representative: too
  few samples, too many gaps beyond the range (4 h), or counts spread too evenly over the bins (the
  coefficient of variation of the bin counts is below ``min_cv``, as in the paper).

Bins are fixed for every endpoint (so saved histograms stay comparable): one bin below 1 s, ``LOG_BINS``
log-spaced bins from 1 s to ``MAX_GAP_S`` (about 14% wide each), one overflow bin. Counts decay by
``decay`` per new sample, so the histogram follows a workload that changes (about ``1/decay`` samples of
memory). Pure: no clock, no randomness.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

MIN_GAP_S = 1.0
MAX_GAP_S = 4 * 3600.0
LOG_BINS = 72
N_BINS = LOG_BINS + 2  # underflow [0, 1 s) + log bins + overflow [4 h, inf)
_LOG_RATIO = math.log(MAX_GAP_S / MIN_GAP_S) / LOG_BINS


def bin_index(gap_s: float) -> int:
    """The bin a gap falls in: 0 below 1 s, ``N_BINS - 1`` at or beyond 4 h."""
    if gap_s < MIN_GAP_S:
        return 0
    if gap_s >= MAX_GAP_S:
        return N_BINS - 1
    return 1 + min(LOG_BINS - 1, int(math.log(gap_s / MIN_GAP_S) / _LOG_RATIO))


def bin_edges_s(index: int) -> tuple[float, float]:
    """Lower and upper edge of a bin, in seconds (the overflow bin's upper edge is ``inf``)."""
    if index == 0:
        return 0.0, MIN_GAP_S
    if index == N_BINS - 1:
        return MAX_GAP_S, math.inf
    lo = MIN_GAP_S * math.exp((index - 1) * _LOG_RATIO)
    return lo, lo * math.exp(_LOG_RATIO)


@dataclass(frozen=True)
class KeepAliveConfig:
    """Knobs of the learned policy. Quantiles are fractions (0.05 = 5th percentile)."""

    head_quantile: float = 0.05
    tail_quantile: float = 0.99
    tail_margin: float = 1.1
    min_samples: float = 5.0
    min_cv: float = 1.0
    decay: float = 0.02
    min_keep_alive_s: float = 2.0
    prewarm_lead_s: float = 2.0
    cold_start_margin: float = 0.3
    min_release_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.head_quantile < self.tail_quantile <= 1.0:
            raise ValueError(
                f"need 0 <= head_quantile ({self.head_quantile}) < tail_quantile ({self.tail_quantile}) <= 1"
            )
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay ({self.decay}) must be within [0, 1)")
        if self.tail_margin < 1.0:
            raise ValueError(f"tail_margin ({self.tail_margin}) must be >= 1")


@dataclass(frozen=True)
class GapStats:
    """Derived numbers of a histogram (cached on it). ``cumulative[i]``: count in bins ``0..i``."""

    total: float
    overflow_share: float
    cv: float
    cumulative: tuple[float, ...]


_NO_STATS = GapStats(0.0, 0.0, 0.0, ())


@dataclass(frozen=True)
class GapHistogram:
    """Decaying counts of idle gaps. ``counts`` is empty (all zero) or has ``N_BINS`` entries."""

    counts: tuple[float, ...] = ()

    def add(self, gap_s: float, decay: float) -> GapHistogram:
        """A new histogram with one more gap; older counts are multiplied by ``1 - decay`` first."""
        keep = 1.0 - decay
        counts = [c * keep for c in self.counts] if self.counts else [0.0] * N_BINS
        counts[bin_index(max(0.0, gap_s))] += 1.0
        return GapHistogram(tuple(counts))

    @cached_property
    def stats(self) -> GapStats:
        if not self.counts:
            return _NO_STATS
        cumulative = tuple(itertools.accumulate(self.counts))
        total = cumulative[-1]
        if total <= 0.0:
            return _NO_STATS
        mean = total / N_BINS
        var = math.fsum((c - mean) ** 2 for c in self.counts) / N_BINS
        return GapStats(total, self.counts[-1] / total, math.sqrt(var) / mean, cumulative)

    def cdf_count(self, gap_s: float) -> float:
        """The (decayed) count of gaps shorter than ``gap_s`` (log-interpolated inside its bin)."""
        if not self.counts or gap_s <= 0.0:
            return 0.0
        index = bin_index(gap_s)
        below = self.stats.cumulative[index - 1] if index > 0 else 0.0
        lo, hi = bin_edges_s(index)
        if math.isinf(hi):
            return below
        frac = gap_s / hi if index == 0 else math.log(gap_s / lo) / math.log(hi / lo)
        return below + self.counts[index] * frac

    def quantile_s(self, q: float, above_s: float = 0.0) -> float:
        """The ``q`` quantile of the gaps longer than ``above_s``, in seconds (log-interpolated in its bin).

        ``nan`` when no gap is recorded; ``inf`` when the quantile falls in the overflow bin.
        """
        stats = self.stats
        if stats.total <= 0.0:
            return math.nan
        floor = self.cdf_count(above_s) if above_s > 0.0 else 0.0
        target = floor + q * (stats.total - floor)
        index = min(bisect.bisect_left(stats.cumulative, target), N_BINS - 1)
        while index > 0 and self.counts[index] <= 0.0:  # land on a bin that holds gaps
            index -= 1
        count = self.counts[index]
        seen = stats.cumulative[index] - count
        lo, hi = bin_edges_s(index)
        if math.isinf(hi):
            return math.inf
        frac = min(1.0, max(0.0, (target - seen) / count)) if count > 0.0 else 1.0
        return lo + (hi - lo) * frac if index == 0 else lo * (hi / lo) ** frac

    def to_dict(self) -> dict[str, Any]:
        """Sparse JSON form: ``{"bins": [[index, count], ...]}``."""
        return {"bins": [[i, c] for i, c in enumerate(self.counts) if c > 0.0]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GapHistogram:
        pairs = data.get("bins", [])
        if not pairs:
            return cls()
        counts = [0.0] * N_BINS
        for index, count in pairs:
            counts[int(index)] = float(count)
        return cls(tuple(counts))


@dataclass(frozen=True)
class KeepAlivePlan:
    """What to do with an endpoint's idle replicas now.

    ``keep_alive_s``: idle replicas may be drained once the endpoint has been quiet (or, while it has work,
    the replica idle) this long. ``warm``: keep idle replicas now; when false, release them now (the next
    arrival is predictably far). ``prewarm``: the next arrival is likely within a cold start, so replicas
    released earlier in this quiet spell should be started again.
    """

    learned: bool
    keep_alive_s: float
    warm: bool
    prewarm: bool
    reason: str


def plan_keep_alive(
    gaps: GapHistogram,
    *,
    quiet_for_s: float | None,
    fixed_idle_s: float,
    cold_start_s: float,
    config: KeepAliveConfig,
) -> KeepAlivePlan:
    """The keep-alive plan for one endpoint quiet for ``quiet_for_s`` (``None``: it has work now).

    With a representative histogram: keep warm until ``tail * tail_margin``; while quiet for ``x``, look at
    the gaps longer than ``x`` (the ones still possible): if even their ``head_quantile`` leaves more than a
    cold start (times ``1 + cold_start_margin``, plus ``prewarm_lead_s``) and ``min_release_s`` to spare,
    release now; once it leaves less than a cold start, pre-warm. Otherwise ``fixed_idle_s``.
    """
    stats = gaps.stats
    fallback = None
    if stats.total < config.min_samples:
        fallback = f"{stats.total:.0f} idle gaps seen, fewer than {config.min_samples:.0f}"
    elif stats.overflow_share > 1.0 - config.tail_quantile:
        fallback = f"{stats.overflow_share:.0%} of idle gaps beyond {MAX_GAP_S:.0f} s"
    elif stats.cv < config.min_cv:
        fallback = f"idle gaps too spread (bin CV {stats.cv:.2f} < {config.min_cv})"
    if fallback is not None:
        return KeepAlivePlan(
            False, fixed_idle_s, True, False, f"fixed keep-alive {fixed_idle_s:g} s: {fallback}"
        )
    keep_s = max(config.min_keep_alive_s, gaps.quantile_s(config.tail_quantile) * config.tail_margin)
    tail = f"keep-alive {keep_s:.0f} s (p{config.tail_quantile * 100:g} idle gap)"
    if quiet_for_s is None or quiet_for_s >= keep_s:
        return KeepAlivePlan(True, keep_s, True, False, f"learned {tail}")
    head_s = gaps.quantile_s(config.head_quantile, above_s=quiet_for_s)
    start_s = cold_start_s * (1.0 + config.cold_start_margin) + config.prewarm_lead_s
    ahead_s = head_s - quiet_for_s
    if ahead_s <= start_s:
        return KeepAlivePlan(True, keep_s, True, True, f"learned: next arrival likely within {ahead_s:.0f} s")
    if ahead_s - start_s >= config.min_release_s:
        return KeepAlivePlan(
            True,
            keep_s,
            False,
            False,
            f"learned: next arrival not within {ahead_s:.0f} s (p{config.head_quantile * 100:g}): release",
        )
    return KeepAlivePlan(True, keep_s, True, False, f"learned {tail}")
