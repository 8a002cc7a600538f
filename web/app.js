// The demo page: the engine runs in a module Worker (worker.js), so this thread only paints.
// globalThis.demo (window.demo) exposes the same requests to scripts (the browser tests drive the page with it).

const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const pending = new Map();
let nextId = 1;
let onText = null;
const messages = [];

/** Sends one request to the worker; resolves with its result. */
function request(type, fields = {}) {
  const id = nextId++;
  worker.postMessage({ id, type, ...fields });
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;

worker.onmessage = (e) => {
  const m = e.data;
  if (m.type === "progress") {
    $("progress").max = m.total || 1;
    $("progress").value = m.loaded;
    const what =
      { download: "downloading", cache: "from the browser cache", load: "loading" }[m.phase];
    $("status").textContent = `${what} ${m.file.split("/").pop()}: ${mib(m.loaded)}` +
      (m.total ? ` of ${mib(m.total)}` : "");
  } else if (m.type === "text") {
    onText?.(m.text);
  } else if (m.type === "result" || m.type === "error") {
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.type === "result") p?.resolve(m.result);
    else p?.reject(new Error(m.message));
  }
};
worker.onerror = (e) => showError(`the engine's worker failed: ${e.message}`);

function showError(message) {
  const div = document.createElement("div");
  div.className = "error";
  div.textContent = message;
  $("log").append(div);
}

async function load(url, options = {}) {
  $("send").disabled = true;
  $("status").textContent = "starting";
  const info = await request("load", { url, ...options });
  $("status").textContent = `loaded in ${(info.loadMs / 1000).toFixed(1)} s` +
    (info.fromCache ? " (from the browser cache)" : "");
  $("engine").textContent = `${info.threads} thread${info.threads > 1 ? "s" : ""}` +
    (info.threadsReason ? ` (${info.threadsReason})` : "") +
    ` · backend ${info.backend} (${info.backendReason})`;
  $("send").disabled = false;
  messages.length = 0;
  return info;
}

async function send(text) {
  const options = {
    maxTokens: Number($("max-tokens").value) || 256,
    temperature: Number($("temperature").value) || 0,
  };
  messages.push({ role: "user", content: text });
  const user = document.createElement("div");
  user.className = "user";
  user.textContent = text;
  const answer = document.createElement("div");
  answer.className = "model";
  $("log").append(user, answer);
  let reply = "";
  onText = (piece) => {
    reply += piece;
    answer.textContent = reply;
  };
  $("send").disabled = true;
  $("stop").disabled = false;
  try {
    const stats = await request("chat", { messages: [...messages], options });
    messages.push({ role: "model", content: reply });
    $("stats").textContent = `first token ${stats.ttftMs.toFixed(0)} ms · ` +
      `${stats.tokensPerSecond.toFixed(1)} tok/s · ${stats.completionTokens} tokens` +
      (stats.finishReason === "end_of_turn" ? "" : ` (${stats.finishReason})`);
    return { text: reply, ...stats };
  } finally {
    onText = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

async function showCache() {
  const { entries } = await request("listCache");
  $("cache-list").replaceChildren(...entries.map((entry) => {
    const li = document.createElement("li");
    li.textContent = `${entry.url} (${mib(entry.bytes)}) `;
    const del = document.createElement("button");
    del.textContent = "delete";
    del.onclick = async () => {
      await request("deleteCache", { url: entry.url });
      await showCache();
    };
    li.append(del);
    return li;
  }));
  if (!entries.length) $("cache-list").textContent = "no cached models";
  return entries;
}

$("load").onclick = () =>
  load($("model-url").value.trim() || $("model-url").placeholder, {
    threads: Number($("threads").value) || undefined,
    backend: $("backend").value,
  }).catch((e) => {
    $("status").textContent = "load failed";
    showError(e.message);
  });
$("send").onclick = () => {
  const text = $("prompt").value.trim();
  if (!text) return;
  $("prompt").value = "";
  send(text).catch((e) => showError(e.message));
};
$("prompt").onkeydown = (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("send").click();
  }
};
$("stop").onclick = () => worker.postMessage({ type: "stop" });
$("cache-refresh").onclick = () => showCache().catch((e) => showError(e.message));
$("cache-clear").onclick = () =>
  request("deleteCache", {}).then(showCache).catch((e) => showError(e.message));

// A frame counter: it keeps moving while the model works (the engine is not on this thread).
let frames = 0;
const tick = () => {
  $("clock").textContent = String(++frames);
  requestAnimationFrame(tick);
};
requestAnimationFrame(tick);

// The model to offer: ?model=URL, else the first one the server lists at models/ (cli.ts serve
// lists the file it was started with), else the placeholder.
const asked = new URLSearchParams(location.search).get("model");
if (asked) $("model-url").value = asked;
else {
  fetch("models/").then((r) => (r.ok ? r.json() : [])).then((list) => {
    if (Array.isArray(list) && list[0]) $("model-url").value = list[0];
  }).catch(() => {});
}
$("threads").value = String(navigator.hardwareConcurrency || 1);

globalThis.demo = {
  load,
  send,
  showCache,
  request,
  stop: () => worker.postMessage({ type: "stop" }),
  frames: () => frames,
};
