import pytest
import torch
from torch import nn

from decoders.convlstm import (
    RECURRENT_CORES, CausalLSTMCell, ConvLSTM, ConvLSTMCell, ConvLSTMForecaster, PredRNNPlusPlus, SpatioTemporalLSTMCell,
)
from decoders.schedules import sampling_probability


def test_cell_computes_all_gates_with_one_convolution_and_keeps_shapes():
    cell = ConvLSTMCell(3, 5, kernel_size=3)
    convs = [m for m in cell.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].in_channels == 3 + 5 and convs[0].out_channels == 4 * 5
    h, c = cell(torch.randn(2, 3, 6, 7))
    assert h.shape == c.shape == (2, 5, 6, 7)
    assert h.abs().max() < 1  # h = o * tanh(c)


def test_cell_none_state_equals_zero_state_and_state_is_used():
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 4)
    x = torch.randn(3, 2, 5, 5)
    zeros = (torch.zeros(3, 4, 5, 5), torch.zeros(3, 4, 5, 5))
    assert all(torch.equal(a, b) for a, b in zip(cell(x), cell(x, zeros)))
    other = (torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5))
    assert not torch.allclose(cell(x)[0], cell(x, other)[0])


def test_stack_over_a_sequence_equals_two_halves_with_carried_state():
    torch.manual_seed(0)
    rnn = ConvLSTM(2, [4, 6], kernel_size=3)
    x = torch.randn(2, 6, 2, 5, 5)
    out, states = rnn(x)
    assert out.shape == (2, 6, 6, 5, 5)
    assert [s[0].shape[1] for s in states] == [4, 6]
    first, mid = rnn(x[:, :3])
    second, end = rnn(x[:, 3:], mid)
    torch.testing.assert_close(torch.cat([first, second], dim=1), out)
    torch.testing.assert_close(end[-1][1], states[-1][1])
    fresh, _ = rnn(x[:, 3:])  # without the carried state the second half differs
    assert not torch.allclose(fresh, second)


@pytest.mark.parametrize("advection_kernel", [0, 5])
@pytest.mark.parametrize("channels", [1, 3])
def test_forecaster_shapes_and_range(advection_kernel, channels):
    torch.manual_seed(0)
    model = ConvLSTMForecaster(channels, patch_size=4, embed_channels=8, hidden_channels=[8, 8], advection_kernel=advection_kernel)
    frames = torch.rand(2, 5, channels, 16, 24)
    out = model(frames, future_len=3)
    assert out.future.shape == (2, 3, channels, 16, 24)
    assert out.context.shape == (2, 4, channels, 16, 24)
    assert out.future.min() >= 0 and out.future.max() <= 1


def test_forecaster_refuses_wrong_channels_and_indivisible_sizes():
    model = ConvLSTMForecaster(1, patch_size=4, embed_channels=4, hidden_channels=[4])
    with pytest.raises(ValueError, match="1-channel"):
        model(torch.rand(1, 3, 3, 16, 16), 2)
    with pytest.raises(ValueError, match="not divisible by patch_size=4"):
        model(torch.rand(1, 3, 1, 18, 16), 2)


