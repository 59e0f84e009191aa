// The workbench front end: plain JS, no build step, no network beyond this server's API.
// Text from the server is always set with textContent; only guideline HTML (rendered and escaped server-side)
// is set as markup.
"use strict";
const BASE = document.querySelector('meta[name="base"]').content;
const VIEW = document.body.dataset.view;
const main = document.getElementById("main");
const TOKEN_KEY = "workbench-token", WHO_KEY = "workbench-who";

// ---- helpers ------------------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

function toast(text, error = false) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = "show" + (error ? " error" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, error ? 5000 : 1500);
}

function fmt(value, digits = 2) {
  return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "";
}

async function api(method, path, body) {
  const headers = {"Authorization": "Bearer " + (sessionStorage.getItem(TOKEN_KEY) || "")};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(BASE + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await response.json().catch(() => ({error: {message: response.statusText}}));
  if (response.status === 401 && VIEW !== "signin") { location.href = BASE + "/"; throw new Error("signed out"); }
  if (!response.ok) {
    const message = (data.error && data.error.message) || response.statusText;
    toast(message, true);
    throw Object.assign(new Error(message), {status: response.status, data});
  }
  return data;
}

function who() { try { return JSON.parse(sessionStorage.getItem(WHO_KEY)) || null; } catch { return null; } }

function header() {
  const me = who();
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.getAttribute("href") === BASE + "/" + VIEW) link.classList.add("current");
    if (link.dataset.role && (!me || link.dataset.role !== me.role)) link.hidden = true;
  }
  if (me) {
    document.getElementById("who").textContent = `${me.role} ${me.actor}`;
    const out = document.getElementById("signout");
    out.hidden = false;
    out.addEventListener("click", () => { sessionStorage.clear(); location.href = BASE + "/"; });
  }
}

let keyHandler = null;
document.addEventListener("keydown", (event) => { if (keyHandler) keyHandler(event); });
function typing(event) {
  const tag = event.target.tagName;
  return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
}

async function guidelinePanel(ref) {
  const box = el("div", {class: "guideline panel", id: "guideline"}, el("p", {class: "muted"}, "Loading guideline…"));
  api("GET", `/api/guidelines/${encodeURIComponent(ref.family)}?version=${encodeURIComponent(ref.version)}`)
    .then((g) => { box.innerHTML = g.html; })  // escaped server-side by render_markdown
    .catch(() => { box.textContent = "guideline unavailable"; });
  return el("div", {class: "card"}, el("h2", {}, `Guideline ${ref.family} ${ref.version}`), box);
}

// ---- sign in ------------------------------------------------------------------------------------------------

function signinView() {
  const input = el("input", {type: "password", id: "token", autocomplete: "off", placeholder: "your token"});
  const form = el("form", {class: "card", id: "signin"},
    el("h2", {}, "Sign in"),
    el("p", {class: "muted"}, "Paste the token you were given. Annotators go to labeling, reviewers to disputes."),
    input, el("div", {class: "actions"}, el("button", {class: "primary", type: "submit", id: "signin-btn"}, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      const me = await api("POST", "/api/session");
      sessionStorage.setItem(WHO_KEY, JSON.stringify({actor: me.actor, role: me.role}));
      location.href = BASE + (me.role === "reviewer" ? "/review" : "/label");
    } catch (error) { sessionStorage.removeItem(TOKEN_KEY); }
  });
  main.replaceChildren(form);
  input.focus();
}

// ---- labeling -----------------------------------------------------------------------------------------------

const LETTERS = "ABCDEFGH";

