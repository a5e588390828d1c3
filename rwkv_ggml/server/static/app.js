// The chat page of `rwkv-ggml serve`: plain JavaScript, no build step, nothing from another host.
// Every piece of user or model text reaches the page through textContent or createTextNode, never as HTML.
"use strict";

const STORE_KEY = "rwkv-ggml.chat";
const SETTINGS_KEY = "rwkv-ggml.settings";
const API_KEY_KEY = "rwkv-ggml.api-key";
const HEALTH_EVERY_MS = 3000;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------------
// state kept in localStorage: the conversations and the settings

let store = loadStore();
let busy = null; // {controller: AbortController} while a reply is streaming
let modelId = null; // the first id of /v1/models, sent as "model"

function loadJSON(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value && typeof value === "object" ? value : fallback;
  } catch {
    return fallback;
  }
}

// What localStorage holds was written by this page, but it may be from an older version or edited by
// hand: keep only well-formed conversations and messages.
function loadStore() {
  const saved = loadJSON(STORE_KEY, {});
  const conversations = (Array.isArray(saved.conversations) ? saved.conversations : [])
    .filter((c) => c && typeof c === "object" && Array.isArray(c.messages))
    .map((c) => ({
      id: String(c.id),
      title: typeof c.title === "string" ? c.title : "",
      messages: c.messages
        .filter((m) => m && (m.role === "user" || m.role === "assistant"))
        .map((m) => Object.assign({}, m, { content: String(m.content ?? "") })),
    }));
  return { conversations, current: saved.current == null ? null : String(saved.current) };
}

function save() {
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(store));
  } catch (err) {
    showError("The conversation could not be saved in this browser: " + err.message);
  }
}

function currentConversation() {
  let conv = store.conversations.find((c) => c.id === store.current);
  if (!conv) {
    conv = { id: String(Date.now()) + Math.random().toString(16).slice(2, 6), title: "", messages: [] };
    store.conversations.unshift(conv);
    store.current = conv.id;
  }
  if (!Array.isArray(conv.messages)) conv.messages = [];
  return conv;
}

const SETTING_FIELDS = ["system-prompt", "temperature", "top-p", "max-tokens", "json-mode", "json-schema"];

function loadSettings() {
  const saved = loadJSON(SETTINGS_KEY, {});
  for (const id of SETTING_FIELDS) {
    const field = $(id);
    if (!(id in saved)) continue;
    if (field.type === "checkbox") field.checked = Boolean(saved[id]);
    else field.value = String(saved[id]);
  }
  $("settings").addEventListener("input", () => {
    const values = {};
    for (const id of SETTING_FIELDS) values[id] = $(id).type === "checkbox" ? $(id).checked : $(id).value;
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(values));
  });
}

// ---------------------------------------------------------------------------------------------------
// requests: the API key as a bearer token (never in the URL), errors in the OpenAI shape

function apiKey() {
  return localStorage.getItem(API_KEY_KEY) || "";
}

function headers(extra) {
  const h = Object.assign({}, extra);
  const key = apiKey();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorOf(response) {
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = String(body.error.message);
    else if (body && body.detail) message = JSON.stringify(body.detail);
  } catch {
    // not JSON: keep the status text
  }
  return new HttpError(response.status, `${response.status}: ${message}`);
}