@pytest.mark.parametrize("schedule", ["linear", "inverse_sigmoid", "exponential"])
def test_sampling_schedule_meets_its_ends_and_grows(schedule):
    assert sampling_probability(0.0, schedule) == pytest.approx(0.0, abs=1e-9)
    assert sampling_probability(1.0, schedule) == pytest.approx(1.0)
    assert sampling_probability(0.2, schedule, start=0.3, end=0.6) == 0.0
    assert sampling_probability(0.6, schedule, start=0.3, end=0.6, max_prob=0.8) == pytest.approx(0.8)
    assert sampling_probability(0.9, schedule, start=0.3, end=0.6, max_prob=0.8) == pytest.approx(0.8)
    values = [sampling_probability(p / 20, schedule) for p in range(21)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert 0.0 < sampling_probability(0.5, schedule) < 1.0


def test_sampling_schedules_differ_in_shape_and_bad_ones_are_refused():
    early = {s: sampling_probability(0.2, s) for s in ("linear", "inverse_sigmoid", "exponential")}
    assert early["inverse_sigmoid"] < early["linear"] < early["exponential"]
    with pytest.raises(ValueError, match="start < end"):
        sampling_probability(0.5, "linear", start=0.5, end=0.5)
    with pytest.raises(ValueError, match="unknown sampling schedule"):
        sampling_probability(0.5, "cosine")


def test_rollout_reads_no_ground_truth_but_teacher_forcing_does():
    torch.manual_seed(0)
    model = ConvLSTMForecaster(1, patch_size=4, embed_channels=8, hidden_channels=[8]).eval()
    observed, truth = torch.rand(2, 4, 1, 16, 16), torch.rand(2, 3, 1, 16, 16)
    with torch.no_grad():
        rollout = model(observed, 3).future
        own = model(observed, 3, targets=truth, sampling_prob=1.0).future
        forced = model(observed, 3, targets=truth, sampling_prob=0.0).future
        forced_other = model(observed, 3, targets=torch.rand_like(truth), sampling_prob=0.0).future
    torch.testing.assert_close(own, rollout)  # probability 1: the truth is never read
    torch.testing.assert_close(forced[:, 0], rollout[:, 0])  # the first future frame follows the observed ones only
    assert not torch.allclose(forced[:, 1:], rollout[:, 1:])  # teacher forcing does read it ...
    assert not torch.allclose(forced[:, 1:], forced_other[:, 1:])  # ... so this test could see a leak


def test_predrnn_memory_zigzags_up_the_stack_and_to_the_next_step():
    from decoders.convlstm import PredRNN

    torch.manual_seed(0)
    rnn = PredRNN(3, [6, 6]).eval()
    x = torch.randn(2, 4, 3, 5, 5)
    out, (layers, m) = rnn(x)
    assert out.shape == (2, 4, 6, 5, 5) and m.shape == (2, 6, 5, 5) and len(layers) == 2
    with torch.no_grad():  # the bottom layer's next step reads the top layer's M: change M, the next output changes
        top, states = rnn.step(x[:, 0])
        again, _ = rnn.step(x[:, 1], states)
        other, _ = rnn.step(x[:, 1], (states[0], states[1] + 1.0))
    assert not torch.allclose(again, other)
    with pytest.raises(ValueError, match="equal hidden channels"):
        PredRNN(3, [6, 8])


@pytest.mark.parametrize("cell,weight", [("predrnn", 0.0), ("predrnn", 0.1), ("predrnn++", 0.0)])
def test_predrnn_forecaster_reads_no_future_and_learns(cell, weight):
    torch.manual_seed(0)
    model = ConvLSTMForecaster(1, patch_size=4, embed_channels=8, hidden_channels=[8, 8], cell=cell,
                               decoupling_weight=weight)
    observed, truth = torch.rand(2, 4, 1, 16, 16), torch.rand(2, 3, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        rollout = model(observed, 3).future
        own = model(observed, 3, targets=truth, sampling_prob=1.0).future
        forced = model(observed, 3, targets=truth, sampling_prob=0.0).future
    torch.testing.assert_close(own, rollout)
    assert not torch.allclose(forced[:, 1:], rollout[:, 1:])
    model.train()
    out = model(observed, 3, targets=truth, sampling_prob=0.0)
    if weight:  # PredRNN-V2: |cos| of the two memories' increments, weighted, in [0, weight]
        assert isinstance(out.aux_loss, torch.Tensor) and 0 < out.aux_loss.item() <= weight
    else:
        assert out.aux_loss == 0.0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):  # overfit one batch
        out = model(observed, 3, targets=truth, sampling_prob=0.0)
        loss = nn.functional.mse_loss(out.future, truth) + out.aux_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_decoupling_loss_needs_predrnn():
    with pytest.raises(ValueError, match="needs cell: predrnn"):
        ConvLSTMForecaster(1, decoupling_weight=0.1)


@pytest.mark.parametrize("cell", sorted(RECURRENT_CORES))
def test_every_core_keeps_shapes_and_carries_state_across_halves(cell):
    torch.manual_seed(0)
    rnn = RECURRENT_CORES[cell](3, [6, 6]).eval()
    x = torch.randn(2, 6, 3, 5, 5)
    with torch.no_grad():
        out, states = rnn(x)
        first, mid = rnn(x[:, :3])
        second, _ = rnn(x[:, 3:], mid)
        fresh, _ = rnn(x[:, 3:])
    assert out.shape == (2, 6, 6, 5, 5) and rnn.out_channels == 6
    torch.testing.assert_close(torch.cat([first, second], dim=1), out)
    assert not torch.allclose(fresh, second)  # the carried state matters


@pytest.mark.parametrize("cell", sorted(RECURRENT_CORES))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_cell_forecasts_in_range_and_every_parameter_learns(cell, channels):
    torch.manual_seed(0)
    model = ConvLSTMForecaster(channels, patch_size=4, embed_channels=8, hidden_channels=[8, 8], cell=cell,
                               decoupling_weight=0.1 if cell == "predrnn" else 0.0)
    out = model(torch.rand(2, 5, channels, 16, 24), 3, targets=torch.rand(2, 3, channels, 16, 24), sampling_prob=0.5,
                reverse_sampling_prob=0.5)
    assert out.future.shape == (2, 3, channels, 16, 24) and out.context.shape == (2, 4, channels, 16, 24)
    assert out.future.min() >= 0 and out.future.max() <= 1
    (out.future.mean() + out.context.mean() + out.aux_loss).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


def test_causal_lstm_cascades_c_into_m_where_the_st_lstm_does_not():
    torch.manual_seed(0)
    x, h, c, m = (torch.randn(2, 4, 5, 5) for _ in range(4))
    causal, st = CausalLSTMCell(4, 4), SpatioTemporalLSTMCell(4, 4)
    with torch.no_grad():
        h1, c1, m1 = causal(x, h, c, m)
        _, _, m2 = causal(x, h, c + 1.0, m)
        assert h1.shape == c1.shape == m1.shape == (2, 4, 5, 5) and h1.abs().max() < 1
        assert not torch.allclose(m1, m2)  # M's gates read the new C
        torch.testing.assert_close(st(x, h, c, m)[2], st(x, h, c + 1.0, m)[2])  # PredRNN's M does not


def test_predrnn_plus_plus_second_layer_reads_the_highway_state():
    torch.manual_seed(0)
    rnn = PredRNNPlusPlus(3, [4, 4]).eval()
    x = torch.randn(2, 2, 3, 5, 5)
    with torch.no_grad():
        _, states = rnn.step(x[:, 0])
        layers, m, z = states
        assert z.shape == (2, 4, 5, 5) and not torch.equal(z, layers[0][0])  # z is the GHU's, not layer 1's h
        again, _ = rnn.step(x[:, 1], states)
        other, _ = rnn.step(x[:, 1], (layers, m, z + 1.0))
    assert not torch.allclose(again, other)
    with pytest.raises(ValueError, match="at least two layers"):
        PredRNNPlusPlus(3, [4])
    with pytest.raises(ValueError, match="equal hidden channels"):
        PredRNNPlusPlus(3, [4, 8])


def test_forecaster_refuses_an_unknown_cell_and_decoupling_without_predrnn():
    with pytest.raises(ValueError, match="unknown cell 'gru'; choose one of convlstm, predrnn, predrnn\\+\\+"):
        ConvLSTMForecaster(1, cell="gru")
    with pytest.raises(ValueError, match="needs cell: predrnn"):
        ConvLSTMForecaster(1, hidden_channels=[4, 4], cell="predrnn++", decoupling_weight=0.1)


@pytest.mark.parametrize("cell", sorted(RECURRENT_CORES))
def test_reverse_sampling_one_reads_only_the_first_observed_frame(cell):
    """Probability 1: every observed frame after the first is the model's own prediction, so changing them changes
    nothing; probability 0 is the default and does read them."""
    torch.manual_seed(0)
    model = ConvLSTMForecaster(1, patch_size=4, embed_channels=8, hidden_channels=[8, 8], cell=cell).eval()
    observed = torch.rand(2, 4, 1, 16, 16)
    changed = observed.clone()
    changed[:, 1:] = torch.rand(2, 3, 1, 16, 16)
    with torch.no_grad():
        own = model(observed, 3, reverse_sampling_prob=1.0)
        own_changed = model(changed, 3, reverse_sampling_prob=1.0)
        default, zero = model(observed, 3), model(observed, 3, reverse_sampling_prob=0.0)
    torch.testing.assert_close(own.future, own_changed.future)
    torch.testing.assert_close(own.context, own_changed.context)
    torch.testing.assert_close(default.future, zero.future)
    assert not torch.allclose(default.future, own.future)
