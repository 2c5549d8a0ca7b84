"""Building large models quickly when their weights are about to be replaced."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import torch


@contextlib.contextmanager
def fast_init() -> Iterator[None]:
    """Replace ``torch.nn.init.orthogonal_`` (a QR decomposition per weight, minutes for JMP-L on a CPU)
    by Gaussian noise; initialisers that standardise an orthogonal draw (``he_orthogonal_init``) give it
    the same scale."""

    def gaussian(tensor, gain=1.0, generator=None):
        with torch.no_grad():
            return tensor.normal_(0.0, gain, generator=generator)

    with mock.patch.object(torch.nn.init, "orthogonal_", gaussian):
        yield
