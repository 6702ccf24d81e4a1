// thotd dashboard: live updates from /events (server-sent events), tree expansion.
// Written for this page, no library. Everything inserted is server-rendered, escaped HTML
// from our own origin, or text set with textContent.
"use strict";

(function () {
  const live = document.getElementById("live");
  let timer = null;
  let treeDirty = false; // containers came or went: the tree's rows, not only its states

  async function fetchText(url) {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + url);
    return r.text();
  }

  async function refreshStates(tree) {
    const r = await fetch(tree.dataset.states, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) return;
    const data = await r.json();
    for (const li of tree.querySelectorAll("li.node")) {
      const id = li.dataset.node;
      const hadScripts = !li.classList.contains("st-none");
      const state = data.own[id] || (hadScripts ? "fresh" : "none");
      li.className = li.className.replace(/\bst-\S+/g, "").trim() + " st-" + state;
      li.querySelector(":scope > .state").textContent = state === "none" ? "" : state;
      const below = li.querySelector(":scope > .below");
      below.textContent = data.below[id] ? "below: " + data.below[id] : "";
      const tail = li.querySelector(":scope > .tail");
      tail.textContent = data.tails[id] || "";
      tail.hidden = !data.tails[id];
    }
  }

  async function refresh() {
    timer = null;
    const jobs = [];
    for (const el of document.querySelectorAll("[data-live]")) {
      jobs.push(fetchText(el.dataset.live).then((html) => { el.innerHTML = html; }));
    }
    const tree = document.getElementById("tree");
    if (tree && treeDirty) {
      treeDirty = false;
      jobs.push(reloadTree(tree));
    } else if (tree) {
      jobs.push(refreshStates(tree));
    }
    await Promise.allSettled(jobs);
  }

  function soon() {
    if (timer === null) timer = setTimeout(refresh, 150);
  }

  function connect() {
    const es = new EventSource("/events");
    es.onopen = () => { live.textContent = "● live"; live.className = "live on"; };
    es.onerror = () => { live.textContent = "○ reconnecting"; live.className = "live"; };
    es.onmessage = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if ((ev.event === "batch" && (ev.added || ev.removed)) || ev.event === "pause") treeDirty = true;
      if (ev.event === "run" || ev.event === "project" || ev.event === "pause" || ev.event === "lagged" ||
          (ev.event === "batch" && (ev.added || ev.removed || ev.modified))) {
        soon();
      }
    };
  }

  // A running run's log is re-read every second while it runs (the log is not an event).
  function followLog() {
    const box = document.getElementById("log");
    if (!box) return;
    setInterval(() => {
      const pre = box.querySelector("pre.log");
      if (pre && pre.dataset.running) {
        fetchText(box.dataset.live).then((html) => { box.innerHTML = html; }).catch(() => {});
      }
    }, 1000);
  }

  async function expand(li, a) {
    const ul = li.querySelector(":scope > ul.children");
    li.classList.add("open");
    a.textContent = "▾";
    if (!ul.dataset.loaded) {
      ul.innerHTML = await fetchText(a.dataset.fragment);
      ul.dataset.loaded = "1";
    }
    ul.hidden = false;
  }

  // Rows again from the server, then the subtrees that were open opened again.
  async function reloadTree(tree) {
    const open = Array.from(tree.querySelectorAll("li.node.open"), (li) => li.dataset.node);
    tree.innerHTML = await fetchText(tree.dataset.fragment);
    for (const id of open) {
      const li = Array.from(tree.querySelectorAll("li.node")).find((n) => n.dataset.node === id);
      const a = li && li.querySelector(":scope > a.expand");
      if (a) await expand(li, a);
    }
  }

  document.addEventListener("click", async (e) => {
    const a = e.target.closest("a.expand");
    if (!a) return;
    e.preventDefault();
    const li = a.closest("li.node");
    if (li.classList.contains("open")) {
      li.classList.remove("open");
      a.textContent = "▸";
      li.querySelector(":scope > ul.children").hidden = true;
    } else {
      await expand(li, a);
    }
  });

  connect();
  followLog();
})();
