// The jaxmlp Playground's page: draws what the server sends and sends what the controls change.
// No framework, no build step. One WebSocket per tab; the server holds the truth (the config
// message sets every control), the page only draws.
"use strict";

const $ = (id) => document.getElementById(id);
const FEATURE_KEYS = [["x", "X\u2081"], ["y", "X\u2082"], ["xSquared", "X\u2081\u00b2"], ["ySquared", "X\u2082\u00b2"],
  ["xTimesY", "X\u2081X\u2082"], ["sinX", "sin(X\u2081)"], ["sinY", "sin(X\u2082)"]];
const CLASS_COLORS = [[245, 147, 34], [8, 119, 189], [46, 160, 67], [156, 39, 176], [220, 20, 60], [0, 150, 136], [121, 85, 72], [96, 125, 139]];
const NODE = 38, COL = 110, ROW = 48, TOP = 24, MAX_EDGES = 2500;

let ws = null;
let config = null;
let data = null;        // {train, test, classes, names, domain}
let frame = null;       // the latest frame
let history = [];       // [epoch, train, test]
let heat = null;        // decoded heatmaps {out, cls, neurons, outGrid, neuronGrid}
let hovered = -1;       // the neuron shown large in the heatmap, or -1
let deltas = null;      // the backward view's result
let playing = false;
let layout = null;      // node positions of the drawn network
let lastDrawn = "";

// ---------------------------------------------------------------- colours

function lerp(a, b, t) { return a + (b - a) * t; }
const SCALE = (() => {  // byte 0..255 (value -1..1) -> orange, grey, blue
  const o = [245, 147, 34], g = [232, 234, 235], b = [8, 119, 189], out = [];
  for (let i = 0; i < 256; i++) {
    const v = i / 127.5 - 1, c = v < 0 ? o : b, t = Math.abs(v);
    out.push([lerp(g[0], c[0], t), lerp(g[1], c[1], t), lerp(g[2], c[2], t)]);
  }
  return out;
})();
function valueColor(v) { const i = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5))); const c = SCALE[i]; return `rgb(${c[0] | 0},${c[1] | 0},${c[2] | 0})`; }

// ---------------------------------------------------------------- messages

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}
function setConfig(changes) { send({ type: "config", config: changes }); }

function showMessage(text, note) {
  $("message-text").textContent = text;
  $("message").classList.toggle("note", !!note);
  $("message").hidden = !text;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws`);
  ws.onopen = () => {
    $("connection").textContent = "connected";
    if (location.hash.length > 1) send({ type: "hash", hash: location.hash });
  };
  ws.onclose = (ev) => {
    $("connection").textContent = "disconnected";
    setPlaying(false);
    showMessage(`The connection to the server closed${ev.code === 1009 ? " (message too large)" : ""}; reload the page to start again.`);
  };
  ws.onmessage = (ev) => handle(JSON.parse(ev.data));
}

function decode(b64) {
  const s = atob(b64), a = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
  return a;
}

function handle(msg) {
  switch (msg.type) {
    case "config":
      config = msg.config; config.loss_name = msg.loss;
      $("loss-used").textContent = `uses ${msg.loss}`;
      history_replace(msg.hash);
      syncControls();
      if (msg.note) showMessage(msg.note, true);
      break;
    case "data": data = msg; deltas = null; drawThumb(); break;
    case "history": history = msg.points; drawCurve(); break;
    case "frame": onFrame(msg); break;
    case "status": setPlaying(msg.playing); break;
    case "error": showMessage(msg.message); if (msg.kind === "diverged") setPlaying(false); break;
    case "backward": deltas = msg; drawNetwork(true); showBackward(msg); drawHeatmap(); break;
    case "gradcheck": $("details").textContent = `gradcheck ${msg.ok ? "OK" : "MISMATCH"}\n${msg.text}`; break;
    case "download": download(msg); break;
  }
}

function history_replace(hash) {
  window.history.replaceState(null, "", `#${hash}`);
}

function setPlaying(p) {
  playing = p;
  $("play-pause").innerHTML = p ? "&#x275a;&#x275a;" : "&#x25b6;";
  $("play-pause").classList.toggle("playing", p);
}

