"""minigpt_ptv2: deep prompt tuning (P-Tuning v2) from scratch, one readable file at a time."""
from .attention import MultiHeadAttention, concat_prefix
from .config import PRESETS, DecoderConfig, EncoderConfig, preset
from .decoder import Decoder, KVCache
from .encoder import Encoder
from .trace import ShapeTrace

__all__ = ["Encoder", "Decoder", "EncoderConfig", "DecoderConfig", "PRESETS", "preset",
           "MultiHeadAttention", "concat_prefix", "KVCache", "ShapeTrace"]
