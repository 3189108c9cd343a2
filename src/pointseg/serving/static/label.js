// The labelling page (/label): open an image of the workspace, define classes, click points, train,
// look at the map over the image, correct and retrain, export. The JSON API it uses is described in
// serving/CONTRACT.md; api.js holds the request helpers.
"use strict";

// ---- geometry: screen <-> full-resolution pixel (pure; also used by the tests through window) ------

/**
 * Where a screen position falls on the full-resolution image.
 *
 * @param {{scale: number, offsetX: number, offsetY: number}} view - one image pixel is `scale` CSS px
 *   wide; the image's top-left corner is at (offsetX, offsetY) CSS px from the canvas's top-left.
 * @param {number} sx - CSS px from the canvas's left edge.
 * @param {number} sy - CSS px from the canvas's top edge.
 * @returns {{x: number, y: number, row: number, col: number}} image coordinates (x to the right, y down,
 *   in pixels, 0 at the image's corner) and the pixel that contains them.
 */
function screenToPixel(view, sx, sy) {
  const x = (sx - view.offsetX) / view.scale;
  const y = (sy - view.offsetY) / view.scale;
  return { x, y, row: Math.floor(y), col: Math.floor(x) };
}

/** The screen position (CSS px) of image coordinates (x, y); a pixel's centre is (col + 0.5, row + 0.5). */
function pixelToScreen(view, x, y) {
  return { sx: view.offsetX + x * view.scale, sy: view.offsetY + y * view.scale };
}

/** Map coordinates of image coordinates through an affine geotransform [a, b, c, d, e, f] (rasterio's order). */
function pixelToMap(transform, x, y) {
  const [a, b, c, d, e, f] = transform;
  return { mapX: a * x + b * y + c, mapY: d * x + e * y + f };
}

/** The view after zooming by `factor` around the screen point (sx, sy), which stays over the same pixel. */
function zoomedView(view, factor, sx, sy) {
  const scale = view.scale * factor;
  return {
    scale,
    offsetX: sx - (sx - view.offsetX) * factor,
    offsetY: sy - (sy - view.offsetY) * factor,
  };
}

// ---- page elements and state ----------------------------------------------------------------------

const MAX_RENDER_WIDTH = 2048; // the most the server renders in one view.png / map.png
const POINT_RADIUS = 5; // CSS px
const HIT_RADIUS = 8; // CSS px: a press this close to a point takes the point
const DRAG_THRESHOLD = 4; // CSS px of movement that turn a press into a drag
const MAX_SCALE = 64; // CSS px per image pixel
const POLL_MS = 1000;
const WINDOW_DELAY_MS = 200;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];

const $ = (id) => document.getElementById(id);
const page = {
  projectInfo: $("project-info"),
  openForm: $("open-form"),
  projectName: $("project-name"),
  imageSelect: $("image-select"),
  uploadInput: $("upload-input"),
  projects: $("projects"),
  projectsNote: $("projects-note"),
  error: $("error"),
  status: $("status"),
  zoomIn: $("zoom-in"),
  zoomOut: $("zoom-out"),
  zoomFit: $("zoom-fit"),
  zoomValue: $("zoom-value"),
  cursor: $("cursor"),
  viewport: $("viewport"),
  canvas: $("canvas"),
  classes: $("classes"),
  classForm: $("class-form"),
  className: $("class-name"),
  classColor: $("class-color"),
  classSet: $("class-set"),
  loadClassSet: $("load-class-set"),
  epochs: $("epochs"),
  train: $("train"),
  cancel: $("cancel"),
  progress: $("progress"),
  job: $("job"),
  runs: $("runs"),
  runSelect: $("run-select"),
  opacity: $("opacity"),
  opacityValue: $("opacity-value"),
  showMap: $("show-map"),
  showConfidence: $("show-confidence"),
  legend: $("legend"),
  exportPoints: $("export-points"),
  exportMap: $("export-map"),
  exportPolygons: $("export-polygons"),
  exportCheckpoint: $("export-checkpoint"),
};

const state = {
  project: null, // GET /api/projects/{id}
  points: new Map(), // point id -> GeoJSON feature
  activeClass: null, // class name
  selected: null, // point id
  undo: [], // {kind: "add", id} | {kind: "delete", feature} | {kind: "move", id, row, col}
  view: { scale: 1, offsetX: 0, offsetY: 0 },
  layers: {}, // kind ("view" | "map" | "confidence") -> {whole, window}: {bitmap, x0, y0, x1, y1}
  run: null, // the run whose map is shown
  shares: null, // {class: fraction} of the shown run
  job: null,
  classSets: [],
  generation: 0, // bumped when another project opens: answers for the previous one are dropped
  drag: null,
  pointQueue: Promise.resolve(),
};

// ---- messages -------------------------------------------------------------------------------------

function showError(error) {
  page.error.textContent = error instanceof ApiError ? error.message : `Something went wrong: ${error.message}`;
}

