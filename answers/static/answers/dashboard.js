// The moderators' dashboard: a live queue, the answer being spoken chunk by chunk, answers held for
// review, and the history. Every change arrives as a question.updated event, so every open dashboard
// shows the same state.

const root = document.getElementById("dashboard");
const queueEl = document.getElementById("queue");
const historyEl = document.getElementById("history");
const currentEl = document.getElementById("current");
const reviewEl = document.getElementById("review");
const errorEl = document.getElementById("error");
const connectionEl = document.getElementById("connection");
const options = document.getElementById("options");

const QUEUED = ["pending", "approved"];
const IN_HAND = ["answering", "held"];
// drafts: a moderator's edits of held answers (answer id → text), kept across re-renders.
const state = { questions: new Map(), connected: false, current: null, searchResults: null, drafts: new Map() };
window.liveqaDashboard = state;

let socket = null;
function send(action, fields) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ action, ...fields }));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function button(label, action, fields, extra = {}) {
  return el("button", { type: "button", "data-action": action, onclick: () => send(action, fields), ...extra }, label);
}

const COUNTS = new Set(["characters", "chunks", "tokens", "chunks_failed"]);
function timingText(timings) {
  if (!timings) return "";
  return Object.entries(timings)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => `${k.replaceAll("_", " ")} ${COUNTS.has(k) ? v : `${v.toFixed(2)}s`}`)
    .join(" · ");
}

function queueOrder(a, b) {
  return b.priority - a.priority || a.position - b.position || a.created_at.localeCompare(b.created_at);
}

function queueRow(q, index, queued) {
  const selects = options.content.cloneNode(true);
  for (const select of selects.querySelectorAll("select")) {
    const field = select.dataset.field;
    select.value = q[field] === null ? "" : String(q[field]);
    select.addEventListener("change", () =>
      send(field === "prompt_id" ? "prompt" : "voice", { id: q.id, [field]: select.value || null }));
  }
  const text = el("input", { class: "text", value: q.text, "aria-label": "Question text" });
  text.addEventListener("change", () => send("edit", { id: q.id, text: text.value }));
  const priority = el("input", { type: "number", class: "priority", value: q.priority, "aria-label": "Priority" });
  priority.addEventListener("change", () => send("priority", { id: q.id, priority: Number(priority.value) }));
  const previous = queued[index - 1];
  const afterNext = queued[index + 2];
  return el("li", { class: `question ${q.status}`, "data-id": q.id, "data-status": q.status },
    el("div", { class: "meta" },
      el("span", { class: `status ${q.status}` }, q.status), " ",
      el("strong", {}, q.viewer_name || "anonymous"), ` via ${q.source}`),
    text,
    el("div", { class: "controls" },
      q.status === "pending" ? button("Approve", "approve", { id: q.id }, { class: "primary" }) : null,
      button("Reject", "reject", { id: q.id }),
      button("Skip", "skip", { id: q.id }),
      button("↑", "move", { id: q.id, before: previous ? previous.id : queued[0].id }, { title: "Move up", disabled: index === 0 }),
      button("↓", "move", { id: q.id, before: afterNext ? afterNext.id : null }, { title: "Move down", disabled: index === queued.length - 1 }),
      priority, selects));
}

function historyRow(q) {
  const answer = q.answer;
  return el("li", { class: `question ${q.status}`, "data-id": q.id, "data-status": q.status },
    el("div", { class: "meta" }, el("span", { class: `status ${q.status}` }, q.status), " ",
      el("strong", {}, q.viewer_name || "anonymous"), `: ${q.text}`),
    answer ? el("p", { class: "answer" }, answer.text || answer.error || "") : null,
    answer ? el("p", { class: "timings muted" }, timingText(answer.timings)) : null,
    el("div", { class: "controls" },
      answer && answer.chunks.some((c) => c.duration) ? button("Replay", "replay", { answer_id: answer.id }) : null,
      button("Answer again", "again", { id: q.id })));
}

function reviewRow(q) {
  const answer = q.answer;
  const text = el("textarea", { class: "answer-text", rows: 4, "aria-label": "Answer text" });
  text.value = state.drafts.has(answer.id) ? state.drafts.get(answer.id) : answer.text;
  text.addEventListener("input", () => state.drafts.set(answer.id, text.value));
  const speak = () => {
    send("speak", { answer_id: answer.id, text: text.value });
    state.drafts.delete(answer.id);
  };
  return el("li", { class: "question held", "data-id": q.id, "data-answer-id": answer.id, "data-status": q.status },
    el("div", { class: "meta" }, el("span", { class: "status held" }, "held"), " ",
      el("strong", {}, q.viewer_name || "anonymous"), `: ${q.text}`),
    text,
    el("div", { class: "controls" },
      el("button", { type: "button", class: "primary", "data-action": "speak", onclick: speak }, "Speak"),
      button("Discard", "discard", { answer_id: answer.id }, { class: "danger" })));
}

function heldQuestions() {
  return [...state.questions.values()].filter((q) => q.status === "held" && q.answer && q.answer.status === "held");
}

// Re-rendering would throw away what the moderator is typing; leaving the field renders after.
function editing(container) {
  const active = document.activeElement;
  return Boolean(active && container.contains(active) && ["INPUT", "TEXTAREA"].includes(active.tagName));
}

