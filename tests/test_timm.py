"""A dozen timm models, one per pattern that vision models bring (tiny configs and inputs).

Each goes through ``helpers.check_model``: full choices bit-identical, the export equal to
the masked model and (where it applies) to the zeroing oracle, counts equal to a FlopCounterMode
count of the export. The patterns: plain convs; fused norm-plus-activation modules calling
``F.batch_norm`` / ``F.group_norm``; weight standardisation (``ScaledStdConv2d``); multi-branch
re-param blocks; ViT heads; relative-position biases from an MLP or a table indexed in the forward;
window partitions (Swin); heads on a grid (MaxViT, CoAtNet); ``LayerNorm2d`` and layer scales
(ConvNeXt); attention biases indexed per head (LeViT).
"""
from __future__ import annotations

import pytest
import torch

from helpers import check_model, make_nontrivial

pytestmark = pytest.mark.sweep  # a dozen timm models: not in the fast tier

timm = pytest.importorskip("timm")

# name -> (create_model kwargs, input side)
MODELS = {
    "test_resnet": ({}, 64),
    "test_efficientnet": ({}, 64),
    "test_efficientnet_gn": ({}, 64),
    "test_nfnet": ({}, 64),
    "test_byobnet": ({}, 64),
    "test_vit": ({"img_size": 64}, 64),
    "test_vit_relpos": ({"img_size": 64}, 64),
    "swin_tiny_patch4_window7_224": ({"img_size": 56, "embed_dim": 24, "depths": (2, 2), "num_heads": (2, 4),
                                      "window_size": 7}, 56),
    "test_maxvit": ({"img_size": 64}, 64),
    "test_coatnet": ({"img_size": 64}, 64),
    "test_convnext": ({}, 64),
    "levit_128s": ({"img_size": 64, "embed_dim": (32, 48, 64), "num_heads": (2, 3, 4), "depth": (1, 1, 1),
                    "key_dim": 8}, 64),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_timm_model_prunes_and_exports_exactly(name, one_thread):
    kwargs, side = MODELS[name]
    torch.manual_seed(0)
    model = make_nontrivial(timm.create_model(name, pretrained=False, num_classes=10, **kwargs))
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    checked = check_model(model, x, choice_sets=2)
    unprunable = [w for w in checked.warnings if "no channel rule" in w]
    assert not unprunable, unprunable
