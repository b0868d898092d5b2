// Runbook Operator web view. Plain JS, no framework, no CDN (clusters are often
// air-gapped). Everything from the cluster is put in the page as text nodes
// (textContent / createTextNode), never parsed as HTML. Live data comes from
// server-sent events relaying the watch API; nothing is polled.
"use strict";

const TOKEN = document.querySelector('meta[name="runbook-token"]').content;
const main = document.getElementById("main");
let stream = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === "") continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function api(path) { return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN); }
function link(...parts) { return "#/" + parts.map(encodeURIComponent).join("/"); }

function flash(message, ok) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = ok ? "ok" : "error";
  box.hidden = false;
}

async function post(path, body) {
  let response, reply;
  try {
    response = await fetch(path, { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "X-Runbook-Token": TOKEN } });
    reply = await response.json().catch(() => ({ message: response.status + " " + response.statusText }));
  } catch (error) {
    flash("the web view did not answer: " + error, false);
    return null;
  }
  flash(reply.message || String(response.status), response.ok);
  return response.ok ? reply : null;
}

function listen(path, handlers) {
  if (stream) stream.close();
  stream = new EventSource(api(path));
  for (const [name, handle] of Object.entries(handlers)) {
    stream.addEventListener(name, (event) => handle(JSON.parse(event.data)));
  }
  stream.addEventListener("error", (event) => {
    if (!event.data) return;  // the connection dropped: EventSource reconnects by itself
    const error = JSON.parse(event.data);
    if (handlers.failed && handlers.failed(error)) return;
    flash(error.message, false);
  });
}

// --- executions ---------------------------------------------------------------------

function executionsPage() {
  const body = el("tbody", { id: "executions" });
  const rows = new Map();
  main.replaceChildren(el("h2", {}, "Executions"),
    el("table", {}, el("thead", {}, el("tr", {}, ["Namespace", "Name", "Runbook", "Phase",
      "Progress", "Severity", "Trigger", "Age"].map((h) => el("th", {}, h)))), body));
  const key = (r) => r.namespace + "/" + r.name;
  const draw = (r) => el("tr", { "data-name": r.name, "data-namespace": r.namespace },
    el("td", {}, r.namespace), el("td", {}, el("a", { href: link("execution", r.namespace, r.name) }, r.name)),
    el("td", {}, r.runbook), el("td", { class: "phase " + r.phase }, r.phase), el("td", {}, r.progress),
    el("td", {}, r.severity), el("td", {}, r.trigger), el("td", {}, r.age));
  const upsert = (r) => {
    const row = draw(r);
    const old = rows.get(key(r));
    if (old) old.replaceWith(row); else body.prepend(row);
    rows.set(key(r), row);
  };
  listen("/api/stream/executions", {
    sync: (items) => { rows.clear(); body.replaceChildren(); items.forEach(upsert); },
    upsert: upsert,
    delete: (r) => { const row = rows.get(key(r)); if (row) row.remove(); rows.delete(key(r)); },
  });
}

// --- one execution --------------------------------------------------------------------

