"""The bundled model classifies held-out digits correctly over HTTP, exactly as it does in-process."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from tests.inprocess import bundled_model, classify_in_process

pytestmark = pytest.mark.anyio


async def test_held_out_accuracy_over_http_is_at_least_95_percent_and_matches_in_process(
    client: httpx.AsyncClient, digits: tuple[np.ndarray, np.ndarray], digit_pngs: list[bytes]
) -> None:
    labels = digits[1]
    http_top1: list[int] = []
    http_conf: list[float] = []
    for start in range(0, len(digit_pngs), 32):
        chunk = digit_pngs[start : start + 32]
        body = {"images": [{"image_base64": base64.b64encode(png).decode()} for png in chunk], "top_k": 1}
        response = await client.post("/api/v1/predict/batch", json=body)
        assert response.status_code == 200
        for result in response.json()["results"]:
            http_top1.append(result["predictions"][0]["class_id"])
            http_conf.append(result["predictions"][0]["confidence"])

    accuracy = float(np.mean(np.array(http_top1) == labels))
    print(f"held-out accuracy over HTTP: {accuracy:.4f} on {len(labels)} images")
    assert accuracy >= 0.95

    reference = classify_in_process(bundled_model(), digit_pngs, top_k=1)
    assert http_top1 == [r.predictions[0].class_id for r in reference]
    # Batch composition changes float summation order, nothing more.
    assert np.allclose(http_conf, [r.predictions[0].confidence for r in reference], atol=1e-5)


async def test_upload_raw_and_multipart_and_base64_give_the_same_prediction(
    client: httpx.AsyncClient, digit_pngs: list[bytes], digits: tuple[np.ndarray, np.ndarray]
) -> None:
    png = digit_pngs[3]
    raw = await client.post("/api/v1/predict/upload", content=png, headers={"content-type": "image/png"})
    multipart = await client.post("/api/v1/predict/upload", files={"file": ("d.png", png, "image/png")})
    b64 = await client.post(
        "/api/v1/predict", json={"image_base64": "data:image/png;base64," + base64.b64encode(png).decode()}
    )
    bodies = [r.json() for r in (raw, multipart, b64)]
    assert [r.status_code for r in (raw, multipart, b64)] == [200, 200, 200]
    assert {b["predictions"][0]["label"] for b in bodies} == {str(digits[1][3])}
    for body in bodies:
        assert body["model_name"] == "digits" and body["model_version"] == "1"
        assert len(body["predictions"]) == 5
        confidences = [p["confidence"] for p in body["predictions"]]
        assert confidences == sorted(confidences, reverse=True)
        assert all(0 <= c <= 1 for c in confidences)


async def test_top_k_limits_the_number_of_predictions(client: httpx.AsyncClient, digit_pngs: list[bytes]) -> None:
    response = await client.post(
        "/api/v1/predict/upload?top_k=2", content=digit_pngs[0], headers={"content-type": "image/png"}
    )
    assert len(response.json()["predictions"]) == 2


async def test_embed_returns_an_l2_normalised_penultimate_feature_vector(
    client: httpx.AsyncClient, digit_pngs: list[bytes]
) -> None:
    response = await client.post("/api/v1/embed", json={"image_base64": base64.b64encode(digit_pngs[0]).decode()})
    body = response.json()
    assert response.status_code == 200
    assert body["dim"] == 64 == len(body["embedding"])
    assert abs(float(np.linalg.norm(body["embedding"])) - 1.0) < 1e-5
    same = await client.post("/api/v1/embed", json={"image_base64": base64.b64encode(digit_pngs[0]).decode()})
    assert np.allclose(same.json()["embedding"], body["embedding"], atol=1e-6)


async def test_the_documented_request_examples_classify_the_digit_they_show(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
    example = schema["PredictionRequest"]["examples"][0]
    response = await client.post("/api/v1/predict", json=example)
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "3"
    batch = await client.post("/api/v1/predict/batch", json=schema["BatchRequest"]["examples"][0])
    assert [r["predictions"][0]["label"] for r in batch.json()["results"]] == ["3", "3"]
