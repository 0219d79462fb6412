// Affectline review player: the session's review copy in an HTML5 <video>, a timeline under it, synced
// both ways: a click on the timeline (or on a moment band) plays the video from that time, and while
// it plays a cursor moves on the timeline. The page can ask for a seek (args.seek, applied once per
// nonce); a pause reports the time back to the page (Streamlit component value).
//
// Plain ES module, written for the browser as it is: this file is the component's source and its
// build (nothing to compile). It speaks Streamlit's component protocol itself (postMessage), so it
// needs no npm package either.

const SVG = "http://www.w3.org/2000/svg";
const video = document.getElementById("video");
const chart = document.getElementById("chart");
const status = document.getElementById("status");

let args = null;
let appliedNonce = null;
let cursor = null;
let frameHeight = 0;

function send(type, extra) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...extra }, "*");
}

export function clock(t) {
  const s = Math.max(0, Math.floor(t));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(2, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function range() {
  const [t0, t1] = args.range;
  return { t0, t1, span: Math.max(t1 - t0, 1e-6) };
}

function xOf(t) {
  const { t0, span } = range();
  return ((t - t0) / span) * chart.clientWidth;
}

function timeAt(clientX) {
  const box = chart.getBoundingClientRect();
  const { t0, t1, span } = range();
  const f = Math.min(Math.max((clientX - box.left) / Math.max(box.width, 1), 0), 1);
  return Math.min(t0 + f * span, t1);
}

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  parent.appendChild(e);
  return e;
}

function draw() {
  if (!args) return;
  const w = chart.clientWidth, h = chart.clientHeight, top = 4, bottom = h - 18;
  chart.replaceChildren();
  chart.setAttribute("data-t0", args.range[0]);
  chart.setAttribute("data-t1", args.range[1]);
  el("rect", { class: "frame", x: 0, y: top, width: w, height: bottom - top }, chart);
  for (const [a, b, label] of args.moments) {
    const band = el("rect", { class: "moment", x: xOf(a), y: top, width: Math.max(xOf(b) - xOf(a), 2),
                              height: bottom - top, "data-start": a }, chart);
    el("title", {}, band).textContent = `${label} ${clock(a)}-${clock(b)}: click to watch`;
  }
  const pts = args.curve.filter(([, v]) => v !== null)
    .map(([t, v]) => `${xOf(t).toFixed(1)},${(bottom - v * (bottom - top)).toFixed(1)}`);
  if (pts.length) el("polyline", { class: "curve", points: pts.join(" ") }, chart);
  const { t0, t1 } = range();
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    const label = el("text", { class: "axis", x: Math.min(Math.max(xOf(t), 14), w - 14), y: h - 4,
                               "text-anchor": "middle" }, chart);
    label.textContent = clock(t);
  }
  cursor = el("line", { class: "cursor", x1: 0, x2: 0, y1: top, y2: bottom, "data-t": 0 }, chart);
  moveCursor();
}

function moveCursor() {
  if (!cursor || !args) return;
  const t = video.currentTime || 0;
  const x = xOf(Math.min(Math.max(t, args.range[0]), args.range[1]));
  cursor.setAttribute("x1", x);
  cursor.setAttribute("x2", x);
  cursor.setAttribute("data-t", t.toFixed(3));
  status.textContent = `${clock(t)}${video.paused ? " (paused)" : ""} · ${args.caption}`;
}

function follow() {  // the cursor follows playback at the screen's rate, not timeupdate's 4 Hz
  moveCursor();
  if (!video.paused && !video.ended) requestAnimationFrame(follow);
}

export function playFrom(t) {
  video.currentTime = t;
  const p = video.play();
  if (p && p.catch) p.catch(() => moveCursor());  // autoplay refused: stays paused at t
  moveCursor();
}

function resize() {
  const h = Math.ceil(document.body.scrollHeight);
  if (h !== frameHeight) {
    frameHeight = h;
    send("streamlit:setFrameHeight", { height: h });
  }
}

function render(a) {
  const first = args === null;
  args = a;
  if (first || video.getAttribute("src") !== a.src) {
    video.muted = Boolean(a.muted);
    video.src = a.src;
  }
  draw();
  if (a.seek && a.seek.nonce !== appliedNonce) {
    appliedNonce = a.seek.nonce;
    if (video.readyState >= 1) playFrom(a.seek.t);
    else video.addEventListener("loadedmetadata", () => playFrom(a.seek.t), { once: true });
  }
  resize();
}

chart.addEventListener("click", (e) => {
  if (!args) return;
  const band = e.target.closest && e.target.closest(".moment");
  playFrom(band ? Number(band.getAttribute("data-start")) : timeAt(e.clientX));
});
video.addEventListener("play", () => requestAnimationFrame(follow));
video.addEventListener("seeked", moveCursor);
video.addEventListener("loadedmetadata", resize);
video.addEventListener("pause", () => {
  moveCursor();
  if (!video.seeking) send("streamlit:setComponentValue", { value: { t: video.currentTime, paused: true }, dataType: "json" });
});
video.addEventListener("error", () => { status.textContent = "The review copy could not be played."; resize(); });
window.addEventListener("resize", () => { draw(); resize(); });
window.addEventListener("message", (e) => {
  if (e.data && e.data.type === "streamlit:render") render(e.data.args);
});
send("streamlit:componentReady", { apiVersion: 1 });
