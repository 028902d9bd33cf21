// iochost dashboard: one module, no framework, no build step. Everything comes from the REST
// API with the operator's token (session storage only); live updates come from server-sent
// event streams read with fetch(), which, unlike EventSource, can send the Authorization header.
// Elements carry data-* attributes (data-plugin, data-state, data-action, data-pv, data-log):
// the contract tests and operators' scripts rely on.

const API = "/api/v1";
const TOKEN_KEY = "iochost.token";
const LOG_LINES_KEPT = 2000;
const ACTIONS = { task: ["start", "stop", "restart"], job: ["start", "stop", "restart", "run"] };

// -- small helpers -----------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
const shortCommit = (sha) => (sha ? sha.slice(0, 10) : "");
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  const s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
const since = (iso) => (iso ? duration((Date.now() - Date.parse(iso)) / 1000) : "");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

// -- the API -----------------------------------------------------------------------------
class Api {
  constructor() { this.token = sessionStorage.getItem(TOKEN_KEY) || ""; }

  headers(extra = {}) {
    return this.token ? { ...extra, Authorization: `Bearer ${this.token}` } : extra;
  }

  async call(method, path, body) {
    const init = { method, headers: this.headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (exc) {
      return { ok: false, status: 0, data: { code: "NETWORK", message: `the daemon did not answer (${exc.message})` } };
    }
    let data = null;
    try { data = await response.json(); } catch { data = null; }
    return { ok: response.ok, status: response.status, data };
  }

  // Server-sent events of ``path``: calls onEvent(name, data) for each, onOpen() at each
  // (re)connection, onLink(live) as the stream comes and goes; reconnects with backoff.
  follow(path, { onEvent, onOpen = () => {}, onLink = () => {} }) {
    const control = new AbortController();
    let wait = 1000;
    const run = async () => {
      while (!control.signal.aborted) {
        try {
          const response = await fetch(API + path, { headers: this.headers({ Accept: "text/event-stream" }),
                                                     signal: control.signal });
          if (response.status === 401 || response.status === 403) { signOut("the token was refused"); return; }
          if (response.status === 404) { onLink(false); return; }
          if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
          wait = 1000;
          onLink(true);
          await onOpen();
          await readEvents(response.body, onEvent);
        } catch (exc) {
          if (control.signal.aborted) return;
        }
        onLink(false);
        await new Promise((resolve) => setTimeout(resolve, wait));
        wait = Math.min(wait * 2, 10000);
      }
    };
    run();
    return () => control.abort();
  }
}

async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

const api = new Api();
let role = "none";
let stopPage = null;  // ends the current page's event streams

function signOut(why) {
  if (stopPage) stopPage();
  stopPage = null;
  sessionStorage.removeItem(TOKEN_KEY);
  api.token = "";
  const main = document.getElementById("main");
  main.replaceChildren(tokenForm(why));
}

function describe(answer) {
  if (answer.ok) return "done";
  const data = answer.data || {};
  const code = data.code ? `${data.code}: ` : "";
  return `${answer.status || ""} ${code}${data.message || data.detail || "failed"}`.trim();
}

// Runs ``request`` for a button; the outcome goes into ``output`` (data-ok true/false).
async function act(button, output, request, success) {
  button.disabled = true;
  output.textContent = `${button.textContent}…`;
  output.removeAttribute("data-ok");
  const answer = await request();
  button.disabled = false;
  output.dataset.ok = String(answer.ok);
  output.textContent = answer.ok ? (success ? success(answer) : `${button.dataset.action || "request"}: done`)
    : `${button.dataset.action || "request"}: ${describe(answer)}`;
  return answer;
}

function actionButtons(record, output, { onDeleted } = {}) {
  if (role !== "admin") return [];
  const buttons = (ACTIONS[record.kind] || ACTIONS.task).map((action) => {
    const button = el("button", { type: "button", "data-action": action, text: action[0].toUpperCase() + action.slice(1),
                                  "aria-label": `${action} ${record.name}` });
    button.addEventListener("click", () => act(button, output, () => api.call("POST", `/plugins/${encodeURIComponent(record.name)}/${action}`),
      action === "run" ? (answer) => `run: ${answer.data.state}${answer.data.result && answer.data.result.message ? ` — ${answer.data.result.message}` : ""}` : null));
    return button;
  });
  const remove = el("button", { type: "button", class: "danger", "data-action": "delete", text: "Delete",
                                "aria-label": `delete ${record.name}` });
  remove.addEventListener("click", async () => {
    if (!window.confirm(`Delete plugin ${record.name}? Its worker stops, its PVs go away and its checkout is removed.`)) return;
    const answer = await act(remove, output, () => api.call("DELETE", `/plugins/${encodeURIComponent(record.name)}`));
    if (answer.ok && onDeleted) onDeleted();
  });
  return [...buttons, remove];
}

// Saves what ``path`` answers (fetched with the token, which a plain link could not send).
async function download(path, file, button) {
  button.disabled = true;
  try {
    const response = await fetch(API + path, { headers: api.headers() });
    if (!response.ok) { button.title = `${response.status}: not saved`; return; }
    const link = el("a", { href: URL.createObjectURL(await response.blob()), download: file });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  } finally {
    button.disabled = false;
  }
}

// -- the header --------------------------------------------------------------------------
function showHealth(health) {
  const node = document.querySelector("[data-health]");
  node.dataset.status = health.status;
  const problems = health.problems ? health.problems.length : 0;
  node.textContent = `${health.status}${problems ? ` — ${plural(problems, "problem")}` : ""} · v${health.version} · up ${duration(health.uptime)}`
    + (health.storage ? ` · storage: ${health.storage.error || "refusing writes"}` : "")
    + (health.launcher ? ` · launcher: ${health.launcher}` : "");
}
let healthTimer = null;
function refreshHealth() {
  clearTimeout(healthTimer);
  healthTimer = setTimeout(async () => {
    const answer = await api.call("GET", "/health");
    if (answer.ok || answer.status === 503) showHealth(answer.data);
  }, 150);
}
function showLink(live) {
  const node = document.querySelector("[data-stream]");
  node.dataset.live = String(live);
  node.textContent = live ? "live" : "reconnecting…";
}

// -- sign in -----------------------------------------------------------------------------
function tokenForm(why) {
  const input = el("input", { name: "token", type: "password", autocomplete: "current-password", required: true,
                              id: "token", "aria-describedby": "token-help" });
  const form = el("form", { class: "token card", "data-token-form": true },
    el("label", { for: "token" }, "Token", input),
    el("button", { type: "submit", text: "Sign in" }),
    el("p", { id: "token-help", class: "muted", text: "This daemon needs a token: the read token shows everything, the admin token also acts. It is kept in this browser tab only." }),
    why ? el("p", { class: "error-text", role: "alert", text: why }) : null);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    api.token = input.value.trim();
    const answer = await api.call("GET", "/access");
    if (!answer.ok || answer.data.role === "none") { signOut("that token is not recognised"); return; }
    sessionStorage.setItem(TOKEN_KEY, api.token);
    start();
  });
  queueMicrotask(() => input.focus());
  return form;
}

