// Potok dashboard: one Server-Sent Events stream (/dashboard/stream) read with fetch (so
// the same credential header as the admin API can go with it), rendered with DOM calls
// only (textContent: names and keys from the config or from clients are never markup).
// Actions call the admin API after a confirmation dialog.
"use strict";

(() => {
  const STORE = "potok.dashboard.credential";
  const ADMIN = "/api/v1/admin";
  const params = new URLSearchParams(location.search);
  const INTERVAL = Math.min(60, Math.max(0.5, Number(params.get("interval")) || 2));
  const $ = (id) => document.getElementById(id);

  let credential = sessionStorage.getItem(STORE);
  let retryMs = 3000;
  let streaming = false;
  const breakerStates = new Map(); // service -> last state, to announce changes
  const rendered = new Map(); // table id -> last rows (JSON), to skip identical redraws

  // -- Credentials ------------------------------------------------------------------

  function authHeaders() {
    if (!credential) return {};
    return credential.startsWith("pk_")
      ? { "X-API-Key": credential }
      : { Authorization: "Bearer " + credential };
  }

  function showSignIn(message) {
    document.body.dataset.mode = "signin";
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    setConnection("down", "Signed out");
    $("credential").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const value = $("credential").value.trim();
    if (!value) return;
    credential = value;
    const answer = await fetch(ADMIN + "/status", { headers: authHeaders(), cache: "no-store" });
    if (!answer.ok) {
      credential = null;
      $("signin-error").textContent = await problemText(answer);
      return;
    }
    sessionStorage.setItem(STORE, value);
    $("credential").value = "";
    enterDashboard();
  }

  function signOut() {
    sessionStorage.removeItem(STORE);
    credential = null;
    location.reload();
  }

  function enterDashboard() {
    document.body.dataset.mode = "dashboard";
    $("signin").hidden = true;
    $("signout").hidden = !credential;
    if (!streaming) stream();
  }

  // -- The stream ---------------------------------------------------------------------

  function setConnection(state, text) {
    const element = $("connection");
    element.dataset.state = state;
    element.textContent = text;
  }

  async function stream() {
    streaming = true;
    while (document.body.dataset.mode === "dashboard") {
      setConnection("connecting", "Connecting…");
      let pause = retryMs;
      try {
        const answer = await fetch("/dashboard/stream?interval=" + INTERVAL, {
          headers: { ...authHeaders(), Accept: "text/event-stream" },
          cache: "no-store",
        });
        if (answer.status === 401 || answer.status === 403) {
          streaming = false;
          showSignIn(await problemText(answer));
          return;
        }
        if (!answer.ok || !answer.body) throw new Error("stream answered " + answer.status);
        setConnection("live", "Live");
        await readEvents(answer.body);
        pause = 500; // the server ended it (its lifetime): again at once, authorized afresh
      } catch (error) {
        // The gateway restarting or the network: try again after `retry`.
      }
      if (document.body.dataset.mode !== "dashboard") break;
      setConnection("down", "Reconnecting…");
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
    streaming = false;
  }

  async function readEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        try {
          dispatch(block);
        } catch (error) {
          // A bug in the page, not the network: reported (uncaught), the stream goes on.
          setTimeout(() => { throw error; });
        }
        buffer = buffer.slice(end + 2);
      }
    }
  }

  function dispatch(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (name === "snapshot") render(JSON.parse(data.join("\n")));
    else if (name === "refused") showSignIn(JSON.parse(data.join("\n")).detail);
  }

  // -- Rendering ----------------------------------------------------------------------

  const fmt = {
    num(value, digits = 1) {
      return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
    },
    pct(value) {
      return value === null || value === undefined ? "—" : (value * 100).toFixed(2) + " %";
    },
    time(at) {
      return new Date(at * 1000).toLocaleTimeString([], { hour12: false });
    },
  };

  function element(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    return node;
  }

  function badge(text, tone, attrs) {
    return element("span", text, { className: "badge", "data-tone": tone, ...(attrs || {}) });
  }

  // A table without buttons: redrawn only when its rows changed.
  function fillTable(id, rows, emptyText) {
    const key = JSON.stringify(rows);
    if (rendered.get(id) === key) return;
    rendered.set(id, key);
    const table = $(id);
    const body = table.tBodies[0];
    body.replaceChildren();
    if (rows.length === 0) {
      const cell = element("td", emptyText, { className: "empty" });
      cell.colSpan = table.tHead.rows[0].cells.length;
      const row = element("tr");
      row.append(cell);
      body.append(row);
      return;
    }
    for (const row of rows) {
      const tr = element("tr");
      row.forEach((cell, index) => {
        const [text, className] = Array.isArray(cell) ? cell : [cell, ""];
        tr.append(element(index === 0 ? "th" : "td", text, { className, ...(index === 0 ? { scope: "row" } : {}) }));
      });
      body.append(tr);
    }
  }

  function render(snapshot) {
    const workers = snapshot.workers.filter((w) => !w.unreachable).length;
    $("digest").textContent = snapshot.digest;
    $("workers").textContent = workers + "/" + snapshot.expected_workers;
    const updated = $("updated");
    updated.textContent = fmt.time(snapshot.at);
    updated.dateTime = new Date(snapshot.at * 1000).toISOString();
    renderTotals(snapshot);
    renderServices(snapshot.services);
    renderRoutes(snapshot.routes);
    renderLimits(snapshot.rate_limits);
    renderRealtime(snapshot.realtime);
    renderReloads(snapshot.reloads);
    renderAudit(snapshot.audit);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  function renderTotals(snapshot) {
    let rps = null, errors = 0, limited = null;
    for (const route of snapshot.routes) {
      if (route.rps !== null) {
        rps = (rps || 0) + route.rps;
        errors += (route.error_rate || 0) * route.rps;
      }
      if (route.limited_rps !== null) limited = (limited || 0) + route.limited_rps;
    }
    $("total-rps").textContent = fmt.num(rps);
    $("total-errors").textContent = rps ? fmt.pct(errors / rps) : "—";
    $("total-limited").textContent = fmt.num(limited);
    $("total-ws").textContent = snapshot.realtime.enabled
      ? String(snapshot.realtime.connections)
      : "off";
    const open = Object.values(snapshot.services).filter(
      (s) => s.breaker === "open" || s.breaker === "mixed",
    ).length;
    $("total-open").textContent = String(open);
  }

  const BREAKER_TONE = { closed: "ok", open: "bad", half_open: "warn", mixed: "warn" };
  const BREAKER_TEXT = { closed: "closed", open: "open", half_open: "half-open", mixed: "mixed" };

  function renderServices(services) {
    const container = $("services");
    const names = Object.keys(services).sort();
    if (names.length === 0) {
      container.replaceChildren(element("p", "No services configured.", { className: "empty" }));
      return;
    }
    container.querySelector(":scope > p.empty")?.remove();
    for (const node of [...container.children]) {
      if (!names.includes(node.dataset.service)) node.remove();
    }
    names.forEach((name, index) => {
      let card = container.querySelector(`:scope > [data-service="${CSS.escape(name)}"]`);
      if (!card) card = buildService(name, services[name]);
      if (container.children[index] !== card) container.insertBefore(card, container.children[index] || null);
      updateService(card, name, services[name]);
    });
  }

  function buildService(name, service) {
    const card = element("article", null, { className: "service", "data-service": name });
    const id = "svc-" + Math.random().toString(36).slice(2);
    card.setAttribute("aria-labelledby", id);
    const head = element("div", null, { className: "service-head" });
    head.append(element("h3", name, { id }));
    head.append(element("span", null, { className: "breaker-slot" }));
    if (service.breaker !== null) {
      const buttons = element("div", null, { className: "buttons", role: "group", "aria-label": "Breaker of " + name });
      buttons.append(actionButton("Force open", "danger", () => breakerAction(name, "open")));
      buttons.append(actionButton("Force closed", "quiet", () => breakerAction(name, "closed")));
      buttons.append(actionButton("Release", "quiet", () => breakerAction(name, "auto")));
      head.append(buttons);
    }
    card.append(head, element("p", null, { className: "detail" }));
    const table = element("table", null, { className: "targets" });
    table.append(element("caption", "Targets of " + name));
    const headRow = element("tr");
    for (const [text, cls] of [["Target", ""], ["State", ""], ["In flight", "num"], ["Ejections", "num"], ["Action", ""]]) {
      headRow.append(element("th", text, { scope: "col", className: cls }));
    }
    const thead = element("thead");
    thead.append(headRow);
    table.append(thead);
    table.append(element("tbody"));
    card.append(table);
    return card;
  }

  function actionButton(text, className, onClick) {
    const button = element("button", text, { type: "button", className });
    button.addEventListener("click", onClick);
    return button;
  }

  function updateService(card, name, service) {
    const slot = card.querySelector(".breaker-slot");
    const detail = card.querySelector(".detail");
    if (service.breaker === null) {
      slot.replaceChildren(badge("no breaker", "info"));
      detail.textContent = service.balancer + " balancing";
    } else {
      const workers = Object.values(service.breakers);
      const forced = workers.some((b) => b.forced);
      const text = "breaker " + BREAKER_TEXT[service.breaker] + (forced ? " (held by an operator)" : "");
      const current = slot.firstElementChild;
      if (!current || current.textContent !== text) {
        slot.replaceChildren(badge(text, BREAKER_TONE[service.breaker] || "info", { "data-breaker-state": service.breaker }));
      }
      const first = workers[0] || {};
      const parts = [service.balancer + " balancing"];
      if (first.reason) parts.push("last change: " + first.reason);
      if (service.breaker === "open" && first.half_open_in_s > 0) {
        parts.push("half-open in " + first.half_open_in_s.toFixed(0) + " s");
      }
      if (service.breaker === "mixed") {
        parts.push(Object.entries(service.breakers).map(([w, b]) => "worker " + w + ": " + b.state).join(", "));
      }
      detail.textContent = parts.join(" · ");
      const before = breakerStates.get(name);
      if (before !== undefined && before !== service.breaker) {
        announce("Breaker of " + name + " is now " + BREAKER_TEXT[service.breaker] + ".");
      }
      breakerStates.set(name, service.breaker);
    }
    updateTargets(card.querySelector("tbody"), name, service.targets);
  }

  function updateTargets(body, service, targets) {
    const wanted = targets.map((t) => t.target);
    for (const row of [...body.rows]) if (!wanted.includes(row.dataset.target)) row.remove();
    targets.forEach((target, index) => {
      let row = [...body.rows].find((r) => r.dataset.target === target.target);
      if (!row) {
        row = element("tr", null, { "data-target": target.target });
        row.append(element("th", target.target, { scope: "row" }), element("td"),
          element("td", null, { className: "num" }), element("td", null, { className: "num" }), element("td"));
        const button = actionButton("", "quiet", () =>
          targetAction(service, target.target, row.dataset.drained === "true" ? "enable" : "drain"));
        row.cells[4].append(button);
        body.insertBefore(row, body.rows[index] || null);
      }
      const [state, tone] = target.drained
        ? ["drained", "info"]
        : target.healthy ? ["healthy", "ok"] : ["unhealthy" + workersNote(target.unhealthy_in), "bad"];
      if (row.cells[1].textContent !== state) row.cells[1].replaceChildren(badge(state, tone));
      row.cells[2].textContent = String(target.in_flight);
      row.cells[3].textContent = String(target.ejections);
      row.dataset.drained = String(target.drained);
      const label = target.drained ? "Re-enable" : "Drain";
      const button = row.cells[4].firstElementChild;
      if (button.textContent !== label) {
        button.textContent = label;
        button.setAttribute("aria-label", label + " " + target.target + " of " + service);
      }
    });
  }

  function workersNote(workers) {
    return workers && workers.length ? " (worker " + workers.join(", ") + ")" : "";
  }

  function renderRoutes(routes) {
    fillTable("routes", routes.map((r) => [
      r.route,
      [fmt.num(r.rps), "num"],
      [fmt.pct(r.error_rate), "num"],
      [fmt.num(r.p99_ms), "num"],
      [fmt.num(r.limited_rps), "num"],
      [String(r.requests_total), "num"],
    ]), "No requests yet.");
  }

  function renderLimits(limits) {
    fillTable("limits", limits.map((l) => [
      l.label + " by " + l.key + (l.store ? " (" + l.store + ")" : ""),
      l.routes.join(", "),
      [String(l.refused_total), "num"],
      l.top_keys.slice(0, 5).map((k) => k.key + " (" + k.refused + ")").join(", ") || "—",
    ]), "No rate limits configured.");
  }

  function renderRealtime(realtime) {
    $("realtime-summary").textContent = realtime.enabled
      ? realtime.connections + " connections, " + realtime.channel_count + " channels"
      : "Realtime is not enabled.";
    fillTable("channels", (realtime.channels || []).slice(0, 10).map((c) => [c.channel, [String(c.subscribers), "num"]]), "No channels.");
  }

  function renderReloads(reloads) {
    fillTable("reloads", reloads.map((r) => [
      fmt.time(r.at), r.worker, r.trigger,
      r.result + (r.problems.length ? ": " + r.problems.join("; ") : ""),
    ]), "No reloads since start.");
  }

  function renderAudit(events) {
    if (events === null) {
      fillTable("audit", [], "No audit log: this gateway has no database.");
      return;
    }
    fillTable("audit", events.map((e) => [fmt.time(e.at), e.action, e.outcome, e.actor || "—"]), "No events yet.");
  }

  // Changes and action results: a polite live log for screen readers (the last few
  // lines, so one message does not silence another) and the latest line on screen.
  function announce(text) {
    const log = $("announcer");
    log.append(element("p", text));
    while (log.childElementCount > 5) log.firstElementChild.remove();
    $("notice").textContent = text;
  }

  // -- Actions ------------------------------------------------------------------------

  function confirmAction(title, text, okLabel) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
  }

  const BREAKER_WORDS = {
    open: ["Force the breaker open?", "Every request to {s} will be refused at once (503) on every worker until you release it.", "Force open"],
    closed: ["Hold the breaker closed?", "Requests to {s} will always be sent, however its targets fail, until you release it.", "Hold closed"],
    auto: ["Release the breaker?", "The breaker of {s} goes back to opening and closing by itself.", "Release"],
  };

  async function breakerAction(service, mode) {
    const [title, text, ok] = BREAKER_WORDS[mode];
    if (!(await confirmAction(title, text.replace("{s}", service), ok))) return;
    await post(ADMIN + "/services/" + segment(service) + "/breaker", { mode },
      "Breaker of " + service + ": " + (mode === "auto" ? "released" : "held " + mode) + ".");
  }

  async function targetAction(service, target, action) {
    const draining = action === "drain";
    const title = draining ? "Drain " + target + "?" : "Re-enable " + target + "?";
    const text = draining
      ? "No new requests go to " + target + " of " + service + " on any worker; those in flight finish."
      : target + " of " + service + " goes back into rotation on every worker.";
    if (!(await confirmAction(title, text, draining ? "Drain" : "Re-enable"))) return;
    await post(ADMIN + "/services/" + segment(service) + "/targets/" + segment(target) + "/" + action, null,
      target + (draining ? " drained." : " re-enabled."));
  }

  function segment(value) {
    return encodeURIComponent(value).replace(/%3A/gi, ":").replace(/%5B/gi, "[").replace(/%5D/gi, "]");
  }

  async function post(url, body, done) {
    const headers = { ...authHeaders() };
    if (body !== null) headers["Content-Type"] = "application/json";
    try {
      const answer = await fetch(url, {
        method: "POST", headers, cache: "no-store",
        body: body === null ? undefined : JSON.stringify(body),
      });
      announce(answer.ok ? done : "Refused: " + (await problemText(answer)));
    } catch (error) {
      announce("The gateway did not answer: " + error.message);
    }
  }

  async function problemText(answer) {
    try {
      const problem = await answer.json();
      return problem.detail || problem.title || "HTTP " + answer.status;
    } catch (error) {
      return "HTTP " + answer.status;
    }
  }

  // -- Start --------------------------------------------------------------------------

  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  if (document.body.dataset.mode === "signin" && !credential) showSignIn("");
  else enterDashboard();
})();
