"""Result files (HDF5) and checkpoints; atomic writes."""

from pinnlab.io.atomic import atomic_path as atomic_path
from pinnlab.io.atomic import check_writable_directory as check_writable_directory
from pinnlab.io.atomic import strict_json as strict_json
from pinnlab.io.atomic import write_strict_json as write_strict_json
from pinnlab.io.checkpoint import CheckpointError as CheckpointError
from pinnlab.io.checkpoint import load_checkpoint as load_checkpoint
from pinnlab.io.checkpoint import save_checkpoint as save_checkpoint
from pinnlab.io.results import compute_slice as compute_slice
from pinnlab.io.results import result_slice as result_slice
from pinnlab.io.results import write_solve_result as write_solve_result

__all__ = [
    "CheckpointError",
    "atomic_path",
    "check_writable_directory",
    "compute_slice",
    "result_slice",
    "load_checkpoint",
    "save_checkpoint",
    "strict_json",
    "write_solve_result",
    "write_strict_json",
]
