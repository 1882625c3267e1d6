"""The benchmark's exact memory counters (its timings are not tested: they live in results/bench)."""

import torch

from spolab.bench import SavedActivations, _state_bytes


def test_saved_activations_counts_what_backward_needs():
    W = torch.nn.Parameter(torch.randn(8, 4))
    x = torch.randn(16, 8)
    with SavedActivations() as acts:
        h = (x @ W).relu()  # mm saves x (and the parameter W, not counted); relu saves its output
        loss = h.sum()
    assert acts.peak == x.numel() * 4 + h.numel() * 4
    loss.backward()
    del h, loss
    assert acts.live == 0


def test_state_bytes_counts_params_grads_and_adam_moments():
    m = torch.nn.Linear(10, 5)  # 55 float32 parameters
    opt = torch.optim.AdamW(m.parameters())
    assert _state_bytes([m], [opt]) == 55 * 4
    m(torch.randn(3, 10)).sum().backward()
    opt.step()
    assert _state_bytes([m], [opt]) == 55 * 4 * 4 + 2 * 4  # params, grads, exp_avg, exp_avg_sq, 2 step counters