// Reads a JSON object typed into ``input``; throws with the reason when it is not one.
function jsonObject(input, what) {
  const text = input.value.trim();
  if (!text) return {};
  let value;
  try { value = JSON.parse(text); } catch (exc) { throw new Error(`${what}: not JSON (${exc.message})`); }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error(`${what}: not a JSON object`);
  return value;
}

function field(label, attrs) {
  const id = `f-${attrs.name}`;
  const input = el(attrs.tag || "input", { id, type: attrs.tag ? null : "text", ...attrs, tag: null });
  return [el("label", { for: id }, label, input), input];
}

function addForm() {
  const output = el("output", { "aria-live": "polite", "data-add-outcome": true });
  const [nameLabel, name] = field("Name", { name: "name", required: true, placeholder: "my-plugin" });
  const [urlLabel, url] = field("Git URL or local path", { name: "source", required: true, placeholder: "https://host/org/repo.git" });
  const [branchLabel, branch] = field("Branch or tag", { name: "add-branch" });
  const [commitLabel, commit] = field("Commit", { name: "add-commit", class: "mono" });
  const [pathLabel, folder] = field("Folder in the repository", { name: "path" });
  const [paramsLabel, params] = field("Parameters (JSON)", { name: "parameters", placeholder: '{"interval": 2}' });
  const [classLabel, className] = field("Class (if several)", { name: "class_name" });
  const [patLabel, pat] = field("Access token (private repository)", { name: "pat", type: "password", autocomplete: "off" });
  const [graceLabel, grace] = field("Stop grace period (s)", { name: "grace_period", inputmode: "decimal" });
  const start = el("input", { type: "checkbox", id: "f-auto-start", name: "auto_start", checked: true });
  const boot = el("input", { type: "checkbox", id: "f-auto-start-on-boot", name: "auto_start_on_boot", checked: true });
  const button = el("button", { type: "submit", "data-action": "add", text: "Add" });
  const more = el("details", {}, el("summary", { text: "More" }),
    el("div", { class: "upgrade" }, classLabel, patLabel, graceLabel,
      el("label", { for: "f-auto-start-on-boot", class: "inline" }, boot, "start again after a daemon restart")));
  const form = el("form", { class: "upgrade", "data-add-form": true }, nameLabel, urlLabel, branchLabel, commitLabel,
    pathLabel, paramsLabel, el("label", { for: "f-auto-start", class: "inline" }, start, "start it"), button, output, more);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { name: name.value.trim(), auto_start: start.checked };
    const source = url.value.trim();
    body[source.startsWith("/") ? "local_path" : "git_url"] = source;
    for (const [key, input] of [["branch", branch], ["commit", commit], ["path", folder], ["class_name", className]]) {
      if (input.value.trim()) body[key] = input.value.trim();
    }
    if (pat.value) body.pat = pat.value;
    if (grace.value.trim()) body.grace_period = Number(grace.value);
    if (!boot.checked) body.auto_start_on_boot = false;
    try { body.parameters = jsonObject(params, "parameters"); } catch (exc) {
      output.dataset.ok = "false"; output.textContent = exc.message; return;
    }
    act(button, output, () => api.call("POST", "/plugins", body), (answer) => `added ${answer.data.name}: ${answer.data.state}`);
  });
  return el("section", {}, el("h2", { text: "Add a plugin" }),
    el("p", { class: "muted", text: "The repository is cloned, the plugin validated and started; the answer comes once it runs, or says why not." }), form);
}

