// cryoweave web GUI: a small single-page application over the JSON API (no framework, no CDN).
"use strict";

const params = new URLSearchParams(location.search);
if (params.get("token")) {
  sessionStorage.setItem("cryoweave-token", params.get("token"));
  history.replaceState(null, "", location.pathname + location.hash);  // not in history or screenshots
}
const TOKEN = sessionStorage.getItem("cryoweave-token");
const view = document.getElementById("view");
let current = null;  // {refresh: fn} of the page shown; refreshed on project changes
let pageTimer = null;  // a page's own polling (the run page's log tail), cleared on navigation

function withToken(url) {
  if (!TOKEN) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(path, options = {}) {
  const headers = {"X-Cryoweave-Request": "1"};
  if (TOKEN) headers["X-Cryoweave-Token"] = TOKEN;
  const init = {method: options.method || "GET", headers};
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {  // no answer at all: the server stopped or restarts
    if (!options.allowError) throw e;
    return {status: 0, ok: false, data: {error: "the server did not answer (is `cryoweave gui` still running?)"}};
  }
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok && !(data && data.error)) {  // an answer that is not ours (a proxy, a crash)
    data = {error: `${response.status} ${response.statusText || "error"}`};
  }
  if (!response.ok && !options.allowError) throw new Error(data.error);
  return {status: response.status, ok: response.ok, data};
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function statusClass(run) {
  return run.process_gone ? "gone" : run.status;
}

function statusBadge(run) {
  const label = run.process_gone ? "failed (process gone)" : run.status;
  return h("span", {class: "status status-" + statusClass(run), "data-status": label}, label);
}

function fieldTitle(name, prop) {
  // the server's schema carries the title: the declared one, else one derived from the name
  // (cryoweave.plugin.field_title: unit suffix and do_ prefix dropped, acronyms in capitals)
  return prop.title || humanize(name);
}

function humanize(name) {
  const words = name.replace(/_/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function runName(run) {
  return "#" + run.id + (run.label ? " " + run.label : "");
}

// -- live updates --------------------------------------------------------------------------
let refreshTimer = null;
function startEvents() {
  const source = new EventSource(withToken("/api/events"));
  const live = document.getElementById("live");
  source.addEventListener("open", () => live.classList.add("on"));
  source.addEventListener("error", () => live.classList.remove("on"));
  source.addEventListener("change", () => {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      // a background refresh that fails (the server restarting, the page navigating away)
      // waits for the next change; it must not break the page
      if (current && current.refresh) Promise.resolve(current.refresh()).catch(e => console.warn("refresh:", e));
    }, 150);
  });
}

// -- rows redrawn only where their data changed ------------------------------------------------
// A redraw replaces elements: a click pressed on a link or button and released on its
// replacement is lost. Tables that refresh on project changes keep each row's element, and in
// a changed row each cell that looks the same (a link, a button); new and reordered rows are
// inserted, the others stay in place.
function keyedRows(tbody) {
  const shown = new Map();  // id -> {key, tr}
  function patch(tr, fresh) {  // fresh's cells into tr where they differ
    const cells = [...tr.children], news = [...fresh.children];
    if (cells.length !== news.length) { tr.replaceWith(fresh); return fresh; }
    cells.forEach((td, i) => { if (td.outerHTML !== news[i].outerHTML) td.replaceWith(news[i]); });
    return tr;
  }
  return function update(items, idOf, rowOf) {
    const rows = items.map(item => {
      const key = JSON.stringify(item);
      let entry = shown.get(idOf(item));
      if (!entry) shown.set(idOf(item), entry = {key, tr: rowOf(item)});
      else if (entry.key !== key) Object.assign(entry, {key, tr: patch(entry.tr, rowOf(item))});
      return entry.tr;
    });
    const kept = new Set(rows);
    for (const [id, entry] of shown) if (!kept.has(entry.tr)) shown.delete(id);
    rows.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null); });
    while (tbody.children.length > rows.length) tbody.lastChild.remove();
  };
}