function clearError() {
  page.error.textContent = "";
}

function setStatus(message) {
  page.status.textContent = message;
}

/** Run `action`, showing what it throws; never lets a failure pass silently. */
async function attempt(action) {
  try {
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ["th", "st", "nd", "rd"][n % 10] || "th";
  return `${n}${suffix}`;
}

function formatSeconds(seconds) {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  return `${Math.round(seconds / 60)} min`;
}

function percent(fraction) {
  return `${(fraction * 100).toFixed(1)} %`;
}

function projectUrl(suffix = "") {
  return `api/projects/${encodeURIComponent(state.project.id)}${suffix}`;
}

/** A query string from an object, leaving out null/undefined values. */
function query(params) {
  const entries = Object.entries(params).filter(([, value]) => value !== null && value !== undefined);
  return entries.length ? `?${new URLSearchParams(entries)}` : "";
}

// ---- opening images and projects ----------------------------------------------------------------

async function loadImages() {
  const { images } = await (await request("api/images")).json();
  const options = images.map((image) => {
    const option = document.createElement("option");
    option.value = image.path;
    option.textContent = `${image.path} (${image.width} × ${image.height}, ${image.bands} band${image.bands === 1 ? "" : "s"})`;
    return option;
  });
  if (!options.length) {
    const none = new Option("no images in the workspace", "");
    none.disabled = true;
    options.push(none);
  }
  page.imageSelect.replaceChildren(...options);
}

async function loadProjects() {
  const { projects } = await (await request("api/projects")).json();
  page.projects.replaceChildren(...projects.map((project) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.project = project.id;
    button.textContent = project.name || project.id;
    button.classList.toggle("current", Boolean(state.project && state.project.id === project.id));
    button.addEventListener("click", () => openProject(project.id));
    const about = document.createElement("span");
    about.className = "project-about";
    about.textContent = projectAbout(project.image.path, project.points_per_class || {});
    item.append(button, about);
    return item;
  }));
  page.projectsNote.textContent = projects.length ? "" : "No projects yet: open an image to start one.";
}

/** A project's line in the list: its image and number of points. */
function projectAbout(imagePath, pointsPerClass) {
  const points = Object.values(pointsPerClass).reduce((sum, n) => sum + n, 0);
  return `${imagePath} · ${points} point${points === 1 ? "" : "s"}`;
}

async function loadClassSets() {
  const { class_sets: sets } = await (await request("api/class-sets")).json();
  state.classSets = sets;
  page.classSet.replaceChildren(
    new Option("Load a class set…", ""),
    ...sets.map((set, index) => new Option(`${set.source} (${set.classes.length} classes)`, String(index))),
  );
}

function nameFrom(path) {
  return (path.split("/").pop().replace(/\.[^.]*$/, "") || "project").slice(0, 100); // the API takes 1-100 characters
}

async function createProject(body, description) {
  clearError();
  setStatus(`Opening ${description}…`);
  const project = await (await request("api/projects", body)).json();
  page.projectName.value = "";
  await openProject(project.id);
}

page.openForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const path = page.imageSelect.value;
  if (!path) {
    showError(new Error("choose an image of the workspace first, or upload one"));
    return;
  }
  const name = page.projectName.value.trim() || nameFrom(path);
  attempt(() => createProject(
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name, image: path }) },
    path,
  ));
});

function upload(file) {
  const form = new FormData();
  form.append("name", page.projectName.value.trim() || nameFrom(file.name));
  form.append("file", file, file.name);
  attempt(() => createProject({ method: "POST", body: form }, file.name));
}

page.uploadInput.addEventListener("change", () => {
  const file = page.uploadInput.files[0];
  page.uploadInput.value = ""; // choosing the same file again still fires `change`
  if (file) upload(file);
});

// An image dropped on the viewer starts a project; dropped anywhere else it must not replace the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());
page.viewport.addEventListener("drop", (event) => {
  const files = event.dataTransfer ? event.dataTransfer.files : [];
  if (files.length) upload(files[0]); // one image at a time: the first of several dropped
});

