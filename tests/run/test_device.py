"""Device and autocast dtype of a config's `train.device` / `train.amp`."""
import pytest
import torch

from quadranet.run import amp_dtype, resolve_device

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without a GPU")


@needs_no_gpu
def test_auto_is_the_cpu_without_a_gpu():
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")


@needs_no_gpu
def test_cuda_without_a_gpu_names_the_key():
    with pytest.raises(ValueError, match="train.device='cuda' but no CUDA device is available; expected 'cpu' or 'auto'"):
        resolve_device("cuda", key="train.device")


@pytest.mark.gpu
def test_bare_cuda_is_this_ranks_gpu():
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0) == resolve_device("auto")


def test_unknown_device_names_what_is_expected():
    with pytest.raises(ValueError, match="device='tpu' is not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("tpu")


def test_amp_auto_is_bf16_on_gpu_and_full_precision_on_cpu():
    assert amp_dtype("auto", torch.device("cpu")) is None and amp_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert amp_dtype("fp16", torch.device("cpu")) is torch.float16 and amp_dtype("none", torch.device("cuda")) is None
    with pytest.raises(ValueError, match="train.amp='fp8' is not allowed"):
        amp_dtype("fp8", torch.device("cpu"))
