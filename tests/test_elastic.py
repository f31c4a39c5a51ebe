"""The elastic MBConv supernet: extraction equals the active subnet, kernel transforms, depth/expand slicing,
elastic BatchNorm and recalibration, and clear errors for archs outside the space."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tiny_spaces import small_space
from tinyflow.arch.space import ArchOutsideSpaceError, MBConvSpace
from tinyflow.arch.zoo import mobilenetv2
from tinyflow.errors import TinyflowError
from tinyflow.nn.calibration import recalibrate_bn
from tinyflow.nn.elastic import ArchNotInSupernetError, ElasticSupernet, space_from_dict, space_to_dict

torch.set_num_threads(1)


def scrambled_supernet(space: MBConvSpace, seed: int = 0) -> ElasticSupernet:
    """A supernet whose kernel transforms, BN affine parameters and running statistics are not at their init."""
    torch.manual_seed(seed)
    net = ElasticSupernet(space)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))
    return net


def test_extract_equals_active_supernet_for_random_archs():
    space = small_space()
    net = scrambled_supernet(space).eval()
    x = torch.randn(4, 1, 24, 24)
    rng = random.Random(0)
    archs = [space.max_arch(), space.min_arch()] + [space.sample(rng) for _ in range(8)]
    for arch in archs:
        net.set_active(arch)
        want = net(x)
        static = net.extract(arch).eval()
        assert [b.kernel for b in static.arch.blocks] == [b.kernel for b in arch.blocks]
        assert (static(x) - want).abs().max().item() <= 1e-5
        # the static net is a separate copy: the same arch built from scratch has different outputs
        assert sum(p.numel() for p in static.parameters()) < sum(p.numel() for p in net.parameters())


def test_extract_after_sort_and_at_another_resolution():
    space = small_space()
    net = scrambled_supernet(space, seed=1)
    net.sort_channels()
    net.eval()
    x = torch.randn(3, 1, 40, 40)  # elastic resolution: the supernet is fully convolutional
    arch = replace(space.sample(random.Random(3)), resolution=40)
    net.set_active(arch)
    assert (net.extract(arch).eval()(x) - net(x)).abs().max().item() <= 1e-5


def test_kernel_transform_is_identity_at_start_and_learnable():
    net = ElasticSupernet(small_space())
    dw = net.stages[0][0].dw
    w = dw.weight
    assert torch.equal(dw.kernel_weight(7, w.shape[0]), w)
    assert torch.equal(dw.kernel_weight(5, w.shape[0]), w[:, :, 1:6, 1:6])
    assert torch.equal(dw.kernel_weight(3, w.shape[0]), w[:, :, 2:5, 2:5])
    for t in dw.transforms.values():
        assert torch.equal(t, torch.eye(t.shape[0]))
    # a 3x3 subnet trains both matrices (7→5 and 5→3); a 7x7 subnet trains neither
    arch = small_space().build([4, 4, 4], [3] * 12, [6] * 12)
    net.set_active(arch)
    F.cross_entropy(net(torch.randn(4, 1, 24, 24)), torch.tensor([0, 1, 2, 3])).backward()
    assert dw.transforms["7to5"].grad is not None and dw.transforms["7to5"].grad.abs().sum() > 0
    assert dw.transforms["5to3"].grad.abs().sum() > 0
    with torch.no_grad():
        dw.transforms["5to3"].add_(0.1)
    assert not torch.allclose(dw.kernel_weight(3, w.shape[0]), w[:, :, 2:5, 2:5])


def test_depth_and_expand_slicing_use_only_the_active_weights():
    space = small_space()
    net = ElasticSupernet(space)
    # stage 1 runs 2 of 4 blocks with expand 3; stage 2 all 4 blocks with expand 6
    depths = [2, 4, 3]
    expands = [3] * 4 + [6] * 4 + [4] * 4
    arch = space.build(depths, [5] * 12, expands)
    net.set_active(arch)
    F.cross_entropy(net(torch.randn(4, 1, 24, 24)), torch.tensor([0, 1, 2, 3])).backward()
    stage0 = net.stages[0]
    for j, block in enumerate(stage0):
        used = j < 2
        assert (block.expand_conv.weight.grad is not None) == used
    hidden = stage0[0].cin * 3
    g = stage0[0].expand_conv.weight.grad
    assert g[:hidden].abs().sum() > 0 and g[hidden:].abs().sum() == 0
    assert stage0[0].project_conv.weight.grad[:, hidden:].abs().sum() == 0
    assert stage0[0].dw_bn.weight.grad[hidden:].abs().sum() == 0
    # the static net has exactly the active blocks
    static = net.extract(arch)
    assert len(static.blocks) == 1 + sum(depths) + 1
    assert static.blocks[1].expand.conv.out_channels == hidden


def test_sort_channels_keeps_function_and_ranks_by_importance():
    space = small_space()
    net = scrambled_supernet(space, seed=2).eval()
    x = torch.randn(4, 1, 24, 24)
    net.set_active(space.max_arch())
    before = net(x)
    net.sort_channels()
    assert (net(x) - before).abs().max().item() <= 1e-5  # a permutation of hidden channels
    for block in net.stages[1]:
        imp = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(imp[:-1] >= imp[1:])


def test_elastic_batchnorm_updates_only_the_slice_and_recalibration_averages():
    space = small_space()
    net = ElasticSupernet(space)
    arch = space.build([2, 2, 2], [3] * 12, [3] * 12)
    net.set_active(arch)
    net.eval()
    bn = net.stages[0][0].expand_bn
    hidden = net.stages[0][0].cin * 3
    batches = [torch.randn(8, 1, 24, 24) * (i + 1) for i in range(3)]
    recalibrate_bn(net, batches)
    assert torch.all(bn.running_mean[hidden:] == 0) and torch.all(bn.running_var[hidden:] == 1)
    assert bn.running_mean[:hidden].abs().sum() > 0
    assert int(bn.num_batches_tracked) == 3 and bn.momentum == 0.1 and not bn.training
    # momentum None = the plain mean of the per-batch means of the stem BN's input
    stem_bn = net.stem.bn
    means = [net.stem.conv(b).mean(dim=(0, 2, 3)) for b in batches]
    assert torch.allclose(stem_bn.running_mean, torch.stack(means).mean(0), atol=1e-5)


def outside(net: ElasticSupernet, arch) -> str:
    with pytest.raises(ArchNotInSupernetError) as info:
        net.set_active(arch)
    assert isinstance(info.value, TinyflowError) and isinstance(info.value, ArchOutsideSpaceError)
    return str(info.value)


def test_arch_outside_the_space_is_a_clear_error():
    space = small_space()
    net = ElasticSupernet(space)
    good = space.max_arch()
    # a kernel the supernet does not hold (built by a wider space, same widths)
    wide = replace(space, kernel_choices=(3, 5, 7, 9))
    msg = outside(net, wide.build([4, 4, 4], [9] + [7] * 11, [6] * 12))
    assert "kernels[0] = 9" in msg and "[3, 5, 7]" in msg
    msg = outside(net, replace(space, depth_choices=(2, 3, 4, 5)).build([5, 4, 4], [7] * 15, [6] * 15))
    assert "depths[0] = 5" in msg
    msg = outside(net, replace(space, expand_choices=(2, 3, 4, 6)).build([2, 2, 2], [3] * 12, [2] * 12))
    assert "expands[0] = 2" in msg
    msg = outside(net, replace(space, width_mult=1.0).max_arch())
    assert "stem_channels" in msg and "width_mult" in msg
    msg = outside(net, replace(good, num_classes=100))
    assert "num_classes = 100" in msg
    msg = outside(net, mobilenetv2(0.5, 24, num_classes=10, in_channels=1))
    assert "mobilenetv2" in msg
    # a block edited by hand: the right kernel, the wrong stride
    blocks = list(good.blocks)
    blocks[2] = replace(blocks[2], stride=2)
    assert "block 2" in outside(net, replace(good, blocks=tuple(blocks)))
    net.set_active(good)  # still usable afterwards


def test_space_dict_round_trip():
    space = small_space()
    again = space_from_dict(space_to_dict(space))
    assert again == space and again.max_arch() == space.max_arch()