async function openProject(id) {
  clearError();
  stopPolling();
  const generation = ++state.generation;
  setStatus("Opening the project…");
  const project = await attempt(async () => (await request(`api/projects/${encodeURIComponent(id)}`)).json());
  if (!project || generation !== state.generation) {
    if (!project) setStatus("");
    return;
  }
  state.project = project;
  state.points = new Map();
  state.undo = [];
  state.selected = null;
  state.layers = {};
  state.run = null;
  state.shares = null;
  state.job = null;
  state.activeClass = project.classes.length ? project.classes[0].name : null;
  history.replaceState(null, "", `#project=${encodeURIComponent(project.id)}`);
  document.body.classList.add("has-project");
  page.projectInfo.textContent = `${project.name} · ${project.image.path} · ${project.image.width} × `
    + `${project.image.height} px${project.image.crs ? ` · ${project.image.crs}` : ""}`;
  fitView();
  renderProject();
  await attempt(async () => {
    const [collection, whole] = await Promise.all([
      (await request(projectUrl("/points"))).json(),
      fetchLayer("view", wholeWindow(), null),
    ]);
    if (generation !== state.generation) return;
    collection.features.forEach((feature) => state.points.set(featureId(feature), feature));
    state.layers.view = { whole, window: null };
    renderClasses();
    setStatus(`Opened ${project.name}: ${state.points.size} points.`);
    scheduleDraw();
  });
  if (generation !== state.generation) return;
  const runs = project.runs || [];
  if (runs.length) await showRun(runs[runs.length - 1].n);
  if (project.job && (project.job.state === "queued" || project.job.state === "running")) {
    state.job = project.job;
    renderJob();
    pollJob();
  }
  attempt(loadProjects);
}

/** Fetch the project again (after training or a class change) and show what changed. */
async function refreshProject() {
  const generation = state.generation;
  const project = await (await request(projectUrl())).json();
  if (generation !== state.generation) return;
  state.project = project;
  renderProject();
}

function renderProject() {
  renderClasses();
  renderRuns();
  renderLegend();
  renderExports();
  renderTrainButton();
}

// ---- layers: the image, the map and the confidence, whole and as a sharper window ---------------

/** The PNG width for a window of `width` x `height` image pixels: at most `wanted`, no side over the server's limit. */
function renderWidth(width, height, wanted) {
  return Math.max(1, Math.min(wanted, width, Math.floor(MAX_RENDER_WIDTH * Math.min(1, width / height))));
}

function wholeWindow() {
  const { width, height } = state.project.image;
  return { x0: 0, y0: 0, x1: width, y1: height, width: renderWidth(width, height, MAX_RENDER_WIDTH) };
}

/** GET {kind}.png of `area` (a window of the full-resolution image); its bitmap, window and class shares. */
async function fetchLayer(kind, area, run) {
  const url = projectUrl(`/${kind}.png${query({ ...area, run })}`);
  const response = await request(url);
  const sharesHeader = response.headers.get("X-Pointseg-Shares");
  const bitmap = await createImageBitmap(await response.blob());
  return { bitmap, ...area, shares: sharesHeader ? JSON.parse(sharesHeader) : null };
}

async function showRun(run) {
  const generation = state.generation;
  state.run = run;
  delete state.layers.map;
  delete state.layers.confidence;
  page.canvas.dataset.mapRun = "";
  renderRuns();
  renderExports();
  await attempt(async () => {
    const whole = await fetchLayer("map", wholeWindow(), run);
    if (generation !== state.generation || state.run !== run) return;
    state.layers.map = { whole, window: null };
    state.shares = whole.shares;
    page.canvas.dataset.mapRun = String(run);
    renderLegend();
    scheduleDraw();
    requestWindows();
  });
  if (page.showConfidence.checked) await loadConfidence();
}

async function loadConfidence() {
  if (state.run === null || state.layers.confidence) return;
  const generation = state.generation;
  const run = state.run;
  await attempt(async () => {
    const whole = await fetchLayer("confidence", wholeWindow(), run);
    if (generation !== state.generation || state.run !== run) return;
    state.layers.confidence = { whole, window: null };
    page.canvas.dataset.confidenceRun = String(run);
    scheduleDraw();
    requestWindows();
  });
}

let windowTimer = null;

/** After the view settles, ask for sharper windows of the layers shown where the whole rendering is too coarse. */
function requestWindows() {
  clearTimeout(windowTimer);
  windowTimer = setTimeout(fetchWindows, WINDOW_DELAY_MS);
}

function visibleWindow() {
  const { width, height } = state.project.image;
  const { clientWidth, clientHeight } = page.canvas;
  const topLeft = screenToPixel(state.view, 0, 0);
  const bottomRight = screenToPixel(state.view, clientWidth, clientHeight);
  const x0 = Math.max(0, Math.floor(topLeft.x));
  const y0 = Math.max(0, Math.floor(topLeft.y));
  const x1 = Math.min(width, Math.ceil(bottomRight.x));
  const y1 = Math.min(height, Math.ceil(bottomRight.y));
  if (x1 <= x0 || y1 <= y0) return null;
  const wanted = Math.ceil((x1 - x0) * state.view.scale * (window.devicePixelRatio || 1));
  return { x0, y0, x1, y1, width: renderWidth(x1 - x0, y1 - y0, wanted) };
}

