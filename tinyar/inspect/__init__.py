"""Tools to look inside a model: gradient checks (more to come: recorders, plots)."""
from .gradcheck import GradcheckReport, GradError, gradcheck

__all__ = ["gradcheck", "GradcheckReport", "GradError"]
