"""A model written for issue 28 (depth as a choice): residual blocks of every kind the block
analysis finds (``x + f(x)``, ``x + gamma * f(x)``, pre- and post-norm layers, ResNet bottlenecks
with an identity shortcut, a lone block outside any container) and blocks that must stay (a
projection shortcut, a branch that also feeds something else, a block called twice). Used by
tests/test_blocks*.py and loadable by name (``block_net:BlockNet``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Residual(nn.Module):
    """``y = x + f(x)``."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x):
        return x + self.f(x)


class ScaledResidual(nn.Module):
    """``y = x + gamma * f(x)`` (a layer scale), written in place on the branch."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.gamma = nn.Parameter(torch.full((d,), 0.5))

    def forward(self, x):
        branch = self.gamma * self.fc2(F.gelu(self.fc1(x)))
        branch += x
        return branch


class PreNormLayer(nn.Module):
    """A pre-norm transformer layer: attention and MLP branches on the stream."""

    def __init__(self, d: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.down(F.relu(self.up(self.ln2(x))))


class PostNormLayer(nn.Module):
    """A post-norm layer: ``y = norm(x + f(x))``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(x + self.fc2(torch.tanh(self.fc1(x))))


class Bottleneck(nn.Module):
    """A ResNet bottleneck; its shortcut is a projection when ``project``."""

    def __init__(self, c: int, out: int | None = None, project: bool = False) -> None:
        super().__init__()
        out = out or c
        self.conv1, self.bn1 = nn.Conv2d(c, c // 2, 1, bias=False), nn.BatchNorm2d(c // 2)
        self.conv2, self.bn2 = nn.Conv2d(c // 2, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential(nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out)) if project else None

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        y += identity
        return F.relu(y)


class Leaky(nn.Module):
    """A residual block whose branch output also feeds something else (returned beside ``y``)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        branch = self.fc(x)
        return x + branch, branch


class BlockNet(nn.Module):
    """Blocks of every kind, and blocks that must stay (a projection shortcut, a leaking branch,
    a block called twice)."""

    def __init__(self, c: int = 8, d: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.convs = nn.Sequential(Bottleneck(c), Bottleneck(c, 2 * c, project=True), Bottleneck(2 * c))
        self.embed = nn.Linear(2 * c, d)
        self.layers = nn.ModuleList([Residual(nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))),
                                     ScaledResidual(d), PreNormLayer(d), PostNormLayer(d), PreNormLayer(d)])
        self.leaky = Leaky(d)
        self.twice = Residual(nn.Linear(d, d))
        self.alone = Residual(nn.Linear(d, d))
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        x = self.convs(F.relu(self.stem(x)))
        x = self.embed(x.flatten(2).transpose(1, 2))
        for layer in self.layers:
            x = layer(x)
        x, aux = self.leaky(x)
        x = self.alone(self.twice(self.twice(x)))
        return self.head(x.mean(1) + aux.mean(1))