function fetchWindows() {
  if (!state.project) return;
  const area = visibleWindow();
  const generation = state.generation;
  const view = { ...state.view };
  for (const kind of ["view", "map", "confidence"]) {
    const layer = state.layers[kind];
    if (!layer || !area) continue;
    const wholeDetail = layer.whole.bitmap.width / state.project.image.width; // rendered px per image px
    if (area.width <= (area.x1 - area.x0) * wholeDetail) {
      layer.window = null; // the whole rendering is as sharp as this view needs
      continue;
    }
    const run = kind === "view" ? null : state.run;
    fetchLayer(kind, area, run).then((part) => {
      const current = state.layers[kind];
      if (generation !== state.generation || current !== layer || state.view.scale !== view.scale) return;
      if (kind !== "view" && state.run !== run) return;
      layer.window = part;
      scheduleDraw();
    }, showError);
  }
}

// ---- drawing --------------------------------------------------------------------------------------

let drawPending = false;

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    draw();
  });
}

function classColor(name) {
  const found = state.project && state.project.classes.find((item) => item.name === name);
  return found ? found.color : "#888888";
}

function drawLayer(context, layer) {
  for (const part of [layer.whole, layer.window]) {
    if (part) context.drawImage(part.bitmap, part.x0, part.y0, part.x1 - part.x0, part.y1 - part.y0);
  }
}

function draw() {
  const canvas = page.canvas;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  if (!state.project) return;
  const { scale, offsetX, offsetY } = state.view;
  context.save();
  context.translate(offsetX, offsetY);
  context.scale(scale, scale);
  context.imageSmoothingEnabled = scale < 1; // zoomed in: every image pixel a sharp square
  if (state.layers.view) drawLayer(context, state.layers.view);
  if (state.layers.map && page.showMap.checked) {
    context.globalAlpha = Number(page.opacity.value) / 100;
    drawLayer(context, state.layers.map);
    context.globalAlpha = 1;
  }
  if (state.layers.confidence && page.showConfidence.checked) drawLayer(context, state.layers.confidence);
  context.restore();
  context.strokeStyle = "rgba(0, 0, 0, 0.5)";
  context.strokeRect(offsetX, offsetY, state.project.image.width * scale, state.project.image.height * scale);
  for (const [id, feature] of state.points) {
    const moving = state.drag && state.drag.mode === "move" && state.drag.id === id;
    const { row, col } = moving ? state.drag.to : feature.properties;
    const { sx, sy } = pixelToScreen(state.view, col + 0.5, row + 0.5);
    if (sx < -HIT_RADIUS || sy < -HIT_RADIUS || sx > width + HIT_RADIUS || sy > height + HIT_RADIUS) continue;
    context.beginPath();
    context.arc(sx, sy, POINT_RADIUS, 0, 2 * Math.PI);
    context.fillStyle = classColor(feature.properties.class);
    context.fill();
    context.lineWidth = 3; // a dark ring around a light one: seen on any background
    context.strokeStyle = "rgba(0, 0, 0, 0.7)";
    context.stroke();
    context.lineWidth = 1.5;
    context.strokeStyle = "#ffffff";
    context.stroke();
    if (id === state.selected) {
      context.beginPath();
      context.arc(sx, sy, POINT_RADIUS + 3, 0, 2 * Math.PI);
      context.lineWidth = 2;
      context.strokeStyle = "#000000";
      context.stroke();
    }
  }
}

new ResizeObserver(() => {
  scheduleDraw();
  if (state.project) requestWindows();
}).observe(page.viewport);

// ---- zoom and pan ---------------------------------------------------------------------------------

function fitScale() {
  const { width, height } = state.project.image;
  return Math.min(page.canvas.clientWidth / width, page.canvas.clientHeight / height);
}

function setView(view) {
  state.view = view;
  page.zoomValue.textContent = `${Math.round(view.scale * 100)} %`;
  scheduleDraw();
  requestWindows();
}

function fitView() {
  if (!state.project) return;
  const scale = fitScale();
  const { width, height } = state.project.image;
  setView({
    scale,
    offsetX: (page.canvas.clientWidth - width * scale) / 2,
    offsetY: (page.canvas.clientHeight - height * scale) / 2,
  });
}

function zoom(factor, sx, sy) {
  if (!state.project) return;
  const scale = Math.min(MAX_SCALE, Math.max(fitScale() / 2, state.view.scale * factor));
  setView(zoomedView(state.view, scale / state.view.scale, sx, sy));
}

function zoomAtCentre(factor) {
  zoom(factor, page.canvas.clientWidth / 2, page.canvas.clientHeight / 2);
}

page.zoomIn.addEventListener("click", () => zoomAtCentre(2));
page.zoomOut.addEventListener("click", () => zoomAtCentre(0.5));
page.zoomFit.addEventListener("click", fitView);

page.canvas.addEventListener("wheel", (event) => {
  event.preventDefault();
  zoom(Math.exp(-event.deltaY * 0.002), event.offsetX, event.offsetY);
}, { passive: false });

// ---- points ---------------------------------------------------------------------------------------

function featureId(feature) {
  return feature.properties.id ?? feature.id;
}

