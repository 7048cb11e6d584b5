// The streamer's overlay: plays each answer's audio gaplessly, in order, with the caption of the chunk
// being heard. Audio of a chunk may arrive in several binary frames; it is decoded once the
// `answer.audio` event with last=true has arrived, and scheduled right after the previous chunk.

const root = document.getElementById("overlay");
const captionEl = document.getElementById("caption");
const enableButton = document.getElementById("enable-audio");

const state = { scheduled: [], connected: false, captions: [], errors: [] };
window.liveqaOverlay = state;

const AudioContextClass = window.AudioContext || window.webkitAudioContext;
const audio = new AudioContextClass();
let endOfPrevious = 0;
let decoding = Promise.resolve(); // decodes run one after another, so chunks are scheduled in order
const texts = new Map(); // "answer:seq" -> caption text
const buffers = new Map(); // "answer:seq" -> [ArrayBuffer, ...] received so far
const seen = new Set(); // "answer:seq" already scheduled: never twice (reconnects, duplicates)
let expecting = null; // the answer.audio event whose binary frame comes next

const keyOf = (answerId, seq) => `${answerId}:${seq}`;

function showAudioButton() {
  enableButton.hidden = audio.state !== "suspended";
}
enableButton.addEventListener("click", () => audio.resume().then(showAudioButton));
audio.addEventListener("statechange", showAudioButton);
showAudioButton();

function finishChunk(answerId, seq) {
  const key = keyOf(answerId, seq);
  const parts = buffers.get(key) || [];
  buffers.delete(key);
  if (seen.has(key) || parts.length === 0) return;
  seen.add(key);
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    bytes.set(new Uint8Array(part), offset);
    offset += part.byteLength;
  }
  decoding = decoding.then(async () => {
    try {
      const buffer = await audio.decodeAudioData(bytes.buffer);
      schedule(answerId, seq, buffer);
    } catch (error) {
      state.errors.push({ answer_id: answerId, seq, error: String(error) });
    }
  });
}

function schedule(answerId, seq, buffer) {
  const source = audio.createBufferSource();
  source.buffer = buffer;
  source.connect(audio.destination);
  const start = Math.max(audio.currentTime, endOfPrevious);
  source.start(start);
  endOfPrevious = start + buffer.duration;
  state.scheduled.push({
    answer_id: answerId, seq, text: texts.get(keyOf(answerId, seq)) || "", start, duration: buffer.duration,
  });
}

// The caption follows the audio clock: it switches when its chunk's source starts playing.
let shown = null;
function syncCaption() {
  const now = audio.currentTime;
  const playing = state.scheduled.findLast((item) => item.start <= now && now < item.start + item.duration + 0.3);
  if (playing !== shown) {
    shown = playing;
    captionEl.textContent = playing ? playing.text : "";
    captionEl.classList.toggle("visible", Boolean(playing));
    if (playing) state.captions.push({ answer_id: playing.answer_id, seq: playing.seq, text: playing.text });
  }
}
setInterval(syncCaption, 50);

function handleEvent(event) {
  switch (event.type) {
    case "answer.replay":
      // A moderator asked to hear this answer again: its chunks may be scheduled once more.
      for (const key of [...seen]) if (key.startsWith(`${event.answer_id}:`)) seen.delete(key);
      break;
    case "answer.chunk":
      texts.set(keyOf(event.answer_id, event.seq), event.text);
      break;
    case "answer.audio":
      expecting = event;
      if (!event.size) {
        expecting = null;
        if (event.last) finishChunk(event.answer_id, event.seq);
      }
      break;
    default:
      break;
  }
}

function handleBinary(data) {
  if (!expecting) return;
  const { answer_id: answerId, seq, last } = expecting;
  expecting = null;
  const key = keyOf(answerId, seq);
  if (!buffers.has(key)) buffers.set(key, []);
  buffers.get(key).push(data);
  if (last) finishChunk(answerId, seq);
}

let delay = 500;
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${root.dataset.socket}${location.search}`);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => {
    state.connected = true;
    delay = 500;
  });
  socket.addEventListener("message", (message) => {
    if (typeof message.data === "string") handleEvent(JSON.parse(message.data));
    else handleBinary(message.data);
  });
  socket.addEventListener("close", () => {
    state.connected = false;
    expecting = null;
    buffers.clear(); // a chunk cut off mid-way cannot be completed by the next connection
    setTimeout(connect, delay + Math.random() * delay * 0.2);
    delay = Math.min(delay * 2, 15000);
  });
}
connect();
