"""Weight sync off the hot path (issue 22, item 4): the digest schedule, the version marker of an unhashed load,
and the packed form the object store moves without copies. No Ray: pickle protocol 5 with out-of-band buffers
is what Ray's serializer does with numpy arrays."""

from __future__ import annotations

import pickle

import pytest
import torch

from actors.transport import PackedWeights
from rlhf_ray.roles.rollout import UNVERIFIED, unverified_marker, verify_due
from rlhf_ray.rollout.weights import state_digest


def test_verify_due_hashes_the_first_sync_then_every_nth() -> None:
    assert [verify_due(n, 3) for n in range(7)] == [True, False, False, True, False, False, True]
    assert all(verify_due(n, 1) for n in range(4))
    with pytest.raises(ValueError, match="verify_weights_every=0"):
        verify_due(5, 0)


def test_unverified_marker_names_the_version_and_never_looks_like_a_digest() -> None:
    marker = unverified_marker(7)
    assert marker == f"{UNVERIFIED}7" != unverified_marker(8)
    assert not state_digest({"w": torch.zeros(2)}).startswith(UNVERIFIED)


def test_packed_weights_travel_as_one_out_of_band_buffer_and_read_back_exactly() -> None:
    embed = torch.randn(5, 3)
    state = {"embed.weight": embed, "head.weight": embed, "norm": torch.randn(3).to(torch.bfloat16),
             "scale": torch.tensor(2.5), "bias": torch.arange(4, dtype=torch.int64)}
    packed = PackedWeights(state)
    assert packed.buffer.nbytes == 64 + 16 + 16 + 32  # the tied tensor once, each at a 16-byte-aligned offset
    buffers: list[pickle.PickleBuffer] = []
    wire = pickle.dumps(packed, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1 and len(wire) < 1000  # one buffer, out of band, not through the pickle stream
    # the receiver maps the buffers read-only, as a worker's get from the object store does
    received = pickle.loads(wire, buffers=[memoryview(bytes(b.raw())) for b in buffers])
    assert list(received) == list(state) and len(received) == len(state)
    for name, tensor in state.items():
        assert received[name].dtype == tensor.dtype and received[name].shape == tensor.shape
        assert torch.equal(received[name], tensor)
    assert state_digest(received) == state_digest(state)
    model = torch.nn.Linear(3, 5)
    model.load_state_dict({"weight": received["embed.weight"], "bias": torch.zeros(5)})  # copies out of the view
    assert torch.equal(model.weight.detach(), embed)
