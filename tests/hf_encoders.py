"""Multi-task models on `transformers` vision encoders of many families, as a user would build them.

Each encoder is built from a small config with random weights (nothing is downloaded). A neck
(conv 3x3 + ReLU) on the encoder's last feature map is shared by `seg` and `depth`; `cls` reads
the encoder's pooled features. `hf_encoder(family=...)` takes only JSON keyword arguments, so
`taskcut.save` records it and `taskcut.load` rebuilds the model by calling it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SEG_CLASSES = 5
CLS_CLASSES = 4

#: family -> (model class name, config class name, config kwargs, image size, leading tokens to drop)
FAMILIES: dict[str, tuple[str, str, dict[str, Any], int, int]] = {
    # convolutional
    "resnet": ("ResNetModel", "ResNetConfig", dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                                   layer_type="bottleneck"), 32, 0),
    "regnet": ("RegNetModel", "RegNetConfig", dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                                   groups_width=8), 32, 0),
    "convnext": ("ConvNextModel", "ConvNextConfig", dict(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2), 32, 0),
    "convnextv2": ("ConvNextV2Model", "ConvNextV2Config", dict(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
                   32, 0),
    "efficientnet": ("EfficientNetModel", "EfficientNetConfig", dict(width_coefficient=0.25, depth_coefficient=0.2,
                                                                     hidden_dim=320, image_size=64), 64, 0),
    "mobilenet_v1": ("MobileNetV1Model", "MobileNetV1Config", dict(depth_multiplier=0.25, image_size=64), 64, 0),
    "mobilenet_v2": ("MobileNetV2Model", "MobileNetV2Config", dict(depth_multiplier=0.25, image_size=64), 64, 0),
    "bit": ("BitModel", "BitConfig", dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                          num_groups=4), 32, 0),
    "poolformer": ("PoolFormerModel", "PoolFormerConfig", dict(hidden_sizes=[16, 32], depths=[1, 1],
                                                               num_encoder_blocks=2, patch_sizes=[4, 2],
                                                               strides=[4, 2], padding=[1, 0]), 32, 0),
    "textnet": ("TextNetModel", "TextNetConfig", dict(stem_out_channels=8, conv_layer_kernel_sizes=[[[3, 3]], [[3, 3]]],
                                                      conv_layer_strides=[[2], [2]],
                                                      hidden_sizes=[8, 16, 32]), 32, 0),
    "dinov3_convnext": ("DINOv3ConvNextModel", "DINOv3ConvNextConfig", dict(hidden_sizes=[16, 32], depths=[1, 1]),
                            32, 0),
    "mobilevit": ("MobileViTModel", "MobileViTConfig", dict(image_size=64, hidden_sizes=[16, 24, 32],
                                                            neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
                                                            num_attention_heads=2), 64, 0),
    "mobilevitv2": ("MobileViTV2Model", "MobileViTV2Config", dict(image_size=64, width_multiplier=0.25), 64, 0),
    "cvt": ("CvtModel", "CvtConfig", dict(embed_dim=[16, 24, 32], num_heads=[1, 2, 2], depth=[1, 2, 3],
                                          patch_sizes=[7, 3, 3], patch_stride=[4, 2, 1], patch_padding=[2, 1, 1],
                                          mlp_ratio=[2.0, 2.0, 2.0], attention_drop_rate=[0.0, 0.0, 0.0],
                                          drop_rate=[0.0, 0.0, 0.0], drop_path_rate=[0.0, 0.0, 0.0],
                                          qkv_bias=[True, True, True], cls_token=[False, False, False],
                                          qkv_projection_method=["dw_bn", "dw_bn", "dw_bn"], kernel_qkv=[3, 3, 3],
                                          padding_kv=[1, 1, 1], stride_kv=[2, 2, 2], padding_q=[1, 1, 1],
                                          stride_q=[1, 1, 1]), 32, 0),
    # ViT-style
    "vit": ("ViTModel", "ViTConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, image_size=32, patch_size=8), 32, 1),
    "deit": ("DeiTModel", "DeiTConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, image_size=32, patch_size=8), 32, 2),
    "beit": ("BeitModel", "BeitConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, image_size=32, patch_size=8,
                                             use_relative_position_bias=True, use_mean_pooling=True), 32, 1),
    "data2vec_vision": ("Data2VecVisionModel", "Data2VecVisionConfig",
                        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             image_size=32, patch_size=8, use_relative_position_bias=True), 32, 1),
    "dinov2": ("Dinov2Model", "Dinov2Config", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                   mlp_ratio=2, image_size=32, patch_size=8), 32, 1),
    "dinov2_registers": ("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig",
                         dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=32,
                              patch_size=8, num_register_tokens=2), 32, 3),
    "dinov3_vit": ("DINOv3ViTModel", "DINOv3ViTConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                             intermediate_size=64, image_size=32, patch_size=8,
                                                             num_register_tokens=2), 32, 3),
    "siglip": ("SiglipVisionModel", "SiglipVisionConfig", dict(hidden_size=32, num_hidden_layers=2,
                                                                num_attention_heads=4, intermediate_size=64,
                                                                image_size=32, patch_size=8), 32, 0),
    "clip": ("CLIPVisionModel", "CLIPVisionConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                         intermediate_size=64, image_size=32, patch_size=8,
                                                         projection_dim=16), 32, 1),
    "vit_msn": ("ViTMSNModel", "ViTMSNConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                    intermediate_size=64, image_size=32, patch_size=8), 32, 1),
    "ijepa": ("IJepaModel", "IJepaConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=64, image_size=32, patch_size=8), 32, 0),
    "yolos": ("YolosModel", "YolosConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=64, image_size=[32, 32], patch_size=8,
                                                num_detection_tokens=3), 32, 1),
    # hierarchical
    "swin": ("SwinModel", "SwinConfig", dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                             num_heads=[2, 4], window_size=4), 32, 0),
    "swinv2": ("Swinv2Model", "Swinv2Config", dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                   num_heads=[2, 4], window_size=4), 32, 0),
    "donut_swin": ("DonutSwinModel", "DonutSwinConfig", dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                             num_heads=[2, 4], window_size=4), 32, 0),
    "focalnet": ("FocalNetModel", "FocalNetConfig", dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                         focal_levels=[2, 2], focal_windows=[3, 3],
                                                         hidden_sizes=[16, 32]), 32, 0),
    "pvt": ("PvtModel", "PvtConfig", dict(image_size=32, num_encoder_blocks=2, depths=[1, 1], sequence_reduction_ratios=[2, 1],
                                          hidden_sizes=[16, 32], patch_sizes=[4, 2], strides=[4, 2],
                                          num_attention_heads=[1, 2], mlp_ratios=[2, 2]), 32, 0),
    "pvt_v2": ("PvtV2Model", "PvtV2Config", dict(image_size=32, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                                 hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                                                 num_attention_heads=[1, 2], mlp_ratios=[2, 2]), 32, 0),
    "segformer": ("SegformerModel", "SegformerConfig", dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                                            hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                                                            num_attention_heads=[1, 2], mlp_ratios=[2, 2]), 32, 0),
    "glpn": ("GLPNModel", "GLPNConfig", dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                             hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                                             num_attention_heads=[1, 2], mlp_ratios=[2, 2]), 32, 0),
    "levit": ("LevitModel", "LevitConfig", dict(image_size=64, hidden_sizes=[32, 48], num_attention_heads=[2, 3],
                                                depths=[1, 1], key_dim=[8, 8], drop_path_rate=0, mlp_ratio=[2, 2],
                                                attention_ratio=[2, 2], patch_size=16,
                                                down_ops=[["Subsample", 8, 2, 2, 2, 2]]), 64, 0),
    "hiera": ("HieraModel", "HieraConfig", dict(image_size=[64, 64], patch_size=[7, 7], patch_stride=[4, 4],
                                                patch_padding=[3, 3], embed_dim=16, num_heads=[1, 2],
                                                depths=[1, 1], query_stride=[2, 2], masked_unit_size=[8, 8],
                                                num_query_pool=1, mlp_ratio=2.0), 64, 0),
}


class HFMultiTask(nn.Module):
    """A `transformers` encoder, a neck shared by `seg` and `depth`, and `cls` on the pooled features."""

    def __init__(self, family: str, neck: int = 16) -> None:
        super().__init__()
        import transformers

        model_name, config_name, kwargs, self.image, self.front = FAMILIES[family]
        config = getattr(transformers, config_name)(num_channels=3, **kwargs)
        self.encoder = getattr(transformers, model_name)(config)
        for module in self.encoder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                # some families draw BatchNorm scales from N(0, 0.02): thirty of them in a row leave features
                # of 1e-34 that no loss reaches; a trained encoder keeps its scales near 1
                nn.init.ones_(module.weight)
        self.encoder.eval()  # a batch of one image must pass its BatchNorms
        with torch.no_grad():
            width = self._features(torch.zeros(1, 3, self.image, self.image)).shape[1]
        self.neck = nn.Sequential(nn.Conv2d(width, neck, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(neck, SEG_CLASSES, 1), "depth": nn.Conv2d(neck, 1, 1),
                                    "cls": nn.Linear(width, CLS_CLASSES)})

    def _features(self, image: torch.Tensor) -> torch.Tensor:
        """The encoder's last feature map as (batch, channels, height, width), whatever its layout."""
        out = self.encoder(pixel_values=image)
        features = out.last_hidden_state
        if features.dim() == 4:
            return features
        tokens = features[:, self.front:]
        grid = math.isqrt(tokens.shape[1])
        tokens = tokens[:, : grid * grid]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid, grid)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self._features(image)
        shared = F.interpolate(self.neck(features), size=image.shape[-2:], mode="bilinear", align_corners=False)
        inputs = {"seg": shared, "depth": shared, "cls": features.mean(dim=(2, 3))}
        return {task: head(inputs[task]) for task, head in self.heads.items()}