// A widget per task type: render(task, state) → node; keys(event, state) → true when handled; body(state).
const widgets = {
  pairwise: {
    help: [["A", "A is better"], ["B", "B is better"], ["T", "tie"]],
    render(task, state) {
      const cards = task.responses.map((r) => el("div", {class: "response" + (state.choice === r.label.toLowerCase() ? " selected" : ""),
        dataset: {label: r.label}}, el("span", {class: "tag"}, r.label), r.text));
      const choice = (value, text) => el("button", {type: "button", class: state.choice === value ? "selected" : "",
        id: "choice-" + value, onclick: () => state.set({choice: value})}, text);
      return el("div", {}, el("div", {class: "row"}, cards),
        el("div", {class: "choices"}, choice("a", "A is better (A)"), choice("tie", "Tie (T)"), choice("b", "B is better (B)")));
    },
    keys(event, state) {
      const value = {a: "a", b: "b", t: "tie", arrowleft: "a", arrowright: "b"}[event.key.toLowerCase()];
      if (value) { state.set({choice: value}); return true; }
      return false;
    },
    body: (state) => ({choice: state.choice}),
    ready: (state) => !!state.choice,
  },
  ranking: {
    help: [["A…", "next best"], ["Backspace", "undo"]],
    render(task, state) {
      const order = state.order || [];
      const cards = task.responses.map((r, i) => {
        const rank = order.indexOf(i);
        return el("div", {class: "response" + (rank >= 0 ? " selected" : ""), dataset: {label: r.label}},
          el("span", {class: "tag"}, r.label + (rank >= 0 ? ` · #${rank + 1}` : "")), r.text);
      });
      return el("div", {}, el("div", {class: "row"}, cards),
        el("p", {class: "ranking-order", id: "ranking-order"}, "Ranking (best first): ",
          order.length ? order.map((i) => el("span", {}, task.responses[i].label)) : el("em", {class: "muted"}, "press the letters, best first")));
    },
    keys(event, state) {
      const order = state.order || [];
      if (event.key === "Backspace") { state.set({order: order.slice(0, -1)}); return true; }
      const index = LETTERS.indexOf(event.key.toUpperCase());
      if (event.key.length === 1 && index >= 0 && index < state.task.responses.length && !order.includes(index)) {
        state.set({order: [...order, index]});
        return true;
      }
      return false;
    },
    body: (state) => ({ranking: state.order || []}),
    ready: (state) => (state.order || []).length === state.task.responses.length,
  },
  rubric: {
    help: [["1–5", "score, then next criterion"], ["↑ ↓", "move"]],
    render(task, state) {
      const scores = state.scores || {};
      const rows = task.criteria.map((c, i) => el("div", {class: "criterion" + ((state.current || 0) === i ? " current" : ""), dataset: {criterion: c}},
        el("span", {class: "name"}, c),
        el("span", {class: "scale"}, [1, 2, 3, 4, 5].map((v) => el("button", {type: "button", class: scores[c] === v ? "selected" : "",
          onclick: () => state.set({scores: {...scores, [c]: v}, current: Math.min(i + 1, task.criteria.length - 1)})}, String(v))))));
      return el("div", {}, el("div", {class: "response", dataset: {label: "A"}}, task.responses[0].text), el("div", {class: "card"}, rows));
    },
    keys(event, state) {
      const criteria = state.task.criteria, current = state.current || 0;
      if (/^[1-5]$/.test(event.key)) {
        state.set({scores: {...(state.scores || {}), [criteria[current]]: Number(event.key)},
          current: Math.min(current + 1, criteria.length - 1)});
        return true;
      }
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        const step = event.key === "ArrowDown" ? 1 : -1;
        state.set({current: Math.max(0, Math.min(criteria.length - 1, current + step))});
        return true;
      }
      return false;
    },
    body: (state) => ({scores: state.scores || {}}),
    ready: (state) => Object.keys(state.scores || {}).length === state.task.criteria.length,
  },
  correction: {
    help: [["E", "edit the text"], ["Ctrl+Enter", "submit"]],
    render(task, state) {
      const area = el("textarea", {id: "edit", "aria-label": "corrected response"});
      area.value = state.edited ?? task.responses[0].text;
      area.addEventListener("input", () => { state.edited = area.value; });
      return el("div", {}, el("p", {class: "muted"}, "Original:"), el("div", {class: "response"}, task.responses[0].text),
        el("p", {class: "muted"}, "Your correction (edit inline):"), area);
    },
    keys(event, state) {
      if (event.key.toLowerCase() === "e") { document.getElementById("edit").focus(); return true; }
      return false;
    },
    body: (state) => ({edited_response: state.edited ?? state.task.responses[0].text}),
    ready: (state) => (state.edited ?? "").trim() !== "" && state.edited !== state.task.responses[0].text,
  },
};

function helpLine(widget) {
  const keys = [...widget.help, ["R", "rationale"], ["Enter", "submit"], ["G", "guideline"]];
  return el("p", {class: "keys"}, keys.map(([k, what]) => el("span", {}, el("kbd", {}, k), ` ${what}  `)));
}

