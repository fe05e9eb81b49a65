"""Checkpoints are state dicts plus one JSON document, read with ``weights_only=True``: a
pickle that needs Python objects to load (an old checkpoint, or a hostile file) is
refused with one clear line, never unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgewarden.gateway.errors import GatewayError
from edgewarden.training.fit import CHECKPOINT_VERSION, load_checkpoint, read_checkpoint


class Payload:
    """Stands for any object a pickle could smuggle in."""

    ran = False

    def __reduce__(self) -> tuple:
        return (setattr, (Payload, "ran", True))


def test_a_pickle_with_objects_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torch.save({"format": 2, "config": np.float64(1.0), "x": Payload()}, path)
    with pytest.raises(GatewayError, match=f"not an edgewarden checkpoint of version {CHECKPOINT_VERSION}"):
        load_checkpoint(path)
    assert Payload.ran is False


def test_a_tensor_file_without_the_json_document_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torch.save({"meta": json.dumps({"format": 2}), "algo_state": {}, "replay_gen": torch.zeros(1),
                "rank_streams": None}, path)
    with pytest.raises(GatewayError, match="not an edgewarden checkpoint"):
        read_checkpoint(path)
    with pytest.raises(GatewayError, match="not found"):
        read_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("junk", [b"junk\n", b"", b"\x80\x02}q\x00", bytes(range(256)) * 4])
def test_a_file_that_is_not_a_checkpoint_is_one_clear_line(tmp_path: Path, junk: bytes) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(junk)
    with pytest.raises(GatewayError, match="not an edgewarden checkpoint"):
        read_checkpoint(path)
