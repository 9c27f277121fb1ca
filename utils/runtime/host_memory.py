"""The C allocator of a run on the CPU: freed memory is kept for the next step instead of being handed back to the
operating system and faulted in again, page by page."""
import ctypes
import os

import torch

__all__ = ["keep_freed_memory", "runs_on_glibc"]

# glibc's mallopt parameters (malloc.h) and the values set. By default glibc returns the free top of its heap to
# the system above a threshold that starts at 128 KiB (and adapts up to 64 MiB), and serves blocks above another
# (128 KiB adapting up to 32 MiB) with their own mmap, so each training step faults its activations in again:
# 11-15k page faults a step for deeplabv3plus_hrnetv2_48 (crop 128, batch 4, bf16 + channels_last), 3.3k with these
# settings; in three pairs of whole 30-iteration runs taking turns, glibc's defaults 3.88-3.94 images/s, these
# 3.97-4.14 (AMX Xeon, 2 cores); with AVX2 kernels only (ATEN_CPU_CAPABILITY=avx2, fp32 + channels_last, the
# default there) 23-26k -> 2.3-4.7k faults and the same speed (medians 1637-1757 against 1640-1703 ms a step, four
# pairs). Blocks of 32 MiB (glibc's largest threshold) and more still come and go with mmap.
# The top pad reserves address space, not memory: under vm.overcommit_memory=2 or a ulimit -v, glibc falls back on
# mmap where the heap cannot grow.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP_FREED = {M_TRIM_THRESHOLD: 2 ** 31 - 1, M_TOP_PAD: 256 << 20, M_MMAP_THRESHOLD: 32 << 20}
# A user's own settings of glibc's allocator win.
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_")


def keep_freed_memory(device: torch.device) -> bool:
    """For a run on the CPU ``device``, set glibc's allocator to keep freed memory in this process (and the
    DataLoader workers it forks later); returns whether it was set: not for another device (measured on the CPU
    only), not on other C libraries, nor where the environment sets the allocator itself (``MALLOC_TOP_PAD_`` and
    the like, or ``glibc.malloc`` in ``GLIBC_TUNABLES``)."""
    if device.type != "cpu" or not runs_on_glibc() or any(name in os.environ for name in USER_SETTINGS):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the symbols this process has loaded, glibc's among them
    accepted = [mallopt(parameter, value) == 1 for parameter, value in KEEP_FREED.items()]  # each one, even after a no
    return all(accepted)


def runs_on_glibc() -> bool:
    """Whether this process runs on glibc (not musl, macOS's or Windows' C library)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name here
        return False
