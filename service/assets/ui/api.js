// The HTTP calls the page makes. The API key lives in this module's memory only: never in
// localStorage, sessionStorage or a cookie, so it is gone when the tab is.
import { readEvents } from "./sse.js";

let apiKey = "";

export function setApiKey(key) {
  apiKey = key.trim();
}

/** A non-2xx answer (its ErrorBody), or a failure to reach the server at all. */
export class ApiError extends Error {
  constructor(body, status) {
    super(body.message);
    this.body = body;
    this.status = status;
  }
}

function headers(extra = {}) {
  const result = { Accept: "application/json", ...extra };
  if (apiKey) result.Authorization = `Bearer ${apiKey}`;
  return result;
}

function query({ model, version, topK }, withTopK) {
  const params = new URLSearchParams();
  if (model) params.set("model", model);
  if (version) params.set("model_version", version);
  if (withTopK) params.set("top_k", String(topK));
  const text = params.toString();
  return text ? `?${text}` : "";
}

async function errorFrom(response) {
  let body = null;
  if ((response.headers.get("content-type") || "").includes("json")) {
    body = await response.json().catch(() => null);
  }
  if (!body || typeof body.message !== "string") {
    body = {
      error: `HTTP_${response.status}`,
      message: `${response.status} ${response.statusText}`.trim(),
      request_id: response.headers.get("x-request-id") || "",
    };
  }
  return new ApiError(body, response.status);
}

async function call(path, init) {
  let response;
  try {
    response = await fetch(path, { ...init, credentials: "omit", cache: "no-store" });
  } catch (error) {
    // fetch() also throws here when a header value is not Latin-1 (a pasted key with odd characters).
    throw new ApiError({ error: "NETWORK_ERROR", message: `cannot reach the server: ${error.message}` }, 0);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function listModels() {
  return (await call("/api/v1/models", { headers: headers() })).json();
}

/** One file as a multipart upload: no base64 inflation, and the server judges the bytes. */
export async function predictFile(file, options) {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await call(`/api/v1/predict/upload${query(options, true)}`, {
    method: "POST",
    headers: headers(),
    body: form,
  });
  return response.json();
}

export async function predictUrl(url, options) {
  const response = await call(`/api/v1/predict${query(options, false)}`, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ image_url: url, top_k: options.topK }),
  });
  return response.json();
}

/** Several images in one /predict/stream request; yields {index, ...result} or {index, error}. */
export async function* predictStream(images, options) {
  const response = await call(`/api/v1/predict/stream${query(options, false)}`, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ images, top_k: options.topK }),
  });
  for await (const event of readEvents(response.body)) {
    if (event.data === "[DONE]") return;
    yield JSON.parse(event.data);
  }
  throw new ApiError({ error: "STREAM_ENDED", message: "the stream ended before all results arrived" }, 0);
}

/** The file's bytes as bare base64 (the data: URL's prefix names the browser's guess of its type). */
export function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).slice(String(reader.result).indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
