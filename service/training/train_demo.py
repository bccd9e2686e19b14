"""Train the bundled digits CNN and write ``service/assets/demo/digits_cnn.pt``.

Deterministic (fixed seed, single thread) so the committed artifact can be rebuilt exactly.
Run with ``make train-demo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from service.inference.digits import DigitsCNN, bundled_weights_path
from service.training.digits_data import SEED, load_split

MIN_ACCURACY = 0.95


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    # The service normalises with mean 0.5 / std 0.5 after scaling to [0, 1]; train the same way.
    return (torch.from_numpy(images).float().unsqueeze(1) / 255.0 - 0.5) / 0.5


def train(epochs: int = 40) -> tuple[DigitsCNN, float]:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_train, y_train, x_test, y_test = load_split()
    xt, yt = _to_tensor(x_train), torch.from_numpy(y_train).long()
    model = DigitsCNN()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), 64):
            idx = order[start : start + 64]
            batch = xt[idx]
            # One-pixel shifts: cheap augmentation that makes the model robust to off-centre digits.
            dx, dy = torch.randint(-1, 2, (2,), generator=generator).tolist()
            batch = torch.roll(batch, shifts=(dy, dx), dims=(2, 3))
            optimiser.zero_grad()
            loss_fn(model(batch), yt[idx]).backward()
            optimiser.step()
        scheduler.step()
    model.eval()
    with torch.inference_mode():
        predicted = model(_to_tensor(x_test)).argmax(1).numpy()
    accuracy = float((predicted == y_test).mean())
    return model, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=bundled_weights_path())
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    model, accuracy = train(args.epochs)
    print(f"held-out accuracy: {accuracy:.4f}")
    if accuracy < MIN_ACCURACY:
        raise SystemExit(f"accuracy {accuracy:.4f} is below {MIN_ACCURACY}; not writing {args.out}")
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