async function getJSON(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

// ---------------------------------------------------------------------------------------------------
// the API key dialog: shown when the server answers 401

function askForKey(message) {
  const dialog = $("key-dialog");
  showKeyError(message);
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

function showKeyError(message) {
  $("key-error").textContent = message || "";
  $("key-error").hidden = !message;
}

async function submitKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  localStorage.setItem(API_KEY_KEY, key);
  try {
    await checkAccess();
    $("key-dialog").close();
    $("key-input").value = "";
  } catch (err) {
    if (err.status === 401) {
      localStorage.removeItem(API_KEY_KEY);
      showKeyError("The server rejected this API key (401). Use the key given to rwkv-ggml serve --api-key.");
    } else showKeyError("Could not reach the server: " + err.message);
  }
}

async function checkAccess() {
  const models = await getJSON("/v1/models");
  if (models && Array.isArray(models.data) && models.data.length) modelId = String(models.data[0].id);
  $("forget-key").hidden = !apiKey();
}

// ---------------------------------------------------------------------------------------------------
// rendering: text only, a little Markdown built from elements

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Inline Markdown: `code`, **strong**, *emphasis*. Each piece becomes an element holding plain text.
function appendInline(parent, text) {
  const pattern = /(`[^`\n]+`|\*\*[^*\n]+\*\*|\*[^*\s][^*\n]*\*)/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
    const token = match[0];
    if (token.startsWith("`")) parent.appendChild(el("code", "", token.slice(1, -1)));
    else if (token.startsWith("**")) parent.appendChild(el("strong", "", token.slice(2, -2)));
    else parent.appendChild(el("em", "", token.slice(1, -1)));
    last = match.index + token.length;
  }
  if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
}