// -- project page: graph and list -----------------------------------------------------------
function layoutGraph(runs, edges) {
  const byId = new Map(runs.map(r => [r.id, r]));
  const parents = new Map(runs.map(r => [r.id, []]));
  for (const e of edges) if (byId.has(e.from) && byId.has(e.to)) parents.get(e.to).push(e.from);
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(-1, ...parents.get(id).map(p => depthOf(p, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  runs.forEach(r => depthOf(r.id));
  const columns = [];
  for (const r of runs) (columns[depth.get(r.id)] ||= []).push(r);
  const pos = new Map();
  const W = 170, H = 44, GX = 60, GY = 14;
  columns.forEach((col, c) => col.forEach((r, i) => pos.set(r.id, {x: 10 + c * (W + GX), y: 10 + i * (H + GY)})));
  const width = 20 + columns.length * (W + GX);
  const height = 20 + Math.max(1, ...columns.map(c => c.length)) * (H + GY);
  return {pos, W, H, width, height};
}

function drawGraph(runs, edges, search) {
  const NS = "http://www.w3.org/2000/svg";
  const {pos, W, H, width, height} = layoutGraph(runs, edges);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("id", "runs-graph");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const defs = document.createElementNS(NS, "defs");
  defs.innerHTML = '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" ' +
    'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#7a8591"/></marker>';
  svg.append(defs);
  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const path = document.createElementNS(NS, "path");
    path.setAttribute("class", "edge");
    path.setAttribute("d", `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`);
    path.setAttribute("marker-end", "url(#arrow)");
    path.setAttribute("data-edge", `${e.from}-${e.to}`);
    const title = document.createElementNS(NS, "title");
    title.textContent = `${e.output} → ${e.input}`;
    path.append(title);
    svg.append(path);
  }
  const needle = (search || "").toLowerCase();
  const newest = Math.max(...runs.map(r => r.id));
  for (const r of runs) {
    const p = pos.get(r.id);
    const g = document.createElementNS(NS, "g");
    const match = needle && [r.label, r.protocol, r.state, String(r.id)].some(v => (v || "").toLowerCase().includes(needle));
    g.setAttribute("class", "node" + (r.process_gone ? " gone" : "") + (match ? " match" : "") +
      (r.id === newest ? " newest" : ""));
    g.setAttribute("data-run", r.id);
    g.setAttribute("data-status", r.process_gone ? "gone" : r.status);
    g.setAttribute("transform", `translate(${p.x},${p.y})`);
    const rect = document.createElementNS(NS, "rect");
    rect.setAttribute("width", W);
    rect.setAttribute("height", H);
    rect.setAttribute("fill", getComputedStyle(document.documentElement).getPropertyValue("--" + statusClass(r)).trim() || "#888");
    const t1 = document.createElementNS(NS, "text");
    t1.setAttribute("x", 8); t1.setAttribute("y", 17);
    t1.textContent = runName(r).slice(0, 26);
    const t2 = document.createElementNS(NS, "text");
    t2.setAttribute("x", 8); t2.setAttribute("y", 34);
    t2.textContent = r.protocol_name + " · " + (r.process_gone ? "gone" : r.status);
    const title = document.createElementNS(NS, "title");
    title.textContent = `${runName(r)} ${r.protocol} ${r.state}`;
    g.append(rect, t1, t2, title);
    g.addEventListener("click", () => { location.hash = "#/run/" + r.id; });
    svg.append(g);
  }
  return svg;
}

function projectPage() {
  let search = sessionStorage.getItem("cryoweave-search") || "";
  let lastScrolled = null;
  let graphShown = null;  // the graph is redrawn only when it changed, a row when its run did
  const input = h("input", {type: "text", id: "run-search", placeholder: "search label, protocol, status", value: search});
  const graphWrap = h("div", {id: "graph-wrap"});
  const tbody = h("tbody", {});
  const list = h("div", {id: "runs-list"}, h("table", {id: "runs-table"},
    h("thead", {}, h("tr", {}, ["id", "label", "protocol", "status", "host · queue", "started", "duration", "steps", "outputs"].map(t => h("th", {}, t)))),
    tbody));
  const updateRows = keyedRows(tbody);
  const page = h("div", {},
    h("div", {class: "row"}, h("h1", {}, "Runs"), input,
      h("a", {href: "#/new"}, h("button", {class: "primary"}, "New run"))),
    h("h2", {}, "Graph (data lineage)"), graphWrap,
    h("h2", {}, "List"), list);
  view.replaceChildren(page);
  function runRow(r) {
    return h("tr", {"data-run": r.id},
      h("td", {}, h("a", {href: "#/run/" + r.id}, String(r.id))),
      h("td", {}, r.label || ""), h("td", {}, r.protocol_name), h("td", {}, statusBadge(r)),
      h("td", {}, [r.host, r.queue].filter(Boolean).join(" · ")),
      h("td", {}, r.started_at ? r.started_at.replace("T", " ").slice(0, 19) : ""),
      h("td", {}, r.duration_s !== null ? r.duration_s.toFixed(1) + " s" : ""),
      h("td", {}, Object.entries(r.steps).map(([k, n]) => `${n} ${k}`).join(", ")),
      h("td", {}, r.outputs.map(o => h("a", {href: "#/set/" + o.set, style: "margin-right:.5em"}, `${o.name} (${o.state})`))));
  }
  async function refresh() {
    const asked = search;
    const [{data: graph}, {data: found}] = await Promise.all([
      api("/api/graph"), api("/api/runs?q=" + encodeURIComponent(asked))]);
    if (asked !== search) return;  // typed on meanwhile: that search's refresh draws the page
    const graphKey = JSON.stringify([graph, search]);
    if (graphKey !== graphShown) {
      graphShown = graphKey;
      graphWrap.replaceChildren(drawGraph(graph.runs, graph.edges, search));
    }
    const first = graphWrap.querySelector("g.node.match");
    if (first && search !== lastScrolled) {  // bring the first match into view, once per search
      lastScrolled = search;
      first.scrollIntoView({block: "nearest", inline: "center"});
    }
    updateRows(found.runs, r => r.id, runRow);
  }
  input.addEventListener("input", () => {
    search = input.value;
    sessionStorage.setItem("cryoweave-search", search);
    refresh();
  });
  return {refresh};
}

// -- new run: palette and form -------------------------------------------------------------
async function palettePage() {
  const {data} = await api("/api/protocols");
  const groups = {};
  for (const p of data.protocols) ((groups[p.plugin] ||= {})[p.category] ||= []).push(p);
  view.replaceChildren(h("div", {class: "palette"}, h("h1", {}, "New run: choose a protocol"),
    Object.entries(groups).map(([plugin, cats]) => h("div", {class: "palette-group"},
      h("h2", {}, plugin),
      Object.entries(cats).map(([cat, list]) => h("div", {}, h("span", {class: "muted"}, cat + ": "),
        list.map(p => h("a", {href: "#/new/" + p.name, "data-protocol": p.name, title: p.help}, `${p.name} — ${p.label}`))))))));
  return null;
}

function resolveRef(schema, prop) {
  if (prop && prop.$ref) {
    const name = prop.$ref.split("/").pop();
    return Object.assign({}, schema.$defs[name], prop, {$ref: undefined});
  }
  return prop;
}

function fieldKind(schema, prop) {
  // -> {type, nullable, enum, enumLabels, constraints}
  prop = resolveRef(schema, prop);
  let nullable = false, base = prop;
  if (prop.anyOf) {
    const options = prop.anyOf.map(p => resolveRef(schema, p));
    nullable = options.some(o => o.type === "null");
    base = options.find(o => o.type !== "null") || {};
  }
  if (prop.enum) base = prop;
  return {type: base.enum ? "enum" : base.type, nullable, base,
          enumValues: base.enum || null,
          enumLabels: base["x-enum-labels"] || prop["x-enum-labels"] || null};
}

function conditionHolds(condition, values) {
  return Object.entries(condition).every(([key, want]) => {
    const have = values[key];
    return Array.isArray(want) ? want.includes(have) : have === want;
  });
}

function inputField(name, prop, choices, initial) {
  const select = h("select", {name, "data-input": name},
    h("option", {value: ""}, "— choose an output —"),
    (choices || []).map(c => h("option", {value: JSON.stringify({run: c.run, output: c.output})},
      `${runName({id: c.run, label: c.label})} ${c.protocol_name}: ${c.output} (${c.size} items, ${c.state})`)));
  const file = h("input", {type: "text", name: name + "__path", placeholder: "or a file path / pattern in the allowed folders"});
  const chooser = h("div", {class: "files", hidden: true});
  const browse = h("button", {type: "button", onclick: () => openChooser(chooser, file, null)}, "Browse…");
  if (initial && typeof initial === "object" && initial.run !== undefined) {
    const want = JSON.stringify({run: initial.run, output: initial.output});
    for (const o of select.options) if (o.value === want) o.selected = true;
  } else if (typeof initial === "string") file.value = initial;
  return {elements: [select, h("div", {}, file, " ", browse), chooser],
          read: () => select.value ? JSON.parse(select.value) : (file.value.trim() || undefined)};
}

async function openChooser(box, target, path) {
  box.hidden = false;
  const res = await api("/api/files" + (path ? "?path=" + encodeURIComponent(path) : ""), {allowError: true});
  if (!res.ok) { box.replaceChildren(h("div", {class: "error"}, res.data.error)); return; }
  const d = res.data;
  box.replaceChildren(h("div", {}, h("div", {class: "muted"}, d.path),
    d.parent ? h("div", {onclick: () => openChooser(box, target, d.parent)}, "⬆ ..") : null,
    d.entries.map(e => h("div", {onclick: () => e.dir ? openChooser(box, target, e.path) : (target.value = e.path, box.hidden = true)},
      (e.dir ? "📁 " : "📄 ") + e.name))));
}

function scalarField(name, kind, value) {
  if (kind.type === "boolean") {
    return h("input", {type: "checkbox", name, checked: value === true});
  }
  if (kind.type === "enum") {
    return h("select", {name}, kind.nullable ? h("option", {value: ""}, "—") : null,
      kind.enumValues.map((v, i) => h("option", {value: JSON.stringify(v), selected: v === value},
        kind.enumLabels ? kind.enumLabels[i] : humanize(String(v)))));
  }
  const numeric = kind.type === "integer" || kind.type === "number";
  const attrs = {type: numeric ? "number" : "text", name, step: kind.type === "integer" ? "1" : "any"};
  if (value !== null && value !== undefined) attrs.value = typeof value === "object" ? JSON.stringify(value) : value;
  return h("input", attrs);
}

function readScalar(el, kind) {
  if (kind.type === "boolean") return el.checked;
  if (el.value === "") return undefined;
  if (kind.type === "enum") return JSON.parse(el.value);
  if (kind.type === "integer") return Number.isInteger(Number(el.value)) ? Number(el.value) : el.value;
  if (kind.type === "number") return Number.isNaN(Number(el.value)) ? el.value : Number(el.value);
  if (kind.type === "array" || kind.type === "object") { try { return JSON.parse(el.value); } catch (e) { return el.value; } }
  return el.value;
}

async function formPage(name, copyFrom) {
  const {data} = await api("/api/protocols/" + encodeURIComponent(name));
  const schema = data.schema;
  let initial = {};
  let copyRun = null;
  if (copyFrom) {
    copyRun = (await api("/api/runs/" + copyFrom)).data;
    initial = copyRun.params || {};
  }
  const fields = {};  // name -> {wrap, read, meta}
  const sections = [];
  const bySection = {};
  for (const [fname, prop] of Object.entries(schema.properties)) {
    const section = prop.section || "Parameters";
    if (!bySection[section]) { bySection[section] = []; sections.push(section); }
    const kind = fieldKind(schema, prop);
    const value = fname in initial ? initial[fname] : prop.default;
    let control;
    if (prop["x-input"]) control = inputField(fname, prop, data.choices[fname], value);
    else {
      const el = scalarField(fname, kind, value);
      control = {elements: [el], read: () => readScalar(el, kind)};
      if (prop.format === "path" || (prop.anyOf || []).some(p => p.format === "path")) {
        const chooser = h("div", {class: "files", hidden: true});
        control.elements.push(" ", h("button", {type: "button", onclick: () => openChooser(chooser, el, null)}, "Browse…"), chooser);
      }
    }
    const required = (schema.required || []).includes(fname);
    const title = fieldTitle(fname, prop);
    const wrap = h("div", {class: "field" + (prop.expert ? " expert" : ""), "data-field": fname, "data-section": section},
      h("label", {}, title + (required ? " *" : ""),
        prop.unit ? h("span", {class: "unit"}, "(" + prop.unit + ")") : null,
        prop["x-input"] ? h("span", {class: "unit"}, `[${prop["x-input"].set} set]`) : null),
      control.elements,
      prop.description ? h("div", {class: "help"}, prop.description) : null,
      h("div", {class: "error"}));
    fields[fname] = {wrap, read: control.read, prop};
    bySection[section].push(wrap);
  }
  const launch = {
    label: h("input", {type: "text", name: "_label", value: copyRun && copyRun.label ? copyRun.label + "-copy" : ""}),
    workers: h("input", {type: "number", name: "_workers", value: "", min: "1", step: "1", placeholder: "auto",
      title: "Steps at the same time; empty: what the protocol suggests (e.g. both halves of a reconstruction), at most the cores"}),
    executor: h("select", {name: "_executor"}, ["threads", "processes", "dask"].map(v => h("option", {value: v}, v))),
    device: h("select", {name: "_device"}, ["", "auto", "cpu", "gpu"].map(v => h("option", {value: v}, v || "(configured)"))),
    queue: h("select", {name: "_queue"}, h("option", {value: ""}, "(configured default)"),
      (PROJECT.queues || []).map(q => h("option", {value: q}, q))),
  };
  const launchSection = "Launch";
  sections.push(launchSection);
  bySection[launchSection] = Object.entries(launch).map(([k, el]) =>
    h("div", {class: "field", "data-field": "_" + k, "data-section": launchSection}, h("label", {}, humanize(k)), el, h("div", {class: "error"})));
  let active = sections[0];
  const expert = h("input", {type: "checkbox", id: "expert-toggle"});
  const tabs = h("div", {class: "tabs"}, sections.map(s => h("button", {type: "button", class: "tab", "data-tab": s,
    onclick: () => { active = s; update(); }}, s)));
  const body = h("div", {}, sections.map(s => bySection[s]));
  const general = h("div", {class: "problems", id: "form-errors"});
  const values = () => {
    const out = {};
    for (const [fname, f] of Object.entries(fields)) {
      if (f.wrap.dataset.visible === "false") continue;
      const v = f.read();
      if (v !== undefined) out[fname] = v;
    }
    return out;
  };
  function update() {
    const current = {};
    for (const [fname, f] of Object.entries(fields)) current[fname] = f.read();
    for (const [fname, f] of Object.entries(fields)) {
      const cond = f.prop.visible_if;
      const visible = !cond || conditionHolds(cond, current);
      f.wrap.dataset.visible = visible ? "true" : "false";
      f.wrap.hidden = !visible || f.wrap.dataset.section !== active || (f.prop.expert && !expert.checked);
    }
    for (const el of bySection[launchSection]) el.hidden = active !== launchSection;
    for (const t of tabs.children) t.classList.toggle("active", t.dataset.tab === active);
  }
  const request = () => ({protocol: name, params: values(), label: launch.label.value.trim() || null,
    workers: launch.workers.value.trim() || null, executor: launch.executor.value, device: launch.device.value || null,
    queue: launch.queue.value || null});
  function showProblems(problems) {
    for (const el of body.querySelectorAll(".field")) { el.classList.remove("has-error"); el.querySelector(".error").textContent = ""; }
    general.replaceChildren();
    for (const p of problems || []) {
      const wrap = p.field && body.querySelector(`.field[data-field="${p.field}"]`);
      if (wrap) {
        wrap.classList.add("has-error");
        const err = wrap.querySelector(".error");
        err.textContent = (err.textContent ? err.textContent + " · " : "") + p.message;
        wrap.hidden = false;
      } else general.append(h("div", {}, p.message));
    }
    // a tab holding a problem is marked, so that problems in other tabs are not missed
    const bad = new Set([...body.querySelectorAll(".field.has-error")].map(el => el.dataset.section));
    for (const t of tabs.children) t.classList.toggle("has-error", bad.has(t.dataset.tab));
  }
  async function submit(path) {
    const res = await api(path, {method: "POST", body: request(), allowError: true});
    if (res.ok && path === "/api/runs") { location.hash = "#/run/" + res.data.run; return; }
    showProblems(res.ok ? [] : (res.data.problems || [{field: null, message: res.data.error}]));
    if (res.ok) general.replaceChildren(h("div", {style: "color:var(--finished)"}, "No problems found."));
  }
  view.replaceChildren(h("div", {id: "run-form", "data-protocol": name},
    h("h1", {}, `New ${data.protocol.name} run`, copyRun ? ` (copy of ${runName(copyRun)})` : ""),
    h("p", {class: "muted", style: "white-space:pre-wrap"}, schema.description),
    h("label", {}, expert, " show expert parameters"),
    tabs, body, general,
    h("div", {class: "row", style: "margin-top:1em"},
      h("button", {type: "button", id: "validate", onclick: () => submit("/api/validate")}, "Check"),
      h("button", {type: "button", class: "primary", id: "launch", onclick: () => submit("/api/runs")}, "Launch"))));
  body.addEventListener("input", update);
  body.addEventListener("change", update);
  expert.addEventListener("change", update);
  update();
  return null;
}

// -- run page --------------------------------------------------------------------------------
function kvTable(obj, id, properties) {
  // properties: the protocol's schema properties, for human titles and units (name as tooltip)
  return h("table", {id}, Object.entries(obj || {}).map(([k, v]) => {
    const prop = properties && properties[k];
    const head = prop ? fieldTitle(k, prop) + (prop.unit ? ` (${prop.unit})` : "") : k;
    return h("tr", {}, h("th", {title: k}, head),
      h("td", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)));
  }));
}

const schemaCache = {};
async function protocolProperties(name) {
  if (!(name in schemaCache)) {
    const res = await api("/api/protocols/" + encodeURIComponent(name), {allowError: true});
    schemaCache[name] = res.ok ? res.data.schema.properties : null;
  }
  return schemaCache[name];
}

function runPage(id) {
  const root = h("div", {id: "run-page", "data-run": id});
  view.replaceChildren(root);
  let notesDirty = false;
  let results = null;  // the output pictures, rendered when the run is not running
  let resultsKey = null;  // the output sets' versions those pictures show
  let shown = null;  // what the page shows: a change elsewhere in the project does not redraw it
  let refreshes = 0;  // data-refreshes: how many refreshes the page has been through
  async function loadResults() {
    results = [h("span", {class: "muted"}, "rendering pictures…")];
    const res = await api(`/api/runs/${id}/pictures`, {allowError: true});
    const el = () => root.querySelector("#run-results");  // the page may have been redrawn
    if (!res.ok) { results = [h("span", {class: "problems"}, res.data.error)]; el()?.replaceChildren(...results); return; }
    const shown = res.data.outputs.filter(o => o.pictures.length);
    results = shown.length ? shown.map(o => h("div", {class: "result", "data-set": o.set},
      h("h3", {}, h("a", {href: "#/set/" + o.set}, o.name), h("span", {class: "muted"}, ` (${o.kind})`)),
      o.pictures.map(n => h("a", {href: withToken(`/api/sets/${o.set}/pictures/${n}`), target: "_blank"},
        h("img", {src: withToken(`/api/sets/${o.set}/pictures/${n}`), alt: n, title: n}))))) :
      [h("span", {class: "muted"}, "no pictures of the outputs")];
    el()?.replaceChildren(...results);
  }
  async function refresh() {
    const res = await api("/api/runs/" + id, {allowError: true});
    if (!res.ok) { shown = null; root.replaceChildren(h("p", {class: "problems"}, res.data.error)); return; }
    const run = res.data;
    const log = (await api(`/api/runs/${id}/log?lines=200`)).data;
    const properties = await protocolProperties(run.protocol_name);
    root.dataset.refreshes = String(++refreshes);
    // redrawing replaces every element: a click pressed on a link and released on its
    // replacement is lost, so nothing is redrawn unless the run, its log or its notes changed
    const drawn = JSON.stringify([run, log.lines, notesDirty]);
    if (drawn === shown) return;
    shown = drawn;
    const running = run.status === "running" && !run.process_gone;
    const notes = root.querySelector("#run-notes");
    const notesText = notes && notesDirty ? notes.value : run.notes;
    const actions = h("div", {class: "row"},
      h("button", {id: "run-continue", disabled: running || run.status === "finished",
        onclick: async () => { await api(`/api/runs/${id}/continue`, {method: "POST", body: {}}); refresh(); }}, "Continue"),
      h("button", {id: "run-stop", disabled: !running,
        onclick: async () => { await api(`/api/runs/${id}/stop`, {method: "POST", body: {}}); refresh(); }}, "Stop"),
      h("button", {id: "run-copy", onclick: () => { location.hash = `#/new/${run.protocol_name}?copy=${id}`; }}, "Copy"),
      h("button", {id: "run-delete", class: "danger", disabled: running, onclick: async () => {
        const users = run.dependents.length ? `Runs ${run.dependents.map(d => "#" + d).join(", ")} use its outputs.\n` : "";
        if (!confirm(`${users}Delete run ${runName(run)}, its folder and its output sets?`)) return;
        await api(`/api/runs/${id}?confirm=1`, {method: "DELETE"});
        location.hash = "#/";
      }}, "Delete"));
    const stepCounts = Object.entries(run.steps).map(([k, n]) => `${n} ${k}`).join(", ") || "no steps yet";
    const total = Object.values(run.steps).reduce((a, b) => a + b, 0);
    const done = run.steps.done || 0;
    root.replaceChildren(h("div", {},
      h("h1", {}, `Run ${runName(run)} `, h("span", {class: "muted"}, run.protocol), " ", h("span", {id: "run-status"}, statusBadge(run))),
      run.error ? h("p", {class: "problems", id: "run-error"}, run.error) : null,
      run.process_gone ? h("p", {class: "problems"}, "The runner process is gone (killed or crashed): continue the run.") : null,
      actions,
      h("div", {class: "row"},
        h("div", {class: "panel"}, h("h2", {}, "Progress"),
          h("progress", {max: Math.max(total, 1), value: done, id: "run-progress"}), " ",
          h("span", {id: "run-steps"}, stepCounts),
          h("h2", {}, "Summary"), kvTable(run.summary, "run-summary")),
        h("div", {class: "panel"}, h("h2", {}, "Inputs"),
          h("ul", {}, Object.entries(run.inputs || {}).map(([n, ref]) => h("li", {}, `${n}: `,
            h("a", {href: "#/set/" + ref.set}, ref.run !== undefined ? `run ${ref.run} · ${ref.output}` : `set ${ref.set} (${ref.path || "imported"})`)))),
          h("h2", {}, "Outputs"),
          h("ul", {id: "run-outputs"}, (run.output_sets || []).map(o => h("li", {},
            h("a", {href: "#/set/" + o.set, "data-set": o.set}, `${o.name}`), ` (${o.kind}, ${o.state})`))),
          h("h2", {}, "Used by"),
          h("div", {}, run.dependents.length ? run.dependents.map(d => h("a", {href: "#/run/" + d, style: "margin-right:.5em"}, "#" + d)) : "—")),
        h("div", {class: "panel"}, h("h2", {}, "Parameters"), kvTable(run.params, "run-params", properties))),
      h("h2", {}, "Results"),
      h("div", {class: "pictures", id: "run-results"}, ...(results || [h("span", {class: "muted"}, running ? "pictures when the run stops" : "rendering pictures…")])),
      h("h2", {}, "Log"), h("pre", {class: "log", id: "run-log"}, log.lines.join("\n") || "(no log yet)"),
      h("h2", {}, "Steps"),
      h("table", {id: "run-step-list"}, h("tbody", {}, run.step_list.slice(-50).map(s => h("tr", {},
        h("td", {}, s.key), h("td", {}, s.status), h("td", {}, s.seconds !== null ? s.seconds + " s" : ""), h("td", {}, s.error || ""))))),
      h("h2", {}, "Notes"),
      h("textarea", {id: "run-notes", rows: 3, cols: 80, oninput: () => { notesDirty = true; }}, notesText),
      h("div", {}, h("button", {id: "run-notes-save", onclick: async () => {
        await api(`/api/runs/${id}/notes`, {method: "POST", body: {text: root.querySelector("#run-notes").value}});
        notesDirty = false;
      }}, "Save notes"))));
    const logEl = root.querySelector("#run-log");
    logEl.scrollTop = logEl.scrollHeight;
    const key = JSON.stringify((run.output_sets || []).map(o => [o.set, o.version]));
    if (!running && run.status !== "saved" && (run.output_sets || []).length && key !== resultsKey) {
      resultsKey = key;  // new versions (a continued run): pictures again
      loadResults().catch(e => console.warn("results:", e));
    }
    clearInterval(pageTimer);
    if (running) pageTimer = setInterval(refreshLog, 3000);  // log lines between DB changes
  }
  async function refreshLog() {
    const el = root.querySelector("#run-log");
    if (!el || !document.body.contains(root)) { clearInterval(pageTimer); return; }
    let data;
    try { ({data} = await api(`/api/runs/${id}/log?lines=200`)); } catch (e) { return; }
    const text = data.lines.join("\n") || "(no log yet)";
    if (el.textContent !== text) { el.textContent = text; el.scrollTop = el.scrollHeight; }
  }
  return {refresh};
}

// -- set page: pictures and a paged sortable table -------------------------------------------
function setPage(id) {
  let offset = 0, limit = 100, sort = "item_id", desc = false;
  const root = h("div", {id: "set-page", "data-set": id});
  const pictures = h("div", {class: "pictures", id: "set-pictures"}, h("span", {class: "muted"}, "rendering pictures…"));
  const table = h("div", {id: "set-table"});
  view.replaceChildren(root);
  async function loadPictures() {
    const res = await api(`/api/sets/${id}/pictures`, {allowError: true});
    if (!res.ok) { pictures.replaceChildren(h("span", {class: "problems"}, res.data.error)); return; }
    // pictures of the whole set first; one picture per item (thumbnails, spectra) folded away
    const overview = n => !/_(thumb|psd)\.png$/.test(n);
    const link = n => h("a", {href: withToken(`/api/sets/${id}/pictures/${n}`), target: "_blank"},
      h("img", {src: withToken(`/api/sets/${id}/pictures/${n}`), alt: n, title: n}));
    const items = res.data.pictures.filter(n => !overview(n));
    pictures.replaceChildren(h("div", {},
      res.data.pictures.filter(overview).map(link),
      items.length ? h("details", {}, h("summary", {}, `${items.length} pictures of single items`), items.map(link)) : null));
    if (!res.data.pictures.length) pictures.replaceChildren(h("span", {class: "muted"}, "no pictures for this set"));
  }
  async function loadPage() {
    const {data} = await api(`/api/sets/${id}/items?offset=${offset}&limit=${limit}&sort=${sort}&desc=${desc ? 1 : 0}`);
    const images = info.kind === "particles" || info.kind === "micrographs" || info.kind === "volumes";
    const head = h("tr", {}, images ? h("th", {}, "image") : null, data.columns.map(c => h("th", {class: "sortable" + (c === sort ? (desc ? " sorted-desc" : " sorted-asc") : ""),
      "data-column": c, onclick: () => { if (sort === c) desc = !desc; else { sort = c; desc = false; } offset = 0; loadPage(); }}, c)));
    const fmt = v => v === null ? "" : typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(5) : typeof v === "object" ? JSON.stringify(v) : String(v);
    table.replaceChildren(
      h("div", {class: "row"},
        h("button", {id: "page-prev", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - limit); loadPage(); }}, "◀"),
        h("span", {id: "page-info"}, `${data.total ? offset + 1 : 0}–${Math.min(offset + limit, data.total)} of ${data.total}`),
        h("button", {id: "page-next", disabled: offset + limit >= data.total, onclick: () => { offset += limit; loadPage(); }}, "▶")),
      h("table", {id: "items"}, h("thead", {}, head), h("tbody", {}, data.rows.map(r => h("tr", {},
        images ? h("td", {}, h("img", {class: "thumb", loading: "lazy", alt: "item " + r[0],
          src: withToken(`/api/sets/${id}/items/${r[0]}/image.png`)})) : null,
        r.map(v => h("td", {}, fmt(v))))))));
  }
  let info = {};
  async function refresh() {
    info = (await api("/api/sets/" + id)).data;
    root.replaceChildren(
      h("h1", {}, `Set ${info.set}: `, info.run ? h("a", {href: "#/run/" + info.run}, `run #${info.run}`) : "", ` · ${info.name}`),
      h("p", {id: "set-info"}, `${info.kind} · ${info.size} items · ${info.state}`),
      h("details", {}, h("summary", {}, "properties"), kvTable(info.properties, "set-properties")),
      h("h2", {}, "Pictures"), pictures, h("h2", {}, "Items"), table);
    loadPage();
  }
  refresh().then(loadPictures);
  return {refresh: () => {}};  // a table page does not jump while the user reads it
}

// -- streaming monitor -----------------------------------------------------------------------
function streamingPage() {
  const time = t => t ? t.replace("T", " ").slice(0, 19) : "—";
  const updated = h("p", {class: "muted", id: "stream-updated"}, "");
  const setRows = h("tbody", {}), runRows = h("tbody", {});
  const updateSets = keyedRows(setRows), updateRuns = keyedRows(runRows);  // a click stays
  const root = h("div", {id: "streaming-page"}, h("h1", {}, "Streaming monitor"), updated,
    h("h2", {}, "Open sets"),
    h("table", {id: "open-sets"}, h("thead", {}, h("tr", {}, ["run", "set", "kind", "items", "items / min", "last item"].map(t => h("th", {}, t)))), setRows),
    h("h2", {}, "Unfinished runs"),
    h("table", {id: "stream-runs"}, h("thead", {}, h("tr", {}, ["run", "protocol", "status", "last item", "failed items", ""].map(t => h("th", {}, t)))), runRows));
  view.replaceChildren(root);
  const setRow = s => h("tr", {"data-set": s.set},
    h("td", {}, h("a", {href: "#/run/" + s.run}, "#" + s.run)), h("td", {}, h("a", {href: "#/set/" + s.set}, s.name)),
    h("td", {}, s.kind), h("td", {class: "count"}, String(s.size)), h("td", {}, String(s.per_min)), h("td", {}, time(s.last_item_at)));
  const runRow = r => h("tr", {"data-run": r.id},
    h("td", {}, h("a", {href: "#/run/" + r.id}, runName(r))), h("td", {}, r.protocol_name),
    h("td", {}, r.state + (r.stop_requested ? " (stop requested)" : "")), h("td", {}, time(r.last_item_at)),
    h("td", {}, String(r.failed_items)),
    h("td", {}, h("button", {class: "danger stop", disabled: r.stop_requested || r.status !== "running",
      onclick: async () => { await api(`/api/runs/${r.id}/stop`, {method: "POST", body: {}}); refresh(); }}, "Stop")));
  async function refresh() {
    const {data} = await api("/api/streaming");
    updated.textContent = `updated ${time(data.time)} (rates over the last ${data.window_s} s)`;
    updateSets(data.sets, s => s.set, setRow);
    updateRuns(data.runs, r => r.id, runRow);
  }
  return {refresh};
}

// -- workflows -------------------------------------------------------------------------------
function workflowsPage() {
  const text = h("textarea", {id: "workflow-text", rows: 14, cols: 90, placeholder: '{"protocols": [{"label": ..., "protocol": ..., "params": {...}}]}'});
  const format = h("select", {id: "workflow-format"}, h("option", {value: "json"}, "JSON"), h("option", {value: "yaml"}, "YAML"));
  const result = h("div", {id: "workflow-result"});
  const startNow = h("input", {type: "checkbox", id: "workflow-start", checked: true});
  view.replaceChildren(h("div", {}, h("h1", {}, "Workflows"),
    h("h2", {}, "Load a workflow into the project (its runs are created and started)"),
    text, h("div", {}, format, " ", h("label", {}, startNow, " start the runs now (otherwise they stay saved, to continue later)"), " ",
      h("button", {class: "primary", id: "workflow-load", onclick: async () => {
      const res = await api("/api/workflows", {method: "POST", body: {text: text.value, format: format.value, start: startNow.checked}, allowError: true});
      result.replaceChildren(res.ok ? h("p", {}, "created runs ", res.data.runs.map(r => h("a", {href: "#/run/" + r, style: "margin-right:.4em"}, "#" + r)))
        : h("pre", {class: "problems"}, res.data.error));
    }}, "Load")), result,
    h("h2", {}, "Export the project's runs as a workflow"),
    h("button", {id: "workflow-export", onclick: async () => {
      const {data} = await api("/api/workflow");
      text.value = JSON.stringify(data, null, 2);
    }}, "Export to the editor"), " ",
    h("a", {href: withToken("/api/workflow"), download: "workflow.json"}, "download workflow.json")));
  return null;
}

// -- router ----------------------------------------------------------------------------------
async function route() {
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.nav === (parts[0] || "project") || (parts[0] === undefined && a.dataset.nav === "project"));
  current = null;
  clearInterval(pageTimer);
  try {
    if (parts[0] === "run") current = runPage(Number(parts[1]));
    else if (parts[0] === "set") current = setPage(Number(parts[1]));
    else if (parts[0] === "new" && parts[1]) current = await formPage(decodeURIComponent(parts[1]), new URLSearchParams(query || "").get("copy"));
    else if (parts[0] === "new") current = await palettePage();
    else if (parts[0] === "streaming") current = streamingPage();
    else if (parts[0] === "workflows") current = workflowsPage();
    else current = projectPage();
    if (current && current.refresh) await current.refresh();
  } catch (e) {
    view.replaceChildren(h("p", {class: "problems"}, String(e.message || e)));
  }
}

window.addEventListener("hashchange", route);
let PROJECT = {};
api("/api/project").then(({data}) => {
  PROJECT = data;
  document.getElementById("project-name").textContent = data.name;
}).finally(route);
startEvents();
