"""What every trainer of ``symdisc`` and ``ella`` shares (infrastructure; no paper): argument
checks (:mod:`.checks`), one :class:`NonFiniteLossError` (:mod:`.errors`), atomic checkpoints
with a resume that is validated before it changes anything (:mod:`.checkpoint`), and the
training loop with progress bar, scheduled checkpoints and the NaN stop (:mod:`.loop`).

Imports only torch (and tqdm, for the progress bar, when one is asked for).
"""

from symdisc.runtime import checks, errors, loop
from symdisc.runtime.checkpoint import (
    MAY_CHANGE_ON_RESUME,
    checkpoint_mismatches,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from symdisc.runtime.checks import *  # noqa: F403
from symdisc.runtime.errors import *  # noqa: F403
from symdisc.runtime.loop import *  # noqa: F403

# of the checkpoint module, the loop's per-kind capture and restore stay internal
__all__ = [
    *checks.__all__,
    *errors.__all__,
    *loop.__all__,
    "MAY_CHANGE_ON_RESUME",
    "checkpoint_mismatches",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]