function onFrame(msg) {
  frame = msg;
  $("epoch").textContent = msg.epoch.toLocaleString("en-US");
  $("loss-train").textContent = msg.lossTrain === null ? "NaN" : msg.lossTrain.toFixed(3);
  $("loss-test").textContent = msg.lossTest === null ? "NaN" : msg.lossTest.toFixed(3);
  const h = history[history.length - 1];
  if (!h || h[0] !== msg.epoch) history.push([msg.epoch, msg.lossTrain, msg.lossTest]);
  else if (h) { h[1] = msg.lossTrain; h[2] = msg.lossTest; }
  if (history.length > 2000) history.splice(0, history.length - 2000);
  if (msg.heat) {
    heat = { out: decode(msg.heat.out), cls: decode(msg.heat.cls), neurons: decode(msg.heat.neurons),
      outGrid: msg.heat.outGrid, neuronGrid: msg.heat.neuronGrid };
  }
  if (msg.agreement) {
    const a = msg.agreement;
    $("agreement").textContent = `manual vs autodiff on the batch: max rel ${a.maxRel.toExponential(1)}, cosine ${a.cosine.toFixed(7)}`;
  }
  drawCurve();
  drawNetwork(false);
  drawHeatmap();
}

// ---------------------------------------------------------------- controls

function syncControls() {
  const c = config;
  $("learning-rate").value = String(c.learningRate);
  if ($("learning-rate").value !== String(c.learningRate)) addOption("learning-rate", c.learningRate);
  $("activation").value = c.activation;
  $("regularization").value = c.regularization;
  $("regularization-rate").value = String(c.regularizationRate);
  if ($("regularization-rate").value !== String(c.regularizationRate)) addOption("regularization-rate", c.regularizationRate);
  $("problem").value = c.problem;
  const cls = c.problem === "classification";
  $("dataset").hidden = !cls; $("reg-dataset").hidden = cls;
  $("dataset").value = c.dataset; $("reg-dataset").value = c.regDataset;
  $("perc-train").value = c.percTrainData; $("perc-train-value").textContent = c.percTrainData;
  $("noise").value = c.noise; $("noise-value").textContent = c.noise;
  $("batch-size").value = Math.min(c.batchSize, 30); $("batch-size-value").textContent = c.batchSize;
  $("show-test-data").checked = c.showTestData;
  $("discretize").checked = c.discretize;
  for (const id of ["optimizer", "method", "loss", "norm", "speed"]) $(id).value = c[id];
  $("dropout").value = String(c.dropout);
  $("residual").checked = c.residual;
  const n = c.networkShape.length;
  $("layer-count").textContent = `${n} hidden layer${n === 1 ? "" : "s"}`;
  lastDrawn = "";
  drawNetwork(true);
  drawHeatmap();
}

function addOption(id, value) {
  const o = document.createElement("option"); o.textContent = String(value); $(id).appendChild(o); $(id).value = String(value);
}

function bind() {
  $("play-pause").onclick = () => send({ type: playing ? "pause" : "play" });
  $("step").onclick = () => send({ type: "step" });
  $("reset").onclick = () => send({ type: "reset" });
  $("regenerate").onclick = () => send({ type: "regenerate" });
  $("learning-rate").onchange = (e) => setConfig({ learningRate: Number(e.target.value) });
  $("regularization-rate").onchange = (e) => setConfig({ regularizationRate: Number(e.target.value) });
  $("dropout").onchange = (e) => setConfig({ dropout: Number(e.target.value) });
  for (const [id, key] of [["activation", "activation"], ["regularization", "regularization"], ["problem", "problem"],
    ["dataset", "dataset"], ["reg-dataset", "regDataset"], ["optimizer", "optimizer"], ["method", "method"],
    ["loss", "loss"], ["norm", "norm"], ["speed", "speed"]]) {
    $(id).onchange = (e) => setConfig({ [key]: e.target.value });
  }
  for (const [id, key] of [["perc-train", "percTrainData"], ["noise", "noise"], ["batch-size", "batchSize"]]) {
    $(id).oninput = (e) => { $(`${id}-value`).textContent = e.target.value; };
    $(id).onchange = (e) => setConfig({ [key]: Number(e.target.value) });
  }
  for (const [id, key] of [["show-test-data", "showTestData"], ["discretize", "discretize"], ["residual", "residual"]]) {
    $(id).onchange = (e) => setConfig({ [key]: e.target.checked });
  }
  $("add-layer").onclick = () => { const s = config.networkShape.slice(); s.push(2); setConfig({ networkShape: s }); };
  $("remove-layer").onclick = () => { const s = config.networkShape.slice(); s.pop(); setConfig({ networkShape: s }); };
  $("gradcheck").onclick = () => { $("details").textContent = "running jaxmlp.gradcheck…"; send({ type: "gradcheck" }); };
  $("download").onclick = () => send({ type: "download" });
  $("message-close").onclick = () => showMessage("");
  $("csv").onchange = (e) => {
    const file = e.target.files[0];
    if (!file) return;
    if (file.size > 1000000) { showMessage(`csv: ${file.name} is ${(file.size / 1e6).toFixed(1)} MB; the limit is 1 MB`); e.target.value = ""; return; }
    file.text().then((text) => send({ type: "upload", name: file.name, text }));
    e.target.value = "";
  };
  $("heatmap").onclick = onHeatmapClick;
  // replaceState (the page's own updates) fires no hashchange: this is a person editing the link.
  window.addEventListener("hashchange", () => send({ type: "hash", hash: location.hash }));
}

