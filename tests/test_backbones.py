import pytest
import torch

from aoe_detect.backbones import BACKBONES, Standardize, build_backbone, register_backbone


@pytest.mark.parametrize("name", ["small_cnn", "wrn40_2", "resnet18"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_image_backbones_output_logits(name, shape):
    net = build_backbone(name, 7, shape, mean=torch.zeros(shape[0]), std=torch.ones(shape[0]))
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(2, *shape))
    assert out.shape == (2, 7)


def test_wrn40_2_size():
    # WideResNet-40-2 of the OOD literature has about 2.2M parameters (CIFAR-10 head)
    net = build_backbone("wrn40_2", 10, (3, 32, 32))
    n = sum(p.numel() for p in net.parameters())
    assert 2.1e6 < n < 2.4e6


def test_mlp_standardizes_inside():
    mean, std = torch.tensor([10.0, -5.0]), torch.tensor([2.0, 4.0])
    net = build_backbone("mlp", 3, (2,), mean=mean, std=std)
    assert isinstance(net.norm, Standardize)
    x = torch.tensor([[12.0, -1.0]])
    assert torch.allclose(net.norm(x), torch.tensor([[1.0, 1.0]]))
    assert "norm.mean" in net.state_dict()


def test_image_backbone_rejects_tabular():
    with pytest.raises(ValueError, match="image inputs"):
        build_backbone("small_cnn", 2, (5,))


def test_unknown_and_registered():
    with pytest.raises(ValueError, match="valid names"):
        build_backbone("vit_h", 2, (5,))

    @register_backbone("_test_linear")
    def _lin(n_classes, input_shape, *, mean=None, std=None):
        return torch.nn.Linear(input_shape[0], n_classes)

    try:
        assert build_backbone("_test_linear", 4, (3,))(torch.zeros(1, 3)).shape == (1, 4)
    finally:
        BACKBONES.pop("_test_linear")
