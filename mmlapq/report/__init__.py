"""Tables and plots of a finished run (pure Python + matplotlib)."""
from .benchmark_table import benchmark_markdown, seed_summary
from .plots import (plot_clips, plot_loss_surface, plot_p_sweep, plot_run,
                    plot_pareto, plot_search, plot_sensitivity)
from .report import layer_rows, summary_table, write_markdown

__all__ = ['benchmark_markdown', 'seed_summary', 'layer_rows', 'summary_table',
           'write_markdown', 'plot_p_sweep',
           'plot_search', 'plot_sensitivity', 'plot_pareto', 'plot_clips', 'plot_loss_surface', 'plot_run']
