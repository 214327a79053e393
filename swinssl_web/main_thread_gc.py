"""Python's cyclic garbage collection, on the web server's main thread only.

VTK releases the GIL inside every wrapped call, so while the main thread renders or reads a volume, trame-rca's
image-encoding threads run Python, and the allocation that crosses the collector's threshold starts a collection in
whichever thread makes it. Objects kept alive only by reference cycles are then destroyed in that thread. A closed
case is such an object: trame-slicer's ``Segmentation`` wrapper, in a cycle once the editor lets it go, holds the last
references to the case's volume and segmentation nodes, so their C++ destructors (and the release of the voxels, 17.8
MB for the upload that crashed the server) could run in an encoding thread while the main thread was inside VTK,
drawing the next case. With automatic collection off, :func:`collect_garbage` (called by the server's polling) does
every collection, between the main thread's VTK calls.
"""

from __future__ import annotations

import gc

FULL_EVERY = 20  # the young generations at every call, every generation at every 20th (10 s at the server's polling)


def collect_on_main_thread_only() -> None:
    """Stops automatic collection: no other thread will start one."""
    gc.collect()
    gc.disable()


def collect_garbage(call: int) -> int:
    """Collects the cyclic garbage (called on the main thread); ``call`` counts the calls. Returns the objects freed."""
    return gc.collect(2 if call % FULL_EVERY == 0 else 1)
