// Statistics as pictures, for the duty manager and auditors: one day (the browser's local
// day) from AuditService.GetStatistics, asked for the whole day and for each of its hours:
// volumes by hour, wait (submitted to accepted) and decision (accepted to decided) percentiles
// by hour, outcomes, rejection rate by branch, and the (teller, supervisor) pairs that stand
// out, with the after-the-fact review counts.

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { h, fill } from "./dom";
import { t, tOr } from "./i18n";
import { client, message } from "./rpc";
import { AuditService, type GetStatisticsResponse } from "./gen/countersign/v1/audit_pb";
import { bars, lines } from "./charts";

const api = client(AuditService);

function localDay(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** A count on an axis: whole, or to one decimal between whole numbers. */
function count(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function seconds(ms: number): string {
  return ms >= 60_000 ? `${(ms / 60_000).toFixed(1)} min` : `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

export function statisticsPanel(container: HTMLElement): void {
  let day = localDay(new Date());
  const body = h("div", { "data-testid": "statistics" });
  const picker = h("input", {
    type: "date",
    value: day,
    "data-testid": "stats-day",
    onchange: (e: Event) => {
      day = (e.target as HTMLInputElement).value || day;
      void load();
    },
  });
  fill(
    container,
    h("div", { class: "stats-head" }, h("h2", {}, t("statistics")), picker, h("button", { "data-testid": "stats-refresh", onclick: () => void load() }, t("refresh"))),
    body,
  );

  async function load(): Promise<void> {
    const [y, m, d] = day.split("-").map(Number);
    const start = new Date(y, m - 1, d);
    const hourStart = (hr: number) => new Date(y, m - 1, d, hr);
    try {
      const ask = (from: Date, until: Date) =>
        api.getStatistics({ submittedFrom: timestampFromDate(from), submittedUntil: timestampFromDate(until) });
      const [whole, ...hours] = await Promise.all([
        ask(start, hourStart(24)),
        ...Array.from({ length: 24 }, (_, hr) => ask(hourStart(hr), hourStart(hr + 1))),
      ]);
      render(whole, hours);
    } catch (e) {
      fill(body, h("p", { class: "notice error" }, t("failed", { msg: message(e) })));
    }
  }

  function render(s: GetStatisticsResponse, hours: GetStatisticsResponse[]): void {
    const hourLabels = hours.map((_, i) => String(i));
    const outcome = (k: string) => Number(s.byOutcome[k] ?? 0n);
    const pct = (v: number) => `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`;
    const orNull = (p: { count: bigint } | undefined, v: bigint | undefined) => (p && p.count > 0n && v !== undefined ? Number(v) : null);
    fill(
      body,
      h(
        "div",
        { class: "tiles" },
        [
          [t("requests"), String(s.requests), "stat-requests"],
          [t("state_4"), String(outcome("approved")), "stat-approved"],
          [t("state_5"), String(outcome("rejected")), "stat-rejected"],
          [t("state_6"), String(outcome("returned")), "stat-returned"],
          [t("state_7"), String(outcome("cancelled")), "stat-cancelled"],
          [t("state_8"), String(outcome("expired")), "stat-expired"],
          [t("state_9"), String(outcome("fallback")), "stat-fallback"],
        ].map(([l, v, id]) => h("div", { class: "tile" }, h("div", { class: "tile-value", "data-testid": id }, v), h("div", { class: "tile-label" }, l))),
      ),
      h("div", { class: "charts" },
        h("figure", { class: "chart-box" }, h("figcaption", {}, t("volumeByHour")), bars(hourLabels, hours.map((x) => Number(x.requests)), count, "chart-volume")),
        h(
          "figure",
          { class: "chart-box" },
          h("figcaption", {}, t("timesByHour")),
          lines(
            hourLabels,
            [
              { name: `${t("wait")} p50`, values: hours.map((x) => orNull(x.wait, x.wait?.p50Ms)), cls: "s1" },
              { name: `${t("wait")} p90`, values: hours.map((x) => orNull(x.wait, x.wait?.p90Ms)), cls: "s2" },
              { name: `${t("decisionTime")} p50`, values: hours.map((x) => orNull(x.decision, x.decision?.p50Ms)), cls: "s3" },
              { name: `${t("decisionTime")} p90`, values: hours.map((x) => orNull(x.decision, x.decision?.p90Ms)), cls: "s4" },
            ],
            seconds,
            "chart-times",
          ),
        ),
        h(
          "figure",
          { class: "chart-box" },
          h("figcaption", {}, t("rejectionByBranch")),
          bars(s.branchRejection.map((b) => b.branchId), s.branchRejection.map((b) => b.rate), pct, "chart-rejection"),
        ),
        h(
          "figure",
          { class: "chart-box" },
          h("figcaption", {}, t("returnByBranch")),
          bars(s.branchRejection.map((b) => b.branchId), s.branchRejection.map((b) => b.returnRate), pct, "chart-return"),
        ),
        h(
          "figure",
          { class: "chart-box" },
          h("figcaption", {}, t("outcomes")),
          bars(Object.keys(s.byOutcome).map((k) => tOr(`outcome_${k}`, k)), Object.values(s.byOutcome).map(Number), count, "chart-outcomes"),
        ),
      ),
      h("h3", {}, t("unusualPairs")),
      s.unusualPairs.length
        ? h(
            "table",
            { class: "grid", "data-testid": "unusual-pairs" },
            h("thead", {}, h("tr", {}, [t("teller"), t("supervisorCol"), t("observed"), t("expected"), "z"].map((c) => h("th", {}, c)))),
            h(
              "tbody",
              {},
              s.unusualPairs.map((p) =>
                h("tr", {}, h("td", {}, p.tellerId), h("td", {}, p.supervisorId), h("td", { class: "num" }, String(p.observed)), h("td", { class: "num" }, p.expected.toFixed(1)), h("td", { class: "num" }, p.z.toFixed(1))),
              ),
            ),
          )
        : h("p", { class: "muted", "data-testid": "unusual-pairs" }, t("none")),
      s.reviews
        ? h("p", {}, t("reviewCounts", { drawn: String(s.reviews.drawn), reviewed: String(s.reviews.reviewed), flagged: String(s.reviews.flagged) }))
        : null,
    );
  }

  void load();
}
