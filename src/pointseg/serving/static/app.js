// The pointseg page: send one image to POST /predict, show the coloured mask over it, a legend of
// class shares and download buttons. The HTTP contract is in serving/CONTRACT.md.
"use strict";

const TIFF_NAME = /\.tiff?$/i;
const MB = 1024 * 1024;

// What a status code of /predict or /preview means, in words (api.js adds the server's own detail).
const PREDICT_STATUS_WORDS = {
  ...STATUS_WORDS,
  400: "The upload was empty or missing",
  422: "This image could not be read",
  504: "The prediction took too long",
};

const page = {
  dropZone: document.getElementById("drop-zone"),
  fileInput: document.getElementById("file-input"),
  sizeLimit: document.getElementById("size-limit"),
  error: document.getElementById("error"),
  status: document.getElementById("status"),
  result: document.getElementById("result"),
  inputImage: document.getElementById("input-image"),
  overlay: document.getElementById("overlay"),
  caption: document.getElementById("caption"),
  opacity: document.getElementById("opacity"),
  opacityValue: document.getElementById("opacity-value"),
  legend: document.getElementById("legend"),
  modelInfo: document.getElementById("model-info"),
  downloadPng: document.getElementById("download-png"),
  downloadGeotiff: document.getElementById("download-geotiff"),
};

const state = {
  model: null, // GET /model
  file: null, // the File the shown result was predicted from
  pngBlob: null,
  busy: false,
  objectUrls: [],
};

function formatSize(bytes) {
  const mb = bytes / MB;
  if (mb < 1) return `${Math.ceil(bytes / 1024)} kB`;
  return `${mb < 10 ? mb.toFixed(1) : Math.round(mb)} MB`;
}

function stem(name) {
  return name.replace(/\.[^.]*$/, "") || "image";
}

// ---- messages -------------------------------------------------------------------------------------

function showError(message) {
  page.error.textContent = message;
}

function clearError() {
  page.error.textContent = "";
}

function setStatus(message) {
  page.status.textContent = message;
}

function postFile(url, file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return request(url, { method: "POST", body: form }, PREDICT_STATUS_WORDS);
}

// ---- model details and legend -------------------------------------------------------------------

