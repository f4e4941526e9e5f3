// The child's chat page: one session kept in localStorage, replies streamed over server-sent events.
"use strict";

const SESSION_KEY = "qiaoban.session";
const messagesEl = document.getElementById("messages");
const form = document.getElementById("composer");
const input = document.getElementById("input");
const sendButton = document.getElementById("send");
const statusEl = document.getElementById("status");
const helplineEl = document.getElementById("helpline");
const helplineList = document.getElementById("helpline-list");
const greeting = messagesEl.querySelector(".greeting");

const FRIENDLY_ERRORS = {
  409: "小桥还在回上一句话，等它说完再发吧。",
  413: "这段话有点长，可以分成几句慢慢说。",
  422: "好像什么都没写，再试一次吧。",
  503: "现在来聊天的小朋友有点多，过一会儿再发一次试试。",
  504: "小桥想了太久，请再发一次试试。",
};

let sessionId = localStorage.getItem(SESSION_KEY);
let busy = false;

function addBubble(role, text) {
  const bubble = document.createElement("div");
  bubble.className = `bubble ${role}`;
  bubble.textContent = text;
  messagesEl.appendChild(bubble);
  messagesEl.scrollTop = messagesEl.scrollHeight;
  return bubble;
}

function setStatus(text) {
  statusEl.textContent = text || "";
}

function showHelpline(card) {
  helplineList.replaceChildren();
  for (const line of card.lines) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `tel:${line.number}`;
    const number = document.createElement("span");
    number.className = "number";
    number.textContent = line.number;
    const label = document.createElement("span");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = line.name;
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = line.when;
    label.append(name, when);
    link.append(number, label);
    item.appendChild(link);
    helplineList.appendChild(item);
  }
  helplineEl.hidden = false;
}

async function newSession() {
  const response = await fetch("/api/sessions", { method: "POST" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const session = await response.json();
  sessionId = session.id;
  localStorage.setItem(SESSION_KEY, sessionId);
  document.getElementById("companion-name").textContent = session.persona.name;
}

async function restoreSession() {
  if (!sessionId) return newSession();
  const response = await fetch(`/api/sessions/${encodeURIComponent(sessionId)}`);
  if (response.status === 404) return newSession();
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const session = await response.json();
  document.getElementById("companion-name").textContent = session.persona.name;
  for (const message of session.messages) addBubble(message.role, message.text);
}

// Split a server-sent-event stream into {event, data} records as the bytes arrive.
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function send(text) {
  addBubble("child", text);
  const bubble = addBubble("assistant pending", "");
  let response;
  try {
    response = await fetch(`/api/sessions/${encodeURIComponent(sessionId)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text }),
    });
  } catch (err) {
    fail(bubble, "连不上小桥了，请检查一下网络再试试。");
    return;
  }
  if (response.status === 404) {  // the session is gone (deleted): start a fresh one and try once more
    bubble.remove();
    messagesEl.lastElementChild.remove();
    await newSession();
    return send(text);
  }
  if (!response.ok) {
    fail(bubble, FRIENDLY_ERRORS[response.status] || "出了点小问题，请再发一次试试。");
    return;
  }
  let reply = "";
  for await (const { event, data } of readEvents(response)) {
    if (event === "queued") {
      setStatus(`前面还有 ${data.position} 位小朋友在聊天，稍等一下哦……`);
    } else if (event === "delta") {
      setStatus("");
      reply += data.text;
      bubble.textContent = reply;
      messagesEl.scrollTop = messagesEl.scrollHeight;
    } else if (event === "done") {
      bubble.classList.remove("pending");
      bubble.textContent = data.reply;
      if (data.helpline) showHelpline(data.helpline);
    } else if (event === "error") {
      fail(bubble, FRIENDLY_ERRORS[{ timeout: 504, queue_timeout: 503 }[data.error.code]]
        || "小桥刚才没想好怎么说，请再发一次试试。");
    }
  }
  setStatus("");
  messagesEl.scrollTop = messagesEl.scrollHeight;
}

function fail(bubble, text) {
  bubble.classList.remove("pending");
  bubble.classList.add("failed");
  bubble.textContent = text;
  setStatus("");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || busy) return;
  busy = true;
  sendButton.disabled = true;
  input.value = "";
  input.style.height = "";
  try {
    await send(text);
  } finally {
    busy = false;
    sendButton.disabled = false;
    input.focus();
  }
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

input.addEventListener("input", () => {
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight}px`;
});

document.getElementById("helpline-close").addEventListener("click", () => { helplineEl.hidden = true; });

document.getElementById("new-chat").addEventListener("click", async () => {
  if (busy) return;
  messagesEl.replaceChildren(greeting);
  helplineEl.hidden = true;
  await newSession();
  input.focus();
});

restoreSession().catch(() => setStatus("连不上小桥了，请稍后刷新页面再试。"));
