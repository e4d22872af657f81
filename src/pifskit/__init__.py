"""pifskit: the DDIM chain as a Partitioned Iterated Function System.

Core (numpy/scipy only): schedules -> chains -> geometry -> spectra/Lyapunov
-> design criteria. The torch layer lives in ``pifskit.torch`` and is never
imported by the core.
"""

from ._validate import PifsError
from .chains import Chain, make_chain
from .resolve import resolve_chain
from .schedules import DiscreteSchedule, Schedule, get_schedule
from .spectra import Spectrum

__version__ = "0.1.0"

__all__ = ["PifsError", "Chain", "make_chain", "resolve_chain", "Schedule", "DiscreteSchedule", "get_schedule",
           "Spectrum", "__version__"]