async function loadModel() {
  for (;;) {
    try {
      const response = await request("model");
      state.model = await response.json();
      break;
    } catch (error) {
      page.modelInfo.textContent = `Waiting for the model: ${error.message}`;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  const model = state.model;
  const parts = [`${model.arch} · ${model.encoder}`];
  if (typeof model.val_miou === "number") parts.push(`val mIoU ${model.val_miou.toFixed(3)}`);
  if (model.supervision) parts.push(model.points ? `${model.supervision}: ${model.points}` : model.supervision);
  page.modelInfo.textContent = `Model: ${parts.join(" · ")}`;
  const maxBytes = model.limits && model.limits.max_upload_bytes;
  if (maxBytes) page.sizeLimit.textContent = `, up to ${formatSize(maxBytes)}`;
  renderLegend(null);
}

/** List every class with its colour; with `shares` ({class: fraction}) add each class's share. */
function renderLegend(shares) {
  if (!state.model) return;
  const items = state.model.classes.map((name, index) => {
    const item = document.createElement("li");
    item.dataset.class = name;
    item.dataset.testid = "legend-item";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = state.model.colors[index];
    const label = document.createElement("span");
    label.className = "class-name";
    label.textContent = displayName(name);
    const share = document.createElement("span");
    share.className = "share";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    if (shares) {
      const value = shares[name] || 0;
      share.textContent = formatShare(value);
      item.classList.toggle("absent", value === 0);
      bar.style.setProperty("--share", String(value));
      bar.style.setProperty("--color", state.model.colors[index]);
    } else {
      share.textContent = "–";
      share.setAttribute("aria-label", "no prediction yet");
    }
    item.append(swatch, label, share, bar);
    return item;
  });
  page.legend.replaceChildren(...items);
}

// ---- prediction -----------------------------------------------------------------------------------

function setBusy(busy) {
  state.busy = busy;
  page.dropZone.disabled = busy;
  page.fileInput.disabled = busy;
  page.downloadPng.disabled = busy || !state.pngBlob;
  page.downloadGeotiff.disabled = busy || !state.pngBlob;
  page.dropZone.setAttribute("aria-busy", String(busy));
  document.body.classList.toggle("busy", busy);
}

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.objectUrls.push(url);
  return url;
}

function releaseObjectUrls() {
  state.objectUrls.forEach((url) => URL.revokeObjectURL(url));
  state.objectUrls = [];
}

/** Resolve once `img` has decoded `src`; reject if the browser cannot show it. */
function loadImage(img, src) {
  img.src = src;
  return img.decode();
}

/** Show the input: PNG/JPEG straight from the file; TIFF (or anything the browser fails on) via /preview. */
async function showInput(file) {
  if (!TIFF_NAME.test(file.name) && file.type !== "image/tiff") {
    try {
      await loadImage(page.inputImage, objectUrl(file));
      return;
    } catch {
      // The browser cannot decode it (for example a TIFF with another extension): ask the server.
    }
  }
  const response = await postFile("preview", file);
  await loadImage(page.inputImage, objectUrl(await response.blob()));
}

function validate(file) {
  const maxBytes = state.model && state.model.limits && state.model.limits.max_upload_bytes;
  if (maxBytes && file.size > maxBytes) {
    return `This file is too large: ${file.name} is ${formatSize(file.size)}; `
      + `the server accepts at most ${formatSize(maxBytes)}.`;
  }
  if (file.size === 0) return `${file.name} is empty; choose an image file.`;
  return null;
}

async function segment(file) {
  if (state.busy) return;
  clearError();
  const problem = validate(file);
  if (problem) {
    showError(problem);
    return;
  }
  releaseObjectUrls();
  state.pngBlob = null;
  state.file = null;
  page.result.hidden = true;
  page.overlay.hidden = true;
  renderLegend(null);
  setBusy(true);
  setStatus(`Predicting ${file.name}…`);
  const started = performance.now();
  // Both requests run together: the input shows while the model works, and the prediction's error
  // (if any) is the one worth showing.
  const prediction = postFile("predict", file);
  const input = showInput(file).then(() => {
    if (!state.busy) return; // the prediction failed first
    page.inputImage.alt = `Input image ${file.name}`;
    page.caption.textContent = `${file.name} · ${page.inputImage.naturalWidth} × ${page.inputImage.naturalHeight} px`;
    page.result.hidden = false;
  });
  try {
    const response = await prediction;
    const sharesHeader = response.headers.get("X-Pointseg-Shares");
    const shares = sharesHeader ? JSON.parse(sharesHeader) : null;
    const pngBlob = await response.blob();
    await Promise.all([input, loadImage(page.overlay, objectUrl(pngBlob))]);
    state.pngBlob = pngBlob;
    state.file = file;
    renderLegend(shares);
    page.overlay.alt = `Predicted land-cover classes for ${file.name}`;
    page.overlay.hidden = false;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(`Predicted ${file.name} in ${seconds} s.`);
  } catch (error) {
    input.catch(() => {}); // a failed preview says no more than the prediction's error
    page.result.hidden = true;
    showError(error instanceof ApiError ? error.message : `Something went wrong: ${error.message}`);
    setStatus("");
  } finally {
    setBusy(false);
  }
}

// ---- downloads ------------------------------------------------------------------------------------

page.downloadPng.addEventListener("click", () => {
  if (state.pngBlob) saveBlob(state.pngBlob, `${stem(state.file.name)}_classes.png`);
});

page.downloadGeotiff.addEventListener("click", async () => {
  if (!state.file || state.busy) return;
  clearError();
  const button = page.downloadGeotiff;
  const label = button.textContent;
  setBusy(true);
  button.textContent = "Preparing GeoTIFF…";
  setStatus(`Predicting ${state.file.name} as a GeoTIFF…`);
  try {
    const response = await postFile("predict?format=geotiff", state.file);
    const filename = dispositionFilename(response.headers.get("Content-Disposition"))
      || `${stem(state.file.name)}_classes.tif`;
    saveBlob(await response.blob(), filename);
    setStatus(`Saved ${filename}.`);
  } catch (error) {
    showError(error.message);
    setStatus("");
  } finally {
    button.textContent = label;
    setBusy(false);
  }
});

// ---- choosing a file ------------------------------------------------------------------------------

page.dropZone.addEventListener("click", () => page.fileInput.click());

page.fileInput.addEventListener("change", () => {
  const file = page.fileInput.files[0];
  page.fileInput.value = ""; // choosing the same file again still fires `change`
  if (file) segment(file);
});

["dragenter", "dragover"].forEach((type) => {
  page.dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    if (!state.busy) page.dropZone.classList.add("dragging");
  });
});
["dragleave", "drop"].forEach((type) => {
  page.dropZone.addEventListener(type, () => page.dropZone.classList.remove("dragging"));
});
page.dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  const files = event.dataTransfer ? event.dataTransfer.files : [];
  if (files.length) segment(files[0]); // one image at a time: the first of several dropped
});
// A file dropped beside the drop zone would otherwise replace the page with the file.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

function applyOpacity() {
  const value = Number(page.opacity.value);
  page.overlay.style.opacity = String(value / 100);
  page.opacityValue.textContent = `${value} %`;
}

page.opacity.addEventListener("input", applyOpacity);
applyOpacity();
loadModel();

// A server started with --workspace also serves the labelling page: link to it.
fetch("/label", { method: "HEAD" }).then((response) => {
  document.getElementById("label-link").hidden = !response.ok;
}, () => {});
