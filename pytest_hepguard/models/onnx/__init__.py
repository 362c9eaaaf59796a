"""The ONNX autograd bridge: an ONNX graph re-run with torch operations (:class:`OnnxGraph`), so
attacks get exact input gradients through a user's ``.onnx`` file."""

from pytest_hepguard.models.onnx.graph import OnnxGraph, load_onnx_graph

__all__ = ["OnnxGraph", "load_onnx_graph"]