function download(msg) {
  const save = (blob, name) => {
    const a = document.createElement("a"); a.href = URL.createObjectURL(blob); a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
  };
  save(new Blob([decode(msg.checkpoint)], { type: "application/octet-stream" }), msg.filename);
  save(new Blob([msg.snippet], { type: "text/x-python" }), "load_playground_model.py");
  $("details").textContent = msg.snippet;
}

// ---------------------------------------------------------------- the network

function columns() {
  // Every column's nodes: the features, each hidden layer, the output.
  const feats = FEATURE_KEYS.map(([key, label]) => ({ key, label, on: config[key] }));
  const cols = [feats];
  for (const w of config.networkShape) cols.push(Array.from({ length: w }, () => ({})));
  return cols;
}

function drawNetwork(structure) {
  if (!config) return;
  const net = $("network"), svg = $("edges");
  const cols = columns();
  const signature = JSON.stringify([config.networkShape, FEATURE_KEYS.map(([k]) => config[k])]);
  if (structure || signature !== lastDrawn) {
    lastDrawn = signature;
    for (const el of [...net.querySelectorAll(".node, .layer-head")]) el.remove();
    layout = [];
    let neuron = 0;
    cols.forEach((col, ci) => {
      const nodes = [];
      const x = ci * COL + (ci === 0 ? 60 : 0);
      if (ci > 0) {
        const head = document.createElement("div"); head.className = "layer-head";
        head.style.left = `${x - 21}px`;
        head.innerHTML = `<button data-l="${ci - 1}" data-d="1">+</button> <button data-l="${ci - 1}" data-d="-1">&minus;</button><br>${col.length} neuron${col.length === 1 ? "" : "s"}`;
        head.querySelectorAll("button").forEach((b) => { b.onclick = () => changeWidth(Number(b.dataset.l), Number(b.dataset.d)); });
        net.appendChild(head);
      }
      col.forEach((node, ni) => {
        const div = document.createElement("div");
        div.className = "node" + (ci === 0 ? " feature" + (node.on ? "" : " off") : "");
        const y = TOP + 28 + ni * ROW;
        div.style.left = `${x}px`; div.style.top = `${y}px`;
        const canvas = document.createElement("canvas"); canvas.width = canvas.height = 24;
        div.appendChild(canvas);
        let index = -1;
        if (ci === 0) {
          const label = document.createElement("span"); label.className = "label"; label.textContent = node.label; div.appendChild(label);
          div.id = `feature-${node.key}`;
          div.onclick = () => setConfig({ [node.key]: !config[node.key] });
          if (node.on) index = neuron++;
        } else {
          index = neuron++;
          div.id = `neuron-${ci}-${ni}`;
        }
        const d = document.createElement("span"); d.className = "delta"; div.appendChild(d);
        if (index >= 0) {
          div.onmouseenter = () => { hovered = index; div.classList.add("hovered"); drawHeatmap(); };
          div.onmouseleave = () => { hovered = -1; div.classList.remove("hovered"); drawHeatmap(); };
        }
        net.appendChild(div);
        nodes.push({ x, y, index, canvas, delta: d, on: ci > 0 || node.on });
      });
      layout.push(nodes);
    });
    const outY = TOP + 28 + (Math.max(...layout.map((c) => c.length)) - 1) * ROW / 2;
    layout.push([{ x: cols.length * COL, y: outY, index: -2, on: true }]);
    const height = Math.max(...layout.map((c) => c.length)) * ROW + TOP + 40;
    net.style.height = `${height}px`;
    net.style.width = `${(cols.length + 1) * COL}px`;
    svg.setAttribute("width", (cols.length + 1) * COL); svg.setAttribute("height", height);
    buildEdges();
  }
  paintNodes();
  paintEdges();
}

