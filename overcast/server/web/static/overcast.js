// overcast dashboard: the account switcher, the backend wizard's steps, live tables (SSE).
// Everything works without this file too (forms post, tables render on the server).
"use strict";
document.documentElement.classList.add("js");

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children || []) node.append(child);
  return node;
}
const stateBadge = (s) => el("span", {class: "state state-" + s, text: s});
const short = (t) => (t || "").slice(0, 19).replace("T", " ");

function switcher() {
  const select = document.getElementById("account-switcher");
  if (!select) return;
  select.addEventListener("change", () => {
    location.href = "/a/" + encodeURIComponent(select.value) + "/" +
      (select.dataset.section === "account" ? "account" : "clusters");
  });
}

function confirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => { if (!confirm(form.dataset.confirm)) e.preventDefault(); });
  }
  const handoff = document.querySelector("form[data-autosubmit]");
  if (handoff) handoff.submit();
}

function wizard() {
  const form = document.getElementById("wizard");
  if (!form) return;
  const steps = [...form.querySelectorAll(".step")];
  const marks = [...document.querySelectorAll("#steps li")];
  const back = document.getElementById("wizard-back");
  const next = document.getElementById("wizard-next");
  const submit = document.getElementById("wizard-submit");
  let at = 0;
  const value = (name) => (form.querySelector(`[name="${name}"]:checked`) || form.elements[name] || {}).value || "";
  function toggles() {
    const aws = value("kind") === "aws";
    form.querySelector(".aws-only").hidden = !aws;
    form.querySelector(".dockerhub-only").hidden = value("registry_type") !== "docker_hub";
  }
  function review() {
    const aws = value("kind") === "aws";
    const key = value("aws_access_key_id");
    const shown = {
      kind: aws ? "Launch in my AWS account" : "overcast's hosted AWS account",
      region: value("region"),
      aws_access_key_id: aws ? (key.length > 8 ? key.slice(0, 4) + "…" + key.slice(-4) : key) : "—",
      aws_secret_access_key: aws ? (value("aws_secret_access_key") ? "•••••••• (set)" : "missing") : "—",
      registry_type: value("registry_type") === "docker_hub" ? "Docker Hub (" + value("registry_username") + ")" : "Amazon ECR",
    };
    for (const dd of form.querySelectorAll("[data-review]")) {
      if (dd.dataset.review in shown) dd.textContent = shown[dd.dataset.review];
    }
  }
  function show(i) {
    at = Math.max(0, Math.min(i, steps.length - 1));
    steps.forEach((s, j) => s.classList.toggle("shown", j === at));
    marks.forEach((m, j) => { m.classList.toggle("current", j === at); m.classList.toggle("done", j < at); });
    back.hidden = at === 0;
    next.hidden = at === steps.length - 1;
    submit.hidden = at !== steps.length - 1;
    if (at === steps.length - 1) review();
  }
  function stepValid() {
    for (const input of steps[at].querySelectorAll("input, select")) {
      if (input.closest("[hidden]")) continue;
      if (!input.reportValidity()) return false;
    }
    if (at === 1 && value("kind") === "aws" && (!value("aws_access_key_id") || !value("aws_secret_access_key"))) {
      alertIn(steps[at], "Enter the access key id and the secret access key, or choose the hosted account.");
      return false;
    }
    return true;
  }
  function alertIn(step, text) {
    let p = step.querySelector(".error");
    if (!p) { p = el("p", {class: "error", role: "alert"}); step.append(p); }
    p.textContent = text;
  }
  form.addEventListener("change", toggles);
  form.addEventListener("submit", (e) => {  // Enter in a field moves on, only Review submits
    if (at !== steps.length - 1) { e.preventDefault(); if (stepValid()) show(at + 1); }
  });
  next.addEventListener("click", () => { if (stepValid()) show(at + 1); });
  back.addEventListener("click", () => show(at - 1));
  toggles();
  show(0);
}

function live(node, render) {
  if (!node || !window.EventSource) return;
  const source = new EventSource(node.dataset.live);
  source.onmessage = (e) => render(JSON.parse(e.data));
  source.addEventListener("end", () => source.close());
}

function fill(tbody, rows, empty, cols) {
  const seen = new Set([...tbody.querySelectorAll("tr[data-key]")].map((r) => r.dataset.key));
  tbody.replaceChildren();
  if (!rows.length) tbody.append(el("tr", {class: "empty"}, [el("td", {colspan: String(cols), text: empty})]));
  for (const [key, tr] of rows) {
    tr.dataset.key = key;
    if (seen.size && !seen.has(key)) tr.classList.add("fresh");
    tbody.append(tr);
  }
}

