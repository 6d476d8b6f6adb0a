"""Model components: config, word-level tokenizer, base stack, demo encoder and subject attention layers."""

from suti.models.base import (
    BaseStack,
    build_base,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
)
from suti.models.config import (
    SchedulerConfig,
    SubjectConfig,
    SuTIConfig,
    TextConfig,
    UNetConfig,
    VAEConfig,
)
from suti.models.demo_encoder import DemoEncoder
from suti.models.subject_attn import DemoContext, SubjectAttnProcessor, TextOnlyProcessor
from suti.models.subject_layers import SubjectLayers, install_subject_layers, uninstall_subject_layers
from suti.models.tokenizer import build_word_tokenizer

__all__ = [
    "BaseStack", "DemoContext", "DemoEncoder", "SchedulerConfig", "SubjectAttnProcessor", "SubjectConfig",
    "SubjectLayers", "SuTIConfig", "TextConfig", "TextOnlyProcessor", "UNetConfig", "VAEConfig", "build_base",
    "build_scheduler", "build_text_encoder", "build_tokenizer", "build_unet", "build_vae", "build_word_tokenizer",
    "install_subject_layers", "uninstall_subject_layers",
]
