"""What every trainer of ``symdisc`` and ``ella`` shares (infrastructure; no paper): argument
checks (:mod:`.checks`), one :class:`NonFiniteLossError` (:mod:`.errors`), atomic checkpoints
with a resume that is validated before it changes anything (:mod:`.checkpoint`), and the
training loop with progress bar, scheduled checkpoints and the NaN stop (:mod:`.loop`).

Imports only torch (and tqdm, for the progress bar, when one is asked for).
"""

from symdisc.runtime.checkpoint import (
    MAY_CHANGE_ON_RESUME,
    checkpoint_mismatches,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from symdisc.runtime.checks import (
    check_bool,
    check_choice,
    check_float,
    check_instance,
    check_int,
    check_optional_int,
    check_train_data,
)
from symdisc.runtime.errors import NonFiniteLossError
from symdisc.runtime.loop import TrainingLoop, Unit, is_finite, non_finite

__all__ = [
    "MAY_CHANGE_ON_RESUME",
    "NonFiniteLossError",
    "TrainingLoop",
    "Unit",
    "check_bool",
    "check_choice",
    "check_float",
    "check_instance",
    "check_int",
    "check_optional_int",
    "check_train_data",
    "checkpoint_mismatches",
    "is_finite",
    "load_checkpoint",
    "non_finite",
    "read_checkpoint",
    "save_checkpoint",
]