// -- the overview ------------------------------------------------------------------------
// ``output``: the plugin's outcome line, kept across re-renders (a request in flight writes to it).
function overviewRow(record, output) {
  const link = el("a", { href: `/ui/plugins/${encodeURIComponent(record.name)}`, text: record.name });
  return el("tr", { "data-plugin": record.name, "data-state": record.state, "data-kind": record.kind },
    el("td", {}, link),
    el("td", { class: "hide-narrow", text: record.kind }),
    el("td", {}, el("span", { class: "state", "data-state": record.state, text: record.state })),
    el("td", { "data-field": "status", text: record.status || "" }),
    el("td", { class: "wrap", "data-field": "message", text: record.message || "" }),
    el("td", { class: "wrap error-text", "data-field": "last_error", text: record.last_error || "" }),
    el("td", { class: "hide-narrow", text: record.restarts }),
    el("td", { class: "mono hide-narrow", title: record.source.commit || "", text: shortCommit(record.source.commit) }),
    el("td", { class: "hide-narrow", "data-since": record.started_at && record.state === "running" ? record.started_at : "",
               text: record.state === "running" ? since(record.started_at) : "" }),
    el("td", {}, el("div", { class: "actions" }, actionButtons(record, output), output)));
}

function overview(main) {
  const body = el("tbody");
  const empty = el("p", { class: "empty", text: "No plugins yet: add one with POST /api/v1/plugins." });
  const table = el("table", { "data-plugins": true },
    el("thead", {}, el("tr", {}, ["Plugin", "Kind", "State", "STATUS", "MESSAGE", "Last error", "Restarts", "Commit", "Uptime", "Actions"]
      .map((title, i) => el("th", { scope: "col", class: [1, 6, 7, 8].includes(i) ? "hide-narrow" : null, text: title })))),
    body);
  const index = el("button", { type: "button", class: "quiet", "data-download": "index", text: "Phoebus index (.bob)" });
  index.addEventListener("click", () => download("/displays/index.bob", "index.bob", index));
  main.replaceChildren(el("h1", {}, "Plugins", index), el("section", { class: "scroll" }, table, empty),
    role === "admin" ? addForm() : null);
  const rows = new Map();
  const outcomes = new Map();
  const shown = new Map();  // name -> the record's JSON its row shows: an unchanged row is left alone
  const place = (record) => {
    const json = JSON.stringify(record);
    if (shown.get(record.name) === json) return;
    shown.set(record.name, json);
    if (!outcomes.has(record.name)) outcomes.set(record.name, el("output", { "aria-live": "polite" }));
    const row = overviewRow(record, outcomes.get(record.name));
    const old = rows.get(record.name);
    const focused = old && old.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    if (old) old.replaceWith(row);
    if (focused) { const again = row.querySelector(`[data-action="${focused}"]`); if (again) again.focus(); }
    else body.append(row);
    rows.set(record.name, row);
    empty.hidden = rows.size > 0;
  };
  const forget = (name) => {
    const row = rows.get(name);
    if (row) row.remove();
    rows.delete(name);
    outcomes.delete(name);
    shown.delete(name);
    empty.hidden = rows.size > 0;
  };
  const loadAll = async () => {
    const answer = await api.call("GET", "/plugins");
    if (!answer.ok) return;
    const names = new Set(answer.data.plugins.map((record) => record.name));
    for (const name of [...rows.keys()]) if (!names.has(name)) forget(name);
    answer.data.plugins.forEach(place);
    refreshHealth();
  };
  // A burst of events (a restore, an upgrade) is one read of the list: it also covers plugins
  // added or deleted meanwhile, and never asks for one that is gone.
  let pending = null;
  const soon = () => {
    if (pending) return;
    pending = setTimeout(async () => { pending = null; await loadAll(); }, 100);
  };
  return api.follow("/events", { onOpen: loadAll, onLink: showLink, onEvent: soon });
}

