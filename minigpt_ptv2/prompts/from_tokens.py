"""Starting a prompt from real tokens instead of from noise.

Prefix tuning (Li & Liang, 2021) found that a prefix initialised with the activations of real
words trains faster and more stably on small data than a random one: a random prefix starts
as keys and values no layer has ever seen, at a scale of its own. The frozen model says what
real tokens look like at each layer: run it once over a short real text t_1..t_P and keep each
layer's input rows h_i [P, D]. Each method then takes what it is made of:

    SoftPrompt   the tokens' word embeddings                          [P, D]
    DeepPrompt   every layer's input rows h_i                          L x [P, D]
    KVPrefix     every layer's keys and values of those rows (the bridge: layer.kv_from_hidden)

so that before any training the prompt is a real text the model reads, and training moves it
from there. `token_ids` picks which text (training/tasks.py takes the first P word pieces of
the training set).
"""
from __future__ import annotations

import torch

from ..core.capture import Capture
from ..errors import InputError


class _LayerInputs(Capture):
    """Keeps what enters each layer: the embeddings' output, then every layer's output but the last."""

    def __init__(self, num_layers: int):
        self.rows = {}
        self.wanted = ["embeddings.out"] + [f"layer{i}.out" for i in range(num_layers - 1)]

    def add(self, name, tensor):
        if name in self.wanted:
            self.rows[name] = tensor.detach()


@torch.no_grad()
def layer_inputs(model, text_ids: torch.Tensor, rows: slice) -> torch.Tensor:
    """The rows `rows` of what each layer of the plain `model` receives for the tokenised text
    text_ids [1, N] (special tokens included, as the model would read it): [L, P, D]."""
    weight = model.input_embeddings().weight
    ids = text_ids.to(weight.device)
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise InputError(f"text_ids must be one tokenised text [1, N], got shape {list(ids.shape)}")
    if model.prompt is not None:
        raise InputError("layer_inputs reads the plain backbone: start the prompt before attaching it")
    capture = _LayerInputs(model.config.num_hidden_layers)
    was_training = model.training
    model.eval()  # no dropout: the rows the model gives this text, not a noisy draw
    try:
        with capture:
            model(ids)
    finally:
        model.train(was_training)
    return torch.stack([capture.rows[name][0, rows] for name in capture.wanted])  # [L, P, D]


def check_rows(method, text_ids: torch.Tensor, rows: slice) -> None:
    """The text must give exactly P rows to start a method with P virtual entries from."""
    n = len(range(*rows.indices(text_ids.shape[-1])))
    if n != method.num_virtual:
        raise InputError(f"{type(method).__name__} has P={method.num_virtual} virtual entries but the "
                         f"text gives {n} rows to start them from")
