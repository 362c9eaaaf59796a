"""Multi-input models: the uncertainty file's ``inputs:``, the row layout (flattening, the
tensors each model input gets, padding), attacks that never move padding or masks, and the
audit of a multi-input ONNX graph against the same network in torch.

References: tensors built by hand with numpy/torch indexing, the torch module the ONNX file was
exported from, and onnxruntime.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_helpers import export, rel_err

from pytest_hepguard.attacks import get_attack
from pytest_hepguard.audit import Auditor
from pytest_hepguard.envelope import Envelope, feature_std
from pytest_hepguard.events import Events
from pytest_hepguard.exceptions import ModelError, UncertaintyFileError
from pytest_hepguard.layout import Layout
from pytest_hepguard.models import load_model, wrap_model
from pytest_hepguard.uncertainties import parse_uncertainties

CPU = torch.device("cpu")
N_TRACKS = 6

#: A ParticleNet-shaped tagger's uncertainty file: jet features, channels-first points and
#: features of up to 6 constituents, and their mask. The YAML lists the inputs in another order
#: than the graph (points, features, mask, jet): they are matched by name.
UNC = f"""\
version: 1
features:
  jet_pt:  {{relative: 0.02, min: 0}}
  jet_eta: {{absolute: 0.01}}
  c_eta:   {{absolute: 0.02}}
  c_phi:   {{absolute: 0.02}}
  c_pt:    {{relative: 0.05, min: 0}}
  c_d0:    {{std: 0.1}}
  c_q:     {{frozen: true}}
inputs:
  jet: [jet_pt, jet_eta]
  points: {{features: [c_eta, c_phi], per: constituent, length: {N_TRACKS}, layout: channels_first}}
  feats:
    {{features: [c_pt, c_d0, c_q], per: constituent, length: {N_TRACKS}, layout: channels_first}}
  mask: {{per: mask, mask_of: [points, feats], layout: channels_first}}
decision:
  classes: [light, b]
  signal: [b]
