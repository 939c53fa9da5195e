// The Murmuration dashboard (docs/dashboard.md): reads this node's JSON API every 2 s and
// follows its event stream. Read-only: every request is a GET.
//
// Two rules keep it safe and fast at 1,000 nodes:
// - Everything the API returns (node ids, addresses, labels, deployment names, reasons)
//   comes from the mesh and is written with textContent or as an attribute value, never
//   parsed as markup.
// - Elements are made once per node, region and deployment and updated in place: a poll
//   changes only the text that changed, so a page of 1,000 rows does not rebuild itself.
"use strict";

(() => {
  const POLL_MS = 2000;
  const REQUEST_TIMEOUT_MS = 8000; // a forwarded read takes up to 3 s per region
  const FEED_MAX = 200; // events kept on the page
  const FEED_BACKLOG = 50; // past events shown when the page opens
  const OPEN_MAX_NODES = 100; // larger regions start collapsed
  const STATES = ["alive", "suspect", "dead", "left"];
  const REPLICA_STATES = ["assigned", "loading", "ready", "failed", "provisional"];
  const EVENT_TONES = {
    member_dead: "bad",
    member_suspect: "warn",
    member_left: "warn",
    join_refused: "bad",
    node_revoked: "bad",
    leader_lost: "warn",
    replica_failed: "bad",
    member_joined: "ok",
    member_alive: "ok",
    leader_elected: "ok",
    replica_ready: "ok",
  };

  const $ = (id) => document.getElementById(id);
  const regionsBox = $("regions");
  const regionViews = new Map(); // region name -> view (made once)
  const deploymentViews = new Map(); // deployment name -> view (made once)
  let polls = 0;
  let filterText = "";

  // --- small helpers -----------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setTitle(node, text) {
    const value = String(text);
    if (node.getAttribute("title") !== value) node.setAttribute("title", value);
  }

  // A class from a fixed list only: a value from the API never becomes a class name.
  function oneOf(value, allowed, fallback) {
    return allowed.includes(value) ? value : fallback;
  }

  // Make `parent`'s children exactly `children`, in that order, touching the DOM only where
  // they differ: a poll that changes no membership moves no element.
  function placeInOrder(parent, children) {
    let index = 0;
    for (const child of children) {
      if (parent.children[index] !== child) parent.insertBefore(child, parent.children[index] || null);
      index += 1;
    }
    while (parent.children.length > children.length) parent.lastElementChild.remove();
  }

  function setTone(node, base, tone) {
    const name = tone ? `${base} ${tone}` : base;
    if (node.className !== name) node.className = name;
  }

  function str(value) {
    return typeof value === "string" ? value : value === null || value === undefined ? "" : String(value);
  }

  function shortId(id) {
    const text = str(id);
    return text.length > 16 ? `${text.slice(0, 16)}…` : text;
  }

  function gib(bytes) {
    return typeof bytes === "number" ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : "–";
  }

  function utc(ms) {
    const date = new Date(Number(ms));
    return Number.isFinite(date.getTime()) ? date.toISOString().replace("T", " ").slice(0, 19) : str(ms);
  }

  async function getJSON(path) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(path, { method: "GET", signal: controller.signal, cache: "no-store" });
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      if (!response.ok) {
        const why = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
        return { ok: false, error: why };
      }
      return { ok: true, body };
    } catch (error) {
      return { ok: false, error: error.name === "AbortError" ? "no answer in time" : String(error.message) };
    } finally {
      clearTimeout(timer);
    }
  }

  // --- regions and nodes ---------------------------------------------------------------

  function makeRegion(name, nodeCount) {
    const details = el("details", "region");
    details.dataset.region = name;
    details.open = nodeCount <= OPEN_MAX_NODES;
    const summary = el("summary", "region-head");
    const title = el("span", "region-name", name);
    const leader = el("span", "leader");
    const counts = el("span", "counts");
    const count = {};
    for (const state of ["alive", "suspect", "dead"]) {
      count[state] = el("span", `count ${state}`, `0 ${state}`);
      counts.append(count[state]);
    }
    const shown = el("span", "shown");
    const note = el("span", "note");
    summary.append(title, leader, counts, shown, note);
    const table = el("table", "grid nodes");
    const head = el("thead");
    const headRow = el("tr");
    for (const label of ["node", "state", "address", "role", "load (1 min)", "memory free", "replicas", "labels"]) {
      headRow.append(el("th", "", label));
    }
    head.append(headRow);
    const body = el("tbody");
    table.append(head, body);
    details.append(summary, table);
    return { name, details, leader, count, shown, note, body, rows: new Map() };
  }

  function makeRow(id) {
    const tr = el("tr", "node");
    tr.dataset.node = id;
    const cells = {};
    for (const key of ["id", "state", "addr", "role", "load", "memory", "replicas", "labels"]) {
      cells[key] = el("td", key);
      tr.append(cells[key]);
    }
    cells.idText = el("code", "", shortId(id));
    setTitle(cells.idText, id);
    cells.id.append(cells.idText);
    cells.stateText = el("span", "state");
    cells.state.append(cells.stateText);
    cells.loadText = el("span", "num");
    cells.meter = el("meter");
    cells.meter.min = 0;
    cells.load.append(cells.meter, cells.loadText);
    return { tr, cells, search: "" };
  }

  function updateRow(row, member, roles, replicas) {
    const { cells } = row;
    const state = oneOf(str(member.state), STATES, "unknown");
    const stale = member.last_known === true;
    setTone(row.tr, "node", `state-${state}${stale ? " stale" : ""}`);
    setText(cells.stateText, stale ? `${state} (last known)` : state);
    setTone(cells.stateText, "state", state);
    setText(cells.addr, str(member.addr));
    setText(cells.role, roles.join(", "));
    const inventory = member.inventory && typeof member.inventory === "object" ? member.inventory : null;
    const load = inventory && typeof inventory.load_1m === "number" ? inventory.load_1m : null;
    const cpus = inventory && typeof inventory.cpu_count === "number" ? inventory.cpu_count : null;
    setText(cells.loadText, load === null ? "–" : `${load.toFixed(2)}${cpus ? ` / ${cpus} cores` : ""}`);
    const max = cpus || 1;
    if (cells.meter.max !== max) cells.meter.max = max;
    const value = load === null ? 0 : Math.min(load, max);
    if (cells.meter.value !== value) cells.meter.value = value;
    cells.meter.hidden = load === null;
    cells.meter.low = max * 0.7;
    cells.meter.high = max * 0.9;
    cells.meter.optimum = 0;
    setText(cells.memory, gib(inventory ? inventory.memory_available_bytes : null));
    setText(cells.replicas, replicas.join(", "));
    const labels =
      inventory && inventory.labels && typeof inventory.labels === "object"
        ? Object.keys(inventory.labels)
            .sort()
            .map((k) => `${k}=${str(inventory.labels[k])}`)
            .join(" ")
        : "";
    setText(cells.labels, labels);
    row.search = [member.id, member.addr, state, labels, roles.join(" ")].map(str).join(" ").toLowerCase();
  }

  function regionRoles(regionRow) {
    const leader = regionRow && typeof regionRow.leader === "string" ? regionRow.leader : null;
    const voters = regionRow && Array.isArray(regionRow.voters) ? regionRow.voters.map(str) : [];
    return (member) => {
      const roles = [];
      if (member.id === leader) roles.push("leader");
      else if (voters.includes(member.id)) roles.push("voter");
      if (member.gateway === true) roles.push("gateway");
      return roles;
    };
  }

  function replicasByNode(placement) {
    const byNode = new Map();
    const replicas = placement && Array.isArray(placement.replicas) ? placement.replicas : [];
    for (const replica of replicas) {
      const node = str(replica.node);
      if (!byNode.has(node)) byNode.set(node, []);
      byNode.get(node).push(`${str(replica.deployment)}#${str(replica.slot)} ${str(replica.state)}`);
    }
    return byNode;
  }

  function updateRegion(view, regionRow, nodes, placement) {
    const leader = regionRow && typeof regionRow.leader === "string" ? regionRow.leader : null;
    if (regionRow && regionRow.error) {
      setText(view.leader, "leader unknown (region did not answer)");
    } else if (leader) {
      setText(view.leader, `leader ${shortId(leader)} · term ${str(regionRow.term)}`);
    } else {
      setText(view.leader, "no leader (electing)");
    }
    setTitle(view.leader, leader || "");
    setTone(view.leader, "leader", leader ? "" : "warn");
    const notes = [];
    if (regionRow && regionRow.error) notes.push(`unreachable: ${str(regionRow.error)}`);
    if (!nodes.ok) notes.push(`members: ${nodes.error}`);
    const members = nodes.ok && Array.isArray(nodes.body) ? nodes.body.filter((m) => m && typeof m === "object") : [];
    if (members.some((m) => m.last_known === true)) notes.push("last-known members (region not answering)");
    setText(view.note, notes.join("; "));

    const counts = { alive: 0, suspect: 0, dead: 0, left: 0 };
    const roles = regionRoles(regionRow);
    const replicas = replicasByNode(placement && placement.ok ? placement.body : null);
    const seen = new Set();
    for (const member of members) {
      const id = str(member.id);
      if (!id || seen.has(id)) continue;
      seen.add(id);
      const state = str(member.state);
      if (state in counts) counts[state] += 1;
      let row = view.rows.get(id);
      if (!row) {
        row = makeRow(id);
        view.rows.set(id, row);
      }
      updateRow(row, member, roles(member), replicas.get(id) || []);
    }
    // A member list that did not arrive keeps the rows last shown; one that did drops the
    // members it no longer has (a node that left the mesh for good).
    if (nodes.ok) {
      for (const [id, row] of view.rows) {
        if (!seen.has(id)) {
          row.tr.remove();
          view.rows.delete(id);
        }
      }
    }
    placeInOrder(view.body, [...view.rows.keys()].sort().map((id) => view.rows.get(id).tr));
    for (const state of ["alive", "suspect", "dead"]) setText(view.count[state], `${counts[state]} ${state}`);
    applyFilter(view);
    return counts;
  }

  function applyFilter(view) {
    let shown = 0;
    for (const row of view.rows.values()) {
      const hide = filterText !== "" && !row.search.includes(filterText);
      if (row.tr.hidden !== hide) row.tr.hidden = hide;
      if (!hide) shown += 1;
    }
    setText(view.shown, filterText ? `${shown} of ${view.rows.size} shown` : `${view.rows.size} nodes`);
  }

  // --- deployments ---------------------------------------------------------------------

  function makeDeployment(name) {
    const tr = el("tr", "deployment");
    tr.dataset.deployment = name;
    const cells = {};
    for (const key of ["name", "model", "version", "ready", "replicas"]) {
      cells[key] = el("td", key);
      tr.append(cells[key]);
    }
    setText(cells.name, name);
    cells.chips = el("div", "chips");
    cells.unplaced = el("div", "unplaced");
    cells.replicas.append(cells.chips, cells.unplaced);
    return { tr, cells, chipsKey: "" };
  }

  function updateDeployments(deployments, placements) {
    const rows = new Map();
    const held = deployments.ok && Array.isArray(deployments.body) ? deployments.body : [];
    for (const item of held) {
      if (item && typeof item === "object") rows.set(str(item.name), { item, ready: 0, desired: 0, replicas: [], unplaced: [] });
    }
    for (const [region, placement] of placements) {
      if (!placement.ok || !placement.body) continue;
      const body = placement.body;
      for (const count of Array.isArray(body.deployments) ? body.deployments : []) {
        const name = str(count.deployment);
        if (!rows.has(name)) rows.set(name, { item: null, ready: 0, desired: 0, replicas: [], unplaced: [] });
        const row = rows.get(name);
        row.ready += Number(count.ready) || 0;
        row.desired += Number(count.desired) || 0;
      }
      for (const replica of Array.isArray(body.replicas) ? body.replicas : []) {
        const row = rows.get(str(replica.deployment));
        if (row) row.replicas.push({ region, node: str(replica.node), slot: str(replica.slot), state: str(replica.state) });
      }
      for (const lost of Array.isArray(body.unplaced) ? body.unplaced : []) {
        const row = rows.get(str(lost.deployment));
        if (row) row.unplaced.push(`${region} #${str(lost.slot)}: ${str(lost.reason)}`);
      }
    }
    let ready = 0;
    let desired = 0;
    for (const [name, view] of deploymentViews) {
      if (!rows.has(name) && deployments.ok) {
        view.tr.remove();
        deploymentViews.delete(name);
      }
    }
    const names = [...rows.keys()].sort();
    for (const name of names) {
      if (!deploymentViews.has(name)) deploymentViews.set(name, makeDeployment(name));
    }
    placeInOrder($("deployments"), [...deploymentViews.keys()].sort().map((n) => deploymentViews.get(n).tr));
    for (const name of names) {
      const data = rows.get(name);
      const view = deploymentViews.get(name);
      const manifest = data.item && data.item.manifest && typeof data.item.manifest === "object" ? data.item.manifest : null;
      const model = manifest && manifest.model && typeof manifest.model === "object" ? manifest.model : null;
      setText(view.cells.model, model ? `${str(model.name)} ${str(model.version)}` : data.item && data.item.error ? `unreadable: ${str(data.item.error)}` : "–");
      setText(view.cells.version, data.item ? utc(data.item.version) : "deleted");
      setText(view.cells.ready, `${data.ready} / ${data.desired}`);
      setTone(view.cells.ready, "ready", data.desired > 0 && data.ready >= data.desired ? "ok" : data.desired > 0 ? "warn" : "");
      ready += data.ready;
      desired += data.desired;
      data.replicas.sort((a, b) => (a.region + a.node + a.slot < b.region + b.node + b.slot ? -1 : 1));
      const key = JSON.stringify(data.replicas);
      if (key !== view.chipsKey) {
        view.chipsKey = key;
        const chips = data.replicas.map((r) => {
          const chip = el("span", `chip ${oneOf(r.state, REPLICA_STATES, "unknown")}`, `${shortId(r.node)} · ${r.state}`);
          setTitle(chip, `region ${r.region}, replica #${r.slot} on node ${r.node}: ${r.state}`);
          return chip;
        });
        view.cells.chips.replaceChildren(...chips);
      }
      setText(view.cells.unplaced, data.unplaced.length ? `unplaced: ${data.unplaced.join("; ")}` : "");
    }
    $("deployments-empty").hidden = rows.size > 0;
    setText($("sum-deployments"), rows.size ? `${ready} / ${desired}` : "–");
    setText($("sum-deployment-count"), `${rows.size} deployment${rows.size === 1 ? "" : "s"}`);
  }

  // --- one poll ------------------------------------------------------------------------

  async function poll() {
    const started = performance.now();
    const health = await getJSON("/v1/health");
    if (!health.ok || !health.body || typeof health.body !== "object") {
      setText($("status"), `this node does not answer: ${health.error || "not JSON"}; retrying`);
      setTone($("status"), "status", "bad");
      return;
    }
    const self = health.body;
    const own = str(self.region);
    setText($("self"), `node ${str(self.node_id)} · region ${own}${self.is_gateway ? " · gateway" : ""}`);
    const others = self.regions && typeof self.regions === "object" ? Object.keys(self.regions).filter((r) => r !== own).sort() : [];
    const names = [own, ...others];
    const query = (path, region) => getJSON(`${path}?region=${encodeURIComponent(region)}`);
    const [regions, deployments, nodes, placements] = await Promise.all([
      getJSON("/v1/regions"),
      getJSON("/v1/deployments"),
      Promise.all(names.map((r) => query("/v1/nodes", r))),
      Promise.all(names.map((r) => query("/v1/placements", r))),
    ]);
    const regionRows = new Map();
    if (regions.ok && Array.isArray(regions.body)) {
      for (const row of regions.body) if (row && typeof row === "object") regionRows.set(str(row.region), row);
    }
    const totals = { alive: 0, suspect: 0, dead: 0 };
    let led = 0;
    for (const name of [...regionViews.keys()]) if (!names.includes(name)) regionViews.delete(name);
    names.forEach((name, index) => {
      if (!regionViews.has(name)) {
        const count = nodes[index].ok && Array.isArray(nodes[index].body) ? nodes[index].body.length : 0;
        regionViews.set(name, makeRegion(name, count));
      }
    });
    placeInOrder(regionsBox, names.map((name) => regionViews.get(name).details));
    names.forEach((name, index) => {
      const view = regionViews.get(name);
      const counts = updateRegion(view, regionRows.get(name), nodes[index], placements[index]);
      for (const state of Object.keys(totals)) totals[state] += counts[state];
      const row = regionRows.get(name);
      if (row && typeof row.leader === "string") led += 1;
    });
    setText($("sum-regions"), names.length);
    setText($("sum-leaders"), `${led} with a leader`);
    setText($("sum-alive"), totals.alive);
    setText($("sum-suspect"), totals.suspect);
    setText($("sum-dead"), totals.dead);
    updateDeployments(deployments, new Map(names.map((name, i) => [name, placements[i]])));
    const failed = [regions, deployments].filter((r) => !r.ok).map((r) => r.error);
    polls += 1;
    document.body.dataset.polls = String(polls);
    const took = Math.round(performance.now() - started);
    const when = new Date().toISOString().slice(11, 19);
    setText($("status"), failed.length ? `updated ${when} UTC, partly: ${failed.join("; ")}` : `updated ${when} UTC (${took} ms)`);
    setTone($("status"), "status", failed.length ? "warn" : "ok");
  }

  async function pollForever() {
    try {
      await poll();
    } catch (error) {
      setText($("status"), `could not update: ${String(error && error.message)}`);
      setTone($("status"), "status", "bad");
    }
    // The next poll starts 2 s after this one ended: a slow region never stacks requests up.
    setTimeout(pollForever, POLL_MS);
  }

  // --- the event feed ------------------------------------------------------------------

  let lastSeq = 0;

  function addEvent(event) {
    if (!event || typeof event !== "object") return;
    const seq = Number(event.seq) || 0;
    if (seq <= lastSeq) return;
    lastSeq = seq;
    const kind = str(event.kind);
    const item = el("li", `event ${EVENT_TONES[kind] || ""}`.trim());
    const time = str(event.time);
    item.append(
      el("time", "", time.length >= 23 ? time.slice(11, 23) : time),
      el("span", "kind", kind),
      el("code", "subject", shortId(event.subject)),
      el("span", "reason", str(event.reason)),
    );
    setTitle(item, `${time} ${kind} ${str(event.subject)}: ${str(event.reason)}`);
    const feed = $("events");
    feed.prepend(item);
    while (feed.childElementCount > FEED_MAX) feed.lastElementChild.remove();
  }

  async function pollEvents() {
    const answer = await getJSON(`/v1/events?after=${lastSeq}&limit=${FEED_MAX}`);
    if (answer.ok && answer.body && Array.isArray(answer.body.events)) answer.body.events.forEach(addEvent);
    setTimeout(pollEvents, POLL_MS);
  }

  async function followEvents() {
    const first = await getJSON(`/v1/events?limit=${FEED_BACKLOG}`);
    if (first.ok && first.body && Array.isArray(first.body.events)) {
      first.body.events.forEach(addEvent);
      lastSeq = Math.max(lastSeq, Number(first.body.last_seq) || 0);
    }
    if (typeof EventSource !== "function") {
      setText($("events-mode"), "polled every 2 s");
      pollEvents();
      return;
    }
    const stream = new EventSource(`/v1/events/stream?last_event_id=${lastSeq}`);
    stream.onopen = () => setText($("events-mode"), "live");
    stream.onmessage = (message) => {
      try {
        addEvent(JSON.parse(message.data));
      } catch (_) {
        // not an event: skipped
      }
    };
    stream.onerror = () => {
      // EventSource reconnects by itself (with Last-Event-ID). It gives up only on a refusal,
      // such as 503 when the node serves its maximum of streams: then poll instead.
      if (stream.readyState === EventSource.CLOSED) {
        setText($("events-mode"), "polled every 2 s (the node refused a stream)");
        pollEvents();
      } else {
        setText($("events-mode"), "reconnecting…");
      }
    };
  }

  // --- controls (local to the page: nothing is sent) -------------------------------------

  $("filter").addEventListener("input", (e) => {
    filterText = e.target.value.trim().toLowerCase();
    for (const view of regionViews.values()) applyFilter(view);
  });
  $("expand-all").addEventListener("click", () => {
    for (const view of regionViews.values()) view.details.open = true;
  });
  $("collapse-all").addEventListener("click", () => {
    for (const view of regionViews.values()) view.details.open = false;
  });

  pollForever();
  followEvents();
})();
