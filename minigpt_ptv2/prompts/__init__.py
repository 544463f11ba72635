"""Prompt methods: small objects a frozen model consults (their base class is core.prompt_method.PromptMethod;
catalog.METHODS names them)."""
from ..core.prompt_method import PromptMethod
from .bridge import hidden_to_kv
from .deep import DeepPrompt
from .freeze import freeze_backbone, trainable_names
from .gated import GatedPrefix
from .prefix import KVPrefix
from .ptuning import PTuningV1
from .registry import METHODS, format_report, make_method, parameter_report
from .soft import SoftPrompt, pad_labels

__all__ = ["PromptMethod", "SoftPrompt", "PTuningV1", "DeepPrompt", "KVPrefix", "GatedPrefix",
           "hidden_to_kv", "freeze_backbone", "trainable_names", "make_method", "METHODS",
           "parameter_report", "format_report", "pad_labels"]
