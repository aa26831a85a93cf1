// mtrain serve's page. Every text from the user or the model goes into the page through
// textContent (never innerHTML), so a sentence like <img src=x onerror=...> shows up as text.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, attention: null };

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function showStatus(message, isError) {
  $("status").textContent = message;
  $("status").classList.toggle("error", Boolean(isError));
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

async function loadInfo() {
  for (;;) {
    try {
      const response = await fetch("/info");
      if (response.ok) return response.json();
    } catch (error) {
      showStatus("The server does not answer; retrying…", true);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function describeModel(info) {
  const model = info.model || {};
  const shape = `${model.encoder_layers ?? "?"}+${model.decoder_layers ?? "?"} layers, d_model ${model.d_model ?? "?"}, ` +
    `${model.heads ?? "?"} heads`;
  return `${info.src_lang} → ${info.tgt_lang} · ${shape} · step ${info.step} · ${info.engine} engine · ${info.checkpoint}`;
}

async function start() {
  const info = await loadInfo();
  state.info = info;
  $("model").textContent = describeModel(info);
  $("src-lang").textContent = `(${info.src_lang})`;
  $("tgt-lang").textContent = `(${info.tgt_lang})`;
  chooseLanguages(info.target_languages || []);
  $("confidence-meaning").textContent = `Confidence: ${info.confidence_meaning}. Words the model gave ` +
    `a probability below ${UNSURE} are underlined, below ${DOUBTFUL} in red.`;
  $("beam").value = info.decode.beam;
  $("beam").max = info.limits.max_beam;
  $("nbest").max = info.limits.max_beam;
  $("glossary-box").hidden = !info.attention;  // terms constrain mtrain's own search (the PyTorch engine)
  $("markup-toggle").hidden = !info.attention;  // markup aligns through the PyTorch model's attention
  if (!info.attention) {
    $("attention-note").textContent = "No attention heatmap: attention maps need mtrain's own PyTorch model " +
      `(this server runs the ${info.engine} engine).`;
    $("attention-note").hidden = false;
  }
  $("translate").disabled = false;
  showStatus("Ready.");
}

// A multilingual model: a choice of the languages it translates into, sent as tgt_lang.
function chooseLanguages(languages) {
  $("language-choice").hidden = !languages.length;
  for (const code of languages) $("language").append(element("option", code));
  $("language").addEventListener("change", () => { $("tgt-lang").textContent = `(${$("language").value})`; });
  if (languages.length) $("tgt-lang").textContent = `(${languages[0]})`;
}

function withLanguage(body) {
  return state.info.target_languages && state.info.target_languages.length
    ? { ...body, tgt_lang: $("language").value } : body;
}

function numberInput(id) {
  const value = Number.parseInt($(id).value, 10);
  return Number.isFinite(value) && value >= 1 ? value : 1;
}

// The glossary box: "source term = target term" (or a tab between them) a line; blank lines skipped.
function glossaryPairs() {
  const pairs = [];
  const lines = $("glossary").value.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    const parts = lines[i].includes("\t") ? lines[i].split("\t") : lines[i].split(" = ");
    if (parts.length !== 2 || !parts[0].trim() || !parts[1].trim()) {
      throw new Error(`Glossary line ${i + 1}: write "source term = target term".`);
    }
    pairs.push([parts[0].trim(), parts[1].trim()]);
  }
  return pairs;
}

async function translate() {
  const text = $("source").value.trim();
  if (!text) {
    showStatus("Type a sentence first.", true);
    return;
  }
  const beam = numberInput("beam");
  const nbest = numberInput("nbest");
  $("translate").disabled = true;
  showStatus("Translating…");
  try {
    if ($("markup").checked) {
      const result = await postJSON("/translate", withLanguage({ text: [text], beam, format: "html" }));
      showMarkup(result.translations[0]);
    } else {
      const body = withLanguage({ text: [text], beam, nbest, scores: true });
      const glossary = glossaryPairs();
      if (glossary.length) body.glossary = glossary;
      const result = await postJSON("/translate", body);
      showTranslations(result.translations[0]);
      if (state.info.attention) showAttention(await postJSON("/attention", withLanguage({ text, beam })));
    }
    showStatus("Done.");
  } catch (error) {
    showStatus(error.message, true);
  } finally {
    $("translate").disabled = false;
  }
}

// Markup output shown two ways: rendered, and as its source text. The rendering is built here,
// element by element, from a small tag reader: only the inline elements below become elements (a
// link without its href, so nothing navigates), any other tag stays text, and every text goes in
// with textContent. The browser's HTML parser never sees the model's output.
const RENDERED = new Set(["b", "strong", "i", "em", "u", "s", "sub", "sup", "small", "mark", "code", "kbd", "span", "a"]);
const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };

function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
    if (name[0] === "#") {
      const code = name[1].toLowerCase() === "x" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

function renderMarkup(markup) {
  const root = element("span", undefined, "rendered");
  const open = [root];
  for (const [token] of markup.matchAll(/<\/?[a-zA-Z][^<>]*>|[^<]+|</g)) {
    const tag = /^<(\/?)([a-zA-Z][a-zA-Z0-9]*)/.exec(token);
    const name = tag ? tag[2].toLowerCase() : "";
    if (tag && name === "br") {
      open[open.length - 1].append(element("br"));
    } else if (tag && RENDERED.has(name) && !tag[1]) {
      const node = element(name === "a" ? "span" : name, undefined, name === "a" ? "link" : undefined);
      open[open.length - 1].append(node);
      open.push(node);
    } else if (tag && RENDERED.has(name) && open.length > 1) {
      open.pop();
    } else {
      open[open.length - 1].append(tag ? token : decodeEntities(token));
    }
  }
  return root;
}

function showMarkup(markup) {
  const item = element("li");
  item.append(renderMarkup(markup));
  item.append(element("pre", markup, "markup-source"));
  $("translations").replaceChildren(item);
  $("attention").hidden = true;
}

// A word the model gave less than this probability is marked unsure; below DOUBTFUL, doubtful.
const UNSURE = 0.5;
const DOUBTFUL = 0.2;

function wordClass(confidence) {
  if (confidence < DOUBTFUL) return "word doubtful";
  return confidence < UNSURE ? "word unsure" : "word";
}

function showTranslations(hypotheses) {
  const list = $("translations");
  list.replaceChildren();
  for (const hypothesis of hypotheses) {
    const item = element("li");
    const text = element("span", undefined, "translation");
    hypothesis.words.forEach((word, i) => {
      if (i > 0) text.append(" ");
      const span = element("span", word.word, wordClass(word.confidence));
      span.title = `word probability ${word.confidence.toFixed(2)}`;
      text.append(span);
    });
    if (!hypothesis.words.length) text.textContent = hypothesis.text;
    item.append(text);
    item.append(element("span", `confidence ${hypothesis.confidence.toFixed(2)}`, "confidence"));
    item.append(element("span", `score ${hypothesis.score.toFixed(3)}`, "score"));
    list.append(item);
  }
}

function fillSelect(select, count, labelOf, extra) {
  const previous = select.value;
  select.replaceChildren();
  if (extra) select.append(new Option(extra[1], extra[0]));
  for (let i = 0; i < count; i++) select.append(new Option(labelOf(i), String(i)));
  if ([...select.options].some((option) => option.value === previous)) select.value = previous;
}

function showAttention(attention) {
  state.attention = attention;
  const layers = attention.weights.length;
  const heads = attention.weights[0].length;
  fillSelect($("layer"), layers, (i) => `${i + 1}${i + 1 === attention.alignment_layer ? " (alignment)" : ""}`);
  if (!state.layerChosen) $("layer").value = String(attention.alignment_layer - 1);
  fillSelect($("head"), heads, (i) => `head ${i + 1}`, ["mean", "average of heads"]);
  $("attention").hidden = false;
  drawHeatmap();
  showAlignment();
}

// The weights of the chosen layer and head (or the heads' average): rows target, columns source.
function chosenWeights() {
  const layer = state.attention.weights[Number($("layer").value)];
  if ($("head").value !== "mean") return layer[Number($("head").value)];
  return layer[0].map((row, r) => row.map((_, c) => layer.reduce((sum, head) => sum + head[r][c], 0) / layer.length));
}

function drawHeatmap() {
  const { source, target } = state.attention;
  const weights = chosenWeights();
  state.weights = weights; // hovering reads these; the heads' average is computed once per choice
  const table = $("heatmap");
  const head = element("thead");
  const top = element("tr");
  top.append(element("th"));
  source.forEach((piece, column) => {
    const cell = element("th", piece);
    cell.scope = "col";
    cell.dataset.column = String(column);
    top.append(cell);
  });
  head.append(top);
  const body = element("tbody");
  target.forEach((piece, row) => {
    const line = element("tr");
    const label = element("th", piece);
    label.scope = "row";
    label.tabIndex = 0;
    label.dataset.row = String(row);
    label.addEventListener("mouseenter", () => focusRow(row));
    label.addEventListener("focus", () => focusRow(row));
    line.append(label);
    weights[row].forEach((weight, column) => {
      const cell = element("td");
      cell.dataset.weight = weight.toFixed(4);
      cell.title = `${piece} → ${source[column]}: ${weight.toFixed(3)}`;
      cell.style.backgroundColor = `rgba(10, 88, 202, ${Math.min(1, weight).toFixed(3)})`;
      cell.addEventListener("mouseenter", () => focusRow(row));
      line.append(cell);
    });
    body.append(line);
  });
  table.replaceChildren(head, body);
  $("focus").textContent = "";
}

function alignedSourceWords(targetWord) {
  const links = state.attention.alignment ? state.attention.alignment.split(" ") : [];
  return new Set(links.map((link) => link.split("-").map(Number)).filter(([, j]) => j === targetWord).map(([i]) => i));
}

// Hovering (or focusing) a target piece marks the source pieces it attends to most (the pieces that
// together hold half of its weight) and the source pieces of the word aligned to its word.
function focusRow(row) {
  const { source, target, source_word: sourceWord, target_word: targetWord } = state.attention;
  const weights = state.weights[row];
  const order = weights.map((w, c) => [w, c]).sort((a, b) => b[0] - a[0]);
  const attended = new Set();
  let mass = 0;
  for (const [weight, column] of order) {
    if (mass >= 0.5) break;
    attended.add(column);
    mass += weight;
  }
  const aligned = targetWord[row] === null ? new Set() : alignedSourceWords(targetWord[row]);
  for (const cell of $("heatmap").querySelectorAll("thead th[data-column]")) {
    const column = Number(cell.dataset.column);
    cell.classList.toggle("attended", attended.has(column));
    cell.classList.toggle("aligned", sourceWord[column] !== null && aligned.has(sourceWord[column]));
  }
  for (const line of $("heatmap").querySelectorAll("tbody tr")) line.classList.remove("current");
  $("heatmap").querySelectorAll("tbody tr")[row].classList.add("current");
  const strongest = order.slice(0, 3).map(([w, c]) => `${source[c]} ${w.toFixed(2)}`).join(", ");
  $("focus").textContent = `${target[row]} attends most to: ${strongest}`;
}

function words(pieces, numbers) {
  const found = [];
  pieces.forEach((piece, i) => {
    if (numbers[i] === null) return;
    found[numbers[i]] = (found[numbers[i]] || "") + piece.replace(/\u2581/g, "");
  });
  return found;
}

function showAlignment() {
  const { source, target, source_word: sourceWord, target_word: targetWord, alignment } = state.attention;
  const sourceWords = words(source, sourceWord);
  const targetWords = words(target, targetWord);
  const head = state.attention.alignment_head;
  $("alignment-heading").textContent = `Word alignment (layer ${state.attention.alignment_layer}, ` +
    (head === null || head === undefined ? "" : `guided head ${head}, `) + "as translate --alignment)";
  const list = $("alignment");
  list.replaceChildren();
  for (const link of alignment ? alignment.split(" ") : []) {
    const [i, j] = link.split("-").map(Number);
    const item = element("li", `${sourceWords[i]} → ${targetWords[j]}`);
    item.dataset.link = link;
    list.append(item);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("translate").addEventListener("click", translate);
  $("source").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (!$("translate").disabled) translate();
    }
  });
  $("layer").addEventListener("change", () => {
    state.layerChosen = true;
    drawHeatmap();
  });
  $("head").addEventListener("change", drawHeatmap);
  start();
});
