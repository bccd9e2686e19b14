// Wiring: model choice, file picker and drop zone, URL form, results.
import { ApiError, base64Of, listModels, predictFile, predictStream, predictUrl, setApiKey } from "./api.js";
import { pendingCard, showError, showResult } from "./render.js";

// Per /predict/stream request: under the server's default max_batch_items (32) and body cap (10 MB).
const STREAM_MAX_ITEMS = 8;
const STREAM_MAX_BASE64 = 4 * 1024 * 1024;

const $ = (id) => document.getElementById(id);
const ui = {
  settingsForm: $("settings-form"),
  apiKey: $("api-key"),
  model: $("model"),
  version: $("version"),
  topK: $("top-k"),
  modelsStatus: $("models-status"),
  files: $("files"),
  dropZone: $("drop-zone"),
  urlForm: $("url-form"),
  url: $("image-url"),
  results: $("results"),
  progress: $("progress"),
  clear: $("clear"),
};
let catalogue = { default: "", models: [] };
const thumbnails = new Set();

function messageOf(error) {
  return error instanceof ApiError ? error.body : { error: "ERROR", message: String(error?.message || error) };
}

function fillVersions() {
  const name = ui.model.value;
  ui.version.replaceChildren(new Option("any (traffic split)", ""));
  for (const m of catalogue.models.filter((entry) => entry.name === name)) {
    ui.version.append(new Option(m.loaded ? m.version : `${m.version} (${m.state || "not loaded"})`, m.version));
  }
}

async function loadModels() {
  ui.modelsStatus.textContent = "Loading models…";
  try {
    catalogue = await listModels();
  } catch (error) {
    const body = messageOf(error);
    ui.modelsStatus.textContent =
      body.error === "UNAUTHORIZED" ? `Enter the API key: ${body.message}` : `Cannot list models: ${body.message}`;
    ui.modelsStatus.dataset.state = "error";
    return;
  }
  const names = [...new Set(catalogue.models.map((m) => m.name))];
  ui.model.replaceChildren(...names.map((name) => new Option(name, name, false, name === catalogue.default)));
  fillVersions();
  ui.modelsStatus.dataset.state = "ok";
  ui.modelsStatus.textContent = `${names.length} model${names.length === 1 ? "" : "s"} available.`;
}

function options() {
  return { model: ui.model.value, version: ui.version.value, topK: Number(ui.topK.value) };
}

function validTopK() {
  if (ui.topK.checkValidity()) return true;
  ui.topK.reportValidity();
  return false;
}

/** New cards go on top, in the order given. */
function addCards(items) {
  const cards = items.map(pendingCard);
  ui.results.prepend(...cards);
  return cards;
}

function report(done, failed, total) {
  ui.progress.textContent =
    done < total ? `${done} of ${total} done…` : `${total} done${failed ? `, ${failed} failed` : ""}.`;
}

async function classifyOne(card, run) {
  try {
    showResult(card, await run());
    return true;
  } catch (error) {
    showError(card, messageOf(error));
    return false;
  }
}

/** Groups of files for one stream request each, by count and by encoded size. */
function chunks(entries) {
  const groups = [];
  let current = [];
  let size = 0;
  for (const entry of entries) {
    const cost = Math.ceil(entry.file.size / 3) * 4;
    if (current.length && (current.length >= STREAM_MAX_ITEMS || size + cost > STREAM_MAX_BASE64)) {
      groups.push(current);
      current = [];
      size = 0;
    }
    current.push(entry);
    size += cost;
  }
  if (current.length) groups.push(current);
  return groups;
}

async function streamGroup(group, opts, tally) {
  let images;
  try {
    images = await Promise.all(group.map(async ({ file }) => ({ image_base64: await base64Of(file) })));
  } catch (error) {
    for (const { card } of group) showError(card, messageOf(error));
    tally.failed += group.length;
    tally.done += group.length;
    return;
  }
  const pending = new Set(group.map((_, index) => index));
  try {
    for await (const event of predictStream(images, opts)) {
      const entry = group[event.index];
      if (!entry || !pending.delete(event.index)) continue;
      if (event.error) {
        showError(entry.card, event.error);
        tally.failed += 1;
      } else {
        showResult(entry.card, event);
      }
      tally.done += 1;
      report(tally.done, tally.failed, tally.total);
    }
  } catch (error) {
    for (const index of pending) showError(group[index].card, messageOf(error));
    tally.failed += pending.size;
    tally.done += pending.size;
  }
}

async function classifyFiles(fileList) {
  const files = [...fileList];
  if (!files.length || !validTopK()) return;
  const opts = options();
  const cards = addCards(
    files.map((file) => {
      const thumbnail = URL.createObjectURL(file);
      thumbnails.add(thumbnail);
      return { name: file.name || "image", thumbnail };
    }),
  );
  const entries = files.map((file, index) => ({ file, card: cards[index] }));
  const tally = { done: 0, failed: 0, total: entries.length };
  report(0, 0, tally.total);
  if (entries.length === 1) {
    const [{ file, card }] = entries;
    const ok = await classifyOne(card, () => predictFile(file, opts));
    report(1, ok ? 0 : 1, 1);
    return;
  }
  for (const group of chunks(entries)) {
    await streamGroup(group, opts, tally);
  }
  report(tally.done, tally.failed, tally.total);
}

async function classifyUrl(event) {
  event.preventDefault();
  const url = ui.url.value.trim();
  if (!ui.url.checkValidity() || !/^https?:\/\//i.test(url)) {
    ui.url.setCustomValidity("Enter an http:// or https:// URL.");
    ui.url.reportValidity();
    ui.url.setCustomValidity("");
    return;
  }
  if (!validTopK()) return;
  const [card] = addCards([{ name: url, thumbnail: null }]);
  report(0, 0, 1);
  const ok = await classifyOne(card, () => predictUrl(url, options()));
  report(1, ok ? 0 : 1, 1);
}

function clearResults() {
  for (const url of thumbnails) URL.revokeObjectURL(url);
  thumbnails.clear();
  ui.results.replaceChildren();
  ui.progress.textContent = "";
}

ui.apiKey.addEventListener("input", () => setApiKey(ui.apiKey.value));
ui.apiKey.addEventListener("change", loadModels);
ui.settingsForm.addEventListener("submit", (event) => {
  // Enter in a field: use the key now.
  event.preventDefault();
  setApiKey(ui.apiKey.value);
  loadModels();
});
ui.model.addEventListener("change", fillVersions);
ui.files.addEventListener("change", () => {
  const picked = ui.files.files;
  classifyFiles(picked).finally(() => {
    // The same file again should classify again.
    ui.files.value = "";
  });
});
for (const type of ["dragenter", "dragover"]) {
  ui.dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    ui.dropZone.classList.add("dragging");
  });
}
for (const type of ["dragleave", "drop"]) {
  ui.dropZone.addEventListener(type, () => ui.dropZone.classList.remove("dragging"));
}
ui.dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  classifyFiles(event.dataTransfer?.files || []);
});
ui.urlForm.addEventListener("submit", classifyUrl);
ui.clear.addEventListener("click", clearResults);

loadModels();
