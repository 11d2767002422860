"""``quantizer.mixed``: the budget and the candidate widths, checked before
any work (one-line errors naming the key and the fix)."""
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ...quant.grids import check_bits, check_type
from ..allocation import Option, all_options

BUDGET_KINDS = ('bops', 'bops_of', 'weight_bytes', 'weight_bits_avg',
                'latency')


def split_width(text) -> Optional[Tuple[int, int]]:
    """'w4a8' -> (4, 8) (any case); None when it is not of that form."""
    m = re.fullmatch(r'w(\d+)a(\d+)', str(text).lower())
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_width(text) -> Option:
    """'w4a4' -> (4, 4) with both widths in 2..16; a one-line error
    otherwise."""
    width = split_width(text)
    if width is None:
        raise ValueError(f"mixed.budget.bops_of={text!r} is not a width "
                         "like 'w4a4'")
    return (check_bits(width[0], 'bops_of weight bits'),
            check_bits(width[1], 'bops_of activation bits'))


def _candidates(key: str, values) -> Tuple[int, ...]:
    """A list or tuple of distinct widths; a one-line error otherwise."""
    if isinstance(values, (str, bytes)) or not isinstance(values,
                                                          (list, tuple)):
        raise ValueError(f'mixed.{key}={values!r} must be a list of widths,'
                         f' e.g. {key}=(2, 3, 4, 8)')
    if not values or len(set(values)) != len(values):
        raise ValueError(f'mixed.{key}={list(values)} must be a non-empty '
                         'list of distinct widths')
    return tuple(values)


@dataclass
class MixedSettings:
    """``quantizer.mixed``: the budget and the candidate widths."""

    budget: dict
    w_candidates: Sequence[int] = (2, 3, 4, 8)
    a_candidates: Sequence[int] = (4, 8)
    base_bits: int = 8
    p: float = 2.0  # the Lp exponent of every probe's clip
    free_first_last: bool = False
    check_pairs: int = 12  # pairs of probes measured to check the model

    def __post_init__(self):
        if not isinstance(self.budget, dict):
            raise ValueError(f'mixed.budget={self.budget!r} must be a dict '
                             "such as dict(bops_of='w4a4')")
        budget = dict(self.budget)
        unknown = [k for k in budget if k not in BUDGET_KINDS + ('table', )]
        if unknown:
            raise ValueError(f'mixed.budget key {unknown[0]!r} is unknown: '
                             f'use one of {", ".join(BUDGET_KINDS)}')
        kinds = [k for k in budget if k in BUDGET_KINDS]
        if len(kinds) != 1:
            raise ValueError(f'mixed.budget gives {len(kinds)} budgets '
                             f'({", ".join(kinds) or "none"}): give exactly '
                             f'one of {", ".join(BUDGET_KINDS)}')
        self.kind = kinds[0]
        if ('table' in budget) != (self.kind == 'latency'):
            raise ValueError("mixed.budget: a latency budget needs its table"
                             " (dict(latency=MS, table='latency.json'), "
                             'written by tools/latency_table.py) and only it'
                             ' takes one')
        if self.kind == 'bops_of':
            self.uniform = parse_width(budget['bops_of'])
        else:
            self.uniform = None
            check_type(f'mixed.budget.{self.kind}', budget[self.kind], float)
            if budget[self.kind] <= 0:
                raise ValueError(f'mixed.budget.{self.kind} must be > 0')
        self.w_candidates = _candidates('w_candidates', self.w_candidates)
        self.a_candidates = _candidates('a_candidates', self.a_candidates)
        if self.uniform is not None:
            # The uniform point of the budget is always an option, so the
            # allocation can only predict better than it (a W3A3 budget
            # with 4- and 8-bit inputs only would force 2-bit weights).
            self.w_candidates = tuple(sorted(set(self.w_candidates) |
                                             {self.uniform[0]}))
            self.a_candidates = tuple(sorted(set(self.a_candidates) |
                                             {self.uniform[1]}))
        try:
            all_options(self.w_candidates, self.a_candidates)
        except ValueError as exc:
            raise ValueError(f'mixed: {exc}: use widths from 2 to 16') \
                from None
        check_bits(self.base_bits, 'mixed.base_bits')
        check_type('mixed.p', self.p, float)
        check_type('mixed.free_first_last', self.free_first_last, bool)
        check_type('mixed.check_pairs', self.check_pairs, int)
        if self.p < 1:
            raise ValueError(f'mixed.p={self.p} must be >= 1')

    def to_dict(self) -> dict:
        return dict(budget=dict(self.budget),
                    w_candidates=list(self.w_candidates),
                    a_candidates=list(self.a_candidates),
                    base_bits=self.base_bits, p=self.p,
                    free_first_last=self.free_first_last,
                    check_pairs=self.check_pairs)