async function labelView() {
  const next = await api("GET", "/api/tasks/next");
  if (next.state !== "task") {
    keyHandler = null;
    main.replaceChildren(el("div", {class: "card"}, el("h2", {}, next.state === "empty" ? "All done" : "Session over"),
      el("p", {class: "message", id: "session-message", dataset: {state: next.state}}, next.message)));
    return;
  }
  const task = next.task, widget = widgets[task.task_type];
  const rationale = el("input", {type: "text", id: "rationale", maxlength: 280, placeholder: "one-line rationale (R)", autocomplete: "off"});
  const state = {task, edited: undefined};
  const body = el("div", {id: "task-body"});
  state.set = (changes) => { Object.assign(state, changes); body.replaceChildren(widget.render(task, state)); };
  const submit = async () => {
    if (!widget.ready(state)) { toast(task.task_type === "correction" ? "edit the response first" : "choose first", true); return; }
    try {
      const answer = await api("POST", "/api/labels", {assignment_id: next.assignment_id, rationale: rationale.value, ...widget.body(state)});
      toast(`Saved (${answer.task_state})`);
      await labelView();
    } catch (error) { /* the toast says why */ }
  };
  const session = next.session;
  const guideline = await guidelinePanel(task.guideline);
  main.replaceChildren(
    el("div", {class: "row"},
      el("div", {class: "card task", id: "task", style: null, dataset: {taskType: task.task_type}},
        el("p", {}, el("span", {class: "badge"}, task.task_type), " ",
          el("span", {class: "muted", id: "session-info"}, `task ${session.labels + 1} of this session · ${session.message} · due ${when(task.due_at)}`)),
        el("div", {class: "prompt", id: "prompt"}, task.prompt), el("br"), body, el("br"), rationale,
        el("div", {class: "actions"}, el("button", {type: "button", class: "primary", id: "submit", onclick: submit}, "Submit (Enter)")),
        helpLine(widget)),
      guideline));
  state.set({});
  keyHandler = (event) => {
    if (event.key === "Enter" && (event.target.tagName !== "TEXTAREA" || event.ctrlKey)) { event.preventDefault(); submit(); return; }
    if (event.key === "Escape") { event.target.blur && event.target.blur(); return; }
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key.toLowerCase() === "r") { event.preventDefault(); rationale.focus(); return; }
    if (event.key.toLowerCase() === "g") { document.getElementById("guideline").scrollIntoView(); return; }
    if (widget.keys(event, state)) event.preventDefault();
  };
}

// ---- review (disputes) --------------------------------------------------------------------------------------

async function reviewView() {
  const [open, resolved] = await Promise.all([api("GET", "/api/disputes?status=open"), api("GET", "/api/disputes?status=resolved")]);
  const row = (d) => el("tr", {class: "clickable dispute-row", tabindex: 0, dataset: {dispute: d.dispute_id},
      onclick: () => disputeView(d.dispute_id), onkeydown: (e) => { if (e.key === "Enter") disputeView(d.dispute_id); }},
    el("td", {}, el("span", {class: "badge"}, d.task_type)), el("td", {}, d.prompt), el("td", {}, d.reason), el("td", {}, d.labels));
  const table = (rows) => el("table", {}, el("thead", {}, el("tr", {}, ["type", "prompt", "why", "labels"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map(row)));
  keyHandler = null;
  main.replaceChildren(
    el("div", {class: "card", id: "disputes"}, el("h2", {}, `Open disputes (${open.disputes.length})`),
      el("p", {class: "muted"}, "Items the crowd could not settle. Open one to read every label and rationale, then resolve it."),
      table(open.disputes)),
    el("div", {class: "card"}, el("h2", {}, `Resolved (${resolved.disputes.length})`), table(resolved.disputes)));
  const first = main.querySelector(".dispute-row");
  if (first) first.focus();
}

async function disputeView(id) {
  const d = await api("GET", `/api/disputes/${encodeURIComponent(id)}`);
  const task = d.task, widget = widgets[task.task_type];
  const state = {task};
  const body = el("div", {id: "resolve-body"});
  state.set = (changes) => { Object.assign(state, changes); body.replaceChildren(widget.render(task, state)); };
  const note = el("input", {type: "text", id: "note", placeholder: "resolution note (becomes guideline material)", autocomplete: "off"});
  const comment = el("input", {type: "text", id: "comment", placeholder: "add to the thread", autocomplete: "off"});
  const entry = (e) => el("div", {class: `entry ${e.kind} ${e.stage || ""}`},
    el("div", {class: "author"}, `${e.kind === "label" ? (e.stage === "before" ? "earlier label" : "workbench label") : e.kind} · ${e.author}` +
      (e.guideline_version ? ` · ${e.guideline_version}` : "") + (e.at ? ` · ${when(e.at)}` : "")),
    e.label ? el("strong", {}, e.label + " ") : null, el("span", {}, e.rationale || e.text || e.note || ""));
  const resolve = async () => {
    if (!widget.ready(state)) { toast("choose the final label first", true); return; }
    await api("POST", `/api/disputes/${encodeURIComponent(id)}/resolve`, {note: note.value, ...widget.body(state)}).then((r) => {
      toast(`Resolved: ${r.label}`);
      disputeView(id);
    }).catch(() => {});
  };
  const resolvedAlready = d.status === "resolved";
  main.replaceChildren(el("div", {class: "row"},
    el("div", {class: "card", id: "dispute", dataset: {status: d.status, taskType: task.task_type}},
      el("p", {}, el("a", {href: BASE + "/review"}, "← all disputes"), " ", el("span", {class: "badge"}, task.task_type), " ",
        el("span", {class: "muted"}, d.reason)),
      el("div", {class: "prompt"}, task.prompt), el("br"),
      d.consensus ? el("p", {id: "consensus"}, `Consensus so far: ${d.consensus.label} (posterior ${fmt(d.consensus.confidence)})`) : null,
      resolvedAlready ? el("p", {class: "message", id: "resolved"}, "Resolved.") : el("div", {}, body, note,
        el("div", {class: "actions"}, el("button", {type: "button", class: "primary", id: "resolve", onclick: resolve}, "Resolve (Enter)"))),
      el("p", {class: "keys"}, widget.help.map(([k, what]) => el("span", {}, el("kbd", {}, k), ` ${what}  `)), el("kbd", {}, "N"), " note  ", el("kbd", {}, "Enter"), " resolve")),
    el("div", {class: "card thread", id: "thread"}, el("h2", {}, "Thread"), d.thread.map(entry),
      el("div", {class: "actions"}, comment, el("button", {type: "button", onclick: () => api("POST",
        `/api/disputes/${encodeURIComponent(id)}/comments`, {text: comment.value}).then(() => disputeView(id)).catch(() => {})}, "Comment")))));
  if (!resolvedAlready) state.set({});
  keyHandler = resolvedAlready ? null : (event) => {
    if (event.key === "Enter" && event.target !== comment) { event.preventDefault(); resolve(); return; }
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key.toLowerCase() === "n") { event.preventDefault(); note.focus(); return; }
    if (widget.keys(event, state)) event.preventDefault();
  };
}

// ---- dashboards ---------------------------------------------------------------------------------------------

function statTable(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c === null || c === undefined ? "n/a" : String(c)))))));
}

