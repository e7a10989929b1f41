// The explorer's one callback: record a click (a sample or an element), then set every view's data from the
// embedded arrays. Bokeh draws; this only indexes arrays. Arguments: runs, state, slider, color, pick, src, what.
// nested Python dicts arrive as JS Maps
const plain = (o) => (o instanceof Map ? Object.fromEntries([...o.entries()].map(([k, v]) => [k, plain(v)])) : o);
if (what === "sample" || what === "element") {
  const picked = src.selected.indices;
  if (!picked.length) { return; }
  const key = what === "sample" ? "n" : "k";
  const value = src.data[key][picked[0]];
  state.data = Object.assign({}, state.data, {[what]: [value]});
}
const sample = state.data.sample[0];
const element = state.data.element[0];
const byVariance = color.active === 1;
const chosenClass = pick.value;
const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                 "#17becf", "#aec7e8", "#ffbb78", "#98df8a"];
const fmt = (v) => (Number.isFinite(v) ? v.toPrecision(3) : "n/a");

function curves(r, values, color, width, label, out) {
  // one line per sub-curve: polar (radius = value), or value over the element's abscissa
  for (const order of r.parts) {
    const xs = [], ys = [];
    for (const k of order) {
      const v = Number.isFinite(values[k]) ? values[k] : NaN;
      if (r.layout === "circle") { xs.push(v * r.cx[k]); ys.push(v * r.cy[k]); }
      else { xs.push(r.ex[k]); ys.push(v); }
    }
    if (r.layout === "circle" && order.length > 1) { xs.push(xs[0]); ys.push(ys[0]); }
    out.xs.push(xs); out.ys.push(ys); out.color.push(color); out.width.push(width); out.name.push(label);
  }
}

function points(r, values) {
  const x = [], y = [], v = [], k = [], element = [];
  for (let j = 0; j < r.K; j++) {
    const value = Number.isFinite(values[j]) ? values[j] : NaN;
    if (r.layout === "circle") { x.push(value * r.cx[j]); y.push(value * r.cy[j]); }
    else if (r.layout === "plane") { x.push(r.ex[j]); y.push(r.ey[j]); }
    else { x.push(r.ex[j]); y.push(value); }
    v.push(value); k.push(j); element.push(r.names[j]);
  }
  return {x, y, v, k, element};
}

function mean(r, E, off, keep) {
  const out = new Array(r.K).fill(0), count = new Array(r.K).fill(0);
  for (let s = 0; s < r.N; s++) {
    if (!keep(s)) { continue; }
    for (let j = 0; j < r.K; j++) {
      const e = E[off + s * r.K + j];
      if (Number.isFinite(e)) { out[j] += e; count[j] += 1; }
    }
  }
  return out.map((v, j) => (count[j] ? v / count[j] : NaN));
}

for (const r of runs.map(plain)) {
  const t = Math.min(slider.value, r.T - 1);
  const E = r.err.data.v;
  const off = t * r.N * r.K;
  const n = Math.min(sample, r.N - 1), k = Math.min(element, r.K - 1);
  // 1. aggregate: all samples, and one curve per class
  const lines = {xs: [], ys: [], color: [], width: [], name: []};
  const all = mean(r, E, off, () => true);
  r.classes.forEach((c, i) => {
    curves(r, mean(r, E, off, (s) => r.labels[s] === c), palette[i % palette.length], 1.2, `class ${c}`, lines);
  });
  curves(r, all, "#000000", 3, "all", lines);
  const C = r.cerr ? r.cerr.data.v : null;  // errors against the consensus (reference="consensus"), if recorded
  if (C) { curves(r, mean(r, C, off, () => true), "#999999", 3, "all, against the consensus", lines); }
  r.agg.lines.data = lines;
  const shown = r.layout === "plane" && chosenClass !== "all"
    ? mean(r, E, off, (s) => r.labels[s] === Number(chosenClass)) : all;
  r.agg.pts.data = points(r, shown);
  // 2. PCA scatter, coloured by each sample's mean or variance over the orbit
  const P = r.pca.data.v;
  const sx = [], sy = [], sc = [], sn = [], sl = [];
  for (let s = 0; s < r.N; s++) {
    let m = 0, q = 0, c = 0;
    for (let j = 0; j < r.K; j++) {
      const e = E[off + s * r.K + j];
      if (Number.isFinite(e)) { m += e; q += e * e; c += 1; }
    }
    m = c ? m / c : NaN;
    sx.push(P[(t * r.N + s) * 2]); sy.push(P[(t * r.N + s) * 2 + 1]);
    sc.push(byVariance ? (c ? q / c - m * m : NaN) : m); sn.push(s);
    sl.push(r.labels.length ? String(r.labels[s]) : "?");
  }
  const finite = sc.filter(Number.isFinite);
  r.dr_map.low = finite.length ? Math.min(...finite) : 0;
  r.dr_map.high = finite.length ? Math.max(Math.max(...finite), r.dr_map.low + 1e-12) : 1;
  r.dr.data = {x: sx, y: sy, c: sc, n: sn, label: sl};
  // 3. individual: the selected sample's orbit
  const mine = [];
  for (let j = 0; j < r.K; j++) { mine.push(E[off + n * r.K + j]); }
  const ind = {xs: [], ys: [], color: [], width: [], name: []};
  if (C) {
    const theirs = [];
    for (let j = 0; j < r.K; j++) { theirs.push(C[off + n * r.K + j]); }
    curves(r, theirs, "#999999", 2.5, `sample ${n}, against the consensus`, ind);
  }
  curves(r, mine, "#d62728", 2.5, `sample ${n}`, ind);
  r.ind.lines.data = ind;
  r.ind.pts.data = points(r, mine);
  // 4. the input moved by the selected element
  if (r.img) {
    const size = r.H * r.W, start = (n * r.K + k) * size, I = r.img.data.v;
    // a new 2-D array of the kind Bokeh decoded the first image as (its constructor takes values and a shape)
    const Kind = r.image.data.image[0].constructor;
    r.image.data = {image: [new Kind(Float64Array.from(I.slice(start, start + size)), [r.H, r.W])]};
  }
  // 5. detail: probabilities at the element and the consensus (orbit average)
  let top = -1, consensusTop = -1;
  if (r.probs) {
    const tp = r.Tp === r.T ? t : 0;
    const p = [], cons = [], cls = [], colors = [];
    let best = -1, bestCons = -1;
    for (let c = 0; c < r.C; c++) {
      const v = r.probs.data.v[((tp * r.N + n) * r.K + k) * r.C + c];
      const w = r.cons.data.v[(tp * r.N + n) * r.C + c];
      cls.push(c); p.push(v); cons.push(w);
      colors.push(r.labels.length && r.labels[n] === c ? "#d62728" : "#1f77b4");
      if (v > best) { best = v; top = c; }
      if (w > bestCons) { bestCons = w; consensusTop = c; }
    }
    r.bars.data = {cls, p, cons, color: colors};
  }
  const label = r.labels.length ? `class ${r.labels[n]}` : "unlabelled";
  r.info.text = `check ${t + 1} of ${r.T} (step ${r.steps[t]}, epochs trained ${r.epochs[t]}) · sample ${n} (${label}) · ` +
    `element ${r.names[k]} · error ${fmt(E[off + n * r.K + k])}` +
    (C ? ` · against the consensus ${fmt(C[off + n * r.K + k])}` : "") +
    (r.probs ? ` · top-1 ${top} · consensus ${consensusTop}` : "");
}
