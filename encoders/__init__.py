"""Encoders: plain `nn.Module`s that turn inputs into `Encoded(seq=(B, T, D), lengths=(B,) | None)`."""
from encoders.base import Encoded, Encoder, get_encoder_class, lengths_to_mask, list_encoders, register_encoder
from encoders.audio import LogMelEncoder
from encoders.efficientnet import EfficientNetLiteEncoder
from encoders.image import ResNetEncoder, SmallCNNEncoder
from encoders.text import WordEmbeddingEncoder
from encoders.video import FrameEncoder

__all__ = [
    "Encoded",
    "EfficientNetLiteEncoder",
    "Encoder",
    "FrameEncoder",
    "LogMelEncoder",
    "ResNetEncoder",
    "SmallCNNEncoder",
    "WordEmbeddingEncoder",
    "get_encoder_class",
    "lengths_to_mask",
    "list_encoders",
    "register_encoder",
]
