// The fcnseg web page: upload -> POST /v1/segment (JSON, masks as COCO RLE) -> overlay on a canvas + legend.
// When the server needs an API key, the page asks for it and keeps it for this tab only (sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
let palette = [];       // class index -> [r, g, b], from /v1/models
let maskPixels = null;  // ImageData of the coloured mask, at the photo's size

function authHeaders() {
  const key = sessionStorage.getItem("fcnseg-api-key");
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askForKey(message) {
  $("auth").hidden = false;
  $("auth-message").textContent = message;
  $("api-key").focus();
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: authHeaders() });
  if (response.status === 401) {
    askForKey("This server needs an API key.");
    return;
  }
  const info = (await response.json()).models[0];
  $("auth").hidden = true;
  palette = info.palette;
  $("model").textContent = `${info.name}: ${info.num_classes} classes`;
}

// COCO compressed RLE (pycocotools' rleFrString): counts of alternating 0/1 runs in column-major order,
// each a variable-length number in 5-bit groups (ASCII 48 + bits), after the second a difference to the one two back.
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// The (height x width) label map, row-major, from each class's COCO RLE.
function labelMap(body) {
  const { width: w, height: h } = body;
  const labels = new Uint8Array(w * h);
  for (const c of body.classes) {
    let i = 0, on = false;
    for (const n of rleCounts(c.segmentation.counts)) {
      if (on) for (let j = i; j < i + n; j++) labels[(j % h) * w + Math.floor(j / h)] = c.index;
      i += n;
      on = !on;
    }
  }
  return labels;
}

function maskImage(body) {
  const labels = labelMap(body);
  const out = new ImageData(body.width, body.height);
  for (let i = 0; i < labels.length; i++) {
    const [r, g, b] = palette[labels[i]];
    out.data.set([r, g, b, 255], 4 * i);
  }
  return out;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function drawOverlay() {
  const canvas = $("overlay");
  const photo = $("photo");
  if (!maskPixels) return;
  canvas.width = photo.naturalWidth;
  canvas.height = photo.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(photo, 0, 0);
  const alpha = Math.round(Number($("opacity").value) * 255);
  const out = new ImageData(new Uint8ClampedArray(maskPixels.data), maskPixels.width, maskPixels.height);
  const bg = palette[0];
  for (let i = 0; i < out.data.length; i += 4) {
    const isBackground = out.data[i] === bg[0] && out.data[i + 1] === bg[1] && out.data[i + 2] === bg[2];
    out.data[i + 3] = isBackground ? 0 : alpha;  // the background class keeps the photo as is
  }
  const layer = document.createElement("canvas");
  layer.width = out.width;
  layer.height = out.height;
  layer.getContext("2d").putImageData(out, 0, 0);
  ctx.drawImage(layer, 0, 0);
  canvas.dataset.ready = "true";
}

function showLegend(classes) {
  const legend = $("legend");
  legend.replaceChildren();
  for (const c of classes) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${palette[c.index].join(",")})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.name;
    const area = document.createElement("span");
    area.className = "area";
    area.textContent = `${(c.area * 100).toFixed(1)}%`;
    li.dataset.index = c.index;
    li.append(swatch, name, area);
    legend.append(li);
  }
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot display this image"));
    img.src = src;
  });
}

async function segment(file) {
  $("overlay").dataset.ready = "false";
  setStatus(`Segmenting ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  const response = await fetch("/v1/segment?format=json", { method: "POST", body: form, headers: authHeaders() });
  const body = await response.json();
  if (response.status === 401) askForKey("The API key was not accepted.");
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    setStatus(`Error ${response.status}: ${detail} (request ${body.request_id})`, true);
    return;
  }
  const photo = await loadImage(URL.createObjectURL(file));
  $("photo").src = photo.src;
  await $("photo").decode();
  maskPixels = maskImage(body);
  const c = document.createElement("canvas");
  c.width = maskPixels.width;
  c.height = maskPixels.height;
  c.getContext("2d").putImageData(maskPixels, 0, 0);
  $("download").href = c.toDataURL("image/png");
  $("download").download = file.name.replace(/\.[^.]*$/, "") + "_mask.png";
  $("result").hidden = false;
  showLegend(body.classes);
  drawOverlay();
  setStatus(`${file.name}: ${body.width}×${body.height}, ${body.classes.length} classes found`);
}

function handle(file) {
  if (file) segment(file).catch((e) => setStatus(`Error: ${e.message}`, true));
}

$("file").addEventListener("change", (e) => handle(e.target.files[0]));
$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("fcnseg-api-key", $("api-key").value.trim());
  loadModel().catch((err) => setStatus(`Cannot reach the server: ${err.message}`, true));
});
$("opacity").addEventListener("input", drawOverlay);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  handle(e.dataTransfer.files[0]);
});
loadModel().catch((e) => setStatus(`Cannot reach the server: ${e.message}`, true));
