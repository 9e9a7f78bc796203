// The fcnseg web page: upload -> POST /v1/segment (JSON, PNG mask) -> overlay drawn on a canvas + legend.
"use strict";

const $ = (id) => document.getElementById(id);
let palette = [];       // class index -> [r, g, b], from /v1/models
let maskPixels = null;  // ImageData of the coloured mask, at the photo's size

async function loadModel() {
  const info = (await (await fetch("/v1/models")).json()).models[0];
  palette = info.palette;
  $("model").textContent = `${info.name}: ${info.num_classes} classes`;
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
  const response = await fetch("/v1/segment?format=json&mask_encoding=png", { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    setStatus(`Error ${response.status}: ${detail} (request ${body.request_id})`, true);
    return;
  }
  const maskUrl = `data:image/png;base64,${body.mask.data}`;
  const [photo, mask] = await Promise.all([loadImage(URL.createObjectURL(file)), loadImage(maskUrl)]);
  $("photo").src = photo.src;
  await $("photo").decode();
  const c = document.createElement("canvas");
  c.width = mask.naturalWidth;
  c.height = mask.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(mask, 0, 0);
  maskPixels = ctx.getImageData(0, 0, c.width, c.height);
  $("download").href = maskUrl;
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
