"""ConvLSTM (Shi et al. 2015), PredRNN's spatiotemporal LSTM (Wang et al. 2017, with PredRNN-V2's decoupling
loss, 2021), PredRNN++'s causal LSTM and gradient highway (Wang et al. 2018), and an encoder-forecaster that
predicts future video frames with any of them (`RECURRENT_CORES`).

The forecaster works on a coarse grid: a frame (C, H, W) is folded into patches (space-to-depth, "patch size 4"
in PredRNN/OpenSTL) and embedded by a convolution, stacked ConvLSTM layers step over time on that grid, and a
convolution plus depth-to-space turns the top hidden state back into a frame in [0, 1] (sigmoid).
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# One layer's state: (h, c), each (B, hidden, h, w).
CellState = tuple[Tensor, Tensor]



def zero_state(x: Tensor, channels: int) -> Tensor:
    """Zeros (B, channels, h, w) shaped like x's batch and grid, from x itself rather than from its sizes as Python
    numbers, so that a traced or ONNX export keeps the batch size free."""
    return torch.zeros_like(x[:, :1]).expand(-1, channels, -1, -1)

class ConvLSTMCell(nn.Module):
    """An LSTM whose gates are convolutions: all four gates come from ONE convolution over [x, h].

    x (B, in_channels, h, w), state (h, c) each (B, hidden_channels, h, w) or None (zeros)
    -> new (h, c). No peephole terms (as in PredRNN/OpenSTL's ConvLSTM).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvLSTMCell needs an odd kernel_size (same padding), got {kernel_size}")
        self.hidden_channels = hidden_channels
        self.conv = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():  # forget gate starts open, so the cell state carries over time from the first step
            self.conv.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def initial_state(self, x: Tensor) -> CellState:
        zeros = zero_state(x, self.hidden_channels)
        return zeros, zeros

    def forward(self, x: Tensor, state: CellState | None = None) -> CellState:
        h, c = self.initial_state(x) if state is None else state
        gates = self.conv(torch.cat([x, h], dim=1))  # (B, 4 * hidden, h, w)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """Stacked ConvLSTM cells; layer k reads layer k-1's h. `step` advances one time step, `forward` a sequence."""

    def __init__(self, in_channels: int, hidden_channels: list[int], kernel_size: int = 3) -> None:
        super().__init__()
        if not hidden_channels:
            raise ValueError("ConvLSTM needs at least one entry in `hidden_channels`")
        ins = [in_channels, *hidden_channels[:-1]]
        self.cells = nn.ModuleList(ConvLSTMCell(i, h, kernel_size) for i, h in zip(ins, hidden_channels))
        self.out_channels = hidden_channels[-1]

    def step(self, x: Tensor, states: list[CellState] | None = None) -> tuple[Tensor, list[CellState]]:
        """x (B, C, h, w) -> top-layer h (B, hidden[-1], h, w) and the new per-layer states."""
        new_states = []
        for k, cell in enumerate(self.cells):
            x, c = cell(x, None if states is None else states[k])
            new_states.append((x, c))
        return x, new_states

    def forward(self, x: Tensor, states: list[CellState] | None = None) -> tuple[Tensor, list[CellState]]:
        """x (B, T, C, h, w) -> top-layer outputs (B, T, hidden[-1], h, w) and the final per-layer states."""
        outputs = []
        for t in range(x.shape[1]):
            out, states = self.step(x[:, t], states)
            outputs.append(out)
        return torch.stack(outputs, dim=1), states


class SpatioTemporalLSTMCell(nn.Module):
    """PredRNN's ST-LSTM cell: a ConvLSTM memory C carried over time within the layer, plus a spatiotemporal
    memory M that zigzags through the stack (up the layers within a step, then from the top layer to the bottom
    one at the next step); the output reads both through a 1x1 convolution.

    x (B, in, h, w), (h, c) each (B, hidden, h, w), m (B, hidden, h, w) -> new h, c, m and the two memory
    increments (B, hidden, h, w) that PredRNN-V2's decoupling loss pushes apart.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"SpatioTemporalLSTMCell needs an odd kernel_size (same padding), got {kernel_size}")
        pad, hid = kernel_size // 2, hidden_channels
        self.hidden_channels = hid
        self.conv_x = nn.Conv2d(in_channels, 7 * hid, kernel_size, padding=pad)  # i f g (C), i' f' g' (M), o
        self.conv_h = nn.Conv2d(hid, 4 * hid, kernel_size, padding=pad, bias=False)  # i f g o
        self.conv_m = nn.Conv2d(hid, 3 * hid, kernel_size, padding=pad, bias=False)  # i' f' g'
        self.conv_o = nn.Conv2d(2 * hid, hid, kernel_size, padding=pad, bias=False)  # o from [C, M]
        self.conv_last = nn.Conv2d(2 * hid, hid, 1, bias=False)
        self.adapter = nn.Conv2d(hid, hid, 1, bias=False)  # where the decoupling loss compares the increments
        with torch.no_grad():  # both forget gates start open
            self.conv_x.bias[hid : 2 * hid].fill_(1.0)
            self.conv_x.bias[4 * hid : 5 * hid].fill_(1.0)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = self.conv_x(x).chunk(7, dim=1)
        i_h, f_h, g_h, o_h = self.conv_h(h).chunk(4, dim=1)
        i_m, f_m, g_m = self.conv_m(m).chunk(3, dim=1)
        delta_c = torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)
        c = torch.sigmoid(f_x + f_h) * c + delta_c
        delta_m = torch.sigmoid(i_xm + i_m) * torch.tanh(g_xm + g_m)
        m = torch.sigmoid(f_xm + f_m) * m + delta_m
        memory = torch.cat([c, m], dim=1)
        h = torch.sigmoid(o_x + o_h + self.conv_o(memory)) * torch.tanh(self.conv_last(memory))
        return h, c, m, self.adapter(delta_c), self.adapter(delta_m)


class PredRNN(nn.Module):
    """Stacked ST-LSTM cells with the zigzag memory; the same `step`/`forward` interface as `ConvLSTM`. States are
    (per-layer (h, c), m). With `collect_decoupling` (PredRNN-V2), in training, each step adds the mean |cosine| between the C and M
    increments of every layer to the terms the forecaster takes (`take_decoupling_loss`) after a rollout."""

    def __init__(self, in_channels: int, hidden_channels: list[int], kernel_size: int = 3) -> None:
        super().__init__()
        if not hidden_channels or len(set(hidden_channels)) != 1:
            raise ValueError(f"PredRNN needs equal hidden channels in every layer (its M memory flows through all), "
                             f"got {hidden_channels}")
        ins = [in_channels, *hidden_channels[:-1]]
        self.cells = nn.ModuleList(SpatioTemporalLSTMCell(i, h, kernel_size) for i, h in zip(ins, hidden_channels))
        self.out_channels = hidden_channels[-1]
        self.decoupling_terms: list[Tensor] = []
        self.collect_decoupling = False  # set by the forecaster when the loss is weighted in

    def step(self, x: Tensor, states=None) -> tuple[Tensor, tuple[list[CellState], Tensor]]:
        if states is None:
            zeros = zero_state(x, self.out_channels)
            states = ([(zeros, zeros)] * len(self.cells), zeros)
        layers, m = states
        new_layers = []
        for cell, (h, c) in zip(self.cells, layers):
            x, c, m, delta_c, delta_m = cell(x, h, c, m)
            new_layers.append((x, c))
            if self.training and self.collect_decoupling:
                self.decoupling_terms.append(F.cosine_similarity(delta_c.flatten(2), delta_m.flatten(2), dim=2).abs().mean())
        return x, (new_layers, m)

    forward = ConvLSTM.forward  # the same loop over time around `step`

    def take_decoupling_loss(self) -> Tensor | None:
        terms, self.decoupling_terms = self.decoupling_terms, []
        return torch.stack(terms).mean() if terms else None


class CausalLSTMCell(nn.Module):
    """PredRNN++'s causal LSTM (Wang et al. 2018): the temporal memory C and the spatiotemporal memory M in cascade,
    M's gates reading the new C (not the old one, as the ST-LSTM's do), so the spatial path is deeper per step.

    x (B, in, h, w), h, c (B, hidden, h, w), m (B, hidden, h, w) -> new h, c, m. Gates as in the authors' code
    (OpenSTL `CausalLSTMCell`): a tanh output gate, M's forget gate applied to tanh(W * M).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"CausalLSTMCell needs an odd kernel_size (same padding), got {kernel_size}")
        pad, hid = kernel_size // 2, hidden_channels
        self.hidden_channels = hid
        self.conv_x = nn.Conv2d(in_channels, 7 * hid, kernel_size, padding=pad)  # i f g (C), i' f' g' (M), o
        self.conv_h = nn.Conv2d(hid, 4 * hid, kernel_size, padding=pad, bias=False)  # i f g o
        self.conv_c = nn.Conv2d(hid, 3 * hid, kernel_size, padding=pad, bias=False)  # i f g from the old C
        self.conv_m = nn.Conv2d(hid, 3 * hid, kernel_size, padding=pad, bias=False)  # i' f' and M's candidate
        self.conv_c2m = nn.Conv2d(hid, 4 * hid, kernel_size, padding=pad, bias=False)  # i' f' g' o from the NEW C
        self.conv_om = nn.Conv2d(hid, hid, kernel_size, padding=pad, bias=False)  # o from the new M
        self.conv_last = nn.Conv2d(2 * hid, hid, 1, bias=False)
        with torch.no_grad():  # both forget gates start open
            self.conv_x.bias[hid : 2 * hid].fill_(1.0)
            self.conv_x.bias[4 * hid : 5 * hid].fill_(1.0)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = self.conv_x(x).chunk(7, dim=1)
        i_h, f_h, g_h, o_h = self.conv_h(h).chunk(4, dim=1)
        i_c, f_c, g_c = self.conv_c(c).chunk(3, dim=1)
        i_m, f_m, m_m = self.conv_m(m).chunk(3, dim=1)
        c = torch.sigmoid(f_x + f_h + f_c) * c + torch.sigmoid(i_x + i_h + i_c) * torch.tanh(g_x + g_h + g_c)
        i_cm, f_cm, g_cm, o_c = self.conv_c2m(c).chunk(4, dim=1)  # the cascade: M's gates read the new C
        m = torch.sigmoid(f_xm + f_m + f_cm) * torch.tanh(m_m) + torch.sigmoid(i_xm + i_m + i_cm) * torch.tanh(g_xm + g_cm)
        o = torch.tanh(o_x + o_h + o_c + self.conv_om(m))
        h = o * torch.tanh(self.conv_last(torch.cat([c, m], dim=1)))
        return h, c, m