// Block Markdown: ``` fences, - / 1. lists, paragraphs; an unclosed fence (still streaming) is a code block.
function renderMarkdown(container, text) {
  container.replaceChildren();
  const parts = text.split(/^```[^\n]*\n?/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const pre = el("pre");
      pre.appendChild(el("code", "", part.replace(/\n$/, "")));
      container.appendChild(pre);
      return;
    }
    let list = null;
    let paragraph = null;
    for (const line of part.split("\n")) {
      const item = /^\s*(?:([-*])|(\d+)[.)])\s+(.*)$/.exec(line);
      if (item) {
        const kind = item[1] ? "ul" : "ol";
        if (!list || list.tagName.toLowerCase() !== kind) list = container.appendChild(el(kind));
        appendInline(list.appendChild(el("li")), item[3]);
        paragraph = null;
      } else if (line.trim() === "") {
        list = null;
        paragraph = null;
      } else {
        list = null;
        if (paragraph) paragraph.appendChild(el("br"));
        else paragraph = container.appendChild(el("p"));
        appendInline(paragraph, line);
      }
    }
  });
}

// A reply asked for in JSON-schema mode is shown verbatim as code; other replies as a little Markdown.
function renderBody(body, message) {
  if (message.role === "user") body.textContent = message.content;
  else if (message.json) {
    const pre = el("pre");
    pre.appendChild(el("code", "", message.content));
    body.replaceChildren(pre);
  } else renderMarkdown(body, message.content);
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  for (const conv of store.conversations) {
    const item = el("li", conv.id === store.current ? "active" : "");
    const open = item.appendChild(el("button", "open", conv.title || "New conversation"));
    open.type = "button";
    open.addEventListener("click", () => {
      if (busy) return;
      store.current = conv.id;
      save();
      render();
    });
    const remove = item.appendChild(el("button", "remove", "×"));
    remove.type = "button";
    remove.title = "Delete this conversation";
    remove.addEventListener("click", () => {
      if (busy) return;
      store.conversations = store.conversations.filter((c) => c !== conv);
      if (store.current === conv.id) store.current = store.conversations.length ? store.conversations[0].id : null;
      save();
      render();
    });
    list.appendChild(item);
  }
}

function renderMessage(message, index) {
  const node = el("article", "message " + message.role);
  node.dataset.testid = "message";
  node.dataset.role = message.role;
  node.dataset.index = String(index);
  if (message.role === "user") {
    const edit = node.appendChild(el("button", "edit", "Edit"));
    edit.type = "button";
    edit.dataset.testid = "edit";
    edit.title = "Edit this message and ask again from here";
    edit.addEventListener("click", () => startEdit(node, index));
  }
  const body = node.appendChild(el("div", "body"));
  renderBody(body, message);
  if (message.stopped) node.appendChild(el("div", "note", "stopped"));
  return node;
}

function render() {
  const conv = currentConversation();
  renderConversations();
  const messages = $("messages");
  messages.replaceChildren(...conv.messages.map(renderMessage));
  const lastReply = [...conv.messages].reverse().find((m) => m.role === "assistant");
  showStats(lastReply ? lastReply.stats : null);
  messages.scrollTop = messages.scrollHeight;
}

function showStats(stats) {
  const s = stats || {};
  $("tokens-per-second").textContent = s.tokensPerSecond == null ? "–" : s.tokensPerSecond.toFixed(1);
  $("tokens-generated").textContent = s.tokens == null ? "–" : String(s.tokens);
  $("cached-tokens").textContent = s.cachedTokens == null ? "–" : String(s.cachedTokens);
  $("prompt-tokens").textContent = s.promptTokens == null ? "–" : String(s.promptTokens);
  $("ttft").textContent = s.firstTokenMs == null ? "–" : Math.round(s.firstTokenMs) + " ms";
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function setBusy(controller) {
  busy = controller ? { controller } : null;
  $("send").disabled = Boolean(controller);
  $("regenerate").disabled = Boolean(controller);
  $("stop").hidden = !controller;
}

// ---------------------------------------------------------------------------------------------------
// sending: the conversation goes to /v1/chat/completions with stream=true; the SSE reply is read chunk
// by chunk from the response body

function requestBody(conv) {
  const messages = [];
  const system = $("system-prompt").value.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const m of conv.messages) messages.push({ role: m.role, content: m.content });
  const body = {
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    max_tokens: Math.max(1, Math.floor(Number($("max-tokens").value) || 1)),
  };
  if (modelId) body.model = modelId;
  const format = responseFormat();
  if (format) body.response_format = format;
  return body;
}

// JSON-schema mode: the schema text as an OpenAI response_format; throws if it is not JSON.
function responseFormat() {
  if (!$("json-mode").checked) return null;
  let schema;
  try {
    schema = JSON.parse($("json-schema").value);
  } catch (err) {
    throw new Error("The JSON schema is not valid JSON: " + err.message);
  }
  return { type: "json_schema", json_schema: { name: "reply", schema, strict: true } };
}

// Yields the JSON payload of each `data:` event until `data: [DONE]`.
async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function generateReply() {
  const conv = currentConversation();
  showError("");
  let body;
  try {
    body = requestBody(conv);
  } catch (err) {
    showError(err.message);
    return;
  }
  const reply = { role: "assistant", content: "", stats: null, json: Boolean(body.response_format) };
  conv.messages.push(reply);
  render();
  const node = $("messages").lastElementChild;
  const bodyNode = node.querySelector(".body");
  node.classList.add("streaming");

  const controller = new AbortController();
  setBusy(controller);
  const started = performance.now();
  let firstAt = null;
  let chunks = 0;
  let usage = null;
  let pending = false;
  const paint = () => {
    pending = false;
    const list = $("messages");
    const following = list.scrollHeight - list.scrollTop - list.clientHeight < 40; // not scrolled up to read
    renderBody(bodyNode, reply);
    if (following) list.scrollTop = list.scrollHeight;
  };
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw await errorOf(response);
    for await (const chunk of serverEvents(response)) {
      if (chunk.error) throw new Error("The server stopped the reply: " + (chunk.error.message || "error"));
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      const text = choice && choice.delta && choice.delta.content;
      if (text) {
        if (firstAt === null) firstAt = performance.now();
        chunks += 1;
        reply.content += text;
        if (!pending) {
          pending = true;
          requestAnimationFrame(paint);
        }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") reply.stopped = true;
    else {
      if (err.status === 401) askForKey("The server wants an API key (401). Enter the key to continue.");
      showError(err.message);
    }
  } finally {
    setBusy(null);
  }
  const ended = performance.now();
  const tokens = usage ? usage.completion_tokens : chunks;
  const details = usage && usage.prompt_tokens_details;
  // the rate of generation proper: from the first token to the last, so the prompt does not count
  const span = firstAt === null ? 0 : (ended - firstAt) / 1000;
  reply.stats = {
    tokens,
    tokensPerSecond: tokens > 1 && span > 0 ? (tokens - 1) / span : tokens / ((ended - started) / 1000),
    cachedTokens: details && details.cached_tokens != null ? details.cached_tokens : null,
    promptTokens: usage ? usage.prompt_tokens : null,
    firstTokenMs: firstAt === null ? null : firstAt - started,
  };
  if (!reply.content && !reply.stopped) conv.messages.pop(); // a failed request leaves no empty bubble
  save();
  render();
  // a count of finished replies (tests and scripts wait on it)
  document.body.dataset.replies = String(Number(document.body.dataset.replies || 0) + 1);
}

async function send() {
  const input = $("message-input");
  const text = input.value;
  if (busy || !text.trim()) return;
  try {
    responseFormat(); // a schema that is not JSON is reported before the message is taken
  } catch (err) {
    showError(err.message);
    return;
  }
  const conv = currentConversation();
  conv.messages.push({ role: "user", content: text });
  if (!conv.title) conv.title = text.trim().slice(0, 40);
  input.value = "";
  save();
  await generateReply();
}

async function regenerate() {
  const conv = currentConversation();
  if (busy || !conv.messages.length) return;
  if (conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
  save();
  await generateReply();
}

// Editing a user message replaces it and drops everything after it, then asks for a new reply.
function startEdit(node, index) {
  if (busy) return;
  const conv = currentConversation();
  const body = node.querySelector(".body");
  const editor = el("textarea", "editor");
  editor.value = conv.messages[index].content;
  editor.dataset.testid = "edit-input";
  editor.rows = Math.min(10, editor.value.split("\n").length + 1);
  const resend = el("button", "", "Send");
  resend.type = "button";
  resend.dataset.testid = "edit-send";
  const cancel = el("button", "", "Cancel");
  cancel.type = "button";
  body.replaceChildren(editor, resend, cancel);
  node.querySelector(".edit").hidden = true;
  editor.focus();
  cancel.addEventListener("click", render);
  resend.addEventListener("click", async () => {
    if (busy || !editor.value.trim()) return;
    conv.messages.splice(index, conv.messages.length - index, { role: "user", content: editor.value });
    save();
    await generateReply();
  });
}

// ---------------------------------------------------------------------------------------------------
// the status line: /health every few seconds while the tab is visible

let healthTimer = null; // the next poll, armed only while the tab is visible
let healthInFlight = false;

async function pollHealth() {
  healthTimer = null;
  healthInFlight = true;
  const status = $("status");
  try {
    const h = await getJSON("/health");
    const parts = [
      h.model,
      h.version != null ? "RWKV " + String(h.version).replace(/^(\d)/, "v$1") : null,
      h.format,
      `running ${h.running ?? 0}`,
      h.waiting ? `waiting ${h.waiting}` : null,
      h.batch_size != null ? `batch ${h.batch_size}` : null,
      h.tokens_per_second != null ? `${Number(h.tokens_per_second).toFixed(1)} tokens/s` : null,
    ];
    status.textContent = parts.filter((p) => p !== null && p !== undefined && p !== "").join(" · ");
    status.classList.remove("down");
  } catch (err) {
    status.textContent = err.status === 401 ? "status: waiting for the API key" : "server unreachable";
    status.classList.add("down");
  }
  healthInFlight = false;
  if (!document.hidden) healthTimer = setTimeout(pollHealth, HEALTH_EVERY_MS);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    clearTimeout(healthTimer);
    healthTimer = null;
  } else if (healthTimer === null && !healthInFlight) pollHealth();
});

// ---------------------------------------------------------------------------------------------------
// wiring

function start() {
  loadSettings();
  render();
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("message-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", () => busy && busy.controller.abort());
  $("regenerate").addEventListener("click", regenerate);
  $("new-chat").addEventListener("click", () => {
    if (busy) return;
    if (currentConversation().messages.length) store.current = null; // an empty one is reused
    currentConversation();
    save();
    render();
    $("message-input").focus();
  });
  $("key-form").addEventListener("submit", submitKey);
  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(API_KEY_KEY);
    $("forget-key").hidden = true;
  });
  window.addEventListener("storage", (event) => {
    if (event.key === STORE_KEY && !busy) {
      store = loadStore(); // another tab changed the conversations
      render();
    }
  });
  checkAccess().catch((err) => {
    if (err.status === 401) {
      askForKey(apiKey() ? "The stored API key was rejected (401). Enter the right one." : "");
    } else showError("Could not reach the server: " + err.message);
  });
  pollHealth();
}

start();
