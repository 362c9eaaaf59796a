"""Model loading: every supported form gives the same outputs as the module it came from, and
every unsafe or broken file is refused with a message that says why and what to do."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import MLP, make_inputs

from pytest_hepguard.exceptions import ModelError
from pytest_hepguard.models import load_model, resolve_device, wrap_model

CPU = torch.device("cpu")


@pytest.fixture
def mlp() -> MLP:
    return MLP().eval()


def _same_outputs(model, reference: torch.nn.Module) -> None:
    x = make_inputs(20)
    with torch.no_grad():
        torch.testing.assert_close(model.raw(x), reference(x))


def test_torchscript(tmp_path, mlp) -> None:
    path = tmp_path / "tagger.pt"
    torch.jit.script(mlp).save(str(path))
    _same_outputs(load_model(path, CPU), mlp)


def test_torch_export_archive(tmp_path, mlp) -> None:
    path = tmp_path / "tagger.pt2"
    program = torch.export.export(
        mlp, (make_inputs(4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))
    _same_outputs(load_model(path, CPU), mlp)


def test_module_callable(tmp_path, monkeypatch, mlp) -> None:
    (tmp_path / "my_taggers.py").write_text(
        "from helpers import MLP\n"
        "def build():\n    return MLP()\n"
        "def not_a_module():\n    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _same_outputs(load_model("my_taggers:build", CPU), mlp)
    with pytest.raises(ModelError, match=r"not_a_module\(\) returned int, expected a torch.nn"):
        load_model("my_taggers:not_a_module", CPU)
    with pytest.raises(ModelError, match="has no callable 'missing'"):
        load_model("my_taggers:missing", CPU)
    sys.modules.pop("my_taggers", None)


def test_state_dict_is_refused_with_advice(tmp_path, mlp) -> None:
    path = tmp_path / "weights.pt"
    torch.save(mlp.state_dict(), path)
    with pytest.raises(ModelError, match=r"weights.pt: this file holds a state_dict .*TorchScript"):
        load_model(path, CPU)


def test_pickled_module_is_refused_without_running_its_code(tmp_path, mlp) -> None:
    path = tmp_path / "full.pt"
    torch.save(mlp, path)
    with pytest.raises(ModelError, match=r"needs arbitrary code to load.*does not run code"):
        load_model(path, CPU)


def test_file_that_is_not_a_model(tmp_path) -> None:
    path = tmp_path / "tagger.pt"
    path.write_text("this is a README, not a model\n")
    original = path.read_bytes()
    with pytest.raises(ModelError, match=r"tagger\.pt: not a model file"):
        load_model(path, CPU)
    assert path.read_bytes() == original


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tagger.onnx", r"tagger\.onnx"),
        ("tagger.h5", "unknown model file type '.h5'"),
        ("missing.pt", "no such file"),
    ],
)
def test_unsupported_or_missing(tmp_path, name, message) -> None:
    path = tmp_path / name
    if name != "missing.pt":
        path.write_bytes(b"\0")
    with pytest.raises(ModelError, match=message):
        load_model(path, CPU)


def test_width_mismatch_names_the_shapes(mlp) -> None:
    model = wrap_model(mlp, CPU, "tagger.pt")
    with pytest.raises(ModelError, match=r"failed on an input of shape \[5, 6\] \(6 features"):
        model.probe(make_inputs(5)[:, :6], "auto")


def test_output_not_batch_by_classes() -> None:
    model = wrap_model(lambda x: x.reshape(-1, 1, 7), CPU, "odd")
    with pytest.raises(
        ModelError, match=r"output has shape \[5, 1, 7\].*expected \[batch, classes\]"
    ):
        model.probe(make_inputs(5), "auto")
    model = wrap_model(lambda x: {"probs": x}, CPU, "dict")
    with pytest.raises(ModelError, match="returned dict, expected one tensor"):
        model.probe(make_inputs(5), "auto")


@pytest.mark.parametrize(
    ("forward", "kind", "n_classes"),
    [
        (lambda x: torch.softmax(x[:, :3], 1), "probabilities", 3),
        (lambda x: x[:, :3], "logits", 3),
        (lambda x: torch.sigmoid(x[:, 0]), "probabilities", 2),
        (lambda x: x[:, 0], "logits", 2),
    ],
)
def test_output_kind_detection_and_two_class_view(forward, kind, n_classes) -> None:
    model = wrap_model(forward, CPU, "f")
    x = make_inputs(10)
    raw = model.probe(x, "auto")
    assert model.output_kind == kind and model.n_classes == n_classes
    p = model.probabilities(raw)
    torch.testing.assert_close(p.sum(1), torch.ones(10))
    torch.testing.assert_close(model.log_probabilities(raw).exp(), p)
    if n_classes == 2:  # one output: P(class 1) is the model's (sigmoid) output
        torch.testing.assert_close(p[:, 1], torch.sigmoid(x[:, 0]))


def test_cuda_device_without_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the no-GPU message cannot be checked here")
    with pytest.raises(ModelError, match="no CUDA device is visible"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU
