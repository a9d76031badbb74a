"""PyTorch definitions of the flbq model layouts (torchvision 0.14 modules),
shared by the fixture, export and timing scripts and by the Mask R-CNN
fixtures. Each backbone module returns an OrderedDict of pyramid levels
('0'..'3', 'pool') and has .out_channels, so it plugs into
torchvision.models.detection.MaskRCNN as `backbone`.

State-dict layout (prefixes as inside a MaskRCNN, i.e. under "backbone."):
  Swin:  body.{0..7} (= SwinTransformer.features), out_norms.{0..3} (optional),
         fpn.inner_blocks.{i}.0, fpn.layer_blocks.{i}.0 (FeaturePyramidNetwork)
  ViT:   patch_embed (Conv2d p×p), pos_embed [1, (1+)G*G, D], blocks.{i} (EncoderBlock),
         norm, simfp_4.{0,1,3}, simfp_8.0, lateral.{i}.{0,1}, output.{i}.{0,1}
  ViTDet: detectron2's names (net.pos_embed, net.patch_embed.proj, net.blocks.{i}.attn.rel_pos_h,
         simfp_{2..5}.*), the modules of vitdet_fixtures.py (its line-by-line detectron2 copy)
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import EncoderBlock
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (ViTDet / detectron2)."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SwinFPNBackbone(nn.Module):
    def __init__(self, patch_size, embed_dim, depths, num_heads, window_size, out_channels=256, out_norms=True, mlp_ratio=4.0):
        super().__init__()
        swin = SwinTransformer(patch_size=patch_size, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                               window_size=window_size, mlp_ratio=mlp_ratio, stochastic_depth_prob=0.0)
        self.body = swin.features
        chans = [embed_dim * 2 ** i for i in range(len(depths))]
        self.taps = [2 * i + 1 for i in range(len(depths))]
        if out_norms:
            self.out_norms = nn.ModuleList([nn.LayerNorm(c) for c in chans])
        else:
            self.out_norms = None
        self.fpn = FeaturePyramidNetwork(chans, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward_backbone(self, x):
        outs = []
        for i, m in enumerate(self.body):
            x = m(x)
            if i in self.taps:
                y = x
                if self.out_norms is not None:
                    y = self.out_norms[len(outs)](y)
                outs.append(y.permute(0, 3, 1, 2).contiguous())
        return outs

    def forward_pyramid(self, outs):
        return self.fpn(OrderedDict((str(k), o) for k, o in enumerate(outs)))

    def forward(self, x):
        return self.forward_pyramid(self.forward_backbone(x))


class ViTDetBackbone(nn.Module):
    def __init__(self, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, out_channels=256, pos_embed_cls_token=True):
        super().__init__()
        D = hidden_dim
        self.grid = image_size // patch_size
        self.cls = pos_embed_cls_token
        self.patch_embed = nn.Conv2d(3, D, patch_size, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + (1 if self.cls else 0), D))
        self.blocks = nn.ModuleList([EncoderBlock(num_heads, D, mlp_dim, 0.0, 0.0) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.simfp_4 = nn.Sequential(nn.ConvTranspose2d(D, D // 2, 2, 2), LayerNorm2d(D // 2), nn.GELU(),
                                     nn.ConvTranspose2d(D // 2, D // 4, 2, 2))
        self.simfp_8 = nn.Sequential(nn.ConvTranspose2d(D, D // 2, 2, 2))
        self.simfp_16 = nn.Sequential()
        self.simfp_32 = nn.Sequential(nn.MaxPool2d(2, 2))
        ins = [D // 4, D // 2, D, D]
        self.lateral = nn.ModuleList([nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=False), LayerNorm2d(out_channels)) for c in ins])
        self.output = nn.ModuleList([nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels)) for _ in ins])
        self.out_channels = out_channels

    def forward_backbone(self, x):
        x = self.patch_embed(x)
        n, d, gh, gw = x.shape
        x = x.permute(0, 2, 3, 1)
        pos = self.pos_embed[:, 1:] if self.cls else self.pos_embed
        pos = pos.reshape(1, self.grid, self.grid, d)
        if (gh, gw) != (self.grid, self.grid):
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(gh, gw), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        x = (x + pos).reshape(n, gh * gw, d)
        for b in self.blocks:
            x = b(x)
        x = self.norm(x)
        return [x.reshape(n, gh, gw, d).permute(0, 3, 1, 2).contiguous()]

    def forward_pyramid(self, outs):
        f = outs[0]
        levels = [self.simfp_4(f), self.simfp_8(f), self.simfp_16(f), self.simfp_32(f)]
        res = [self.output[i](self.lateral[i](l)) for i, l in enumerate(levels)]
        res.append(F.max_pool2d(res[-1], 1, 2, 0))
        return OrderedDict(zip(["0", "1", "2", "3", "pool"], res))

    def forward(self, x):
        return self.forward_pyramid(self.forward_backbone(x))


class ViTDetNetBackbone(nn.Module):
    """detectron2's ViT + SimpleFeaturePyramid (vitdet_fixtures.py's copies of vit.py) for a
    family "vitdet" config, returning torchvision's level names so that it plugs into
    torchvision's MaskRCNN. The state dict has detectron2's names (net.*, simfp_*), which is
    flbq's layout for the family."""

    def __init__(self, cfg):
        super().__init__()
        import vitdet_fixtures as vf
        p, d = cfg["patch_size"], cfg["hidden_dim"]
        windows = set(cfg["window_block_indexes"])
        net = vf.ViT(img_size=cfg["image_size"], patch_size=p, embed_dim=d, depth=cfg["num_layers"],
                     num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_dim"] / d,
                     norm_layer=lambda c: nn.LayerNorm(c, eps=1e-6), use_rel_pos=cfg["use_rel_pos"],
                     window_size=cfg["window_size"], window_block_indexes=tuple(windows),
                     pretrain_img_size=cfg["pretrain_image_size"],
                     pretrain_use_cls_token=cfg.get("pos_embed_cls_token", True))
        # SimpleFeaturePyramid reads the net's stride and width from module constants.
        saved = vf.PATCH, vf.EMBED
        vf.PATCH, vf.EMBED = p, d
        try:
            sfp = vf.SimpleFeaturePyramid(net, cfg["out_channels"], (4.0, 2.0, 1.0, 0.5),
                                          top_block=vf.LastLevelMaxPool(), norm="LN")
        finally:
            vf.PATCH, vf.EMBED = saved
        for name, m in sfp.named_children():  # simfp_2..5, then net: detectron2's key order
            self.add_module(name, m)
        self.stages = sfp.stages
        self.out_channels = cfg["out_channels"]

    def forward_backbone(self, x):
        self.net.trace = {}  # the copy keeps every block's output for the fixtures
        return [self.net(x)["last_feat"]]

    def forward_pyramid(self, outs):
        feats = [stage(outs[0]) for stage in self.stages]
        feats.append(F.max_pool2d(feats[-1], 1, 2, 0))
        return OrderedDict(zip(["0", "1", "2", "3", "pool"], feats))

    def forward(self, x):
        return self.forward_pyramid(self.forward_backbone(x))