function executionPage(ns, name) {
  const head = el("div", { id: "summary" });
  const dag = el("div", { class: "dag", id: "dag" });
  const controls = el("div", { id: "controls" });
  const params = el("div", { id: "params" });
  const history = el("tbody", { id: "history" });
  const events = el("tbody", { id: "events" });
  const eventRows = new Map();
  const deciders = new Map();  // kept across redraws: a half-typed comment survives
  main.replaceChildren(el("h2", {}, "Execution ", el("span", { id: "name" }, name)), head, controls, dag, params,
    el("h3", {}, "History"), el("table", {}, el("thead", {}, el("tr", {},
      ["Time", "Event", "Step", "Message"].map((h) => el("th", {}, h)))), history),
    el("h3", {}, "Events"), el("table", {}, el("thead", {}, el("tr", {},
      ["Time", "Type", "Reason", "Message", "Count"].map((h) => el("th", {}, h)))), events));

  const decider = (step) => {
    if (!deciders.has(step)) {
      const comment = el("input", { type: "text", placeholder: "comment", "data-comment": step, maxlength: "1024" });
      const send = (decision) => post("/api/decide", { namespace: ns, name: name, step: step, decision: decision, comment: comment.value });
      deciders.set(step, el("div", { class: "decide" }, comment,
        el("button", { "data-approve": step, onclick: () => send("Approve") }, "Approve"),
        el("button", { "data-reject": step, onclick: () => send("Reject") }, "Reject")));
    }
    return deciders.get(step);
  };

  const stepBox = (s, view) => {
    const lines = [el("div", { class: "title" }, s.name, " ", el("span", { class: "muted" }, s.type))];
    if (s.finally) lines.push(el("div", { class: "finally" }, "finally"));
    lines.push(el("div", { class: "line" }, el("span", { class: "phase " + s.phase, "data-phase": s.name }, s.phase),
      s.duration ? "  " + s.duration : "", "  attempts " + s.attempts,
      s.exitCode !== null ? "  exit " + s.exitCode : ""));
    if (s.deps.length) lines.push(el("div", { class: "line" }, "after " + s.deps.join(", ")));
    if (s.when) lines.push(el("div", { class: "line" }, "when " + s.when));
    if (s.reason || s.message) lines.push(el("div", { class: "line", "data-message": s.name },
      [s.reason, s.message].filter(Boolean).join(": ")));
    if (s.outputs) lines.push(el("div", { class: "line" }, "outputs " + s.outputs));
    if (s.circuit) lines.push(el("div", { class: "line" }, "circuit " + s.circuit + (s.circuitTrial ? " (HalfOpen trial)" : "")));
    if (s.nextAttemptAt && s.phase === "Retrying") lines.push(el("div", { class: "line" }, "next attempt at " + s.nextAttemptAt));
    if (s.approvers) {
      const who = [...s.approvers.users, ...s.approvers.groups.map((g) => "group " + g)];
      if (who.length) lines.push(el("div", { class: "line" }, "approvers " + who.join(", ")));
      for (const a of view.approvals.filter((a) => a.step === s.name)) {
        lines.push(el("div", { class: "line" }, a.decision + " by " + a.by + (a.comment ? ": " + a.comment : "")));
      }
    }
    if (s.phase === "WaitingForApproval") lines.push(decider(s.name));
    if (s.type === "run" && s.attempts > 0) lines.push(el("a", { class: "line", href: link("logs", ns, name, s.name) }, "logs"));
    return el("div", { class: "step " + s.phase, "data-step": s.name }, lines);
  };

  let shown = "";
  const draw = (view) => {
    const seen = JSON.stringify(view);
    if (seen === shown) return;  // nothing new: keep focus and selection where they are
    shown = seen;
    head.replaceChildren(el("table", { class: "kv" }, view.header.map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", { class: k === "Phase" ? "phase " + v : "", id: k === "Phase" ? "phase" : null }, v)))));
    const byName = new Map(view.steps.map((s) => [s.name, s]));
    dag.replaceChildren(...view.layers.map((layer) => el("div", { class: "layer" },
      layer.map((n) => stepBox(byName.get(n), view)))));
    const names = Object.keys(view.params);
    params.replaceChildren(names.length ? el("h3", {}, "Parameters") : "", names.length ?
      el("table", { class: "kv" }, names.map((k) => el("tr", {}, el("th", {}, k), el("td", { "data-param": k }, view.params[k])))) : "");
    history.replaceChildren(...view.history.map((h) => el("tr", {}, el("td", {}, h.time),
      el("td", {}, h.event), el("td", {}, h.step), el("td", {}, h.message))));
    const buttons = [];
    if (!view.finished && !view.cancelRequested) {
      buttons.push(el("button", { id: "cancel", onclick: () => {
        if (confirm("Cancel " + name + "? finally steps still run.")) post("/api/cancel", { namespace: ns, name: name });
      } }, "Cancel"));
    }
    if (view.finished) {
      const from = el("select", { id: "retry-from" }, el("option", { value: "" }, "where it failed"),
        view.steps.filter((s) => !s.finally).map((s) => el("option", { value: s.name }, s.name)));
      buttons.push(el("span", {}, "Retry from ", from, " ", el("button", { id: "retry", onclick: async () => {
        const reply = await post("/api/retry", { namespace: ns, name: name, from: from.value || null });
        if (reply) location.hash = link("execution", reply.namespace, reply.name);
      } }, "Retry")));
    }
    controls.replaceChildren(...buttons);
  };

  listen("/api/stream/execution/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name), {
    execution: draw,
    missing: () => head.replaceChildren(el("p", { class: "muted" }, "No execution " + name + " in " + ns + " (yet, or any more).")),
    failed: (error) => {  // Events unreadable (RBAC) is a note there, not an alarm
      if (error.source !== "events") return false;
      events.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "Events not readable: " + error.message)));
      eventRows.clear();
      return true;
    },
    event: (e) => {
      const row = el("tr", {}, el("td", {}, e.time), el("td", {}, e.type), el("td", {}, e.reason),
        el("td", {}, e.message), el("td", {}, String(e.count)));
      const old = eventRows.get(e.uid);
      if (old) old.replaceWith(row); else events.append(row);
      eventRows.set(e.uid, row);
    },
  });
}

// --- logs ---------------------------------------------------------------------------