"""


class ParticleNetLike(torch.nn.Module):
    """points [B, 2, P], feats [B, 3, P], mask [B, 1, P], jet [B, 2] -> softmax [B, 2]:
    a point-wise Conv1d over the constituents, a masked mean, a dense head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(5, 16, 1)
        self.head = torch.nn.Sequential(
            torch.nn.Linear(18, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        )

    def forward(self, points, feats, mask, jet):
        h = torch.relu(self.conv(torch.cat([points, feats], 1))) * mask
        pooled = h.sum(-1) / mask.sum(-1).clamp_min(1.0)
        scale = torch.stack([torch.log1p(jet[:, 0] / 50), jet[:, 1]], 1)
        return torch.softmax(self.head(torch.cat([pooled, scale], 1)), 1)


def yaml_order(module: torch.nn.Module):
    """``module`` taking its inputs in the uncertainty file's order (jet first)."""

    def forward(jet, points, feats, mask):
        return module(points, feats, mask, jet)

    return forward


def make_events(layout: Layout, n: int = 400, seed: int = 0) -> Events:
    """Rows of ``layout``: 1..6 real constituents per jet (the rest padded with 0, mask 0),
    signal jets with harder constituents; built by hand, independently of Layout.flatten."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    n_real = rng.integers(1, N_TRACKS + 1, n)
    real = np.arange(N_TRACKS)[None, :] < n_real[:, None]
    jet = np.c_[rng.uniform(30, 200, n), rng.normal(0, 1, n)]
    c = {
        "c_eta": rng.normal(0, 0.2, (n, N_TRACKS)),
        "c_phi": rng.normal(0, 0.2, (n, N_TRACKS)),
        "c_pt": rng.exponential(5, (n, N_TRACKS)) * (1 + labels[:, None]),
        "c_d0": rng.normal(0, 1, (n, N_TRACKS)) + 2 * labels[:, None],
        "c_q": rng.choice([-1.0, 1.0], (n, N_TRACKS)),
    }
    columns = {"jet_pt": jet[:, 0], "jet_eta": jet[:, 1]}
    for k in range(N_TRACKS):
        for name, values in c.items():
            columns[f"{name}[{k}]"] = np.where(real[:, k], values[:, k], 0.0)
    for k in range(N_TRACKS):
        columns[f"mask[{k}]"] = real[:, k].astype(float)
    rows = np.stack([columns[name] for name in layout.names], 1).astype(np.float32)
    return Events(rows, layout.names, labels, None, Path("synthetic.npz"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    unc = parse_uncertainties(UNC)
    layout = Layout(unc)
    events = make_events(layout)
    module = ParticleNetLike().eval()
    path = tmp_path_factory.mktemp("mi") / "pnet.onnx"
    example = [torch.randn(3, 2, N_TRACKS), torch.randn(3, 3, N_TRACKS)]
    example += [torch.ones(3, 1, N_TRACKS), torch.rand(3, 2) * 100]
    export(module, example, path, input_names=["points", "feats", "mask", "jet"])
    return unc, layout, events, module, path


def test_layout_names_shapes_and_tensors(setup) -> None:
    """Row entries constituent-major; unpack gives each input in the model's layout
    (channels-first here), equal to tensors built by indexing the rows by name."""
    unc, layout, events, _, _ = setup
    assert layout.names[:4] == ("jet_pt", "jet_eta", "c_eta[0]", "c_phi[0]")
    assert layout.names[-1] == f"mask[{N_TRACKS - 1}]"
    assert layout.input_shapes() == [(2,), (2, N_TRACKS), (3, N_TRACKS), (1, N_TRACKS)]
    rows = torch.from_numpy(events.features[:5])
    jet, points, feats, mask = layout.unpack(rows)
    index = {name: j for j, name in enumerate(layout.names)}

    def gather(features: list[str]) -> torch.Tensor:
        return torch.stack(
            [
                torch.stack([rows[:, index[f"{f}[{k}]"]] for k in range(N_TRACKS)], 1)
                for f in features
            ],
            1,
        )

    assert torch.equal(jet, rows[:, :2])
    assert torch.equal(points, gather(["c_eta", "c_phi"]))
    assert torch.equal(feats, gather(["c_pt", "c_d0", "c_q"]))
    assert torch.equal(mask[:, 0], gather(["mask"])[:, 0])
    assert unc.data_columns() == (
        ("jet_pt", "jet_eta"),
        {f: (N_TRACKS, 0.0) for f in ("c_eta", "c_phi", "c_pt", "c_d0", "c_q")},
    )


def test_flatten_builds_the_rows_and_the_mask(setup) -> None:
    """From per-event columns and padded [n, length] constituent columns, flatten gives the
    hand-built rows, the mask 1 exactly where a constituent is not all padding."""
    _, layout, events, _, _ = setup
    index = {name: j for j, name in enumerate(layout.names)}
    rows = events.features
    constituents = {
        f: rows[:, [index[f"{f}[{k}]"] for k in range(N_TRACKS)]]
        for f in ("c_eta", "c_phi", "c_pt", "c_d0", "c_q")
    }
    per_event = Events(
        rows[:, :2], ("jet_pt", "jet_eta"), events.labels, None, events.source, constituents
    )
    flat = layout.flatten(per_event)
    assert flat.feature_names == layout.names
    np.testing.assert_array_equal(flat.features, rows)


def test_padding_and_masks_never_move(setup) -> None:
    """PGD at 3 sigma moves real constituents and leaves padded ones, the masks and the frozen
    charge exactly where they were; every entry stays in its envelope."""
    _, layout, events, module, _ = setup
    model = wrap_model(yaml_order(module), CPU, "pnet")
    model.bind(layout)
    model.probe(torch.from_numpy(events.features[:64]), "auto")
    envelope = Envelope(layout.specs, np.ones(len(layout.specs)), CPU, padding=layout.padded)
    x0 = torch.from_numpy(events.features[:200])
    labels = torch.from_numpy(events.labels[:200])
    attack = get_attack("pgd", {"epsilon": 3.0, "steps": 5})
    x = attack.perturb(model, x0, labels, envelope, torch.Generator().manual_seed(0)).x
    moved = x != x0
    padded = layout.padded(x0)
    frozen = torch.tensor([f in ("mask", "c_q") for f in layout.feature_of])
    assert padded.any() and not moved[padded].any()
    assert not moved[:, frozen].any()
    assert moved[~padded & ~frozen].float().mean() > 0.5
    assert envelope.contains(x0, x, 3.0).all()
    mask_cols = [j for j, f in enumerate(layout.feature_of) if f == "mask"]
    real = x0[:, mask_cols] == 1
    c_pt = [j for j, f in enumerate(layout.feature_of) if f == "c_pt"]
    assert torch.equal(padded[:, c_pt], ~real)


def test_std_envelope_pools_real_constituents(setup) -> None:
    """A per-constituent ``std`` feature's sigma is 0.1 x the std of its real entries, pooled
    over constituents, padding excluded (numpy on the hand-built rows)."""
    _, layout, events, _, _ = setup
    padded = layout.padded(torch.from_numpy(events.features)).numpy()
    std = feature_std(events.features, layout.specs, layout.feature_of, padded)
    cols = [j for j, f in enumerate(layout.feature_of) if f == "c_d0"]
    mask = events.features[:, [j for j, f in enumerate(layout.feature_of) if f == "mask"]] == 1
    expected = events.features[:, cols][mask].astype(np.float64).std()
    np.testing.assert_allclose(std[cols], expected, rtol=1e-12)
    assert std[layout.names.index("jet_pt")] == 0  # relative, not std


def test_onnx_multi_input_audit_equals_the_torch_audit(setup) -> None:
    """The ONNX graph, its inputs matched by name, passes the self-check and gives the torch
    module's nominal outputs and FGSM/PGD fooling rates (within their errors)."""
    unc, _, events, module, path = setup
    onnx_model = load_model(path, CPU)
    torch_model = wrap_model(yaml_order(module), CPU, "pnet (torch)")
    audits = [Auditor(m, events, unc, seed=0) for m in (torch_model, onnx_model)]
    assert rel_err(audits[1].nominal_probs, audits[0].nominal_probs) < 1e-5
    for attack, params in (("fgsm", {"epsilon": 2.0}), ("pgd", {"epsilon": 2.0, "steps": 5})):
        a, b = (audit.run(attack, **params) for audit in audits)
        assert a.fooling_rate > a.random_fooling_rate
        assert (
            abs(a.fooling_rate - b.fooling_rate)
            <= math.hypot(a.fooling_rate_err, b.fooling_rate_err) + 1e-12
        )
        assert set(a.max_displacement_sigma) == {
            "jet_pt",
            "jet_eta",
            "c_eta",
            "c_phi",
            "c_pt",
            "c_d0",
            "c_q",
            "mask",
        }
        assert a.max_displacement_sigma["mask"] == 0 and a.max_displacement_sigma["c_q"] == 0
        assert 0 < a.max_displacement_sigma["c_pt"] <= 2.0 + 1e-5


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("jet: [jet_pt, jet_eta]", "jets: [jet_pt, jet_eta]"),
            r"input 'jets' of the uncertainty file is not an input of the graph; "
            r"the graph's inputs: points \[batch, 2, 6\]",
        ),
        (
            (
                "length: 6, layout: channels_first}\n  feats",
                "length: 5, layout: channels_first}\n  feats",
            ),
            None,
        ),
        (
            ("[c_pt, c_d0, c_q]", "[c_pt, c_d0]"),
            r"input 'feats' has shape \[batch, 3, 6\], "
            r"but the uncertainty file gives \[batch, 2, 6\]",
        ),
    ],
)
def test_inputs_that_do_not_fit_the_graph(setup, edit, message) -> None:
    _, _, _, _, path = setup
    text = UNC.replace(*edit)
    if "c_q]" not in text:
        text = text.replace("  c_q:     {frozen: true}\n", "")
    try:
        unc = parse_uncertainties(text)
    except UncertaintyFileError as exc:  # lengths of a mask and its inputs must agree
        assert message is None and "length" in str(exc)
        return
    model = load_model(path, CPU)
    with pytest.raises(ModelError, match=message):
        model.bind(Layout(unc))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("  jet: [jet_pt, nope]\n", r"inputs.jet: feature 'nope' is not declared"),
        (
            "  jet: [jet_pt]\n  tr: [jet_pt, jet_eta]\n",
            r"inputs.tr: feature 'jet_pt' is already in input 'jet'",
        ),
        ("  jet: [jet_pt]\n", r"inputs: feature\(s\) 'jet_eta' are declared but in no input"),
        (
            "  jet: [jet_pt]\n  t: {features: [jet_eta], per: constituent}\n",
            r"inputs.t.length: missing",
        ),
        (
            "  jet: {features: [jet_pt, jet_eta], length: 3}\n",
            r"inputs.jet.length: only for per: constituent",
        ),
        (
            "  jet: [jet_pt, jet_eta]\n  m: {per: mask, mask_of: jet}\n",
            r"mask_of names 'jet', which is not a per-constituent input",
        ),
        (
            "  jet: {features: [jet_pt, jet_eta], per: tracks}\n",
            r"inputs.jet.per: got 'tracks'; expected one of event, constituent, mask",
        ),
    ],
)
def test_inputs_section_errors(inputs, message) -> None:
    text = "version: 1\nfeatures:\n  jet_pt: {relative: 0.1}\n  jet_eta: {absolute: 0.1}\ninputs:\n"
    with pytest.raises(UncertaintyFileError, match=message):
        parse_uncertainties(text + inputs)


def test_docs_inputs_example_gives_the_documented_shapes() -> None:
    """The ``inputs:`` example of docs/uncertainties.md parses, and the model gets the tensor
    shapes its comments state."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "uncertainties.md").read_text()
    found = re.search(r"<!-- tested: inputs-example -->\n```yaml\n(.*?)\n```", docs, re.DOTALL)
    assert found, "docs/uncertainties.md lost its inputs example"
    layout = Layout(parse_uncertainties(found.group(1)))
    assert layout.input_names == ("jets", "tracks", "pf_points", "pf_mask")
    rows = torch.zeros(4, len(layout.names))
    assert [tuple(t.shape) for t in layout.unpack(rows)] == [
        (4, 2),
        (4, 25, 3),
        (4, 2, 50),
        (4, 1, 50),
    ]