function liveClusters() {
  const table = document.querySelector("#clusters[data-live]");
  live(table, (data) => {
    const slug = table.dataset.slug;
    fill(table.tBodies[0], data.clusters.map((c) => {
      const link = el("a", {href: `/a/${encodeURIComponent(slug)}/clusters/${encodeURIComponent(c.name)}`, text: c.name});
      // Lists carry no dashboard credential: "open" leads to the cluster's page, which has it.
      const dash = c.dashboard_link && c.state === "running"
        ? el("a", {href: link.getAttribute("href") + "#dashboard", text: "open"}) : "";
      const tr = el("tr", {"data-name": c.name}, [
        el("td", {}, [link]), el("td", {}, [stateBadge(c.state)]),
        el("td", {text: `${c.workers_ready} / ${c.n_workers}`}),
        el("td", {text: c.region + (c.zone ? " · " + c.zone : "")}), el("td", {}, [dash]),
        el("td", {text: short(c.created_at)})]);
      return [c.name + ":" + c.id, tr];
    }), "No clusters yet.", 6);
  });
}

function liveCluster() {
  const box = document.querySelector("#cluster[data-live]");
  live(box, (data) => {
    const c = data.cluster;
    const badge = document.getElementById("cluster-state");
    badge.className = "state state-" + c.state; badge.textContent = c.state;
    document.getElementById("workers").textContent = `${c.workers_ready} / ${c.n_workers}`;
    document.getElementById("scheduler").textContent = c.scheduler_address || "—";
    const dash = document.getElementById("dashboard");
    dash.replaceChildren(c.dashboard_link ? el("a", {href: c.dashboard_link, target: "_blank", rel: "noopener", text: c.dashboard_link}) : "—");
    fill(document.querySelector("#instances tbody"), c.instances.map((i, n) => [i.aws_id || "req" + n, el("tr", {}, [
      el("td", {text: i.aws_id || "—"}), el("td", {text: i.role}), el("td", {text: i.instance_type}),
      el("td", {text: i.zone || "—"}), el("td", {text: i.spot ? "yes" : "no"}), el("td", {}, [stateBadge(i.state)])])]),
      "No instances yet.", 6);
    fill(document.querySelector("#notifications tbody"), data.notifications.map((n) => [String(n.id),
      el("tr", {class: "level-" + n.level}, [el("td", {text: short(n.time)}), el("td", {text: n.level}),
        el("td", {text: n.event_type}),
        el("td", {text: n.message + (n.count > 1 ? " (×" + n.count + ", last " + short(n.last_at) + ")" : "")})])]),
      "Nothing yet.", 4);
  });
}

function liveBackend() {
  const table = document.querySelector("#resources[data-live]");
  live(table, (data) => {
    const badge = document.getElementById("backend-state");
    badge.className = "state state-" + data.state; badge.textContent = data.state;
    const reason = document.getElementById("backend-reason");
    reason.hidden = !data.reason; reason.textContent = data.reason || "";
    fill(table.tBodies[0], data.resources.map((r, n) => [r.kind + ":" + r.aws_id, el("tr", {}, [
      el("td", {text: String(n + 1)}), el("td", {text: r.kind}), el("td", {}, [el("code", {text: r.aws_id})]),
      el("td", {text: r.zone || r.region}), el("td", {}, [stateBadge(r.state)])])]),
      "Waiting for the first resource…", 5);
  });
}

function logs() {
  const box = document.getElementById("logs");
  if (!box) return;
  box.addEventListener("toggle", async () => {
    if (!box.open) return;
    const out = box.querySelector(".logs");
    try {
      const response = await fetch(box.dataset.src, {credentials: "same-origin"});
      const data = await response.json();
      if (!response.ok) throw new Error(data.detail || response.status);
      const streams = Object.entries(data.streams || {});
      out.replaceChildren(...(streams.length ? streams.map(([id, events]) => el("div", {}, [
        el("h3", {text: id}), el("pre", {text: events.map((e) => e.message).join("\n") || "(empty)"})]))
        : [el("p", {class: "hint", text: "No logs yet."})]));
    } catch (err) {
      out.replaceChildren(el("p", {class: "error", text: "Could not load the logs: " + err.message}));
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  switcher(); confirmations(); wizard(); liveClusters(); liveCluster(); liveBackend(); logs();
});