// -- one plugin's page -------------------------------------------------------------------
function formatValue(pv, value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) {
    const shown = value.slice(0, 12).map((item) => formatValue(pv, item));
    return value.length > 12 ? `[${shown.join(", ")}, … ${value.length} values]` : `[${shown.join(", ")}]`;
  }
  if (pv.choices && Number.isInteger(value) && pv.choices[value] !== undefined) return pv.choices[value];
  if (typeof value === "number" && pv.type === "float" && Number.isInteger(pv.prec)) return value.toFixed(Math.min(pv.prec, 17));
  return String(value);
}

function writeControl(pv, output) {
  const put = (value, button) => act(button, output, () => api.call("POST", "/pvs/put", { pv_name: pv.pv, value }),
    () => `${pv.name} ← ${formatValue(pv, value)}`);
  if (pv.shape === "command") {
    const button = el("button", { type: "button", "data-write": pv.pv, text: pv.label });
    button.addEventListener("click", () => put(1, button));
    return button;
  }
  let input;
  if (pv.choices && pv.choices.length) {
    input = el("select", { "data-input": pv.pv, "aria-label": `new value of ${pv.name}` },
      pv.choices.map((choice, index) => el("option", { value: index, text: choice })));
  } else if (pv.type === "float" || pv.type === "int") {
    input = el("input", { "data-input": pv.pv, type: "text", inputmode: "decimal", "aria-label": `new value of ${pv.name}`,
                          placeholder: pv.low !== null && pv.high !== null ? `${pv.low} … ${pv.high}` : "" });
  } else {
    input = el("input", { "data-input": pv.pv, type: "text", "aria-label": `new value of ${pv.name}` });
  }
  const button = el("button", { type: "submit", text: "Set" });
  const form = el("form", { class: "write" }, input, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    let value = input.value;
    if (input.tagName === "SELECT") value = Number(value);
    else if (pv.type === "float" || pv.type === "int") {
      if (value.trim() === "" || Number.isNaN(Number(value))) { output.dataset.ok = "false"; output.textContent = `${pv.name}: not a number`; return; }
      value = Number(value);
    }
    put(value, button);
  });
  return form;
}

