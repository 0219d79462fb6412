// Affectline review player: the session's review copy in an HTML5 <video>, a timeline under it, synced
// both ways: a click on the timeline (or on a moment band) plays the video from that time, and while
// it plays a cursor moves on the timeline. The page can ask for a seek (args.seek, applied once per
// nonce); a pause reports the time back to the page (Streamlit component value).
//
// Tagging while watching (args.coding): each vocabulary label has a key. A state label's key starts an
// event at the video's time and the same key ends it; a point label's key marks one instant (one frame
// long). ", ." step a frame at args.fps, arrows a second, "[ ]" the speed, space plays and pauses,
// Backspace / Ctrl+Z undoes the last coded action. Tags are drawn one lane per label; a click on one
// opens it in the editor (its own range, never the previous one's). Every coded action becomes an
// event with an id of its own; the page gets every event not yet answered (value.events), stores each
// once (services.tagging) and sends the answers back (args.answers), which end the event's wait here.
//
// Plain ES module, written for the browser as it is: this file is the component's source and its
// build (nothing to compile). It speaks Streamlit's component protocol itself (postMessage), so it
// needs no npm package either.

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const video = $("video");
const chart = $("chart");
const lanes = $("lanes");
const status = $("status");
const notice = $("notice");
const SPEEDS = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4];
const LANE = 14;

let args = null;
let appliedNonce = null;
let cursor = null;
let laneCursor = null;
let frameHeight = 0;
let outbox = [];          // events sent and not yet answered, oldest first
const open = new Map();   // state label -> start time of the event being coded
const undoStack = [];     // {kind: "open", label, t0} | {kind: "sent", id}
const answered = new Set();
let selected = null;      // the tag open in the editor: {uid, label, t0, t1}
let counter = 0;
const session = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");

function send(type, extra) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...extra }, "*");
}

function sendValue() {
  send("streamlit:setComponentValue", {
    value: { t: video.currentTime || 0, paused: video.paused, events: outbox.map((e) => e.msg) }, dataType: "json",
  });
}

