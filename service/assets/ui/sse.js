// Server-Sent Events from a fetch() body. EventSource cannot POST, and /predict/stream is a POST.
// Parsing follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; "data" lines are
// joined with "\n"; lines starting with ":" are comments (sse-starlette's keep-alive pings).

export class SseParser {
  #buffer = "";
  #data = [];
  #event = "";
  #id = "";

  /** Feed decoded text; returns the events it completed, in order. */
  push(text) {
    this.#buffer += text;
    const events = [];
    const lineEnd = /\r\n|\r|\n/g;
    let start = 0;
    let match;
    while ((match = lineEnd.exec(this.#buffer)) !== null) {
      // A CR at the very end may be the first half of a CRLF split across chunks.
      if (match[0] === "\r" && match.index === this.#buffer.length - 1) break;
      const event = this.#line(this.#buffer.slice(start, match.index));
      if (event) events.push(event);
      start = lineEnd.lastIndex;
    }
    this.#buffer = this.#buffer.slice(start);
    return events;
  }

  /** The stream ended: a pending CR was a line end; an event without its blank line is dropped. */
  end() {
    return this.#buffer.endsWith("\r") ? this.push("\n") : [];
  }

  #line(line) {
    if (line === "") {
      if (this.#data.length === 0) {
        this.#event = "";
        return null;
      }
      const event = { event: this.#event || "message", data: this.#data.join("\n"), id: this.#id };
      this.#data = [];
      this.#event = "";
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id") this.#id = value;
    return null;
  }
}

/** Yields each event of a ReadableStream of bytes (a fetch Response body). */
export async function* readEvents(body) {
  const parser = new SseParser();
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* parser.push(value);
    }
    yield* parser.end();
  } finally {
    // Also when the consumer stops early: cancelling closes the response, so the server stops too.
    await reader.cancel().catch(() => {});
  }
}
