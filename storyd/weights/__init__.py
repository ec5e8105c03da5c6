"""Model weights: the lock that pins them, where they are on this machine, and fetching them.

Only ``pull`` and ``fill_lock`` touch the network; everything else is offline.
The library never prints: long operations report through an optional
storyd.progress.Progress, one task per file, in bytes.
"""

from storyd.weights.checks import VerifyResult, human_size, sha256_file
from storyd.weights.configs import prepare_config_dir
from storyd.weights.fetch import fill_lock, pull
from storyd.weights.lock import (
    LockedFile,
    LockEntry,
    WeightsLock,
    default_lock_path,
    load_lock,
    write_lock,
)
from storyd.weights.paths import storyd_home, weights_dir
from storyd.weights.store import add, resolve, verify, verify_entry

__all__ = [
    "LockEntry",
    "LockedFile",
    "VerifyResult",
    "WeightsLock",
    "add",
    "default_lock_path",
    "fill_lock",
    "human_size",
    "load_lock",
    "prepare_config_dir",
    "pull",
    "resolve",
    "sha256_file",
    "storyd_home",
    "verify",
    "verify_entry",
    "weights_dir",
    "write_lock",
]
