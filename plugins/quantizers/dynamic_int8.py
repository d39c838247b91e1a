"""Dynamic int8 quantization of every ``nn.Linear``.

Weights are stored as 8-bit integers plus one scale (4x smaller than fp32); activations
are quantized on the fly ("dynamically") at each call. This uses PyTorch's eager-mode
``quantize_dynamic``, which PyTorch marks deprecated; if a future PyTorch removes it, the
quantizer says so and the run carries on with fp32 weights.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from gptf import hookimpl


def _quantization_api():
    try:
        import torch.ao.nn.quantized.dynamic as qdynamic
        import torch.ao.quantization as quantization
    except ImportError:
        return None, None
    if not hasattr(quantization, "quantize_dynamic"):
        return None, None
    return quantization, qdynamic


def unavailable_reason() -> str | None:
    """Why dynamic int8 cannot run here, or None if it can."""
    quantization, _ = _quantization_api()
    if quantization is None:
        return f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic"
    if not torch.backends.quantized.supported_engines or torch.backends.quantized.supported_engines == ["none"]:
        return "this PyTorch build has no quantized CPU engine"
    return None


class DynamicInt8:
    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"dynamic int8 quantization is not available: {reason}")

    def quantize(self, model: nn.Module) -> nn.Module:
        quantization, _ = _quantization_api()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch's deprecation notice, explained above
            return quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)

    def state_tensors(self, quantized: nn.Module) -> dict[str, torch.Tensor]:
        _, qdynamic = _quantization_api()
        tensors: dict[str, torch.Tensor] = {}
        skip = set()
        for name, module in quantized.named_modules():
            if isinstance(module, qdynamic.Linear):
                weight, bias = module._weight_bias()
                tensors[f"{name}.weight_int8"] = weight.int_repr().contiguous()
                tensors[f"{name}.weight_scale"] = torch.tensor(weight.q_scale(), dtype=torch.float64)
                tensors[f"{name}.weight_zero_point"] = torch.tensor(weight.q_zero_point(), dtype=torch.int64)
                if bias is not None:
                    tensors[f"{name}.bias"] = bias.detach().contiguous()
                skip.add(name)
        for name, value in quantized.state_dict().items():
            inside_int8_linear = any(name.startswith(s + ".") for s in skip)
            if isinstance(value, torch.Tensor) and not value.is_quantized and not inside_int8_linear:
                tensors.setdefault(name, value.detach().contiguous())
        return tensors

    def load(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
        _, qdynamic = _quantization_api()
        int8_parts = ("weight_int8", "weight_scale", "weight_zero_point")
        plain = {k: v for k, v in tensors.items() if not k.endswith(int8_parts)}
        # 1. everything that stays fp32 (embeddings, norms) goes into the fp32 skeleton
        expected = model.state_dict()
        unexpected = [k for k in plain if k not in expected]
        if unexpected:
            raise KeyError(f"unexpected tensors: {unexpected[:5]}")
        model.load_state_dict({k: v for k, v in plain.items()}, strict=False)
        # 2. quantize the structure, then put the saved int8 weights in place
        quantized = self.quantize(model)
        for name, module in quantized.named_modules():
            if isinstance(module, qdynamic.Linear):
                if f"{name}.weight_int8" not in tensors:
                    raise KeyError(f"missing int8 weights for {name}")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    weight = torch._make_per_tensor_quantized_tensor(
                        tensors[f"{name}.weight_int8"],
                        float(tensors[f"{name}.weight_scale"]),
                        int(tensors[f"{name}.weight_zero_point"]),
                    )
                    module.set_weight_bias(weight, tensors.get(f"{name}.bias"))
        return quantized


@hookimpl
def register_quantizers() -> dict[str, type]:
    return {"dynamic_int8": DynamicInt8}
