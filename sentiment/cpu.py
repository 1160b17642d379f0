"""Two process-wide settings that make CPU training 1.5-2x faster here: reused memory and flushed denormals.

Memory. A training step allocates and frees the same few-megabyte buffers (recurrent workspaces,
gradients) every time. glibc's malloc hands blocks that size back to the kernel when they are freed
(through ``munmap`` or by trimming its heap) and takes fresh zeroed pages at the next step: 1.7 million
page faults in 90 steps of the default model here, a third of the step time. Keeping freed blocks up to
32 MB in the heap, and never trimming it, makes steps reuse them, for about 50 MB more peak memory.
(Preloading jemalloc or tcmalloc, as the PyTorch CPU tuning guides suggest, does the same from outside.)

Denormals. As training goes on, some gradients and activations shrink below float32's normal range, where
x86 CPUs compute through a slow microcode path: steps became 25% slower after a few hundred of them.
Flushing such values to zero (``torch.set_flush_denormal``) changes results by less than 1e-38.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
import time

import torch

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
_MALLOC_SETTINGS = (
    (_M_MMAP_THRESHOLD, 32 << 20),  # blocks below 32 MB (glibc's maximum) come from the reusable heap
    (_M_TRIM_THRESHOLD, (1 << 31) - 1),  # never give the top of the heap back
    (_M_TOP_PAD, 256 << 20),  # grow the heap in large steps
)


def configure_cpu() -> dict[str, bool]:
    """Apply both settings to this process (idempotent) and say which took effect.

    Call it first thing, before torch starts its worker threads, which inherit the denormal setting
    from the thread that creates them. ``sentiment`` (every subcommand) and ``scripts/benchmark.py`` do.
    """
    return {"keep_freed_memory": _keep_freed_memory(), "flush_denormal": torch.set_flush_denormal(True)}


def _keep_freed_memory() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _MALLOC_SETTINGS)


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX). There the recurrence runs 1.4-1.5x
    faster in bfloat16 at the same accuracy (BENCHMARKS.md). Elsewhere PyTorch's LSTM has no bfloat16 kernel at
    all (oneDNN: "could not create a primitive descriptor for the LSTM forward propagation primitive")."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


NO_BFLOAT16 = ("this CPU has no native bfloat16 (AVX512-BF16 or AMX), and PyTorch's LSTM has no bfloat16 kernel "
               "without it")


def usable_bfloat16(asked: bool, what: str = "bfloat16") -> bool:
    """``asked``, unless this CPU cannot compute the recurrence in bfloat16: then False, saying so in one line
    (``what`` names the setting). A config or checkpoint made on a bfloat16 machine still runs on any other."""
    if asked and not native_bfloat16():
        logging.getLogger("sentiment").warning(f"warning: {what}: {NO_BFLOAT16}; computing in float32 (32-true)")
        return False
    return asked


def bfloat16_precision(precision: str | int | None) -> bool:
    """Whether a Trainer precision computes in bfloat16 (``bf16-mixed``, ``bf16-true``)."""
    return str(precision).startswith("bf16")


def usable_precision(precision: str | int | None, what: str = "--trainer.precision") -> str | int | None:
    """A Trainer precision this CPU can train and predict in: a bfloat16 one becomes ``32-true`` where
    ``usable_bfloat16`` says no."""
    if bfloat16_precision(precision) and not usable_bfloat16(True, f"{what} {precision}"):
        return "32-true"
    return precision


class CpuLoad:
    """How many of this process's cores other processes keep busy, between two calls of ``others()``.

    Linux only (``/proc/stat``, the cores of this process's affinity); elsewhere ``others()`` is None."""

    def __init__(self) -> None:
        self.cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        """Seconds: the wall clock, the busy time of this process's cores, and this process's CPU time."""
        try:
            with open("/proc/stat") as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        wanted, busy = {f"cpu{i}" for i in self.cores}, 0
        for line in lines:
            name, *ticks = line.split()
            if name in wanted:  # user nice system idle iowait irq softirq steal ...: all but idle and iowait
                values = [int(t) for t in ticks[:8]]
                busy += sum(values) - values[3] - values[4]
        own = os.times()
        return time.monotonic(), busy / self.tick, own.user + own.system

    def others(self) -> float | None:
        """Cores other processes kept busy since the last call (0 to the number of cores)."""
        now = self._sample()
        last, self.last = self.last, now
        if now is None or last is None or now[0] - last[0] <= 0:
            return None
        wall = now[0] - last[0]
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / wall)
