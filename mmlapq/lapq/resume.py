"""The search state file: what a later run needs to continue a search that
was interrupted (``--resume``), written atomically after every stage and
every sweep.

It holds the clips and grids after the layer-wise init (and the p sweep's
record), the GPTQ codes chosen before the search, and every evaluation of
the search (its point and loss). A resumed run restores the first two and
replays the search: scipy's Powell is deterministic, so fed the saved losses
it visits the saved points again (no forward pass) and then goes on
evaluating where the interrupted run stopped. With the same config, data
and machine it reaches the clips an uninterrupted run reaches.

A fingerprint of the run (settings, calibration images, checkpoint) is
stored with it; a state of another run is refused.
"""
from typing import Dict, Optional

import torch

from ..fileio import atomic_write


class ResumeMismatch(ValueError):
    """The state file was written by another run."""


class SearchStateFile:
    """The state of one run, kept in memory and mirrored to ``path``.

    Args:
        path: the file (None: keep nothing, resume nothing).
        fingerprint: JSON-like description of the run.
        write: whether this process writes the file (rank 0 only).
        resume: read the file's state (it must exist and match).
    """

    VERSION = 1

    def __init__(self, path: Optional[str], fingerprint: dict,
                 write: bool = True, resume: bool = False):
        self.path, self.write = path, write and path is not None
        self.data = dict(version=self.VERSION, fingerprint=fingerprint)
        self.resumed = False
        if resume:
            self._load(fingerprint)

    def _load(self, fingerprint: dict) -> None:
        try:
            saved = torch.load(self.path, map_location='cpu',
                               weights_only=True)
        except FileNotFoundError:
            raise ResumeMismatch(f'no search state {self.path} to resume: '
                                 'run without --resume') from None
        if saved.get('version') != self.VERSION:
            raise ResumeMismatch(f'{self.path} is a search state of another '
                                 'mmlapq version: run without --resume')
        old = saved.get('fingerprint', {})
        differ = sorted(k for k in set(old) | set(fingerprint)
                        if old.get(k) != fingerprint.get(k))
        if differ:
            raise ResumeMismatch(
                f'{self.path} was written by a run with other '
                f'{", ".join(differ)}: resume with the same config, '
                'checkpoint and calibration settings, or run without '
                '--resume')
        self.data, self.resumed = saved, True

    def get(self, key: str):
        return self.data.get(key)

    def update(self, **parts) -> None:
        """Store ``parts`` and rewrite the file (atomically)."""
        self.data.update(parts)
        if self.write:
            atomic_write(self.path, lambda tmp: torch.save(self.data, tmp))


def clips_and_grids(quantizers: Dict[str, object]) -> dict:
    """The clips and grids of every quantizer (the init's result)."""
    return {name: dict(alpha=q.alpha.detach().cpu().clone(),
                       bits=q.grid.bits, kind=q.grid.kind)
            for name, q in quantizers.items()}


def restore_clips_and_grids(quantizers: Dict[str, object],
                            saved: dict) -> None:
    from ..quant.grids import Grid
    for name, q in quantizers.items():
        q.set_grid(Grid(saved[name]['bits'], saved[name]['kind']))
        q.set_alpha(saved[name]['alpha'])
