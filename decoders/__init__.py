"""Decoders: plain `nn.Module`s that read `Encoded` steps and return hidden states or token logits."""
from decoders.attention import AdditiveAttention
from decoders.caption import CaptionDecoder, CaptionState, DecoderOutput, ShowAttendTellDecoder, TokenDecoder, UpDownDecoder
from decoders.charlm import CharRNN
from decoders.classifier import PooledClassifier, RNNClassifier
from decoders.ctc import BiRNN, CTCDecoder, beam_decode, greedy_decode, prefix_beam_search
from decoders.rnn import RNNSequenceDecoder, SequencePooling, make_rnn, run_rnn
from decoders.search import Generated, Rollout, beam_search, sample, sample_with_log_probs

__all__ = [
    "AdditiveAttention",
    "BiRNN",
    "CTCDecoder",
    "CaptionDecoder",
    "CaptionState",
    "CharRNN",
    "DecoderOutput",
    "Generated",
    "PooledClassifier",
    "RNNClassifier",
    "Rollout",
    "RNNSequenceDecoder",
    "SequencePooling",
    "ShowAttendTellDecoder",
    "TokenDecoder",
    "UpDownDecoder",
    "beam_decode",
    "greedy_decode",
    "prefix_beam_search",
    "beam_search",
    "make_rnn",
    "run_rnn",
    "sample",
    "sample_with_log_probs",
]