async function dashboardView() {
  const d = await api("GET", "/api/dashboard");
  const before = d.agreement.before || {}, wb = d.agreement.workbench.pairwise || {};
  const overTime = [
    {name: "pairwise κ before (by week)", points: Object.entries(before.by_week || {}).map(([x, s]) => ({x, y: s.fleiss_kappa}))},
    {name: "workbench κ (by day)", points: Object.entries(wb.by_day || {}).map(([x, s]) => ({x, y: s.fleiss_kappa}))},
  ];
  const perVersion = [
    ...Object.entries(before.by_guideline_version || {}).map(([v, s]) => ({label: v, value: s.fleiss_kappa,
      sub: `before · ${s.n_pairable_items} items`, color: "#9aa3b2"})),
    ...Object.entries(wb.by_guideline_version || {}).map(([v, s]) => ({label: v, value: s.fleiss_kappa,
      sub: `workbench · ${s.n_pairable_items} items`})),
  ];
  const sla = d.sla, q = d.queue;
  const ages = Object.entries(sla.open_by_age).map(([label, value]) => ({label, value, color: "#b7791f"}));
  const states = Object.entries(q.by_state).map(([label, value]) => ({label, value}));
  const health = d.annotators.map((a) => [a.annotator, a.labels, fmt(a.gold_accuracy), fmt(a.consensus_agreement), a.tasks_per_hour,
    a.median_seconds_per_task, a.fatigue_curve.map((b) => `${b.positions}: ${fmt(b.agreement)}`).join("  ")]);
  const earlier = d.annotators_before.map((a) => [a.annotator, a.labels, fmt(a.gold_accuracy), fmt(a.estimated_accuracy),
    fmt(a.early_session_agreement), fmt(a.late_session_agreement), (a.flags || []).join(", ")]);
  const figure = (value, label, bad) => el("div", {}, el("div", {class: "figure" + (bad ? " bad" : " good")}, String(value)), el("div", {class: "muted"}, label));
  keyHandler = null;
  main.replaceChildren(el("div", {id: "dashboard"},
    el("div", {class: "row"},
      el("div", {class: "card"}, el("h2", {}, "Queue"), el("div", {class: "row"}, figure(q.tasks, "tasks"), figure(q.labels, "labels"),
        figure(q.disputes_open, "open disputes", q.disputes_open > 0)), Charts.bars(states, {digits: 0})),
      el("div", {class: "card", id: "sla"}, el("h2", {}, "SLA"), el("div", {class: "row"}, figure(sla.breaches, "breaches", sla.breaches > 0),
        figure(sla.open_due_within_24h, "due within 24 h", false), figure(fmt(sla.seconds_to_complete.p50, 0) + " s", "p50 time to complete")),
        el("p", {class: "muted"}, "Open tasks by age"), Charts.bars(ages, {digits: 0}))),
    el("div", {class: "row"},
      el("div", {class: "card", id: "agreement-time"}, el("h2", {}, "Agreement over time (Fleiss κ, pairwise)"), Charts.lines(overTime, {max: 1})),
      el("div", {class: "card", id: "agreement-version"}, el("h2", {}, "Agreement per guideline version"),
        Charts.bars(perVersion), el("p", {class: "muted"}, "Did the update help? κ of the labels made under each version, before the workbench (grey) and in it (blue)."))),
    el("div", {class: "card", id: "health"}, el("h2", {}, "Annotator health (workbench)"),
      statTable(["annotator", "labels", "gold acc.", "agrees w/ consensus", "tasks / h", "median s / task", "fatigue curve (position: agreement)"], health)),
    el("div", {class: "card"}, el("h2", {}, "Annotator health before the workbench (curate)"),
      statTable(["annotator", "labels", "gold acc.", "est. acc.", "early session", "late session", "flags"], earlier))));
}

