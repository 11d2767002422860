from .plots import (plot_clips, plot_loss_surface, plot_p_sweep, plot_run,
                    plot_search)
from .report import (collect_env, layer_rows, summary_table, write_json,
                     write_markdown)

__all__ = ['collect_env', 'layer_rows', 'summary_table', 'write_json',
           'write_markdown', 'plot_p_sweep', 'plot_search', 'plot_clips',
           'plot_loss_surface', 'plot_run']
