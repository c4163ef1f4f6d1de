"""The threshold checks of the fast quality filters: the first check that fails gives the filter's reason."""

from __future__ import annotations

from collections.abc import Callable

ABOVE, BELOW = True, False  # a limit is a maximum or a minimum

# (reason, limit, whether the limit is a maximum, the measure): measured only when the limit is set
Check = tuple[str, float | None, bool, Callable[[], float]]


def first_failure(*checks: Check) -> bool | tuple[bool, str]:
    """`(False, reason)` of the first check past its limit, else True. A limit of 0 or None is not checked
    (the convention of datatrove's filters), and the checks after a failure are not measured."""
    for reason, limit, is_maximum, measure in checks:
        if not limit:
            continue
        value = measure()
        if (value > limit) if is_maximum else (value < limit):
            return False, reason
    return True
