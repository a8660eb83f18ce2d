"""Keep block-sized buffers in the C heap instead of fresh mmaps (glibc only): a peer tunes
its allocator at start for its block size, and the ``qfs`` program for CLIENT_BUFFER.

A peer allocates several block-sized buffers per block it moves (socket reads, CBOR frames,
file reads). glibc serves an allocation above its mmap threshold (128 KiB at first) with a
fresh mapping, and trims freed memory at the top of the heap back to the system, so every
such buffer costs a page fault per 4 KiB page: profiled at ~0.8 ms of CPU per MiB on this
kind of machine, ten times the copy itself. Raising both thresholds above the largest block
lets freed buffers be reused; memory above the trim threshold is still given back.

A client suffers the same way: a download's 64 KiB chunks are freed at the top of the heap
and trimmed at glibc's default 128 KiB, so each one faults its pages in again (perf on a
client reading 64 MiB files: `exc_page_fault` and `clear_page_erms` among its top symbols;
tuned, its CPU per MB fell from 1.9 to 1.0-1.1 ms over HTTP and from 3.0 to 1.6-1.9 over
HTTPS, /tmp script, two runs each).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # older glibc refuses more
HEAP_SLACK_BLOCKS = 4
CLIENT_BUFFER = 2 * 1024 * 1024  # a client's largest: a default (1 MiB) block and its frame


def keep_buffers_in_heap(largest_buffer: int) -> bool:
    """Serve allocations up to a little over `largest_buffer` bytes from the heap, and keep
    that much freed heap before trimming. False where the C library has no `mallopt`."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mmap_threshold = min(2 * largest_buffer, MMAP_THRESHOLD_MAX)
    trim_threshold = HEAP_SLACK_BLOCKS * mmap_threshold
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )
