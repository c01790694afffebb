// photosort review page: plain DOM, no library, nothing from outside. Every action is one POST that
// the server commits before it answers.
"use strict";
const TOKEN = document.body.dataset.token;
const main = document.getElementById("main");
const status = document.getElementById("status");
let state = null;
let tab = "doubts";
let focusIdx = 0;
const selected = new Set();

function api(path, body) {
  const opts = { headers: { "X-Photosort-Token": TOKEN } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  return fetch(path, opts).then(async (r) => {
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  });
}

function img(kind, id) {
  const el = document.createElement("img");
  el.loading = "lazy";
  el.decoding = "async";
  el.alt = kind === "crop" ? "face" : "the whole photo, the face boxed";
  el.src = `/${kind}/${encodeURIComponent(id)}.jpg?t=${encodeURIComponent(TOKEN)}`;
  return el;
}

function button(text, cls, fn) {
  const b = document.createElement("button");
  b.textContent = text;
  if (cls) b.className = cls;
  b.addEventListener("click", (ev) => { ev.stopPropagation(); fn(); });
  return b;
}

function card(face, mode) {
  const c = document.createElement("div");
  c.className = "card";
  c.dataset.id = face.id;
  c.append(img("crop", face.id), img("thumb", face.id));
  const why = document.createElement("div");
  why.className = "why";
  why.textContent = face.reason || "";
  const acts = document.createElement("div");
  acts.className = "acts";
  if (mode === "person") {
    acts.append(button(`Not ${face.group}`, "not", () => decide([face.id], "not", face.group)));
  } else {
    face.suggest.forEach(([name, score], i) => {
      acts.append(button(`${i + 1} ${name} ${score.toFixed(2)}`, "name", () => decide([face.id], "is", name)));
    });
    if (mode === "questions" && !face.suggest.some(([n]) => n === face.group)) {
      acts.append(button(face.group, "name", () => decide([face.id], "is", face.group)));
    }
    acts.append(button("Other name", "other", () => {
      const name = prompt("Who is this?");
      if (name) decide([face.id], "is", name.trim());
    }));
    acts.append(button("Stranger", "stranger", () => decide([face.id], "stranger")));
    acts.append(button("Not a face", "notface", () => decide([face.id], "not_face")));
    acts.append(button("Skip", "skip", () => decide([face.id], "skip")));
  }
  const pick = document.createElement("input");
  pick.type = "checkbox";
  pick.title = "select (x)";
  pick.addEventListener("change", () => toggle(face.id, pick.checked));
  acts.append(pick);
  c.append(why, acts);
  c.addEventListener("click", () => { focusIdx = cards().indexOf(c); paintFocus(); });
  return c;
}

function groupBlock(title, faces, mode, extra) {
  const frag = document.createDocumentFragment();
  const h = document.createElement("h2");
  h.textContent = `${title} (${faces.length})`;
  h.append(button("Select all", "select-all", () => faces.forEach((f) => toggle(f.id, true))));
  if (extra) h.append(...extra);
  const grid = document.createElement("div");
  grid.className = "grid";
  faces.forEach((f) => grid.append(card(f, mode)));
  frag.append(h, grid);
  return frag;
}

function render(faces, mode) {
  const frag = document.createDocumentFragment();
  if (mode === "new") {
    faces.forEach((cluster, n) => {
      const input = document.createElement("input");
      input.placeholder = "who is this?";
      input.setAttribute("list", "people");
      input.className = "cluster-name";
      const ok = button("Name them all", "name-cluster", () => {
        if (input.value.trim()) decide(cluster.map((f) => f.id), "is", input.value.trim());
      });
      frag.append(groupBlock(`New face ${n + 1}`, cluster, mode, [input, ok]));
    });
  } else {
    const groups = new Map();
    faces.forEach((f) => { if (!groups.has(f.group)) groups.set(f.group, []); groups.get(f.group).push(f); });
    for (const [g, list] of groups) {
      const title = mode === "person" ? `${g}: accepted faces, least sure first` : `Suggested: ${g}`;
      frag.append(groupBlock(title, list, mode));
    }
  }
  main.replaceChildren(frag);
  if (!main.children.length) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "Nothing to review here.";
    main.append(p);
  }
  focusIdx = Math.min(focusIdx, Math.max(0, cards().length - 1));
  paintFocus();
  document.body.dataset.cards = String(cards().length);
}

function cards() { return Array.from(main.querySelectorAll(".card")); }

function paintFocus() {
  cards().forEach((c, i) => c.classList.toggle("focus", i === focusIdx));
}

function toggle(id, on) {
  if (on) selected.add(id); else selected.delete(id);
  for (const c of main.querySelectorAll(".card")) {
    if (c.dataset.id === id) {
      c.classList.toggle("selected", on);
      c.querySelector("input[type=checkbox]").checked = on;
    }
  }
  document.getElementById("bulk").hidden = selected.size === 0;
  document.getElementById("n-selected").textContent = String(selected.size);
}

async function decide(ids, verdict, person) {
  try {
    const t = performance.now();
    const r = await api("/api/decide", { faces: ids, verdict, person });
    const ms = performance.now() - t;
    ids.forEach((id) => { selected.delete(id); main.querySelectorAll(`.card[data-id="${CSS.escape(id)}"]`).forEach((c) => c.remove()); });
    toggle("", false);
    status.textContent = `saved (${ms.toFixed(0)} ms)`;
    document.body.dataset.lastSave = String(ms);
    document.body.dataset.batch = String(r.batch);
    paintFocus();
  } catch (e) {
    status.textContent = `not saved: ${e.message}`;
  }
}

async function load() {
  state = await api("/api/state");
  document.getElementById("n-doubts").textContent = state.doubts.length;
  document.getElementById("n-questions").textContent = state.questions.length;
  document.getElementById("n-new").textContent = state.new.length;
  const dl = document.getElementById("people");
  dl.replaceChildren(...state.people.map((p) => { const o = document.createElement("option"); o.value = p; return o; }));
  const pick = document.getElementById("person-pick");
  pick.replaceChildren(...Object.entries(state.accepted).map(([p, n]) => {
    const o = document.createElement("option"); o.value = p; o.textContent = `${p} (${n})`; return o;
  }));
  await show(tab);
}

async function show(name) {
  tab = name;
  document.querySelectorAll(".tab").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.tab === name)));
  const pick = document.getElementById("person-pick");
  pick.hidden = name !== "person";
  if (name === "person") {
    const r = pick.value ? await api(`/api/person?name=${encodeURIComponent(pick.value)}`) : { faces: [] };
    render(r.faces, "person");
  } else {
    render(state[name], name);
  }
  document.body.dataset.ready = name;
}

document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));
document.getElementById("person-pick").addEventListener("change", () => show("person"));
document.getElementById("undo").addEventListener("click", undo);
document.getElementById("bulk-is").addEventListener("click", () => {
  const name = document.getElementById("bulk-name").value.trim();
  if (name) decide(Array.from(selected), "is", name);
});
document.getElementById("bulk-stranger").addEventListener("click", () => decide(Array.from(selected), "stranger"));
document.getElementById("bulk-notface").addEventListener("click", () => decide(Array.from(selected), "not_face"));
document.getElementById("bulk-clear").addEventListener("click", () => Array.from(selected).forEach((id) => toggle(id, false)));

async function undo() {
  try {
    const r = await api("/api/undo", {});
    await load();  // the undone faces come back; say so once they are on the page
    status.textContent = r.faces.length ? `undone (${r.faces.length} face${r.faces.length > 1 ? "s" : ""})` : "nothing to undo";
  } catch (e) {
    status.textContent = `undo failed: ${e.message}`;
  }
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const list = cards();
  const c = list[focusIdx];
  const key = ev.key;
  if (key === "ArrowRight" || key === "j") { focusIdx = Math.min(list.length - 1, focusIdx + 1); paintFocus(); }
  else if (key === "ArrowLeft" || key === "k") { focusIdx = Math.max(0, focusIdx - 1); paintFocus(); }
  else if (key === "u") { undo(); }
  else if (!c) { return; }
  else if (key === "1" || key === "2") { const b = c.querySelectorAll("button.name")[Number(key) - 1]; if (b) b.click(); }
  else if (key === "s") { c.querySelector("button.stranger")?.click(); }
  else if (key === "f") { c.querySelector("button.notface")?.click(); }
  else if (key === " ") { ev.preventDefault(); c.querySelector("button.skip")?.click(); }
  else if (key === "x") { const box = c.querySelector("input[type=checkbox]"); box.checked = !box.checked; toggle(c.dataset.id, box.checked); }
  else return;
  c?.scrollIntoView({ block: "nearest" });
});

load().catch((e) => { status.textContent = `could not load: ${e.message}`; });