function pvRows(pvs, values) {
  return pvs.map((pv) => {
    const output = el("output", { "aria-live": "polite" });
    const value = el("span", { "data-pv": pv.pv, class: "mono" });
    values.set(pv.pv, { node: value, pv });
    const limits = pv.low !== null || pv.high !== null ? `${pv.low ?? ""} … ${pv.high ?? ""}` : "";
    return el("tr", { "data-pv-row": pv.pv },
      el("td", { title: pv.pv }, pv.label, pv.label !== pv.name ? el("div", { class: "muted mono", text: pv.name }) : null),
      el("td", { class: "hide-narrow muted", text: pv.group }),
      el("td", {}, value),
      el("td", { text: pv.unit || "" }),
      el("td", { class: "hide-narrow nowrap", text: limits }),
      el("td", {}, role === "admin" && pv.writable ? el("div", { class: "actions" }, writeControl(pv, output), output) : null));
  });
}

function plugin(main, name) {
  const quoted = encodeURIComponent(name);
  const stops = [];
  const values = new Map();
  const title = el("h1");
  const facts = el("dl", { class: "facts" });
  const output = el("output", { "aria-live": "polite" });
  const actions = el("div", { class: "actions" });
  const pvBody = el("tbody");
  const log = el("pre", { class: "log", "data-log": true, tabindex: "0", "aria-label": "log, following" });
  const runs = el("tbody");
  const runsSection = el("section", { hidden: true }, el("h2", { text: "Job runs" }),
    role === "admin" ? runForm(quoted) : null,
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["Run", "State", "Origin", "Started", "Duration", "Result"].map((t) => el("th", { scope: "col", text: t })))), runs)));
  const history = el("tbody");
  const config = el("pre", { class: "config", "data-config": true, tabindex: "0" });
  const configCommit = el("p", { class: "muted mono" });
  const upgradeOutput = el("output", { "aria-live": "polite", "data-upgrade-outcome": true });
  const article = el("article", { "data-plugin": name, "data-state": "" },
    title, el("section", {}, actions, facts),
    el("section", {}, el("h2", { text: "PVs" }), el("div", { class: "scroll" }, el("table", { "data-pvs": true },
      el("thead", {}, el("tr", {}, ["PV", "Group", "Value", "Unit", "Limits", "Set"].map((t, i) => el("th", { scope: "col", class: [1, 4].includes(i) ? "hide-narrow" : null, text: t })))), pvBody))),
    el("section", {}, el("h2", { text: "Log" }), log),
    runsSection,
    el("div", { class: "grid2" },
      el("section", {}, el("h2", { text: "Transitions" }), el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["When", "From", "To", "Why"].map((t) => el("th", { scope: "col", text: t })))), history))),
      el("section", {}, el("h2", { text: "config.yaml" }), configCommit, config)),
    role === "admin" ? upgradeForm(quoted, upgradeOutput) : null);
  const panel = el("button", { type: "button", class: "quiet", "data-download": "display", text: "Phoebus panel (.bob)" });
  panel.addEventListener("click", () => download(`/displays/${quoted}.bob`, `${name}.bob`, panel));
  main.replaceChildren(el("p", { class: "actions" }, el("a", { href: "/ui/", text: "← all plugins" }), panel), article);

  let kind = null;
  const showRecord = (record) => {
    kind = record.kind;
    article.dataset.state = record.state;
    title.replaceChildren(record.name, el("span", { class: "state", "data-state": record.state, text: record.state }),
      el("span", { class: "muted", text: record.kind }));
    if (!actions.childElementCount || actions.dataset.kind !== record.kind) {
      actions.dataset.kind = record.kind;
      actions.replaceChildren(...actionButtons(record, output, { onDeleted: () => { window.location.assign("/ui/"); } }), output);
    }
    const source = record.source;
    const rows = [["STATUS", record.status], ["MESSAGE", record.message], ["Last error", record.last_error],
      ["Class", record.class_name], ["Restarts", record.restarts], ["PID", record.pid],
      ["Started", when(record.started_at)], ["Created", when(record.created_at)],
      ["Source", source.git_url || source.local_path], ["Branch", source.branch], ["Folder", source.path],
      ["Commit", source.commit], ["Previous commit", record.previous_commit], ["PV prefix", record.pv_prefix],
      ["Parameters", Object.keys(record.parameters || {}).length ? JSON.stringify(record.parameters) : ""],
      ["Warnings", (record.warnings || []).map((w) => w.message).join("; ")]];
    facts.replaceChildren(...rows.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) => [
      el("dt", { text: k }), el("dd", { class: k === "Last error" ? "error-text" : k === "Commit" ? "mono" : null, "data-field": k.toLowerCase().replace(/ /g, "_"), text: String(v) })]));
    history.replaceChildren(...[...record.transitions].reverse().map((t) => el("tr", {},
      el("td", { text: when(t.at) }), el("td", { text: t.from_state || "" }), el("td", { text: t.to_state }), el("td", { class: "wrap", text: t.reason }))));
    runsSection.hidden = record.kind !== "job";
  };
  const loadRecord = async () => {
    const answer = await api.call("GET", `/plugins/${quoted}`);
    if (answer.status === 404) { article.dataset.state = "deleted"; title.replaceChildren(`${name} (no such plugin)`); return false; }
    if (answer.ok) showRecord(answer.data);
    return answer.ok;
  };
  const cancelButton = (run) => {
    const button = el("button", { type: "button", class: "danger", "data-action": "cancel", text: "Cancel" });
    button.addEventListener("click", () => act(button, output, () => api.call("POST", `/jobs/${quoted}/runs/${run.run_id}/cancel`)));
    return button;
  };
  const loadRuns = async () => {
    if (kind !== "job") return;
    const answer = await api.call("GET", `/jobs/${quoted}/runs`);
    if (!answer.ok) return;
    runs.replaceChildren(...[...answer.data.runs].reverse().map((run) => el("tr", { "data-run": run.run_id, "data-run-state": run.state },
      el("td", { class: "mono", text: run.run_id.slice(0, 8) }),
      el("td", {}, run.state, run.state === "running" && role === "admin" ? cancelButton(run) : null), el("td", { text: run.origin }),
      el("td", { text: when(run.started_at) }),
      el("td", { text: run.finished_at ? duration((Date.parse(run.finished_at) - Date.parse(run.started_at)) / 1000) : "" }),
      el("td", { class: "wrap" + (run.result && !run.result.success ? " error-text" : ""),
                 text: run.result ? `${run.result.message || ""}${run.result.data && Object.keys(run.result.data).length ? ` ${JSON.stringify(run.result.data)}` : ""}` : "" }))));
  };
  const loadConfig = async () => {
    const answer = await api.call("GET", `/plugins/${quoted}/config`);
    if (!answer.ok) return;
    config.textContent = answer.data.text ?? "(no checkout in place)";
    configCommit.textContent = answer.data.commit ? `commit ${answer.data.commit}` : "";
  };
  const loadPvs = async () => {
    const answer = await api.call("GET", `/plugins/${quoted}/pvs`);
    if (!answer.ok) return;
    values.clear();
    pvBody.replaceChildren(...pvRows(answer.data.pvs, values));
  };
  const appendLog = (lines, replace) => {
    const text = lines.map((line) => `${line}\n`).join("");
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = replace ? text : log.textContent + text;
    const kept = log.textContent.split("\n");
    if (kept.length > LOG_LINES_KEPT + 1) log.textContent = kept.slice(-LOG_LINES_KEPT - 1).join("\n");
    if (atEnd || replace) log.scrollTop = log.scrollHeight;
  };

  stops.push(api.follow("/events", {
    onLink: showLink,
    onOpen: async () => { if (await loadRecord()) { await Promise.all([loadRuns(), loadConfig()]); } refreshHealth(); },
    onEvent: async (event, data) => {
      refreshHealth();
      if (data.plugin !== name) return;
      if (data.type === "transition" && data.data.to_state === "deleted") {
        article.dataset.state = "deleted";
        title.replaceChildren(`${name} (deleted)`);
        return;
      }
      await loadRecord();
      if (data.type === "run") loadRuns();
      if (data.type === "upgrade" || (data.type === "transition" && data.data.to_state === "running")) { loadConfig(); loadPvs(); }
    },
  }));
  stops.push(api.follow(`/plugins/${quoted}/pvs/events`, {
    onOpen: loadPvs,
    onEvent: (event, data) => {
      const entry = values.get(data.pv_name);
      if (!entry) return;
      const { node, pv } = entry;
      node.classList.remove("sev-1", "sev-2", "sev-3", "disconnected");
      if (event === "value") {
        node.textContent = formatValue(pv, data.value);
        node.dataset.severity = String(data.severity ?? 0);
        node.title = data.alarm ? `${data.alarm} (severity ${data.severity})` : "";
        if (data.severity) node.classList.add(`sev-${data.severity}`);
      } else {
        node.classList.add("disconnected");
        node.dataset.severity = "disconnected";
        node.title = data.error || "disconnected";
      }
    },
  }));
  stops.push(api.follow(`/plugins/${quoted}/logs/events?lines=200`, {
    onEvent: (event, data) => {
      if (event === "tail") appendLog(data.lines, true);
      else if (event === "lines") appendLog(data.lines, false);
      else if (event === "dropped") appendLog([`[… ${data.writes} writes not shown: this page fell behind]`], false);
    },
  }));
  return () => stops.forEach((stop) => stop());
}