/** The point drawn nearest to a screen position, within HIT_RADIUS; else null. */
function pointAt(sx, sy) {
  let best = null;
  let bestDistance = HIT_RADIUS;
  for (const [id, feature] of state.points) {
    const { row, col } = feature.properties;
    const spot = pixelToScreen(state.view, col + 0.5, row + 0.5);
    const distance = Math.hypot(spot.sx - sx, spot.sy - sy);
    if (distance <= bestDistance) {
      best = id;
      bestDistance = distance;
    }
  }
  return best;
}

function insideImage(pixel) {
  const { width, height } = state.project.image;
  return pixel.row >= 0 && pixel.col >= 0 && pixel.row < height && pixel.col < width;
}

/** Run point edits one after another, in the order they were made; show what fails. */
function queuePointEdit(edit) {
  const generation = state.generation;
  state.pointQueue = state.pointQueue.then(async () => {
    if (generation !== state.generation) return;
    clearError();
    await attempt(edit);
    renderClasses();
    scheduleDraw();
  });
  return state.pointQueue;
}

async function postPoint(row, col, className) {
  const response = await sendJson(projectUrl("/points"), "POST", { row, col, class: className });
  const feature = await response.json();
  state.points.set(featureId(feature), feature);
  return feature;
}

async function removePoint(id) {
  await request(projectUrl(`/points/${encodeURIComponent(id)}`), { method: "DELETE" });
  state.points.delete(id);
  if (state.selected === id) state.selected = null;
}

async function patchPoint(id, changes) {
  const response = await sendJson(projectUrl(`/points/${encodeURIComponent(id)}`), "PATCH", changes);
  const feature = await response.json();
  state.points.set(featureId(feature), feature);
  return feature;
}

function addPoint(pixel) {
  if (!state.activeClass) {
    showError(new Error("add a class first (name and colour, under Classes), then click its points"));
    return;
  }
  if (!insideImage(pixel)) {
    showError(new Error(`row ${pixel.row}, col ${pixel.col} is outside the image`));
    return;
  }
  const className = state.activeClass;
  queuePointEdit(async () => {
    const feature = await postPoint(pixel.row, pixel.col, className);
    state.undo.push({ kind: "add", id: featureId(feature) });
    setStatus(`Added a ${displayName(className)} point at row ${pixel.row}, col ${pixel.col}.`);
  });
}

function deletePoint(id) {
  queuePointEdit(async () => {
    const feature = state.points.get(id);
    if (!feature) return;
    await removePoint(id);
    state.undo.push({ kind: "delete", feature });
    setStatus(`Deleted the ${displayName(feature.properties.class)} point at row ${feature.properties.row}, `
      + `col ${feature.properties.col}.`);
  });
}

function movePoint(id, to) {
  queuePointEdit(async () => {
    const feature = state.points.get(id);
    if (!feature) return;
    const { row, col } = feature.properties;
    await patchPoint(id, { row: to.row, col: to.col });
    state.undo.push({ kind: "move", id, row, col });
    setStatus(`Moved the point to row ${to.row}, col ${to.col}.`);
  });
}

function undo() {
  queuePointEdit(async () => {
    const action = state.undo.pop();
    if (!action) {
      setStatus("Nothing to undo.");
      return;
    }
    try {
      if (action.kind === "add") {
        await removePoint(action.id);
        setStatus("Undone: the point added last is removed.");
      } else if (action.kind === "move") {
        await patchPoint(action.id, { row: action.row, col: action.col });
        setStatus("Undone: the point is back where it was.");
      } else {
        const { row, col, class: className } = action.feature.properties;
        const feature = await postPoint(row, col, className);
        const oldId = featureId(action.feature);
        state.undo.forEach((entry) => {
          if (entry.id === oldId) entry.id = featureId(feature); // the re-added point has a new id
        });
        setStatus("Undone: the deleted point is back.");
      }
    } catch (error) {
      state.undo.push(action); // not undone: it can be tried again
      throw error;
    }
  });
}

// Press on a point: select it (click) or move it (drag); press elsewhere: add a point (click) or pan (drag).
page.canvas.addEventListener("pointerdown", (event) => {
  if (!state.project || event.button !== 0) return;
  page.canvas.focus({ preventScroll: true }); // a scroll now would move the point under the pointer
  page.canvas.setPointerCapture(event.pointerId);
  state.drag = {
    startX: event.offsetX,
    startY: event.offsetY,
    view: { ...state.view },
    id: pointAt(event.offsetX, event.offsetY),
    mode: null,
    to: null,
  };
});

page.canvas.addEventListener("pointermove", (event) => {
  if (!state.project) return;
  showCursor(event.offsetX, event.offsetY);
  const drag = state.drag;
  if (!drag) return;
  const dx = event.offsetX - drag.startX;
  const dy = event.offsetY - drag.startY;
  if (!drag.mode && Math.hypot(dx, dy) >= DRAG_THRESHOLD) drag.mode = drag.id === null ? "pan" : "move";
  if (drag.mode === "pan") {
    setView({ ...drag.view, offsetX: drag.view.offsetX + dx, offsetY: drag.view.offsetY + dy });
  } else if (drag.mode === "move") {
    const { row, col } = screenToPixel(state.view, event.offsetX, event.offsetY);
    drag.to = { row, col };
    scheduleDraw();
  }
});