def hf_encoder(family: str) -> nn.Module:
    torch.manual_seed(0)
    return HFMultiTask(family).eval()


def batches(family: str, n: int = 2, size: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    image = FAMILIES[family][3]
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(size, 3, image, image, generator=g),
             "seg": torch.randint(0, SEG_CLASSES, (size, image, image), generator=g),
             "depth": torch.rand(size, 1, image, image, generator=g) + 0.5,
             "cls": torch.randint(0, CLS_CLASSES, (size,), generator=g)} for _ in range(n)]


def data(family: str) -> dict[str, list[dict[str, torch.Tensor]]]:
    """A user's data factory for an own-model YAML: train/val/test splits of dict batches."""
    return {split: batches(family, n=4, size=4, seed=seed) for seed, split in enumerate(("train", "val", "test"))}


def write_yaml(folder: Path, family: str = "deit") -> Path:
    """The own-model YAML a user would write for `hf_encoder(family)`: factory, tasks, data factory."""
    import yaml

    tasks = {"seg": {"kind": "segmentation", "classes": SEG_CLASSES}, "depth": {"kind": "depth"},
             "cls": {"kind": "classification", "classes": CLS_CLASSES}}
    cfg = {"model": {"factory": "tests.hf_encoders:hf_encoder", "kwargs": {"family": family}},
           "tasks": tasks, "data": {"factory": "tests.hf_encoders:data", "kwargs": {"family": family}}}
    path = folder / "own.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))  # the tasks in the model's output order
    return path
