// The minBERT book: what a static page shows where a notebook had a widget.
// Widgets need a live kernel, and the book loads no widget JavaScript (it works offline),
// so each widget view would be an empty box. From the widget state saved in the notebook,
// a tqdm progress bar becomes a static bar with its final text; any other widget (an
// `interact` explorer) becomes a note pointing to the launch buttons and the static figure.
document.addEventListener("DOMContentLoaded", () => {
  const state = {};
  document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]').forEach((s) => {
    try {
      Object.assign(state, JSON.parse(s.textContent).state || {});
    } catch (e) {
      /* no saved state: every widget gets the note */
    }
  });
  const model = (id) => state[id] || {};
  const child = (v) => (typeof v === "string" && v.startsWith("IPY_MODEL_") ? model(v.slice(10)) : {});
  const text = (html) => new DOMParser().parseFromString(html || "", "text/html").body.textContent.trim();

  document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').forEach((s) => {
    let view = {};
    try {
      view = JSON.parse(s.textContent);
    } catch (e) {
      /* fall through to the note */
    }
    const kids = ((model(view.model_id).state || {}).children || []).map(child);
    const bar = kids.find((k) => /ProgressModel$/.test(k.model_name || ""));
    const div = document.createElement("div");
    if (bar) {
      const b = bar.state || {};
      const [left, right] = kids.filter((k) => k.model_name === "HTMLModel").map((k) => text((k.state || {}).value));
      div.className = "mb-widget-progress";
      const progress = document.createElement("progress");
      progress.max = b.max || 1;
      progress.value = b.value || 0;
      div.append(left || "", " ", progress, " ", right || "");
    } else {
      div.className = "mb-widget-note";
      div.textContent =
        "Interactive widget: open this chapter in Colab or Jupyter (the rocket button at the top) " +
        "to use it; the figure nearby shows a static view.";
    }
    s.after(div);
  });
});