page.canvas.addEventListener("pointerup", (event) => {
  // offsetX/Y are measured when read: read them before clearing the error moves the canvas.
  const { offsetX, offsetY } = event;
  const drag = state.drag;
  state.drag = null;
  if (!drag || !state.project) return;
  clearError();
  if (drag.mode === "move") {
    const feature = state.points.get(drag.id);
    if (!insideImage(drag.to)) {
      showError(new Error(`row ${drag.to.row}, col ${drag.to.col} is outside the image; the point stays`));
    } else if (feature && (feature.properties.row !== drag.to.row || feature.properties.col !== drag.to.col)) {
      movePoint(drag.id, drag.to);
    }
    scheduleDraw();
  } else if (!drag.mode) {
    if (drag.id !== null) {
      state.selected = state.selected === drag.id ? null : drag.id;
      scheduleDraw();
    } else {
      addPoint(screenToPixel(state.view, offsetX, offsetY));
    }
  }
});

page.canvas.addEventListener("pointercancel", () => {
  state.drag = null;
  scheduleDraw();
});

page.canvas.addEventListener("contextmenu", (event) => {
  event.preventDefault();
  if (!state.project) return;
  const id = pointAt(event.offsetX, event.offsetY);
  if (id !== null) deletePoint(id);
});

page.canvas.addEventListener("pointerleave", () => {
  page.cursor.textContent = "";
});

function showCursor(sx, sy) {
  const pixel = screenToPixel(state.view, sx, sy);
  if (!insideImage(pixel)) {
    page.cursor.textContent = "";
    return;
  }
  let text = `row ${pixel.row}, col ${pixel.col}`;
  const { transform, crs } = state.project.image;
  if (crs && Array.isArray(transform) && transform.length >= 6) {
    const { mapX, mapY } = pixelToMap(transform, pixel.x, pixel.y);
    text += ` · x ${mapX.toFixed(2)}, y ${mapY.toFixed(2)} (${crs})`;
  }
  page.cursor.textContent = text;
}

document.addEventListener("keydown", (event) => {
  const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement
    || event.target instanceof HTMLTextAreaElement;
  if (typing || !state.project) return;
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undo();
  } else if ((event.key === "Delete" || event.key === "Backspace") && state.selected !== null) {
    event.preventDefault();
    deletePoint(state.selected);
  } else if (/^[1-9]$/.test(event.key) && !event.ctrlKey && !event.metaKey && !event.altKey) {
    const chosen = state.project.classes[Number(event.key) - 1];
    if (chosen) chooseClass(chosen.name);
  } else if (event.key === "+" || event.key === "=") {
    zoomAtCentre(2);
  } else if (event.key === "-") {
    zoomAtCentre(0.5);
  } else if (event.key === "0") {
    fitView();
  }
});

// ---- classes --------------------------------------------------------------------------------------

function pointsPerClass() {
  const counts = {};
  for (const feature of state.points.values()) {
    counts[feature.properties.class] = (counts[feature.properties.class] || 0) + 1;
  }
  return counts;
}

function chooseClass(name) {
  state.activeClass = name;
  renderClasses();
}