function render() {
  if (editing(queueEl)) {
    renderLater = true;
  } else {
    const queued = [...state.questions.values()].filter((q) => QUEUED.includes(q.status)).sort(queueOrder);
    queueEl.replaceChildren(...queued.map((q, i) => queueRow(q, i, queued)));
    document.getElementById("queue-count").textContent = `(${queued.length})`;
  }
  if (editing(reviewEl)) {
    renderLater = true;
  } else {
    const held = heldQuestions();
    reviewEl.replaceChildren(...held.map(reviewRow));
    document.getElementById("review-section").hidden = held.length === 0;
    for (const id of state.drafts.keys()) if (!held.some((q) => q.answer.id === id)) state.drafts.delete(id);
  }
  const finished = state.searchResults
    || [...state.questions.values()].filter((q) => !QUEUED.includes(q.status) && !IN_HAND.includes(q.status))
      .sort((a, b) => (b.finished_at || b.created_at).localeCompare(a.finished_at || a.created_at)).slice(0, 50);
  historyEl.replaceChildren(...finished.map(historyRow));
  renderCurrent();
}
let renderLater = false;
for (const container of [queueEl, reviewEl]) {
  container.addEventListener("focusout", () => {
    if (renderLater) setTimeout(() => { renderLater = false; render(); });
  });
}

function renderCurrent() {
  const current = state.current;
  if (!current) {
    const answering = [...state.questions.values()].find((q) => q.status === "answering");
    const held = heldQuestions()[0];
    currentEl.replaceChildren(answering
      ? el("p", {}, `Answering “${answering.text}”`, " ", button("Stop", "skip", { id: answering.id }))
      : held ? el("p", { class: "muted" }, `The queue waits for your review of the answer to “${held.text}”.`)
        : el("p", { class: "muted" }, "Nothing is being answered."));
    return;
  }
  const question = state.questions.get(current.question_id);
  currentEl.replaceChildren(
    el("p", { class: "meta" }, el("strong", {}, question ? question.text : `question ${current.question_id}`),
      current.replay ? " (replay)" : "", current.review ? " (writing the answer for review)" : "", " ",
      current.ended ? null : button("Stop", "skip", { id: current.question_id }, { class: "danger" })),
    el("ol", { class: "chunks" }, ...current.chunks.map((c) =>
      el("li", { class: c.error ? "failed" : "", "data-seq": c.seq }, c.text, c.error ? ` (${c.error})` : "",
        c.at != null ? el("span", { class: "muted" }, ` · ${c.at.toFixed(2)} s`) : null))),
    current.ended ? el("p", { class: "timings muted" }, `${current.ended} · ${timingText(current.timings)}`) : null);
}

function handleEvent(event) {
  switch (event.type) {
    case "snapshot":
      state.questions = new Map();
      for (const q of [...event.history, ...event.queue, ...event.current]) state.questions.set(q.id, q);
      state.current = null;
      break;
    case "question.updated":
      state.questions.set(event.question.id, event.question);
      break;
    case "answer.started":
      state.current = {
        answer_id: event.answer_id, question_id: event.question_id, chunks: [],
        replay: Boolean(event.replay), review: Boolean(event.review),
      };
      break;
    case "answer.held": {
      // The question.updated that follows brings the full row; this shows the text at once.
      const question = state.questions.get(event.question_id);
      if (question) {
        question.status = "held";
        question.answer = { chunks: [], timings: {}, error: "", ...question.answer, id: event.answer_id, status: "held", text: event.text };
      }
      if (state.current && state.current.answer_id === event.answer_id) state.current = null;
      break;
    }
    case "answer.chunk":
    case "answer.chunk_failed":
      if (state.current && state.current.answer_id === event.answer_id) {
        const chunks = state.current.chunks.filter((c) => c.seq !== event.seq);
        chunks.push({ seq: event.seq, text: event.text, error: event.error || "", at: event.at });
        state.current.chunks = chunks.sort((a, b) => a.seq - b.seq);
      }
      break;
    case "answer.done":
    case "answer.failed":
      if (state.current && state.current.answer_id === event.answer_id) {
        state.current.ended = event.type === "answer.done" ? "done" : `failed: ${event.reason}`;
        state.current.timings = event.timings;
      }
      break;
    case "search.results":
      state.searchResults = event.query ? event.results : null;
      break;
    case "error":
      errorEl.hidden = false;
      errorEl.textContent = event.message;
      setTimeout(() => { errorEl.hidden = true; }, 5000);
      return;
    default:
      return;
  }
  render();
}

document.getElementById("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const query = new FormData(e.target).get("query");
  if (query) send("search", { query });
  else { state.searchResults = null; render(); }
});

let delay = 500;
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}${root.dataset.socket}`);
  socket.addEventListener("open", () => {
    state.connected = true;
    delay = 500;
    connectionEl.textContent = "live";
    connectionEl.className = "pill online";
  });
  socket.addEventListener("message", (message) => handleEvent(JSON.parse(message.data)));
  socket.addEventListener("close", (e) => {
    state.connected = false;
    connectionEl.textContent = "offline";
    connectionEl.className = "pill offline";
    if (e.code === 4401) {
      connectionEl.textContent = "logged out";
      return; // the session ended: reconnecting would be refused
    }
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 15000);
  });
}
connect();
