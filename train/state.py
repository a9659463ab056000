"""Per-rank training state that is not in DeepSpeed's checkpoint: RNG streams, as plain JSON.

Why JSON: checkpoints must be loadable without unpickling arbitrary objects, and a human can read
what step / data position a rank was at. Tensors/arrays are stored as base64 or lists.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch

from synshot.seeding import seed_everything  # noqa: F401  (train seeds through the one helper)


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def capture_rng() -> dict[str, Any]:
    py = random.getstate()
    npst = np.random.get_state(legacy=False)
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "bit_generator": npst["bit_generator"],
            "state": {"key": npst["state"]["key"].tolist(), "pos": int(npst["state"]["pos"])},
            "has_gauss": int(npst["has_gauss"]),
            "gauss": float(npst["gauss"]),
        },
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npst["bit_generator"],
            "state": {"key": np.asarray(npst["state"]["key"], dtype=np.uint32), "pos": npst["state"]["pos"]},
            "has_gauss": npst["has_gauss"],
            "gauss": npst["gauss"],
        }
    )
    torch.set_rng_state(_unb64(state["torch"]))
    if torch.cuda.is_available() and "cuda" in state:
        states = [_unb64(s) for s in state["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
