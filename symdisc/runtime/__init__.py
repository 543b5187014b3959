"""What every trainer of ``symdisc`` and ``ella`` shares: argument checks (:mod:`.checks`), one
:class:`NonFiniteLossError` (:mod:`.errors`), atomic checkpoints with a resume that is validated
before it changes anything, and the training loop with progress and the NaN stop.

Imports only torch (and tqdm, for the progress bar, when one is asked for).
"""

from symdisc.runtime.checks import (
    check_bool,
    check_choice,
    check_float,
    check_instance,
    check_int,
    check_optional_int,
)
from symdisc.runtime.errors import NonFiniteLossError

__all__ = [
    "NonFiniteLossError",
    "check_bool",
    "check_choice",
    "check_float",
    "check_instance",
    "check_int",
    "check_optional_int",
]
