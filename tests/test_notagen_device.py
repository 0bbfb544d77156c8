"""Device and weight-format plumbing of NotaGen (`engine.device`, `engine.notagen.quantize`).

The CPU tests run everywhere: int8 / bf16 decode as fp32 does on the fixtures' trained tiny model, and the
decoding loop creates no tensor off the model's device and copies none to the CPU (checked with a torch
function mode, which sees the same calls whatever the device). The CUDA tests run where torch sees a GPU
(`bench/gpu_check.sh`).
"""
import pytest
import torch
from torch.overrides import TorchFunctionMode
from transformers.pytorch_utils import Conv1D

from engine.cli import build_parser
from engine.device import resolve_device
from engine.errors import ModelError
from engine.notagen.batch_engine import BatchEngine
from engine.notagen.finish import text_context
from engine.notagen.generate import NotagenGenerator
from engine.notagen.model import load_checkpoint
from engine.notagen.options import GenerationOptions
from engine.notagen.patchilizer import Patchilizer
from engine.notagen.quantize import Int8Linear, place, resolve_weights
from engine.notagen.reference import greedy_continue
from engine.service import Composer

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_torch_thread")]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
BACH = "%Baroque\n%Bach, Johann Sebastian\n%Keyboard\n"


@pytest.fixture(scope="module")
def checkpoint(notagen_reference):
    return notagen_reference / "tiny_notagen_trained_fp16.pth"


def _greedy_text(generator: NotagenGenerator) -> str:
    return greedy_continue(generator.model, Patchilizer(), BACH, max_patches=24).text


def test_int8_linear_matches_conv1d():
    torch.manual_seed(0)
    conv = Conv1D(96, 64)  # GPT-2's layout: weight [in, out]
    torch.nn.init.normal_(conv.weight, std=0.02)
    x = torch.randn(3, 5, 64)
    quantized = Int8Linear.from_module(conv)
    assert quantized.weight.dtype == torch.int8 and quantized.weight.shape == (96, 64)
    expected = conv(x)
    assert (quantized(x) - expected).abs().max() < 0.02 * expected.abs().max()


@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_lighter_weights_decode_like_fp32_on_cpu(checkpoint, weights):
    fp32 = NotagenGenerator.load(checkpoint)
    light = NotagenGenerator.load(checkpoint, device="cpu", weights=weights)
    if weights == "int8":
        assert isinstance(light.model.char_level_decoder.base.transformer.h[0].mlp.c_fc, Int8Linear)
    else:
        assert light.model.dtype == torch.bfloat16
    assert _greedy_text(light) == _greedy_text(fp32)


def test_formats_are_checked_against_the_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_weights("auto", cpu) == "fp32" and resolve_weights("auto", cuda) == "bf16"
    with pytest.raises(ModelError, match="fp16 is for CUDA"):
        resolve_weights("fp16", cpu)
    with pytest.raises(ModelError, match="int8 is for the CPU"):
        resolve_weights("int8", cuda)
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_cli_and_composer_take_device_and_weights(checkpoint):
    args = build_parser().parse_args(["generate", "--out", "x", "--device", "cpu", "--weights", "int8"])
    assert (args.device, args.weights) == ("cpu", "int8")
    assert build_parser().parse_args(["continue", "in.abc", "--out", "x"]).device == "auto"
    composer = Composer.from_checkpoints(checkpoint, None, device="cpu", weights="int8")
    assert isinstance(composer.notagen.model.patch_level_decoder.patch_embedding, Int8Linear)


class _Watch(TorchFunctionMode):
    """Records tensors made without a device and never moved (`.to(device)`) afterwards, and copies to the CPU."""

    FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.empty, torch.full, torch.arange,
                 torch.rand, torch.randn}

    def __init__(self):
        super().__init__()
        self.copies, self.unplaced = [], {}

    @property
    def problems(self) -> list[str]:
        return self.copies + [f"{name} without a device" for name in self.unplaced.values()]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func in self.FACTORIES and kwargs.get("device") is None:
            self.unplaced[id(result)] = func.__name__
        if func in (torch.Tensor.cpu, torch.Tensor.numpy):
            self.copies.append(func.__name__)
        if func is torch.Tensor.to:
            self.unplaced.pop(id(args[0]), None)
            # `.to(other.device)` is how a tensor follows the model; a literal "cpu" is a copy off it.
            if "cpu" in (*args[1:], kwargs.get("device")):
                self.copies.append('.to("cpu")')
        return result


@pytest.mark.parametrize("constrain", [False, True])
def test_decoding_loop_stays_on_the_model_device(checkpoint, constrain):
    model = place(load_checkpoint(checkpoint)[0], "cpu", "fp32")
    options = GenerationOptions(n=2, seed=0, max_patches=12, constrain=constrain)
    engine = BatchEngine(model, text_context(BACH), lambda text, start, reason: (text, None), options)
    groups = engine.start()
    with _Watch() as watch:
        for _ in range(10):
            if groups:
                groups = engine.advance(groups)
    assert watch.problems == []


@CUDA
@pytest.mark.parametrize("weights", ["bf16", "fp16"])
def test_cuda_generation_agrees_with_fp32(checkpoint, weights):
    fp32 = NotagenGenerator.load(checkpoint, device="cpu")
    gpu = NotagenGenerator.load(checkpoint, device="cuda", weights=weights)
    assert gpu.model.device.type == "cuda"
    assert _greedy_text(gpu) == _greedy_text(fp32)
    result = gpu.generate(BACH, n=4, seed=0, max_bars=2)  # sampled, batched, bar-exact
    assert len(result.pieces) + len(result.failures) == 4


@pytest.mark.parametrize("cores, threads", [(1, 1), (2, 1), (4, 3), (32, 8)])
def test_the_app_leaves_a_core_for_the_browser_and_engraving(cores, threads, monkeypatch):
    import app
    from engine.device import app_threads

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert app_threads() == threads
    assert app.parse_args([]).threads == threads
    assert app.main(["--threads", "0"]) == 2
