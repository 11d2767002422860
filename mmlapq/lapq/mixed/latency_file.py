"""The per-layer latency table of a ``latency`` budget, as
``tools/latency_table.py`` writes it: ``{"layers": {layer: {"w4a4": ms,
...}}, ...}`` (a float layer's entry is ``"wfpafp"``)."""
import json
import os.path as osp
from typing import Dict

_FORM = ('{"layers": {"<layer>": {"w4a4": <ms>, ...}}}, as '
         'tools/latency_table.py CONFIG --out PATH writes it')


def read_latency_table(path: str) -> Dict[str, Dict[str, float]]:
    """``{layer: {'w4a4': ms, ...}}``; a one-line error naming the file
    and the fix when it is missing or not of that form."""
    if not osp.isfile(path):
        raise ValueError(f'latency table {path} does not exist: write it '
                         'with tools/latency_table.py CONFIG --out PATH')
    try:
        with open(path) as f:
            table = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f'latency table {path} is not JSON ({exc}): '
                         f'it must be {_FORM}') from None
    if isinstance(table, dict) and 'layers' in table:
        table = table['layers']
    if not isinstance(table, dict) or not all(
            isinstance(row, dict) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool)
                for v in row.values())
            for row in table.values()):
        raise ValueError(f'latency table {path} is not of the form {_FORM}')
    return {name: {k: float(v) for k, v in row.items()}
            for name, row in table.items()}
