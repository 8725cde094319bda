"""Test-suite hooks: a test marked `cuda` runs only where a CUDA device is present (`pytest -m cuda`
selects every one of them; without a GPU they are reported as skipped), and pycaffe's process-wide
mode restored after every test; CUDA tests compute float32 without TF32."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def _pristine_mode() -> dict:
    from netspec.pycaffe import net

    return dict(net._MODE)


_PRISTINE_MODE = _pristine_mode()     # before any test or fixture ran


@pytest.fixture(autouse=True)
def _pycaffe_mode_per_test():
    """pycaffe's process-wide mode (set_random_seed, set_mode_gpu, ...) back to the session's start
    after each test: a seed one test or fixture sets (a module fixture's seed too, which a per-test
    snapshot would take in) would otherwise fill every later test's nets alike."""
    from netspec.pycaffe import net

    yield
    net._MODE.clear()
    net._MODE.update(_PRISTINE_MODE)


@pytest.fixture(autouse=True)
def _float32_on_the_gpu(request):
    """A CUDA test compares with the CPU's float32: TF32 off, as netspec sets it when it places a net
    on a GPU (graph/devices.py), also for the tests that call a layer directly."""
    if request.node.get_closest_marker("cuda") is None:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
