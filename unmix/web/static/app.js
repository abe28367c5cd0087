// The page's shared parts: tabs, the model chooser, form fields, image pickers, the live reverse-process view and
// reading a server-sent event stream from a POST (fetch, so that "stop" or leaving the page cancels the request).
"use strict";

const U = {
  info: null,        // /api/models: models, samplers, methods, limits
  modelHandlers: [],

  $(sel, root = document) { return root.querySelector(sel); },
  $$(sel, root = document) { return Array.from(root.querySelectorAll(sel)); },

  async start() {
    const buttons = U.$$(".tab-button");
    buttons.forEach((b) => b.addEventListener("click", () => { U.show(b.dataset.tab); history.replaceState(null, "", "#" + b.dataset.tab); }));
    const wanted = location.hash.slice(1);
    U.show(buttons.some((b) => b.dataset.tab === wanted) ? wanted : buttons[0].dataset.tab);
    try {
      U.info = await U.getJSON("/api/models");
    } catch (e) {
      U.$("#model-info").textContent = "cannot list the models: " + e.message;
      return;
    }
    const select = U.$("#model");
    U.fill(select, U.info.models.map((m) => [m.name, m.name]));
    U.$$("select[name=sampler]").forEach((s) => U.fill(s, U.info.samplers.map((n) => [n, n]), U.info.default_sampler));
    U.$$("select[name=method]").forEach((s) => U.fill(s, U.info.methods.map((n) => [n, n]), "repaint"));
    U.$$("input[name=nfe]").forEach((i) => { i.max = U.info.limits.max_nfe; });
    U.$$("input[name=count]").forEach((i) => { i.max = U.info.limits.max_count; });
    select.addEventListener("change", () => U.modelChanged());
    U.modelChanged();
  },

  show(name) {
    U.$$(".tab-button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
    U.$$("section.tab").forEach((s) => { s.hidden = s.dataset.tab !== name; });
  },

  // Only the tabs made for the chosen model's task (image models, product-photo models) are offered.
  showTabsFor(m) {
    const buttons = U.$$(".tab-button");
    buttons.forEach((b) => { b.hidden = b.dataset.task !== m.task; });
    const active = buttons.find((b) => b.classList.contains("active"));
    if (!active || active.hidden) {
      const first = buttons.find((b) => !b.hidden);
      if (first) U.show(first.dataset.tab);
    }
  },

  model() { return U.info && U.info.models.find((m) => m.name === U.$("#model").value); },

  onModel(fn) { U.modelHandlers.push(fn); if (U.model()) fn(U.model()); },

  modelChanged() {
    const m = U.model();
    U.$("#model-info").textContent = `${m.path} · ${m.data || "?"} · ${m.shape.slice(1).join("x")} ` +
      `${m.shape[0] === 1 ? "grey" : "RGB"}` + (m.classes.length ? ` · ${m.classes.length} classes` : "") +
      (m.step != null ? ` · step ${m.step}` : "") +
      (m.sampling.nfe ? ` · samples with ${m.sampling.sampler} at ${m.sampling.nfe} NFE` : "") +
      (m.task === "product" ? " · product photos (alpha + photo)" : "");
    U.showTabsFor(m);
    // a model's own sampling (a distilled model's native steps), else the page's defaults
    U.$$("select[name=sampler]").forEach((s) => { s.value = m.sampling.sampler || U.info.default_sampler; });
    U.$$("input[name=nfe]").forEach((i) => { i.value = m.sampling.nfe || i.defaultValue; });
    U.$$("[data-condition]").forEach((el) => U.condition(el, m));
    U.modelHandlers.forEach((fn) => fn(m));
  },

  fill(select, pairs, value) {
    select.replaceChildren(...pairs.map(([v, text]) => new Option(text, v)));
    if (value !== undefined) select.value = value;
  },

  // Named inputs and selects under root as one object (numbers as numbers; empty fields left out).
  form(root) {
    const out = { model: U.model().name };
    U.$$("input[name], select[name]", root).forEach((el) => {
      if (el.type === "file" || el.closest("[hidden]") || el.value === "") return;
      out[el.name] = el.type === "number" || el.type === "range" ? Number(el.value) : el.value;
    });
    return out;
  },

  // What steers the model: a label (class-conditional models) or a prompt and a negative prompt (text models),
  // with the guidance scale; nothing for an unconditional model.
  condition(root, m) {
    root.hidden = !m.classes.length && !m.text;
    const guidance = `<label>guidance <input name="guidance" type="number" min="0" max="100" step="0.5" placeholder="default"></label>`;
    if (m.text) {
      root.innerHTML = `<label>prompt <input name="prompt" type="text" size="28" maxlength="500" placeholder="empty: unconditional"></label>
        <label>negative prompt <input name="negative_prompt" type="text" size="16" maxlength="500"></label> ${guidance}`;
    } else if (m.classes.length) {
      root.innerHTML = `<label>label <select name="label"></select></label> ${guidance}`;
      U.fill(U.$("select[name=label]", root), [["", "none (unconditional)"], ...m.classes.map((c, i) => [String(i), c])], "");
    } else {
      root.innerHTML = "";
    }
  },

  async getJSON(url, options) {
    const r = await fetch(url, options);
    const data = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
    if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
    return data;
  },

  postJSON(url, body, signal) {
    return U.getJSON(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal });
  },

  // POST body (an object sent as JSON, or a Blob sent as it is) to url and call on.queued / on.start / on.frame / on.done / on.error for each server-sent event.
  // Returns the AbortController: abort() closes the stream, which stops the work on the server.
  stream(url, body, on) {
    const ctrl = new AbortController();
    (async () => {
      let r;
      try {
        const raw = body instanceof Blob;
        r = await fetch(url, { method: "POST", signal: ctrl.signal,
          headers: { "Content-Type": raw ? "application/octet-stream" : "application/json" }, body: raw ? body : JSON.stringify(body) });
      } catch (e) { on.error && on.error({ error: ctrl.signal.aborted ? "stopped" : e.message }); return; }
      if (!r.ok) {
        const data = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
        on.error && on.error(data);
        return;
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "", finished = false;
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let name = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) name = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (name === "done" || name === "error") finished = true;
            if (on[name]) on[name](data ? JSON.parse(data) : {});
          }
        }
      } catch (e) {
        if (!finished) { finished = true; on.error && on.error({ error: ctrl.signal.aborted ? "stopped" : e.message }); }
      }
      if (!finished && on.error) on.error({ error: "the connection closed early" });
    })();
    return ctrl;
  },

  // A run button, a stop button, a live view (noisy state | guess) and a status line, wired to U.stream; url is a
  // string, or a function read at each click (settings in the query string).
  runner(root, url, makeBody, onDone) {
    const go = U.$("[data-run]", root), stop = U.$("[data-stop]", root), live = U.$("[data-live]", root);
    const status = U.$(".status", live), noisy = U.$("img.noisy", live), guess = U.$("img.guess", live);
    let ctrl = null;
    const finish = () => { go.disabled = false; stop.disabled = true; ctrl = null; };
    stop.disabled = true;
    stop.addEventListener("click", () => { if (ctrl) ctrl.abort(); });
    go.addEventListener("click", () => {
      let body, target;
      try { body = makeBody(); target = typeof url === "function" ? url() : url; } catch (e) { U.say(status, e.message, true); return; }
      if (ctrl) ctrl.abort();
      go.disabled = true; stop.disabled = false;
      const t0 = performance.now();
      live.dataset.frames = "0";
      U.say(status, "sending…");
      ctrl = U.stream(target, body, {
        queued: (e) => U.say(status, `waiting: ${e.position} in line (${e.running} running)`),
        start: () => U.say(status, "started"),
        frame: (f) => {
          noisy.src = f.noisy; guess.src = f.guess;
          live.dataset.frames = String(f.frame);
          U.say(status, `frame ${f.frame} · step ${f.step} · σ = ${f.sigma.toPrecision(3)} · ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        },
        done: (d) => {
          const s = (performance.now() - t0) / 1000;
          U.say(status, `done: ${d.frames} frames in ${s.toFixed(1)} s (${(d.frames / Math.max(d.elapsed, 1e-9)).toFixed(1)} frames/s on the server)`);
          live.dataset.done = "1";
          finish(); onDone(d);
        },
        error: (e) => { U.say(status, e.error, true); finish(); },
      });
    });
  },

  say(el, text, bad = false) { el.textContent = text; el.classList.toggle("error", bad); },

  // Choose an image: an item of the model's dataset (by index, or at random) or an uploaded file, fitted to the
  // model's size by the server. onChange(url) gets a PNG data URL at the model's size.
  picker(root, onChange) {
    root.classList.add("picker");
    root.innerHTML = `<img class="pic small" alt="the chosen image">
      <div class="panel"><div class="controls"><label>dataset item <input type="number" class="index" min="0" value="0">
      </label><button type="button" class="random">random item</button>
      <label>or upload <input type="file" class="file" accept="image/*"></label></div>
      <div class="msg muted"></div></div>`;
    const img = U.$("img", root), index = U.$(".index", root), msg = U.$(".msg", root), file = U.$(".file", root);
    const state = { url: null };
    const set = (url, text) => { state.url = url; img.src = url; U.say(msg, text); onChange(url); };
    const item = async (i) => {
      const m = U.model();
      try {
        const d = await U.getJSON(`/api/dataset?model=${encodeURIComponent(m.name)}&index=${i}`);
        index.value = d.index; index.max = d.size - 1;
        set(d.image, `${m.data} item ${d.index}` + (d.label != null ? ` (${d.label})` : ""));
      } catch (e) { U.say(msg, e.message, true); }
    };
    index.addEventListener("change", () => item(index.value));
    U.$(".random", root).addEventListener("click", () => {
      const n = U.model().dataset_size || 1;
      item(Math.floor(Math.random() * n));
    });
    file.addEventListener("change", async () => {
      const f = file.files[0];
      if (!f) return;
      if (f.size > U.info.limits.max_upload_bytes) {
        U.say(msg, `${f.name} is ${(f.size / 2 ** 20).toFixed(1)} MiB; the limit is ${U.info.limits.max_upload_bytes / 2 ** 20} MiB`, true);
        return;
      }
      try {
        const d = await U.getJSON(`/api/upload?model=${encodeURIComponent(U.model().name)}`,
          { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: f });
        set(d.image, `uploaded ${f.name}, fitted to the model's size`);
      } catch (e) { U.say(msg, e.message, true); }
      file.value = "";
    });
    U.onModel((m) => { if (m.task !== "product") item(0); });
    return state;
  },

  // A PNG download link for a data URL.
  download(link, url, name) { link.href = url; link.download = name; link.hidden = false; },
};
