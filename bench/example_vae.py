"""The baseline every benchmark here compares with: PyTorch's own VAE example
(pytorch/examples, vae/main.py): an MLP 784-400-20 with sigmoid outputs, the summed binary
cross-entropy plus KL as its loss, Adam 1e-3 and a `DataLoader(MNIST(transform=ToTensor()),
batch_size=128, shuffle=True)`. Each batch is binarised (vaecli's dynamic binarisation), so both
models see the same kind of data and their test -ELBO compare."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST


class ExampleVAE(nn.Module):
    """pytorch/examples vae/main.py, in substance."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def example_loss(
    recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """-ELBO summed over the batch, as the example computes it."""
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def example_loader(root: str, batch_size: int = 128) -> DataLoader:
    return DataLoader(
        MNIST(root, train=True, transform=transforms.ToTensor()), batch_size=batch_size, shuffle=True
    )


def train_epoch(
    model: ExampleVAE, optimizer: torch.optim.Optimizer, loader: DataLoader, device: str = "cpu"
) -> int:
    """One epoch of the example's loop (each batch moved to ``device``, as the example does);
    the number of images seen."""
    model.train()
    seen = 0
    for x, _ in loader:
        x = torch.bernoulli(x.to(device))
        optimizer.zero_grad()
        recon, mu, logvar = model(x)
        loss = example_loss(recon, x, mu, logvar)
        loss.backward()
        optimizer.step()
        seen += x.shape[0]
    return seen
