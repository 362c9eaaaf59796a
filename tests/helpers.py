"""Small models and feature specs shared by the tests (no fixtures: plain builders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from pytest_hepguard.uncertainties import FeatureSpec

#: The repository root, where the README's commands run.
REPO = Path(__file__).resolve().parents[1]

#: A feature set that exercises every envelope rule: absolute, relative with a bound, asymmetric,
#: integer with a bound, sentinel, frozen, std.
SPECS = (
    FeatureSpec("a_abs", "absolute", 0.5, 0.5),
    FeatureSpec("b_rel", "relative", 0.1, 0.1, min=0.0),
    FeatureSpec("c_asym", "absolute", 0.3, 0.1, max=2.0),
    FeatureSpec("d_int", "absolute", 1.0, 1.0, min=0.0, integer=True),
    FeatureSpec("e_sent", "relative", 0.05, 0.05, sentinels=(-999.0,)),
    FeatureSpec("f_frozen", None, 0.0, 0.0, frozen=True),
    FeatureSpec("g_std", "std", 0.2, 0.2),
)


def make_inputs(n: int = 400, seed: int = 0) -> torch.Tensor:
    """Inputs [n, 7] matching SPECS: sentinels in e_sent, integers in d_int, values at bounds."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(SPECS), generator=g)
    x[:, 1] = x[:, 1].abs() * 3  # b_rel >= 0, some near 0
    x[: n // 10, 1] = 0.0
    x[:, 2] = 2.0 - x[:, 2].abs() * 0.2  # c_asym near its max 2
    x[:, 3] = torch.randint(0, 6, (n,), generator=g).float()  # d_int, zeros at the bound
    x[::3, 4] = -999.0  # e_sent sentinels
    x[:, 6] = x[:, 6] * 4 + 10
    return x


class MLP(torch.nn.Module):
    """A small seeded MLP: [batch, n_in] -> logits [batch, n_out]."""

    def __init__(
        self,
        n_in: int = 7,
        n_out: int = 3,
        seed: int = 0,
        softmax: bool = False,
        scale: float = 0.25,
    ):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in, 32), torch.nn.Tanh(), torch.nn.Linear(32, n_out)
        )
        self.softmax = softmax
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # sentinel entries would dominate a linear layer: squash inputs first
        out = self.net(torch.tanh(x * self.scale))
        return torch.softmax(out, dim=1) if self.softmax else out


def audit_report(args: list[str], report: Path) -> dict:
    """Run ``python -m pytest *args --hepguard-json report`` from the repository root (one
    thread, unrelated third-party plugins off: they only slow the start); assert it exits 0 and
    return the JSON report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "pytest", *args, "--hepguard-json", str(report)]
    command += ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark"]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(report.read_text(encoding="utf-8"))
