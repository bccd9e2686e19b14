// Result cards. Text goes in through textContent only, never as HTML, so nothing a server or a
// file name says can become markup.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(confidence) {
  const value = confidence * 100;
  if (value > 0 && value < 0.1) return "<0.1%";
  return `${value.toFixed(1)}%`;
}

/** A card waiting for its result: a thumbnail (files) or the URL, and a "waiting" line. */
export function pendingCard({ name, thumbnail }) {
  const card = el("li", "result");
  card.dataset.state = "pending";
  const figure = el("div", "thumb");
  if (thumbnail) {
    const img = el("img");
    img.alt = "";
    // Not an image the browser can show (it may still be one the server reads, e.g. TIFF).
    img.addEventListener("error", () => img.replaceWith(el("span", "thumb-url", "file")), { once: true });
    img.src = thumbnail;
    figure.append(img);
  } else {
    figure.append(el("span", "thumb-url", "URL"));
  }
  const body = el("div", "result-body");
  body.append(el("h3", "result-name", name), el("p", "waiting", "Classifying…"));
  card.append(figure, body);
  return card;
}

function bars(predictions) {
  const list = el("ol", "predictions");
  for (const p of predictions) {
    const row = el("li", "prediction");
    row.dataset.label = p.label;
    const fill = el("span", "fill");
    // A CSSOM write, not a style attribute: allowed by the page's style-src 'self'.
    fill.style.inlineSize = `${Math.max(0, Math.min(1, p.confidence)) * 100}%`;
    const bar = el("span", "bar");
    bar.setAttribute("aria-hidden", "true");
    bar.append(fill);
    row.append(el("span", "label", p.label), bar, el("span", "pct", percent(p.confidence)));
    list.append(row);
  }
  return list;
}

function meta(pairs) {
  const list = el("dl", "meta");
  for (const [term, value, className] of pairs) {
    const dd = el("dd", className, value);
    list.append(el("dt", "", term), dd);
  }
  return list;
}

export function showResult(card, result) {
  card.dataset.state = "done";
  const body = card.querySelector(".result-body");
  body.querySelector(".waiting")?.remove();
  const top = result.predictions[0];
  if (top) body.append(el("p", "top", `${top.label} (${percent(top.confidence)})`));
  body.append(
    bars(result.predictions),
    meta([
      ["model", `${result.model_name} v${result.model_version}`, "model"],
      ["inference", `${result.inference_time_ms.toFixed(1)} ms`, "time"],
      ["request ID", result.request_id, "request-id"],
    ]),
  );
}

export function showError(card, body) {
  card.dataset.state = "error";
  const container = card.querySelector(".result-body");
  container.querySelector(".waiting")?.remove();
  const message = el("p", "error-message", body.message || "request failed");
  const pairs = [["error", body.error || "ERROR", "error-code"]];
  if (body.request_id) pairs.push(["request ID", body.request_id, "request-id"]);
  container.append(message, meta(pairs));
}