// ---- guidelines ---------------------------------------------------------------------------------------------

async function guidelinesView(family, version, from) {
  const index = await api("GET", "/api/guidelines");
  const asked = new URLSearchParams(location.search).get("family");
  family = family || (index.families[asked] ? asked : index.families.preference ? "preference" : Object.keys(index.families)[0]);
  const info = index.families[family];
  version = version || info.current;
  const previous = info.versions[info.versions.indexOf(version) - 1];
  from = from === undefined ? previous : from;
  const query = `?version=${encodeURIComponent(version)}` + (from ? `&diff_from=${encodeURIComponent(from)}` : "");
  const g = await api("GET", `/api/guidelines/${encodeURIComponent(family)}${query}`);
  const select = (id, options, value, change) => {
    const node = el("select", {id, onchange: (e) => change(e.target.value)}, options.map((o) => el("option", {value: o}, o || "(none)")));
    node.value = value || "";
    return node;
  };
  const diff = el("pre", {class: "diff", id: "diff"});
  for (const line of (g.diff || "no earlier version to compare").split("\n")) {
    const cls = line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "";
    diff.appendChild(el("span", {class: cls}, line + "\n"));
  }
  const doc = el("div", {class: "guideline"});
  doc.innerHTML = g.html;  // escaped server-side by render_markdown
  keyHandler = null;
  main.replaceChildren(
    el("div", {class: "card"}, el("h2", {}, "Guidelines"), el("div", {class: "row"},
      el("label", {}, "family ", select("family", Object.keys(index.families), family, (f) => guidelinesView(f))),
      el("label", {}, "version ", select("version", info.versions, version, (v) => guidelinesView(family, v))),
      el("label", {}, "diff from ", select("diff-from", ["", ...info.versions], from, (v) => guidelinesView(family, version, v)))),
      el("p", {class: "muted"}, `current: ${info.current}; every label records the version it was made under.`)),
    el("div", {class: "row"}, el("div", {class: "card"}, el("h2", {}, `${family} ${version}`), doc),
      el("div", {class: "card"}, el("h2", {}, from ? `Changes ${from} → ${version}` : "Changes"), diff,
        el("h2", {}, "Resolved disputes under this version"),
        g.resolution_notes.length ? el("ul", {id: "notes"}, g.resolution_notes.map((n) => el("li", {}, el("strong", {}, n.label + ": "), n.note)))
          : el("p", {class: "muted"}, "none yet"))));
}

// ---- start --------------------------------------------------------------------------------------------------

header();
const views = {signin: signinView, label: labelView, review: reviewView, dashboard: dashboardView, guidelines: () => guidelinesView()};
if (VIEW !== "signin" && !sessionStorage.getItem(TOKEN_KEY)) location.href = BASE + "/";
else Promise.resolve(views[VIEW]()).catch((error) => {
  if (error.message !== "signed out") main.replaceChildren(el("div", {class: "card message"}, error.message));
});
