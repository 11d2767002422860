"""The LAPQ algorithm in pure PyTorch + scipy: calibration objective with a
chain cache, layer-wise initialisation, p sweep, joint search."""
from . import interrupt
from .calib import CalibrationSet
from .initialize import INIT_MODES, ClipInitializer, InitSettings
from .objective import (CalibrationObjective, FullForward, NonFiniteLossError,
                        chain_of_sequential)
from .pipeline import LapqResult, run_lapq
from .psweep import PFit, PSweep, fit_p, sweep_p
from .rounding import (ROUNDING_METHODS, RoundingSettings, apply_gptq,
                       clear_rounding)
from .search import (SEARCH_METHODS, SearchResult, SearchSettings,
                     joint_search)

__all__ = [
    'CalibrationSet', 'CalibrationObjective', 'FullForward',
    'NonFiniteLossError', 'chain_of_sequential', 'InitSettings',
    'ClipInitializer', 'INIT_MODES', 'fit_p', 'sweep_p', 'PFit', 'PSweep',
    'SearchSettings', 'SearchResult', 'joint_search', 'SEARCH_METHODS',
    'run_lapq', 'LapqResult', 'RoundingSettings', 'ROUNDING_METHODS',
    'apply_gptq', 'clear_rounding', 'interrupt'
]
