"""The on-device few-shot runtime: an exported model (engine), enrolled actions (gallery), classification
of clips (classify) and of long videos (stream), and one function per CLI verb (verbs)."""

from .classify import Classifier, Prediction, classify
from .engine import FewShotRuntime
from .gallery import EnrollReport, Gallery

__all__ = ["Classifier", "EnrollReport", "FewShotRuntime", "Gallery", "Prediction", "classify"]
