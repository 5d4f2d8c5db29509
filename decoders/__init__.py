"""Decoders: plain `nn.Module`s that read `Encoded` steps and return hidden states or token logits."""
from decoders.caption import CaptionDecoder, Generated
from decoders.rnn import RNNSequenceDecoder, SequencePooling, make_rnn, run_rnn

__all__ = ["CaptionDecoder", "Generated", "RNNSequenceDecoder", "SequencePooling", "make_rnn", "run_rnn"]