export function clock(t) {
  if (!Number.isFinite(t)) return "--:--";
  const s = Math.max(0, Math.floor(t));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(2, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function preciseClock(t) {  // mm:ss.sss: what the editor shows, exact to the millisecond
  if (!Number.isFinite(t)) return "";
  const ms = Math.round(Math.max(0, t) * 1000);
  const whole = Math.floor(ms / 1000), frac = String(ms % 1000).padStart(3, "0");
  return `${clock(whole)}.${frac}`;
}

export function parseClock(text) {  // "mm:ss(.sss)", "h:mm:ss(.sss)" or seconds; NaN when it is none of them
  const parts = String(text).trim().split(":");
  if (parts.length > 3 || parts.some((p) => !/^\d+(\.\d+)?$/.test(p.trim()))) return NaN;
  const v = parts.map(Number);
  if (v.slice(1).some((x) => x >= 60)) return NaN;
  return v.reduce((acc, x) => acc * 60 + x, 0);
}

const ms = (t) => Math.round(t * 1000) / 1000;

function newId() {
  counter += 1;
  return `pl-${session}-${Date.now().toString(36)}-${counter}`;
}

function range() {
  const [t0, t1] = args.range;
  return { t0, t1, span: Math.max(t1 - t0, 1e-6) };
}

function xOf(t, width) {
  const { t0, span } = range();
  return ((t - t0) / span) * (width === undefined ? chart.clientWidth : width);
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

function say(text, ok = true) {
  notice.textContent = text;
  notice.className = ok ? "ok" : "error";
}

function vocab() { return (args && args.vocabulary) || []; }
function colour(label) { return (args.colours && args.colours[label]) || "#8C8C8C"; }
function frameSeconds() { return 1 / (args && args.fps > 0 ? args.fps : 25); }

// --- drawing -------------------------------------------------------------------------------------

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
  drawLanes();
  moveCursor();
}

function laneLabels() {
  const names = vocab().map((v) => v.label);
  for (const t of args.tags || []) if (!names.includes(t.label)) names.push(t.label);
  return names;
}

function drawLanes() {
  const names = laneLabels();
  const show = args.coding || (args.tags || []).length > 0;
  lanes.parentElement.hidden = !show;
  if (!show) { laneCursor = null; return; }
  const w = lanes.clientWidth || chart.clientWidth, h = Math.max(names.length, 1) * LANE;
  lanes.setAttribute("height", h);
  lanes.style.height = `${h}px`;
  lanes.replaceChildren();
  const gutter = $("lane-names");
  gutter.replaceChildren();
  const row = new Map(names.map((n, i) => [n, i]));
  names.forEach((n, i) => {
    el("rect", { class: i % 2 ? "lane odd" : "lane", x: 0, y: i * LANE, width: w, height: LANE }, lanes);
    const item = vocab().find((v) => v.label === n);
    const d = document.createElement("div");
    d.textContent = item ? `${item.key} · ${n}` : `${n} (not in the vocabulary)`;
    d.title = d.textContent;
    d.style.borderLeft = `4px solid ${colour(n)}`;
    d.style.paddingLeft = "3px";
    gutter.appendChild(d);
  });
  const pendingDeletes = new Set(outbox.filter((e) => e.msg.op === "delete").map((e) => e.msg.uid));
  const block = (label, a, b, cls, extra) => {
    const x = xOf(a, w), width = Math.max(xOf(b, w) - x, 5);  // short events stay clickable
    const r = el("rect", { class: cls, x, y: row.get(label) * LANE + 1, width, height: LANE - 2, fill: colour(label),
                           "data-label": label, "data-t0": a, "data-t1": b, ...extra }, lanes);
    return r;
  };
  for (const t of args.tags || []) {
    if (pendingDeletes.has(t.uid)) continue;
    const r = block(t.label, t.t0, t.t1, selected && selected.uid === t.uid ? "tag selected" : "tag", { "data-uid": t.uid });
    el("title", {}, r).textContent =
      `${t.label} ${clock(t.t0)}-${clock(t.t1)} (${(t.t1 - t.t0).toFixed(1)} s): click to change or delete`;
  }
  for (const e of outbox) {
    if (e.msg.op === "add" && row.has(e.msg.label)) {
      const r = block(e.msg.label, e.msg.t_start, e.msg.t_end, "tag pending", { "data-event": e.msg.id });
      el("title", {}, r).textContent = `${e.msg.label} ${clock(e.msg.t_start)}-${clock(e.msg.t_end)}: being saved`;
    }
  }
  const now = video.currentTime || 0;
  for (const [label, a] of open) {
    if (!row.has(label)) continue;
    const r = block(label, Math.min(a, now), Math.max(a, now), "open", {});
    el("title", {}, r).textContent = `${label} from ${clock(a)}: press its key again to end it`;
  }
  laneCursor = el("line", { class: "cursor", x1: 0, x2: 0, y1: 0, y2: h }, lanes);
}

function drawLabels() {
  const box = $("labels");
  box.replaceChildren();
  if (!args.coding) { $("keyhint").textContent = ""; return; }
  for (const v of vocab()) {
    const b = document.createElement("button");
    b.className = open.has(v.label) ? "label open" : "label";
    b.style.borderLeftColor = v.colour;
    b.setAttribute("data-label", v.label);
    const k = document.createElement("kbd");
    k.textContent = v.key;
    b.append(k, ` ${v.label}${v.kind === "point" ? " ·" : ""}`);
    b.title = v.kind === "point" ? `${v.label}: one instant (key ${v.key})`
                                 : `${v.label}: key ${v.key} starts it, ${v.key} again ends it`;
    b.addEventListener("click", () => code(v));
    box.appendChild(b);
  }
  $("keyhint").textContent = " click the video, then code with the keys";
}

function moveCursor() {
  if (!cursor || !args) return;
  const t = video.currentTime || 0;
  const tc = Math.min(Math.max(t, args.range[0]), args.range[1]);
  const x = xOf(tc);
  cursor.setAttribute("x1", x);
  cursor.setAttribute("x2", x);
  cursor.setAttribute("data-t", t.toFixed(3));
  if (laneCursor) {
    const lx = xOf(tc, lanes.clientWidth || chart.clientWidth);
    laneCursor.setAttribute("x1", lx);
    laneCursor.setAttribute("x2", lx);
  }
  const speed = video.playbackRate !== 1 ? ` · ${video.playbackRate}x` : "";
  status.textContent = `${clock(t)}${video.paused ? " (paused)" : ""}${speed} · ${args.caption}`;
}

function follow() {  // the cursor follows playback at the screen's rate, not timeupdate's 4 Hz
  if (open.size) drawLanes();
  moveCursor();
  if (!video.paused && !video.ended) requestAnimationFrame(follow);
}

export function playFrom(t) {
  video.currentTime = t;
  const p = video.play();
  if (p && p.catch) p.catch(() => moveCursor());  // autoplay refused: stays paused at t
  moveCursor();
}

function seekTo(t) {
  const d = Number.isFinite(video.duration) ? video.duration : args.range[1];
  video.currentTime = Math.min(Math.max(t, 0), d);
  moveCursor();
}

function stepFrames(n) {
  video.pause();
  const f = frameSeconds();
  seekTo((Math.round((video.currentTime || 0) / f) + n) * f);
}

function setSpeed(rate) {
  video.playbackRate = rate;
  $("speed").value = String(rate);
  moveCursor();
}

function stepSpeed(d) {
  const i = SPEEDS.indexOf(video.playbackRate);
  setSpeed(SPEEDS[Math.min(Math.max((i < 0 ? SPEEDS.indexOf(1) : i) + d, 0), SPEEDS.length - 1)]);
}

function resize() {
  const h = Math.ceil(document.body.scrollHeight);
  if (h !== frameHeight) {
    frameHeight = h;
    send("streamlit:setFrameHeight", { height: h });
  }
}

// --- coding --------------------------------------------------------------------------------------

function enqueue(msg) {
  outbox.push({ msg });
  undoStack.push({ kind: "sent", id: msg.id });
  sendValue();
  drawLanes();
  drawLabels();
}

export function code(item) {
  if (!args || !args.coding) return;
  const t = ms(video.currentTime || 0);
  if (item.kind === "point") {
    enqueue({ id: newId(), op: "add", t_start: t, t_end: ms(t + frameSeconds()), label: item.label });
    say(`${item.label} at ${clock(t)}`);
    return;
  }
  if (!open.has(item.label)) {
    open.set(item.label, t);
    undoStack.push({ kind: "open", label: item.label, t0: t });
    say(`${item.label} from ${clock(t)}: press ${item.key} again at its end`);
    drawLanes();
    drawLabels();
    return;
  }
  const t0 = open.get(item.label);
  if (!(t > t0)) {
    say(`${item.label} cannot end at ${clock(t)}: it started at ${clock(t0)} (play on, or undo the start)`, false);
    return;
  }
  open.delete(item.label);
  const i = undoStack.findIndex((u) => u.kind === "open" && u.label === item.label);
  if (i >= 0) undoStack.splice(i, 1);
  enqueue({ id: newId(), op: "add", t_start: t0, t_end: t, label: item.label });
  say(`${item.label} ${clock(t0)}-${clock(t)}`);
}

export function undo() {
  const last = undoStack.pop();
  if (!last) { say("Nothing to undo.", false); return; }
  if (last.kind === "open") {
    open.delete(last.label);
    say(`Undone: the start of ${last.label} at ${clock(last.t0)}.`);
    drawLanes();
    drawLabels();
    return;
  }
  outbox.push({ msg: { id: newId(), op: "undo", target: last.id } });
  say("Undoing the last coded action…");
  sendValue();
  drawLanes();
}

function openEditor(tag) {
  selected = { ...tag };
  disarm();
  const sel = $("ed-label");
  sel.replaceChildren();
  const names = vocab().map((v) => v.label);
  if (!names.includes(tag.label)) names.unshift(tag.label);
  for (const n of names) {
    const o = document.createElement("option");
    o.value = n;
    o.textContent = n;
    sel.appendChild(o);
  }
  sel.value = tag.label;
  $("ed-from").value = preciseClock(tag.t0);  // always the picked tag's own range
  $("ed-to").value = preciseClock(tag.t1);
  $("ed-title").textContent = `Tag ${tag.label} ${clock(tag.t0)}-${clock(tag.t1)}:`;
  $("editor").hidden = !args.coding;
  say("");  // an earlier message is not about this tag
  seekTo(tag.t0);
  drawLanes();
  resize();
}

function closeEditor() {
  selected = null;
  disarm();
  $("editor").hidden = true;
  $("ed-from").value = "";
  $("ed-to").value = "";
  drawLanes();
  resize();
}

function saveEditor() {
  if (!selected) return;
  const a = parseClock($("ed-from").value), b = parseClock($("ed-to").value);
  if (!Number.isFinite(a) || !Number.isFinite(b)) { say("From and To must be times (mm:ss.sss or seconds).", false); return; }
  if (!(b > a)) { say(`The tag ends (${clock(b)}) before it starts (${clock(a)}).`, false); return; }
  const label = $("ed-label").value;
  enqueue({ id: newId(), op: "edit", uid: selected.uid, t_start: ms(a), t_end: ms(b), label });
  closeEditor();
}

function deleteSelected() {  // two clicks: the first asks (every delete is confirmed), the second deletes
  if (!selected) return;
  const b = $("ed-delete");
  if (b.getAttribute("data-armed") !== selected.uid) {
    b.setAttribute("data-armed", selected.uid);
    b.textContent = `Delete ${selected.label} ${clock(selected.t0)}-${clock(selected.t1)}?`;
    return;
  }
  enqueue({ id: newId(), op: "delete", uid: selected.uid });
  closeEditor();
}

function disarm() {
  const b = $("ed-delete");
  b.removeAttribute("data-armed");
  b.textContent = "Delete";
}

function takeAnswers(answers) {
  if (!answers) return;
  let changed = false, last = null;
  outbox = outbox.filter((e) => {
    const a = answers[e.msg.id];
    if (!a) return true;
    changed = true;
    if (!answered.has(e.msg.id)) {
      answered.add(e.msg.id);
      last = a;
      if (!a.ok) {  // refused: nothing stored, so nothing to undo
        const i = undoStack.findIndex((u) => u.kind === "sent" && u.id === e.msg.id);
        if (i >= 0) undoStack.splice(i, 1);
      }
    }
    return false;
  });
  if (last) say(last.message, last.ok);
  if (changed) sendValue();  // the page stops delivering what is answered
}

function render(a) {
  const first = args === null;
  args = a;
  if (first || video.getAttribute("src") !== a.src) {
    video.muted = Boolean(a.muted);
    video.src = a.src;
  }
  if (first) {
    const speed = $("speed");
    for (const r of SPEEDS) {
      const o = document.createElement("option");
      o.value = String(r);
      o.textContent = `${r}x`;
      speed.appendChild(o);
    }
    speed.value = "1";
  }
  takeAnswers(a.answers);
  if (selected && !(a.tags || []).some((t) => t.uid === selected.uid)) closeEditor();
  drawLabels();
  draw();
  if (a.seek && a.seek.nonce !== appliedNonce) {
    appliedNonce = a.seek.nonce;
    if (video.readyState >= 1) playFrom(a.seek.t);
    else video.addEventListener("loadedmetadata", () => playFrom(a.seek.t), { once: true });
  }
  resize();
}

// --- events --------------------------------------------------------------------------------------

chart.addEventListener("click", (e) => {
  if (!args) return;
  const band = e.target.closest && e.target.closest(".moment");
  playFrom(band ? Number(band.getAttribute("data-start")) : timeAt(e.clientX));
});
lanes.addEventListener("click", (e) => {
  if (!args) return;
  const r = e.target.closest && e.target.closest(".tag[data-uid]");
  if (r) {
    const tag = (args.tags || []).find((t) => t.uid === r.getAttribute("data-uid"));
    if (tag) openEditor(tag);
  } else {
    const box = lanes.getBoundingClientRect();
    const { t0, span } = range();
    seekTo(t0 + Math.min(Math.max((e.clientX - box.left) / Math.max(box.width, 1), 0), 1) * span);
  }
});

$("frame-back").addEventListener("click", () => stepFrames(-1));
$("frame-fwd").addEventListener("click", () => stepFrames(1));
$("sec-back").addEventListener("click", () => seekTo((video.currentTime || 0) - 1));
$("sec-fwd").addEventListener("click", () => seekTo((video.currentTime || 0) + 1));
$("speed").addEventListener("change", (e) => setSpeed(Number(e.target.value)));
$("undo").addEventListener("click", undo);
$("ed-from-now").addEventListener("click", () => { $("ed-from").value = preciseClock(video.currentTime || 0); });
$("ed-to-now").addEventListener("click", () => { $("ed-to").value = preciseClock(video.currentTime || 0); });
$("ed-save").addEventListener("click", saveEditor);
$("ed-delete").addEventListener("click", deleteSelected);
$("ed-cancel").addEventListener("click", closeEditor);

window.addEventListener("keydown", (e) => {
  if (!args) return;
  const tag = e.target && e.target.tagName;
  if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") {
    if (e.key === "Enter" && selected) { e.preventDefault(); saveEditor(); }
    if (e.key === "Escape") closeEditor();
    return;
  }
  const k = e.key;
  let handled = true;
  if ((e.ctrlKey || e.metaKey) && k.toLowerCase() === "z") undo();
  else if (e.ctrlKey || e.metaKey || e.altKey) handled = false;
  else if (k === " ") { if (video.paused) video.play().catch(() => moveCursor()); else video.pause(); }
  else if (k === ",") stepFrames(-1);
  else if (k === ".") stepFrames(1);
  else if (k === "ArrowLeft") seekTo((video.currentTime || 0) - 1);
  else if (k === "ArrowRight") seekTo((video.currentTime || 0) + 1);
  else if (k === "[") stepSpeed(-1);
  else if (k === "]") stepSpeed(1);
  else if (k === "Backspace") undo();
  else if (k === "Escape") closeEditor();
  else {
    const item = vocab().find((v) => v.key === k.toLowerCase());
    if (item && args.coding && !e.repeat) code(item);
    else handled = Boolean(item);
  }
  if (handled) { e.preventDefault(); e.stopPropagation(); }
}, true);

video.addEventListener("play", () => requestAnimationFrame(follow));
video.addEventListener("seeked", () => { if (open.size) drawLanes(); moveCursor(); });
video.addEventListener("loadedmetadata", resize);
video.addEventListener("ratechange", () => { $("speed").value = String(video.playbackRate); moveCursor(); });
video.addEventListener("pause", () => {
  moveCursor();
  if (!video.seeking) sendValue();
});
video.addEventListener("error", () => { status.textContent = "The review copy could not be played."; resize(); });
window.addEventListener("resize", () => { draw(); resize(); });
window.addEventListener("message", (e) => {
  if (e.data && e.data.type === "streamlit:render") render(e.data.args);
});
send("streamlit:componentReady", { apiVersion: 1 });
