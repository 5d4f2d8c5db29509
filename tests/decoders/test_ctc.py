import itertools

import pytest
import torch
from torchmetrics.text import WordErrorRate

from decoders.ctc import CTCDecoder, beam_decode, greedy_decode, prefix_beam_search
from encoders.base import Encoded


def per(hyp: list[int], ref: list[int]) -> float:
    return float(WordErrorRate()(" ".join(map(str, hyp)), " ".join(map(str, ref))))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_ctc_decoder_shapes_and_padding(cell):
    torch.manual_seed(0)
    dec = CTCDecoder(in_dim=8, num_classes=5, hidden_dim=6, cell=cell, num_layers=2, dropout=0.0).eval()
    seq = torch.randn(3, 7, 8)
    lengths = torch.tensor([7, 4, 1])
    logits = dec(Encoded(seq, lengths))
    assert logits.shape == (3, 7, 5)
    # a sample's valid steps do not depend on its padding (packed, and the backward direction starts at its end)
    alone = dec(Encoded(seq[1:2, :4], torch.tensor([4])))
    torch.testing.assert_close(logits[1, :4], alone[0])


def test_greedy_merges_repeats_and_drops_blanks():
    path = torch.tensor([[0, 1, 1, 0, 1, 2, 2, 0, 0]])  # blank=0: "1 1" merges, "1 _ 1" does not
    log_probs = torch.nn.functional.one_hot(path, 3).float().log()
    assert greedy_decode(log_probs) == [[1, 1, 2]]
    assert greedy_decode(log_probs, torch.tensor([3])) == [[1]]  # only valid steps are read


def test_beam_is_never_worse_than_greedy_where_greedy_is_wrong():
    # Two steps, blank p=0.6, label p=0.4 each. The best single path is "blank blank" -> "" (p=0.36), but the label
    # sequence "1" has three alignments (1 1, 1 _, _ 1) adding to 0.64: greedy is wrong, beam search is right.
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]])
    log_probs = probs.log()
    greedy = greedy_decode(log_probs[None])[0]
    beam = prefix_beam_search(log_probs, beam_width=4)
    assert greedy == [] and beam == [1]
    assert per(beam, [1]) == 0.0 < per(greedy, [1]) == 1.0


def test_beam_merges_alignments_of_longer_sequences():
    # Greedy follows the single best path; the beam sums the alignments of each prefix.
    probs = torch.tensor([
        [0.5, 0.3, 0.2],
        [0.5, 0.3, 0.2],
        [0.1, 0.1, 0.8],
        [0.5, 0.1, 0.4],
        [0.5, 0.1, 0.4],
    ])
    log_probs = probs.log()
    greedy = greedy_decode(log_probs[None])[0]
    beam = prefix_beam_search(log_probs, beam_width=8)

    def seq_logprob(labels):  # exact CTC probability of a label sequence
        loss = torch.nn.functional.ctc_loss(log_probs[:, None], torch.tensor([labels]), torch.tensor([5]),
                                            torch.tensor([len(labels)]), reduction="sum")
        return -loss.item()

    # exhaustive: every label sequence a 5-step CTC output can emit
    candidates = [list(c) for n in range(6) for c in itertools.product([1, 2], repeat=n)]
    feasible = [c for c in candidates if len(c) + sum(a == b for a, b in zip(c, c[1:])) <= 5]
    best = max(feasible, key=seq_logprob)
    assert greedy == [2] and beam != greedy
    assert beam == best
    assert seq_logprob(beam) > seq_logprob(greedy)


def test_beam_agrees_with_greedy_on_confident_outputs_and_respects_lengths():
    path = torch.tensor([[0, 3, 3, 0, 2, 0, 2, 1]])
    log_probs = (torch.nn.functional.one_hot(path, 4).float() * 0.98 + 0.005).log()
    assert beam_decode(log_probs, beam_width=4) == greedy_decode(log_probs) == [[3, 2, 2, 1]]
    assert beam_decode(log_probs, torch.tensor([5]), beam_width=4) == [[3, 2]]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_birnn_without_packing_matches_a_packed_bidirectional_rnn(cell):
    from decoders.ctc import BiRNN
    from decoders.rnn import RNNSequenceDecoder

    torch.manual_seed(0)
    ours = BiRNN(5, 4, cell, num_layers=2).eval()
    packed = RNNSequenceDecoder(5, 4, cell, num_layers=2, bidirectional=True).eval()
    with torch.no_grad():  # same weights: layer l's forward/backward directions <- packed's *_l{l} / *_l{l}_reverse
        for l, (fwd, bwd) in enumerate(ours.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(fwd, f"{name}_l0").copy_(getattr(packed.rnn, f"{name}_l{l}"))
                getattr(bwd, f"{name}_l0").copy_(getattr(packed.rnn, f"{name}_l{l}_reverse"))
    seq, lengths = torch.randn(3, 6, 5), torch.tensor([6, 3, 1])
    a, b = ours(Encoded(seq, lengths)).seq, packed(Encoded(seq, lengths)).seq
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(a[i, :n], b[i, :n])