class GradientHighwayUnit(nn.Module):
    """PredRNN++'s GHU: a gated highway state z, z' = u * tanh(P) + (1 - u) * z with u, P convolutions of [x, z], so
    gradients can skip the deep per-step path of the causal LSTMs. x (B, C, h, w), z (B, C, h, w) -> new z."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2 * channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        p, u = self.conv(torch.cat([x, z], dim=1)).chunk(2, dim=1)
        u = torch.sigmoid(u)
        return u * torch.tanh(p) + (1 - u) * z


class PredRNNPlusPlus(nn.Module):
    """PredRNN++: stacked causal LSTMs with PredRNN's zigzag M, and a gradient highway unit between the first two
    layers (layer 2 reads the highway state z instead of layer 1's h). States are (per-layer (h, c), m, z); the
    same `step`/`forward` interface as `ConvLSTM`."""

    def __init__(self, in_channels: int, hidden_channels: list[int], kernel_size: int = 3) -> None:
        super().__init__()
        if len(hidden_channels) < 2 or len(set(hidden_channels)) != 1:
            raise ValueError(f"PredRNN++ needs at least two layers (its gradient highway sits between the first two) "
                             f"of equal hidden channels (its M memory flows through all), got {hidden_channels}")
        ins = [in_channels, *hidden_channels[:-1]]
        self.cells = nn.ModuleList(CausalLSTMCell(i, h, kernel_size) for i, h in zip(ins, hidden_channels))
        self.highway = GradientHighwayUnit(hidden_channels[0], kernel_size)
        self.out_channels = hidden_channels[-1]

    def step(self, x: Tensor, states=None) -> tuple[Tensor, tuple[list[CellState], Tensor, Tensor]]:
        if states is None:
            zeros = zero_state(x, self.out_channels)
            states = ([(zeros, zeros)] * len(self.cells), zeros, zeros)
        layers, m, z = states
        new_layers = []
        for k, (cell, (h, c)) in enumerate(zip(self.cells, layers)):
            x, c, m = cell(x, h, c, m)
            new_layers.append((x, c))
            if k == 0:
                x = z = self.highway(x, z)  # (B, hidden, h, w): what layer 2 reads
        return x, (new_layers, m, z)

    forward = ConvLSTM.forward


RECURRENT_CORES = {"convlstm": ConvLSTM, "predrnn": PredRNN, "predrnn++": PredRNNPlusPlus}
Cell = Literal["convlstm", "predrnn", "predrnn++"]


class Forecast(NamedTuple):
    future: Tensor   # (B, T_out, C, H, W) predicted future frames in [0, 1]
    context: Tensor  # (B, T_in - 1, C, H, W) next-frame predictions made while reading the observed frames
    aux_loss: Tensor | float = 0.0  # an extra training loss of the recurrent core (PredRNN-V2's decoupling), weighted


class ConvLSTMForecaster(nn.Module):
    """Encoder-forecaster for future frames: patch encoder -> stacked ConvLSTM -> patch decoder, one frame per step.

    Step t reads frame t and predicts frame t+1. Over the observed frames the input is the truth, except that with
    `reverse_sampling_prob` > 0 (PredRNN-V2's reverse scheduled sampling, training only) each sample reads its own
    prediction of observed frame t >= 1 instead with that probability; over the future it is the model's own
    previous prediction, except that in training (`targets` given) each sample takes the true frame instead with
    probability 1 - `sampling_prob` (scheduled sampling). Without `targets` nothing but the observed frames is read.

    Args:
        frame_channels: channels of a frame (1 gray, 3 RGB); set from the data.
        patch_size: frames are folded into (C * p * p, H / p, W / p) before the encoder (space-to-depth).
        embed_channels: width of the frame embedding the ConvLSTM reads.
        hidden_channels: hidden channels of each ConvLSTM layer.
        kernel_size: kernel of the ConvLSTM gate convolution.
        encoder_kernel_size: kernel of the embedding convolution (and of the output convolution).
        advection_kernel: size k of the kernels that move the last frame's pixels (0: draw pixels only).
        num_advection_kernels: kernels (moved copies of the last frame) per sequence.
        cell: convlstm (Shi et al. 2015), predrnn (spatiotemporal LSTM with the zigzag memory, Wang et al. 2017;
            equal hidden channels in every layer) or predrnn++ (causal LSTM + gradient highway, Wang et al. 2018;
            equal hidden channels, at least two layers).
        decoupling_weight: PredRNN-V2's decoupling loss weight (predrnn only; 0 = PredRNN without it).
    """

    def __init__(
        self,
        frame_channels: int = 1,
        patch_size: int = 4,
        embed_channels: int = 64,
        hidden_channels: list[int] = [64, 64],  # noqa: B006 - jsonargparse needs a literal default
        kernel_size: int = 3,
        encoder_kernel_size: int = 3,
        advection_kernel: int = 9,
        num_advection_kernels: int = 4,
        cell: Cell = "convlstm",
        decoupling_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if decoupling_weight and cell != "predrnn":
            raise ValueError("decoupling_weight is PredRNN-V2's loss between its two memories: it needs cell: predrnn")
        if advection_kernel and advection_kernel % 2 == 0:
            raise ValueError(f"advection_kernel must be odd (or 0 to turn advection off), got {advection_kernel}")
        self.frame_channels, self.patch_size = frame_channels, patch_size
        self.k, self.n = advection_kernel, num_advection_kernels if advection_kernel else 0
        folded = frame_channels * patch_size**2
        pad = encoder_kernel_size // 2
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(patch_size),  # (B, C, H, W) -> (B, C p^2, H/p, W/p)
            nn.Conv2d(folded, embed_channels, encoder_kernel_size, padding=pad),
            nn.LeakyReLU(0.2, inplace=True),
        )
        if cell not in RECURRENT_CORES:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(RECURRENT_CORES)}")
        self.rnn = RECURRENT_CORES[cell](embed_channels, hidden_channels, kernel_size)
        self.decoupling_weight = decoupling_weight
        if isinstance(self.rnn, PredRNN):
            self.rnn.collect_decoupling = decoupling_weight > 0
        hidden = self.rnn.out_channels
        # Per grid cell: C p^2 pixel logits, and with advection (n + 1) p^2 mask logits (n moved frames + drawn).
        self.split = [folded] + ([(self.n + 1) * patch_size**2] if self.n else [])
        self.head = nn.Conv2d(hidden, sum(self.split), encoder_kernel_size, padding=pad)
        if self.n:
            self.kernel_head = nn.Linear(2 * hidden, self.n * self.k**2)  # from mean- and max-pooled h
            with torch.no_grad():  # start by trusting the moved frames more than the drawn one
                self.head.bias[folded + self.n * patch_size**2 :].fill_(-2.0)

    def decode(self, h: Tensor, frame: Tensor) -> Tensor:
        """Top hidden state (B, hidden, H/p, W/p) and the frame just read (B, C, H, W) -> next frame (B, C, H, W).

        Pixels are drawn by a convolution + depth-to-space + sigmoid. With advection (CDNA, Finn et al. 2016)
        the state also predicts n softmax k x k kernels per sequence, each of which moves the whole frame just read
        (a translation, a blur), and per-pixel masks that compose the n moved frames and the drawn one: motion is a
        copy, so digits move instead of fading, and every output is a convex mix that stays in [0, 1].
        """
        raw = self.head(h).split(self.split, dim=1)
        p = self.patch_size
        drawn = torch.sigmoid(F.pixel_shuffle(raw[0], p))  # (B, C, H, W); bounded: safe to feed back
        if not self.n:
            return drawn
        B, C, H, W = frame.shape
        masks = F.pixel_shuffle(raw[1], p).softmax(dim=1)  # (B, n + 1, H, W)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # (B, 2 hidden)
        kernels = self.kernel_head(pooled).view(B, 1, self.n, self.k**2).softmax(dim=-1)  # (B, 1, n, k*k)
        if torch.jit.is_tracing() or torch.compiler.is_exporting():
            # an export: the k x k neighbourhood of every pixel (unfold, in conv2d's order) weighted by each kernel,
            # the same numbers as the grouped conv2d below without the batch size in the layer (groups=B*C),
            # so the exported model takes any batch (2x slower on a CPU, hence not in training)
            patches = F.unfold(frame.reshape(B * C, 1, H, W), self.k, padding=self.k // 2).view(B, C, self.k**2, H * W)
            moved = torch.einsum("bnk,bckp->bcnp", kernels[:, 0], patches).view(B, C, self.n, H, W)
        else:
            weight = kernels.expand(B, C, self.n, self.k**2).reshape(B * C * self.n, 1, self.k, self.k)
            # One group per (sequence, channel): each sequence's frame is moved by its own n kernels.
            moved = F.conv2d(frame.reshape(1, B * C, H, W), weight, padding=self.k // 2, groups=B * C)
            moved = moved.view(B, C, self.n, H, W)
        return (moved * masks[:, None, : self.n]).sum(dim=2) + drawn * masks[:, None, self.n]

    def check_frames(self, frames: Tensor) -> None:
        if frames.ndim != 5 or frames.shape[2] != self.frame_channels:
            raise ValueError(
                f"expected frames (B, T, {self.frame_channels}, H, W), got {tuple(frames.shape)}; the model was built "
                f"for {self.frame_channels}-channel frames"
            )
        H, W = frames.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"frame size {H}x{W} is not divisible by patch_size={self.patch_size}; resize or crop the frames")

    def forward(
        self,
        frames: Tensor,
        future_len: int,
        targets: Tensor | None = None,
        sampling_prob: float = 1.0,
        reverse_sampling_prob: float = 0.0,
    ) -> Forecast:
        """frames (B, T_in, C, H, W) observed, targets (B, future_len, C, H, W) truth for teacher forcing or None;
        reverse_sampling_prob: chance that an observed frame t >= 1 is replaced by the model's own prediction of it
        (training only: the caller passes 0 at evaluation, where the observed frames are always the truth)."""
        self.check_frames(frames)
        B, T_in = frames.shape[:2]
        if targets is not None and targets.shape[1] < future_len - 1:
            raise ValueError(f"teacher forcing needs {future_len - 1} target frames, got {targets.shape[1]}")
        # The observed frames are all known up front: embed them in one batched call.
        observed = self.encoder(frames.flatten(0, 1)).unflatten(0, (B, T_in))  # (B, T_in, E, h, w)
        states = None
        predictions = []
        for t in range(T_in + future_len - 1):
            if t < T_in:
                frame, x = frames[:, t], observed[:, t]
                if t and reverse_sampling_prob > 0.0:  # reverse scheduled sampling: read its own guess of frame t
                    use_own = torch.rand(B, 1, 1, 1, device=frame.device) < reverse_sampling_prob
                    frame = torch.where(use_own, predictions[-1], frame)
                    x = torch.where(use_own, self.encoder(predictions[-1]), x)  # (B, E, h, w)
            else:
                frame = predictions[-1]  # the model's prediction of frame t
                if targets is not None and sampling_prob < 1.0:
                    use_own = torch.rand(B, 1, 1, 1, device=frame.device) < sampling_prob
                    frame = torch.where(use_own, frame, targets[:, t - T_in])
                x = self.encoder(frame)
            h, states = self.rnn.step(x, states)
            predictions.append(self.decode(h, frame))  # prediction of frame t + 1
        out = torch.stack(predictions, dim=1)  # (B, T_in - 1 + future_len, C, H, W)
        decoupling = self.rnn.take_decoupling_loss() if isinstance(self.rnn, PredRNN) else None
        aux = self.decoupling_weight * decoupling if decoupling is not None and self.decoupling_weight else 0.0
        return Forecast(future=out[:, T_in - 1 :], context=out[:, : T_in - 1], aux_loss=aux)