function runForm(quoted) {
  const output = el("output", { "aria-live": "polite", "data-run-outcome": true });
  const [label, params] = field("Parameters for this run (JSON)", { name: "run-parameters", placeholder: '{"samples": 10}' });
  const button = el("button", { type: "submit", text: "Run with these" });
  const form = el("form", { class: "upgrade" }, label, button, output);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    let parameters;
    try { parameters = jsonObject(params, "parameters"); } catch (exc) {
      output.dataset.ok = "false"; output.textContent = exc.message; return;
    }
    act(button, output, () => api.call("POST", `/jobs/${quoted}/run`, { parameters }),
      (answer) => `run: ${answer.data.state}${answer.data.result && answer.data.result.message ? ` — ${answer.data.result.message}` : ""}`);
  });
  return form;
}

function upgradeForm(quoted, output) {
  const branch = el("input", { name: "branch", id: "upgrade-branch", type: "text", placeholder: "main" });
  const commit = el("input", { name: "commit", id: "upgrade-commit", type: "text", placeholder: "40-hex SHA", class: "mono" });
  const [paramsLabel, params] = field("New parameters (JSON; empty: kept)", { name: "upgrade-parameters" });
  const [patLabel, pat] = field("Access token", { name: "upgrade-pat", type: "password", autocomplete: "off" });
  const button = el("button", { type: "submit", "data-action": "upgrade", text: "Upgrade" });
  const form = el("form", { class: "upgrade" },
    el("label", { for: "upgrade-branch" }, "Branch or tag", branch),
    el("label", { for: "upgrade-commit" }, "or commit", commit), paramsLabel, patLabel, button, output);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = {};
    if (branch.value.trim()) body.branch = branch.value.trim();
    if (commit.value.trim()) body.commit = commit.value.trim();
    if (pat.value) body.pat = pat.value;
    if (params.value.trim()) {
      try { body.parameters = jsonObject(params, "parameters"); } catch (exc) {
        output.dataset.ok = "false"; output.textContent = exc.message; return;
      }
    }
    act(button, output, () => api.call("POST", `/plugins/${quoted}/upgrade`, body),
      (answer) => `upgraded to ${shortCommit(answer.data.source.commit)}`);
  });
  return el("section", {}, el("h2", { text: "Upgrade" }),
    el("p", { class: "muted", text: "The new revision is fetched and validated while this one runs; one that fails its probation is rolled back." }), form);
}

// -- start ---------------------------------------------------------------------------------
async function start() {
  if (stopPage) stopPage();
  const main = document.getElementById("main");
  const answer = await api.call("GET", "/access");
  if (!answer.ok) { main.replaceChildren(el("p", { class: "error-text", text: `The daemon did not answer: ${describe(answer)}` })); return; }
  role = answer.data.role;
  const signout = document.querySelector("[data-signout]");
  signout.hidden = !api.token;
  document.querySelector("[data-role]").textContent = answer.data.tokens_required ? `${role} token` : "";
  if (role === "none") {
    if (api.token) sessionStorage.removeItem(TOKEN_KEY);
    main.replaceChildren(tokenForm(api.token ? "that token is no longer recognised" : ""));
    api.token = "";
    return;
  }
  const match = window.location.pathname.match(/^\/ui\/plugins\/([^/]+)$/);
  stopPage = match ? plugin(main, decodeURIComponent(match[1])) : overview(main);
}

document.querySelector("[data-signout]").addEventListener("click", () => signOut(""));
window.setInterval(() => {
  for (const node of document.querySelectorAll("[data-since]")) if (node.dataset.since) node.textContent = since(node.dataset.since);
}, 1000);
start();
