"""NoCo: weakly-supervised temporal action localization by pseudo-label noise correction.

Pipeline stages, one sub-package each:
data -> wtal (base model) -> labels (CALA) -> detector (TriDet) -> correction (AIC, MIC, HPM,
teacher) -> eval.
"""

__version__ = "0.1.0"