function renderClasses() {
  if (!state.project) return;
  const counts = pointsPerClass();
  const classes = state.project.classes;
  if (!classes.some((item) => item.name === state.activeClass)) {
    state.activeClass = classes.length ? classes[0].name : null;
  }
  page.classes.replaceChildren(...classes.map((item, index) => {
    const entry = document.createElement("li");
    entry.dataset.class = item.name;
    entry.classList.toggle("active", item.name === state.activeClass);
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "class-pick";
    pick.setAttribute("aria-pressed", String(item.name === state.activeClass));
    pick.title = index < 9 ? `Click points of this class (key ${index + 1})` : "Click points of this class";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = item.color;
    const key = document.createElement("kbd");
    key.textContent = index < 9 ? String(index + 1) : "";
    const label = document.createElement("span");
    label.className = "class-name";
    label.textContent = displayName(item.name);
    pick.append(key, swatch, label);
    pick.addEventListener("click", () => chooseClass(item.name));
    const count = document.createElement("span");
    count.className = "count";
    count.dataset.testid = "class-count";
    count.textContent = String(counts[item.name] || 0);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "class-remove";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove the class ${displayName(item.name)}`);
    remove.addEventListener("click", () => attempt(() => putClasses(
      classes.filter((other) => other !== item),
      `Removed the class ${displayName(item.name)}.`,
    )));
    entry.append(pick, count, remove);
    return entry;
  }));
  const listed = page.projects.querySelector(`button[data-project="${CSS.escape(state.project.id)}"] + .project-about`);
  if (listed) listed.textContent = projectAbout(state.project.image.path, counts);
  const used = new Set(classes.map((item) => item.color.toLowerCase()));
  if (used.has(page.classColor.value.toLowerCase())) {
    page.classColor.value = PALETTE.find((color) => !used.has(color)) || PALETTE[classes.length % PALETTE.length];
  }
  renderTrainButton();
}

async function putClasses(classes, done) {
  clearError();
  const response = await sendJson(projectUrl("/classes"), "PUT", { classes });
  state.project = await response.json();
  renderProject();
  setStatus(done);
}

page.classForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!state.project) {
    showError(new Error("open an image first; classes belong to a project"));
    return;
  }
  const name = page.className.value.trim();
  if (!name) {
    showError(new Error("give the new class a name"));
    return;
  }
  const classes = [...state.project.classes, { name, color: page.classColor.value }];
  attempt(async () => {
    await putClasses(classes, `Added the class ${name}.`);
    page.className.value = "";
    if (state.project.classes.length === 1 || !state.activeClass) chooseClass(name);
  });
});

page.loadClassSet.addEventListener("click", () => {
  const set = state.classSets[Number(page.classSet.value)];
  if (!state.project || page.classSet.value === "" || !set) {
    showError(new Error(state.project ? "choose a class set first" : "open an image first"));
    return;
  }
  // The set's classes first; classes of the project that the set lacks stay (their points keep a class).
  const names = new Set(set.classes.map((item) => item.name.toLowerCase()));
  const kept = state.project.classes.filter((item) => !names.has(item.name.toLowerCase()));
  attempt(() => putClasses([...set.classes, ...kept], `Loaded the classes of ${set.source}.`));
});

// ---- training -------------------------------------------------------------------------------------

function renderTrainButton() {
  const runs = state.project ? state.project.runs || [] : [];
  page.train.textContent = runs.length ? "Retrain" : "Train";
  page.train.title = runs.length ? "Train again, starting from the last model" : "Train a model on the points";
  const active = state.job && (state.job.state === "queued" || state.job.state === "running");
  page.train.disabled = !state.project || Boolean(active);
}

page.train.addEventListener("click", () => {
  if (!state.project) return;
  clearError();
  const body = {};
  if (page.epochs.value !== "") body.epochs = Number(page.epochs.value);
  attempt(async () => {
    const response = await sendJson(projectUrl("/train"), "POST", body);
    state.job = await response.json();
    setStatus((state.project.runs || []).length ? "Retraining from the last model…" : "Training…");
    renderJob();
    pollJob();
  });
});

page.cancel.addEventListener("click", () => {
  if (!state.job) return;
  clearError();
  attempt(async () => {
    const response = await request(`api/jobs/${encodeURIComponent(state.job.id)}`, { method: "DELETE" });
    state.job = await response.json();
    renderJob();
  });
});

let pollTimer = null;

function stopPolling() {
  clearTimeout(pollTimer);
  pollTimer = null;
}

function pollJob() {
  stopPolling();
  const generation = state.generation;
  pollTimer = setTimeout(async () => {
    if (!state.job || generation !== state.generation) return;
    try {
      const response = await request(`api/jobs/${encodeURIComponent(state.job.id)}`);
      if (generation !== state.generation) return;
      state.job = await response.json();
    } catch (error) {
      showError(error);
      state.job = null;
      renderJob();
      return;
    }
    renderJob();
    if (state.job.state === "queued" || state.job.state === "running") {
      pollJob();
    } else {
      await jobFinished(state.job);
    }
  }, POLL_MS);
}

async function jobFinished(job) {
  if (job.state === "done") {
    await attempt(refreshProject);
    const accuracy = typeof job.val_point_accuracy === "number"
      ? `; held-out point accuracy ${percent(job.val_point_accuracy)}` : "";
    setStatus(`Run ${job.run} finished in ${formatSeconds(job.elapsed_s || 0)}${accuracy}. The map is shown over the image.`);
    if (job.run !== null && job.run !== undefined) await showRun(job.run);
  } else if (job.state === "failed") {
    showError(new Error(`the training failed: ${job.message || "no reason given"}`));
    setStatus("");
  } else {
    setStatus("Training cancelled; the project is as it was.");
  }
}

function renderJob() {
  const job = state.job;
  const active = job && (job.state === "queued" || job.state === "running");
  page.progress.hidden = !active;
  page.cancel.hidden = !active;
  renderTrainButton();
  if (!job) {
    page.job.textContent = "";
    return;
  }
  page.job.dataset.state = job.state;
  if (job.state === "queued") {
    page.progress.removeAttribute("value"); // indeterminate
    page.job.textContent = job.position > 0 ? `Waiting: ${ordinal(job.position)} in queue.` : "Waiting to start.";
    return;
  }
  if (job.state !== "running") {
    page.job.textContent = { done: "Finished.", failed: "Failed.", cancelled: "Cancelled." }[job.state] || job.state;
    return;
  }
  const parts = [];
  if (job.epochs) {
    page.progress.max = job.epochs;
    page.progress.value = job.epoch || 0;
    parts.push(`Epoch ${job.epoch || 0} of ${job.epochs}`);
  } else {
    page.progress.removeAttribute("value");
    parts.push("Starting");
  }
  if (typeof job.loss === "number") parts.push(`loss ${job.loss.toFixed(3)}`);
  if (typeof job.val_point_accuracy === "number") {
    parts.push(`held-out point accuracy ${percent(job.val_point_accuracy)}`);
  }
  if (typeof job.eta_s === "number") parts.push(`about ${formatSeconds(job.eta_s)} left`);
  page.job.textContent = `${parts.join(" · ")}.`;
}

// ---- runs, map and legend -------------------------------------------------------------------------

function renderRuns() {
  const runs = state.project ? state.project.runs || [] : [];
  page.runs.replaceChildren(...runs.map((run) => {
    const item = document.createElement("li");
    const parts = [`Run ${run.n}`];
    if (typeof run.val_point_accuracy === "number") parts.push(`held-out accuracy ${percent(run.val_point_accuracy)}`);
    if (typeof run.epochs === "number") parts.push(`${run.epochs} epochs`);
    if (typeof run.seconds === "number") parts.push(formatSeconds(run.seconds));
    if (run.warm_start) parts.push("warm start");
    item.textContent = parts.join(" · ");
    return item;
  }));
  page.runSelect.replaceChildren(...(runs.length
    ? runs.map((run) => new Option(`Run ${run.n}`, String(run.n), false, run.n === state.run))
    : [new Option("no map yet: train first", "")]));
  page.runSelect.disabled = !runs.length;
}

page.runSelect.addEventListener("change", () => {
  if (page.runSelect.value) showRun(Number(page.runSelect.value));
});

function renderLegend() {
  if (!state.project) return;
  const classes = state.shares
    ? Object.keys(state.shares).map((name) => ({ name, color: classColor(name) }))
    : state.project.classes;
  page.legend.replaceChildren(...classes.map((item) => {
    const entry = document.createElement("li");
    entry.dataset.class = item.name;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = item.color;
    const label = document.createElement("span");
    label.className = "class-name";
    label.textContent = displayName(item.name);
    const share = document.createElement("span");
    share.className = "share";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    if (state.shares) {
      const value = state.shares[item.name] || 0;
      share.textContent = formatShare(value);
      entry.classList.toggle("absent", value === 0);
      bar.style.setProperty("--share", String(value));
      bar.style.setProperty("--color", item.color);
    } else {
      share.textContent = "–";
      share.setAttribute("aria-label", "no map yet");
    }
    entry.append(swatch, label, share, bar);
    return entry;
  }));
}

function applyOpacity() {
  page.opacityValue.textContent = `${page.opacity.value} %`;
  scheduleDraw();
}

page.opacity.addEventListener("input", applyOpacity);
page.showMap.addEventListener("change", scheduleDraw);
page.showConfidence.addEventListener("change", () => {
  if (page.showConfidence.checked) loadConfidence();
  scheduleDraw();
});

// ---- export ---------------------------------------------------------------------------------------

function renderExports() {
  const project = state.project;
  const run = state.run;
  const links = [
    [page.exportPoints, project ? projectUrl("/export/points.geojson") : null],
    [page.exportMap, project && run !== null
      ? projectUrl(`/export/map.zip${query({ run, polygons: page.exportPolygons.checked })}`) : null],
    [page.exportCheckpoint, project && run !== null ? projectUrl(`/export/checkpoint.ckpt${query({ run })}`) : null],
  ];
  for (const [link, url] of links) {
    if (url) {
      link.href = url;
      link.removeAttribute("aria-disabled");
    } else {
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
    }
  }
}

page.exportPolygons.addEventListener("change", renderExports);

// A link fetches first, so an error (say, a run removed underneath) is shown in the page, not as a failed download.
for (const link of [page.exportPoints, page.exportMap, page.exportCheckpoint]) {
  link.addEventListener("click", (event) => {
    event.preventDefault();
    const url = link.getAttribute("href");
    if (!url) {
      showError(new Error("nothing to export yet: train a model first"));
      return;
    }
    clearError();
    const fallback = url.split("?")[0].split("/").pop();
    attempt(async () => setStatus(`Saved ${await download(url, fallback)}.`));
  });
}

// ---- start ----------------------------------------------------------------------------------------

window.pointsegLabel = { screenToPixel, pixelToScreen, pixelToMap, zoomedView, view: () => ({ ...state.view }) };

applyOpacity();
renderExports();
renderTrainButton();
attempt(loadImages);
attempt(loadProjects);
attempt(loadClassSets);
const opened = /^#project=([^&]+)$/.exec(location.hash);
if (opened) openProject(decodeURIComponent(opened[1]));
