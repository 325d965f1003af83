// The fleet page: renders each `fleet` event (a FleetView, see shoal-view)
// with DOM calls only (names come from hosts; nothing is parsed as HTML).
"use strict";

const STATES = ["fetching", "staged", "switching", "live", "failed", "stale", "unreachable"];
let updates = 0;
let lastChart = 0;

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function rate(n) { return bytes(n) + "/s"; }

function fraction(d) {
  if (d.chunks_total === 0) return d.hosts === 0 || d.verified === d.hosts ? 1 : 0;
  return d.chunks_have / d.chunks_total;
}

function renderDcs(v) {
  const box = document.getElementById("dcs");
  box.replaceChildren();
  for (const d of v.dcs) {
    const f = fraction(d);
    const row = el("div", {
      class: "dc", "data-dc": d.dc, "data-fraction": f.toFixed(4),
      "data-verified": d.verified, "data-live": d.live, "data-hosts": d.hosts,
    });
    row.append(el("span", { class: "name" }, d.dc));
    const bar = el("progress", { max: "1", value: f.toFixed(4) });
    bar.title = (100 * f).toFixed(1) + "% of the release's chunks";
    row.append(bar);
    row.append(el("span", { class: "figures" },
      `${d.verified}/${d.hosts} verified, ${d.live} live · ${bytes(d.bytes_have)} of ${bytes(d.bytes_total)} · in ${rate(d.rate_in_bps)} out ${rate(d.rate_out_bps)}`));
    box.append(row);
  }
}

function renderHosts(v) {
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  for (const s of STATES) {
    legend.append(el("span", { class: "host state-" + s, "data-count": v.counts[s] || 0 }, `${s} ${v.counts[s] || 0}`));
  }
  const grid = document.getElementById("hosts");
  grid.replaceChildren();
  for (const h of v.hosts) {
    const e = el("span", { class: "host state-" + h.state, "data-host": h.host, "data-dc": h.dc, "data-state": h.state }, h.host);
    let tip = `${h.host} (${h.dc}): ${h.state}, runs ${h.current || "nothing"}, ${h.chunks_have}/${h.chunks_total} chunks`;
    if (h.note) tip += ` — ${h.note}`;
    e.title = tip;
    grid.append(e);
  }
}

function renderRollout(v) {
  const box = document.getElementById("rollout");
  box.replaceChildren();
  const r = v.rollout;
  if (!r) { box.textContent = "no rollout yet"; return; }
  box.append(el("div", { id: "rollout-phase", "data-phase": r.phase, "data-done": r.done },
    `${r.purpose} by ${r.who}: ${r.phase}${r.done ? " (finished)" : ""}`));
  if (r.batch) box.append(el("div", { id: "rollout-batch" }, `batch ${r.batch} of ${r.batches}: ${r.batch_hosts.join(", ")}`));
  if (r.next_hosts.length) box.append(el("div", { id: "rollout-next" }, `next: ${r.next_hosts.join(", ")}`));
}

function renderErrors(v) {
  const list = document.getElementById("errors");
  list.replaceChildren();
  if (!v.errors.length) { list.append(el("li", { class: "none" }, "none")); return; }
  for (const e of v.errors.slice().reverse()) list.append(el("li", {}, e));
}

function render(v) {
  updates++;
  document.body.dataset.updates = updates;
  document.body.dataset.allLive = v.all_live;
  document.body.dataset.release = v.release || "";
  const total = v.hosts.length;
  const live = v.counts.live || 0;
  document.getElementById("summary").textContent =
    `release ${v.release || "none"} · target ${v.target || "none"} · ${live}/${total} live · ${v.elapsed_s.toFixed(0)} s` +
    (v.all_live ? " · every host live" : "");
  renderDcs(v);
  renderHosts(v);
  renderRollout(v);
  renderErrors(v);
  const now = Date.now();
  if (now - lastChart > 2000) {
    lastChart = now;
    document.getElementById("chart").src = "/chart.svg?at=" + now;
  }
}

function connect() {
  const conn = document.getElementById("connection");
  const es = new EventSource("/events");
  es.addEventListener("open", () => { conn.dataset.state = "open"; conn.textContent = "live"; });
  es.addEventListener("error", () => { conn.dataset.state = "lost"; conn.textContent = "reconnecting"; });
  es.addEventListener("fleet", (ev) => render(JSON.parse(ev.data)));
}

connect();
