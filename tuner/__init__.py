"""tuner: hyperparameter search for fine-tuning Hugging Face transformers."""

from __future__ import annotations

from tuner.errors import TunerError
from tuner.space import Choice, Fixed, FloatRange, IntRange
from tuner.task import DataSpec, Task

__all__ = ["Choice", "DataSpec", "Fixed", "FloatRange", "IntRange", "Task", "TunerError"]
__version__ = "0.1.0"