function logsPage(ns, name, step) {
  const out = el("pre", { class: "logs", id: "logs" });
  main.replaceChildren(el("h2", {}, "Logs of ", step, " in ", el("a", { href: link("execution", ns, name) }, name)), out);
  const add = (text) => out.append(document.createTextNode(text + "\n"));
  listen("/api/stream/logs/" + [ns, name, step].map(encodeURIComponent).join("/"), {
    line: (l) => add("[" + step + "/" + l.attempt + "] " + l.text),
    note: (n) => add("# " + n.text),
    end: () => { add("# end of logs"); stream.close(); },
  });
}

// --- circuits -----------------------------------------------------------------------

function circuitsPage() {
  const body = el("tbody", { id: "circuits" });
  main.replaceChildren(el("h2", {}, "Circuits"), el("table", {}, el("thead", {}, el("tr", {},
    ["Namespace", "Policy", "Mode", "Key", "State", "Failure rate", "Calls", "Opened", "Next attempt"].map((h) => el("th", {}, h)))), body));
  listen("/api/stream/circuits", {
    circuits: (rows) => body.replaceChildren(...rows.map((c) => el("tr", {},
      [c.namespace, c.policy, c.mode, c.key].map((v) => el("td", {}, v)),
      el("td", { class: "phase " + c.state }, c.state),
      [c.failureRate, c.calls, c.openedAt, c.nextAttemptAt].map((v) => el("td", {}, v))))),
  });
}

// --- runbooks -----------------------------------------------------------------------

function paramInput(p) {
  const attrs = { name: p.name, "data-param": p.name, required: p.required ? "required" : null };
  if (p.enum.length) {
    return el("select", attrs, p.required ? "" : el("option", { value: "" }, "(default)"),
      p.enum.map((v) => el("option", { value: v, selected: v === p.default ? "selected" : null }, v)));
  }
  if (p.type === "boolean") {
    return el("select", attrs, el("option", { value: "" }, "(default)"), el("option", { value: "true" }, "true"),
      el("option", { value: "false" }, "false"));
  }
  const type = p.secret ? "password" : (p.type === "integer" || p.type === "number") ? "number" : "text";
  return el("input", { ...attrs, type: type, step: p.type === "number" ? "any" : null,
    placeholder: p.secret ? "" : p.default || (p.type === "array" || p.type === "object" ? "JSON" : ""),
    autocomplete: "off" });
}

async function runbooksPage() {
  main.replaceChildren(el("h2", {}, "Runbooks"), el("p", { class: "muted" }, "Loading…"));
  const response = await fetch(api("/api/runbooks"));
  const reply = await response.json().catch(() => ({ message: response.statusText }));
  if (!response.ok) { main.replaceChildren(el("h2", {}, "Runbooks")); flash(reply.message, false); return; }
  main.replaceChildren(el("h2", {}, "Runbooks"), ...reply.runbooks.map((rb) => {
    const inputs = rb.params.map(paramInput);
    const form = el("form", { class: "run", "data-runbook": rb.name, onsubmit: async (event) => {
      event.preventDefault();
      const params = {};
      for (const input of inputs) params[input.name] = input.value;
      const created = await post("/api/run", { namespace: rb.namespace, name: rb.name, params: params });
      if (created) location.hash = link("execution", created.namespace, created.name);
    } },
    el("h3", {}, rb.namespace + "/" + rb.name, " ", el("span", { class: rb.ready ? "Succeeded" : "Failed" },
      rb.ready ? "Ready" : "not Ready " + [rb.reason, rb.message].filter(Boolean).join(": "))),
    rb.description ? el("p", {}, rb.description) : "",
    rb.params.map((p, i) => el("label", {}, p.name + " (" + p.type + (p.required ? ", required" : "") + (p.secret ? ", secret" : "") + ") ",
      inputs[i], p.description ? el("span", { class: "muted" }, " " + p.description) : "")),
    el("button", { type: "submit", disabled: rb.ready ? null : "disabled" }, "Run"));
    return form;
  }));
}

// --- routing ------------------------------------------------------------------------

function route() {
  document.getElementById("flash").hidden = true;
  if (stream) { stream.close(); stream = null; }
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "execution" && parts.length === 3) executionPage(parts[1], parts[2]);
  else if (parts[0] === "logs" && parts.length === 4) logsPage(parts[1], parts[2], parts[3]);
  else if (parts[0] === "circuits") circuitsPage();
  else if (parts[0] === "runbooks") runbooksPage();
  else executionsPage();
}

window.addEventListener("hashchange", route);
fetch(api("/api/whoami")).then((r) => r.json()).then((me) => {
  if (me.ok) document.getElementById("who").textContent = "as " + me.user + " · " + (me.allNamespaces ? "all namespaces" : "namespace " + me.namespace);
}).catch(() => {});
route();