class Wrap(nn.Module):
    """Holds a backbone under the attribute name `backbone` (MaskRCNN's layout)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def build(cfg):
    """Builds the PyTorch module for an flbq config dict (detection → Wrap(backbone))."""
    if cfg["family"] == "swin":
        return Wrap(SwinFPNBackbone(cfg["patch_size"], cfg["embed_dim"], cfg["depths"], cfg["num_heads"], cfg["window_size"],
                                    cfg["out_channels"], cfg.get("out_norms", False), cfg.get("mlp_ratio", 4.0)))
    if cfg["family"] == "vit" and cfg["task"] == "detection":
        return Wrap(ViTDetBackbone(cfg["image_size"], cfg["patch_size"], cfg["num_layers"], cfg["num_heads"], cfg["hidden_dim"],
                                   cfg["mlp_dim"], cfg["out_channels"], cfg.get("pos_embed_cls_token", True)))
    if cfg["family"] == "vitdet":
        return Wrap(ViTDetNetBackbone(cfg))
    if cfg["family"] == "vit" and cfg["task"] == "classification":
        from torchvision.models.vision_transformer import VisionTransformer
        return VisionTransformer(cfg["image_size"], cfg["patch_size"], cfg["num_layers"], cfg["num_heads"], cfg["hidden_dim"],
                                 cfg["mlp_dim"], num_classes=cfg["num_classes"], representation_size=cfg.get("representation_size") or None)
    raise ValueError(f"unsupported config {cfg}")


def state_dict_numpy(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