function changeWidth(layer, delta) {
  const s = config.networkShape.slice();
  s[layer] = Math.max(1, s[layer] + delta);
  setConfig({ networkShape: s });
}

let edgeEls = [];
function buildEdges() {
  const svg = $("edges");
  svg.innerHTML = "";
  edgeEls = [];
  // Dense layer l reads the active nodes of column l and writes column l+1.
  const active = layout.map((col) => col.filter((n) => n.on));
  let count = 0;
  for (let l = 0; l + 1 < active.length; l++) count += active[l].length * active[l + 1].length;
  $("edge-note").textContent = count > MAX_EDGES ? `${count} weights: too many to draw (the heatmaps still show every neuron)` : "Click a line to edit its weight; hover for its value.";
  if (count > MAX_EDGES) return;
  for (let l = 0; l + 1 < active.length; l++) {
    active[l].forEach((a, i) => active[l + 1].forEach((b, j) => {
      const p = document.createElementNS("http://www.w3.org/2000/svg", "path");
      const x1 = a.x + NODE, y1 = a.y + NODE / 2, x2 = b.x, y2 = b.y + NODE / 2, mx = (x1 + x2) / 2;
      p.setAttribute("d", `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`);
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title"); p.appendChild(title);
      p.onclick = () => editWeight(l, i, j);
      svg.appendChild(p);
      edgeEls.push({ p, title, l, i, j });
    }));
  }
  // the output node
  const o = layout[layout.length - 1][0];
  const r = document.createElementNS("http://www.w3.org/2000/svg", "circle");
  r.setAttribute("cx", o.x + 10); r.setAttribute("cy", o.y + NODE / 2); r.setAttribute("r", 8); r.setAttribute("fill", "#183d4e");
  svg.appendChild(r);
}

function editWeight(l, i, j) {
  if (!frame) return;
  const current = frame.weights[l][i][j];
  const text = window.prompt(`Weight from neuron ${i + 1} to neuron ${j + 1} of layer ${l + 1}`, String(current));
  if (text === null) return;
  const value = Number(text);
  if (!Number.isFinite(value)) { showMessage(`value: expected a number, got ${JSON.stringify(text)}`); return; }
  send({ type: "set_weight", layer: l, source: i, target: j, value });
}

function paintEdges() {
  if (!frame) return;
  for (const e of edgeEls) {
    const w = frame.weights[e.l]?.[e.i]?.[e.j];
    if (w === undefined) continue;
    e.p.setAttribute("stroke", w < 0 ? "#f59322" : "#0877bd");
    e.p.setAttribute("stroke-width", Math.min(8, 0.5 + Math.abs(w) * 2).toFixed(2));
    e.p.setAttribute("stroke-opacity", Math.min(1, 0.25 + Math.abs(w) / 2).toFixed(2));
    e.title.textContent = `Weight is ${w.toFixed(3)}`;
  }
}

