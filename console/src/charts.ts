// Charts drawn as SVG elements in the page (no chart library, nothing fetched): bars by
// category and lines over the hours of a day. Every chart also carries its numbers as text
// (a title on each bar or point), so a screen reader and a test read what is drawn.

const NS = "http://www.w3.org/2000/svg";

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, ...children: Node[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.appendChild(c);
  return el;
}

function title(text: string): SVGTitleElement {
  const t = svg("title", {});
  t.textContent = text;
  return t;
}

function label(x: number, y: number, text: string, anchor = "middle", cls = "axis"): SVGTextElement {
  const t = svg("text", { x, y, "text-anchor": anchor, class: cls });
  t.textContent = text;
  return t;
}

/** A rounded scale top: 1, 2, 5 times a power of ten, at least `max`. */
function niceMax(max: number): number {
  if (max <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/** The chart's size and margins, in viewBox units. */
const W = 720;
const H = 220;
const LEFT = 56;
const BOTTOM = 28;
const TOP = 12;

/** An empty chart for `n` labels up to `top`: the scale (rounded up) with its grid lines. */
function frame(n: number, top: number, format: (v: number) => string, testid: string) {
  const max = niceMax(top);
  const step = (W - LEFT - 8) / Math.max(1, n);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "data-testid": testid });
  for (const f of [0, 0.5, 1]) {
    const y = H - BOTTOM - f * (H - BOTTOM - TOP);
    chart.appendChild(svg("line", { x1: LEFT, x2: W - 8, y1: y, y2: y, class: "grid-line" }));
    chart.appendChild(label(LEFT - 6, y + 4, format(max * f), "end"));
  }
  return { chart, max, step };
}

/** Vertical bars, one per label. */
export function bars(labels: string[], values: number[], format: (v: number) => string, testid: string): SVGSVGElement {
  const { chart, max, step } = frame(labels.length, Math.max(0, ...values), format, testid);
  values.forEach((v, i) => {
    const bh = (v / max) * (H - BOTTOM - TOP);
    const x = LEFT + i * step + step * 0.15;
    chart.appendChild(
      svg("rect", { x, y: H - BOTTOM - bh, width: step * 0.7, height: Math.max(0, bh), class: "bar", "data-value": v }, title(`${labels[i]}: ${format(v)}`)),
    );
    if (labels.length <= 24) chart.appendChild(label(x + step * 0.35, H - BOTTOM + 16, labels[i]));
  });
  return chart;
}

/** Lines over the same labels, one per series; a missing value (null) breaks the line. */
export function lines(
  labels: string[],
  series: { name: string; values: (number | null)[]; cls: string }[],
  format: (v: number) => string,
  testid: string,
): HTMLElement {
  const all = series.flatMap((s) => s.values.filter((v): v is number => v !== null));
  const { chart, max, step } = frame(labels.length, Math.max(0, ...all), format, testid);
  labels.forEach((l, i) => chart.appendChild(label(LEFT + i * step + step / 2, H - BOTTOM + 16, l)));
  for (const s of series) {
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null) return;
      const x = LEFT + i * step + step / 2;
      const y = H - BOTTOM - (v / max) * (H - BOTTOM - TOP);
      d += `${d && s.values[i - 1] !== null ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
      chart.appendChild(svg("circle", { cx: x, cy: y, r: 3, class: `point ${s.cls}` }, title(`${s.name} ${labels[i]}: ${format(v)}`)));
    });
    chart.insertBefore(svg("path", { d: d.trim(), class: `line ${s.cls}` }), chart.firstChild);
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    item.className = `legend-item ${s.cls}`;
    item.textContent = s.name;
    legend.appendChild(item);
  }
  const box = document.createElement("div");
  box.append(chart, legend);
  return box;
}
