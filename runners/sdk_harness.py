"""The Python SDK harness that runs inside this process (the ``direct`` runner, ``LOOPBACK`` on Flink).

Beam's harness starts a state-sampling thread for every bundle and joins it when
the bundle ends. The thread sleeps between ticks, and its sleep grows from 2 ms
by 1.2x per tick up to the sampling period, 200 ms, which the harness does not
expose as an option. The join waits out the current sleep: a bundle that ran
over about a second waits some 100 ms more, a shorter one about 8% of its time
(the ramp's arithmetic, from Beam's source). Nothing else runs meanwhile in a
one-worker harness. In the batch pipeline those waits were 0.25-0.3 s of a 3.8 s
run over 7 days (py-spy; docs/benchmarks.md, batch).

:func:`shorten_state_sampling` caps the sleep at ``SAMPLING_PERIOD_MS`` for the
harnesses this process starts from then on. A tick takes a lock and adds a time
difference, so 100 ticks a second cost nothing measurable; the sampled
per-step times get finer, not coarser. Workers that a ``traffic worker-pool``
starts are processes of their own and keep Beam's period.
"""

from __future__ import annotations

import inspect
import logging

__all__ = ["SAMPLING_PERIOD_MS", "shorten_state_sampling"]

SAMPLING_PERIOD_MS = 10
_PARAMETER = "sampling_period_ms"
_LOG = logging.getLogger(__name__)


def shorten_state_sampling(period_ms: int = SAMPLING_PERIOD_MS) -> bool:
    """Make ``period_ms`` the default sampling period of Beam's ``StateSampler``; False if this Beam has none.

    A Beam whose ``StateSampler`` no longer takes ``sampling_period_ms`` as its
    last defaulted parameter is left as it is (logged), not patched blindly.
    """
    if period_ms < 1:
        raise ValueError(f"period_ms must be at least 1, not {period_ms}")
    from apache_beam.runners.worker import statesampler

    init = statesampler.StateSampler.__init__
    parameters = list(inspect.signature(init).parameters.values())
    defaults = init.__defaults__ or ()
    if not parameters or parameters[-1].name != _PARAMETER or len(defaults) != 1:
        _LOG.warning("Beam's StateSampler has no trailing %s parameter: its sampling period is left as it is",
                     _PARAMETER)
        return False
    init.__defaults__ = (int(period_ms),)
    return True
