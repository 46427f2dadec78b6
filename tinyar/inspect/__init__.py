"""Tools to look inside a model: gradient checks, recorders, gradient through time,
figures and the HTML report of a run."""
from .gradcheck import GradcheckReport, GradError, gradcheck
from .recorder import Recorder
from .bptt import compare_cells, gradient_through_time, remember_bias, state_gradients
from .report import write_report
from .figures import (plot_activation_stats, plot_gradient_flow, plot_histograms, plot_history,
                      plot_update_ratios, plot_vanishing_gradients)

__all__ = ["gradcheck", "GradcheckReport", "GradError", "Recorder", "compare_cells",
           "gradient_through_time", "remember_bias", "state_gradients", "write_report",
           "plot_activation_stats", "plot_gradient_flow", "plot_histograms", "plot_history",
           "plot_update_ratios", "plot_vanishing_gradients"]