function paintNodes() {
  if (!heat || !layout) return;
  const g = heat.neuronGrid, size = g * g;
  for (const col of layout) for (const node of col) {
    if (!node.canvas || node.index < 0) continue;
    const ctx = node.canvas.getContext("2d"), img = ctx.createImageData(g, g);
    const off = node.index * size;
    if (off + size > heat.neurons.length) continue;
    for (let k = 0; k < size; k++) {
      const c = SCALE[heat.neurons[off + k]];
      img.data[4 * k] = c[0]; img.data[4 * k + 1] = c[1]; img.data[4 * k + 2] = c[2]; img.data[4 * k + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }
}

// ---------------------------------------------------------------- the heatmap, the points, the curve

function drawHeatmap() {
  const canvas = $("heatmap"), ctx = canvas.getContext("2d");
  if (!heat || !config) return;
  const neuron = hovered >= 0;
  const g = neuron ? heat.neuronGrid : heat.outGrid;
  const img = new ImageData(g, g);
  const multi = data && data.classes > 2;
  for (let k = 0; k < g * g; k++) {
    let c;
    if (neuron) c = SCALE[heat.neurons[hovered * g * g + k]];
    else if (multi) {
      const base = CLASS_COLORS[heat.cls[k] % CLASS_COLORS.length], t = config.discretize ? 1 : Math.max(0, (heat.out[k] / 255 - 1 / data.classes) / (1 - 1 / data.classes));
      c = [lerp(232, base[0], t * 0.8), lerp(234, base[1], t * 0.8), lerp(235, base[2], t * 0.8)];
    } else {
      let v = heat.out[k];
      if (config.discretize) v = v >= 127.5 ? 255 : 0;
      c = SCALE[v];
    }
    img.data[4 * k] = c[0]; img.data[4 * k + 1] = c[1]; img.data[4 * k + 2] = c[2]; img.data[4 * k + 3] = 255;
  }
  const tmp = document.createElement("canvas"); tmp.width = tmp.height = g;
  tmp.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
  $("heatmap-label").textContent = neuron ? "hovered neuron's output" : "";
  drawPoints(ctx, canvas.width);
}

function toPixel(v, size) { return (v / data.domain + 1) / 2 * size; }

function pointColor(label) {
  if (data.classes === 0) return valueColor(label);
  if (data.classes === 2) return label ? "#0877bd" : "#f59322";
  const c = CLASS_COLORS[label % CLASS_COLORS.length]; return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function drawPoints(ctx, size) {
  if (!data) return;
  const sets = [[data.train, "#fff"]];
  if (config.showTestData) sets.push([data.test, "#000"]);
  for (const [points, stroke] of sets) {
    for (const [x, y, label] of points) {
      ctx.beginPath();
      ctx.arc(toPixel(x, size), size - toPixel(y, size), 3, 0, 2 * Math.PI);
      ctx.fillStyle = pointColor(label); ctx.fill();
      ctx.strokeStyle = stroke; ctx.lineWidth = 1; ctx.stroke();
    }
  }
  if (deltas) {
    const [x, y] = deltas.x;
    ctx.beginPath(); ctx.arc(toPixel(x, size), size - toPixel(y, size), 7, 0, 2 * Math.PI);
    ctx.strokeStyle = "#183d4e"; ctx.lineWidth = 2; ctx.stroke();
  }
}

function drawThumb() {
  const canvas = $("data-thumb"), ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!data) return;
  for (const [x, y, label] of data.train) {
    ctx.fillStyle = pointColor(label);
    ctx.fillRect(toPixel(x, canvas.width) - 1, canvas.height - toPixel(y, canvas.height) - 1, 2, 2);
  }
}

function drawCurve() {
  const canvas = $("loss-curve"), ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (history.length < 2) return;
  const finite = history.filter((p) => Number.isFinite(p[1]) && Number.isFinite(p[2]) && p[1] !== null && p[2] !== null);
  if (finite.length < 2) return;
  const top = Math.max(...finite.map((p) => Math.max(p[1], p[2]))) || 1;
  const e0 = finite[0][0], e1 = finite[finite.length - 1][0] || 1;
  for (const [k, color] of [[2, "#777"], [1, "#111"]]) {
    ctx.beginPath(); ctx.strokeStyle = color; ctx.lineWidth = 1.2;
    finite.forEach((p, i) => {
      const x = (p[0] - e0) / Math.max(1, e1 - e0) * w, y = h - p[k] / top * (h - 2);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

// ---------------------------------------------------------------- the backward view

function onHeatmapClick(ev) {
  if (!$("backward-mode").checked || !data) return;
  const rect = $("heatmap").getBoundingClientRect(), size = rect.width;
  const px = ((ev.clientX - rect.left) / size * 2 - 1) * data.domain, py = (1 - (ev.clientY - rect.top) / size * 2) * data.domain;
  let best = 0, bestD = Infinity;
  data.train.forEach(([x, y], i) => { const d = (x - px) ** 2 + (y - py) ** 2; if (d < bestD) { bestD = d; best = i; } });
  send({ type: "backward", index: best });
}

function showBackward(msg) {
  // deltas[l] belongs to hidden layer l+1 (the last is the output's).
  if (!layout) return;
  for (const col of layout) for (const node of col) if (node.delta) node.delta.textContent = "";
  msg.deltas.forEach((layer, l) => {
    const col = layout[l + 1];
    if (!col) return;
    layer.forEach((d, j) => { if (col[j] && col[j].delta) col[j].delta.textContent = `\u03b4=${d.toPrecision(2)}`; });
  });
  const out = msg.deltas[msg.deltas.length - 1].map((d) => d.toPrecision(3)).join(", ");
  $("details").textContent = `Backward pass for training point (${msg.x.map((v) => v.toFixed(2)).join(", ")}):\n` +
    msg.deltas.slice(0, -1).map((layer, l) => `  hidden layer ${l + 1}: \u03b4 = dL/dz = [${layer.map((d) => d.toPrecision(3)).join(", ")}]`).join("\n") +
    `\n  output: \u03b4 = dL/dz = [${out}]`;
}

bind();
connect();
