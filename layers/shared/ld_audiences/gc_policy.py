"""The sync function's garbage-collector settings: one place, applied once its init is done.

A batch of 1,000-4,000 records allocates hundreds of thousands of short-lived containers (parsed bodies,
changes, DynamoDB requests and answers). With CPython's defaults (a young collection every 700 net
allocations, an older one every 10 of those), the collector spent about a fifth of the pure core's CPU
walking objects that outlive every invocation: modules, botocore's service models, the clients. So, once
the execution environment is initialised:

* `gc.freeze()` moves everything alive to the permanent generation: no later collection walks it. What is
  frozen is never collected, so this runs after init, never per invocation.
* the young generation's threshold goes from 700 to YOUNG_THRESHOLD: a collection per 10,000 net
  allocations instead of per 700. Reference counting still frees everything that is not in a cycle at
  once; only cyclic garbage waits longer (the peak RSS of a 10,000-record sync did not move).

Measured (`python -m bench --only sync`, pure core, 10,000 records, fresh process each run): BENCHMARKS.md.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle_after_init() -> None:
    """Call once, at the end of a function's init."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
