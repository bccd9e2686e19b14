"""The naive pattern many FastAPI model services use, for comparison: one inference per request, on the event loop.

This is what a first FastAPI model server usually looks like: an ``async def`` endpoint that
decodes with PIL, runs torchvision transforms and calls the model inline, so every request blocks
the event loop (health probes included) for the whole decode + forward pass. No batching, no
thread pool, one uvicorn worker. Run: ``uvicorn bench.naive_app:app``. ``BENCH_NAIVE_MODEL`` is
``resnet18`` (random weights, default) or ``digits`` (the bundled offline model). Not for production.

Random weights are seeded exactly as the service seeds a ``"pretrained": false`` model
(``service.inference.sources._seeded``: ``torch.random.fork_rng`` + ``torch.manual_seed(seed)``
around the same ``get_model`` call), with ``BENCH_NAIVE_SEED`` as the model spec's ``seed``
(default 0), so the naive server, the service and the limit all run the same network.
"""

from __future__ import annotations

import base64
import io
import os

import torch
import torchvision
from fastapi import FastAPI, Request
from PIL import Image
from pydantic import BaseModel
from torchvision import transforms as T

from service.inference.digits import DIGITS_LABELS, DigitsCNN, bundled_weights_path

MODEL = os.environ.get("BENCH_NAIVE_MODEL", "resnet18")
SEED = int(os.environ.get("BENCH_NAIVE_SEED", "0"))

if MODEL == "digits":
    model = DigitsCNN(num_classes=len(DIGITS_LABELS))
    model.load_state_dict(torch.load(bundled_weights_path(), map_location="cpu", weights_only=True))
    labels = list(DIGITS_LABELS)
    transform = T.Compose([T.Grayscale(), T.Resize((8, 8)), T.ToTensor(), T.Normalize((0.5,), (0.5,))])
else:
    weights = torchvision.models.get_model_weights(MODEL)["IMAGENET1K_V1"]
    labels = list(weights.meta["categories"])
    # The service's construction, call for call: the same generator state gives the same parameters.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = torchvision.models.get_model(MODEL, weights=None, num_classes=len(labels))
    transform = T.Compose(
        [T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
if device := os.environ.get("BENCH_NAIVE_DEVICE"):
    model = model.to(device)
model.eval()
app = FastAPI(title="naive seed")


class PredictRequest(BaseModel):
    image_base64: str


def classify(data: bytes) -> dict:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    x = transform(image).unsqueeze(0).to(next(model.parameters()).device)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0]
    conf, idx = probs.topk(5)
    return {
        "predictions": [
            {"label": labels[i], "class_id": i, "confidence": c}
            for c, i in zip(conf.tolist(), idx.tolist(), strict=False)
        ],
        "model_name": MODEL,
    }


@app.post("/api/v1/predict/upload")
async def predict_upload(request: Request) -> dict:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        data = await form["file"].read()
    else:
        data = await request.body()
    return classify(data)


@app.post("/api/v1/predict")
async def predict(body: PredictRequest) -> dict:
    return classify(base64.b64decode(body.image_base64))


@app.get("/health/live")
async def live() -> dict:
    return {"status": "alive"}


@app.get("/health/ready")
async def ready() -> dict:
    return {"status": "ready"}
