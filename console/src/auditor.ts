// The auditor's screen: search requests (AuditService.Search) by teller, supervisor, branch,
// transaction code, outcome and time; a request's timeline with every ledger record and its
// images; and "verify", which checks the request's proof bundle (ExportProof) in the browser
// against the verifier key the auditor pinned, step by step, or a bundle file the auditor
// loads. The bundle can be saved for `countersign ledger verify-proof`.

import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { h, fill } from "./dom";
import { t, tOr } from "./i18n";
import { money, dateTime } from "./format";
import { client, message } from "./rpc";
import { AuditService, type LedgerEvent, type RequestSummary } from "./gen/countersign/v1/audit_pb";
import { RequestState, type AuthorizationRequest } from "./gen/countersign/v1/types_pb";
import { parseVerifierKey, verifyBundle, type Step } from "./verify";

const api = client(AuditService);

const OUTCOMES: [RequestState, string][] = [
  [RequestState.UNSPECIFIED, "any"],
  [RequestState.APPROVED, "state_4"],
  [RequestState.REJECTED, "state_5"],
  [RequestState.RETURNED, "state_6"],
  [RequestState.CANCELLED, "state_7"],
  [RequestState.EXPIRED, "state_8"],
  [RequestState.FALLBACK, "state_9"],
];

const PAGE = 50;

export function auditorScreen(main: HTMLElement): void {
  const form = { teller: "", supervisor: "", branch: "", code: "", outcome: 0, from: "", until: "" };
  let tokens: string[] = [""];
  const searchPanel = h("section", { class: "panel" });
  const results = h("section", { class: "panel", "data-testid": "results" });
  const detail = h("section", { class: "panel", "data-testid": "detail" });
  fill(main, searchPanel, results, detail);

  function input(key: keyof typeof form, label: string, type = "text"): HTMLElement {
    return h(
      "label",
      {},
      label,
      h("input", {
        type,
        "data-testid": `q-${key}`,
        value: String(form[key]),
        oninput: (e: Event) => ((form as Record<string, unknown>)[key] = (e.target as HTMLInputElement).value),
      }),
    );
  }

  fill(
    searchPanel,
    h(
      "form",
      {
        class: "search",
        onsubmit: (e: Event) => {
          e.preventDefault();
          tokens = [""];
          void search(0);
        },
      },
      input("teller", t("teller")),
      input("supervisor", t("supervisorCol")),
      input("branch", t("branch")),
      input("code", t("code")),
      h(
        "label",
        {},
        t("outcome"),
        h(
          "select",
          { "data-testid": "q-outcome", onchange: (e: Event) => (form.outcome = Number((e.target as HTMLSelectElement).value)) },
          OUTCOMES.map(([v, k]) => h("option", { value: v }, tOr(k, k))),
        ),
      ),
      input("from", t("from"), "datetime-local"),
      input("until", t("until"), "datetime-local"),
      h("button", { class: "primary", type: "submit", "data-testid": "search" }, t("search")),
    ),
  );

  async function search(page: number): Promise<void> {
    try {
      const res = await api.search({
        tellerId: form.teller.trim(),
        supervisorId: form.supervisor.trim(),
        branchId: form.branch.trim(),
        transactionCode: form.code.trim(),
        outcome: form.outcome,
        submittedFrom: form.from ? timestampFromDate(new Date(form.from)) : undefined,
        submittedUntil: form.until ? timestampFromDate(new Date(form.until)) : undefined,
        pageSize: PAGE,
        pageToken: tokens[page],
      });
      tokens[page + 1] = res.nextPageToken;
      renderResults(res.requests, page, res.nextPageToken !== "");
    } catch (e) {
      fill(results, h("p", { class: "notice error" }, t("failed", { msg: message(e) })));
    }
  }

  function renderResults(list: RequestSummary[], page: number, more: boolean): void {
    fill(
      results,
      h("h2", {}, t("results")),
      summaryTable(list, "row", open),
      h(
        "div",
        { class: "actions" },
        page > 0 ? h("button", { onclick: () => void search(page - 1) }, t("prev")) : null,
        more ? h("button", { "data-testid": "next-page", onclick: () => void search(page + 1) }, t("next")) : null,
      ),
    );
  }

  function open(id: string): void {
    void showRequest(detail, id);
  }
}

/** Requests as search and the review queue list them, newest first; a click on a row (test
 * id `<prefix>-<request id>`) opens it. */
export function summaryTable(list: RequestSummary[], prefix: string, open: (id: string) => void): HTMLElement {
  if (list.length === 0) return h("p", { class: "muted" }, t("none"));
  const columns = [t("submittedAt"), t("code"), t("amount"), t("teller"), t("branch"), t("supervisorCol"), t("state"), "ID"];
  return h(
    "table",
    { class: "grid clickable" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      list.map((r) =>
        h(
          "tr",
          { "data-testid": `${prefix}-${r.requestId}`, onclick: () => open(r.requestId), tabindex: 0 },
          h("td", {}, dateTime(r.submittedAt ? timestampDate(r.submittedAt) : undefined)),
          h("td", {}, r.transactionCode),
          h("td", { class: "num" }, r.amount ? money(r.amount.minorUnits, r.amount.currency) : ""),
          h("td", {}, r.tellerId),
          h("td", {}, r.branchId),
          h("td", {}, r.supervisorIds.join(", ")),
          h("td", {}, tOr(`state_${r.state}`, String(r.state))),
          h("td", { class: "hash" }, r.requestId),
        ),
      ),
    ),
  );
}

/** Per detail panel: how many requests were asked to be shown, and the object URLs of the
 * images on show (revoked when another request replaces them). */
const asked = new WeakMap<HTMLElement, number>();
const urls = new WeakMap<HTMLElement, string[]>();

/** Shows request `id` in `detail`: its facts, ledger records, images and the verify panel;
 * `extra` adds a section of the caller's (the reviewer's finding) below the facts. */
export async function showRequest(
  detail: HTMLElement,
  id: string,
  extra?: (r: AuthorizationRequest) => HTMLElement | null,
): Promise<void> {
  // The latest click wins: an earlier, slower answer does not replace it.
  const mine = (asked.get(detail) ?? 0) + 1;
  asked.set(detail, mine);
  try {
    const res = await api.getRequest({ requestId: id });
    if (!res.request || asked.get(detail) !== mine) return;
    for (const url of urls.get(detail) ?? []) URL.revokeObjectURL(url);
    urls.set(detail, []);
    renderDetail(detail, res.request, res.events, extra);
  } catch (e) {
    fill(detail, h("p", { class: "notice error" }, t("failed", { msg: message(e) })));
  }
}

function renderDetail(
  detail: HTMLElement,
  r: AuthorizationRequest,
  events: LedgerEvent[],
  extra?: (r: AuthorizationRequest) => HTMLElement | null,
): void {
    const tx = r.transaction;
    const images = h("div", { class: "thumbs" });
    const steps = h("ol", { class: "steps", "data-testid": "steps" });
    const key = h("input", {
      "data-testid": "pubkey",
      class: "wide",
      placeholder: "countersign.example/ledger+1a2b3c4d+AQ…",
      value: localStorage.getItem("countersign.pubkey") ?? "",
      oninput: (e: Event) => localStorage.setItem("countersign.pubkey", (e.target as HTMLInputElement).value.trim()),
    });
    const fileInput = h("input", {
      type: "file",
      accept: "application/json,.json",
      "data-testid": "bundle-file",
      onchange: (e: Event) => {
        const f = (e.target as HTMLInputElement).files?.[0];
        if (f) void f.text().then((text) => check(text));
      },
    });
    let exported = "";

    async function check(text: string): Promise<void> {
      fill(steps);
      let pinned;
      try {
        pinned = await parseVerifierKey((key as HTMLInputElement).value);
      } catch (e) {
        fill(steps, h("li", { class: "fail", "data-testid": "verdict" }, `${t("v_key")}: ${e instanceof Error ? e.message : e}`));
        return;
      }
      const result: Step[] = await verifyBundle(text, pinned, r.requestId, async (sha) => (await api.getImage({ sha256: sha })).content);
      const ok = result.length > 0 && result.every((s) => s.ok) && result.some((s) => s.key === "v_inclusion");
      fill(
        steps,
        result.map((s) => h("li", { class: s.ok ? "pass" : "fail" }, `${s.ok ? "✓" : "✗"} ${tOr(s.key, s.key)} ${s.detail}`)),
        h("li", { class: ok ? "pass verdict" : "fail verdict", "data-testid": "verdict" }, ok ? t("verified") : t("notVerified")),
      );
    }

    async function exportBundle(): Promise<string> {
      const res = await api.exportProof({ requestId: r.requestId });
      exported = new TextDecoder().decode(res.bundle);
      return exported;
    }

    fill(
      detail,
      h("h2", {}, `${tx?.code ?? ""} · ${r.requestId}`),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, t("state")),
        h("dd", { "data-testid": "detail-state" }, tOr(`state_${r.state}`, String(r.state))),
        h("dt", {}, t("amount")),
        h("dd", {}, tx?.amount ? money(tx.amount.minorUnits, tx.amount.currency) : ""),
        h("dt", {}, t("account")),
        h("dd", {}, tx?.account ?? ""),
        h("dt", {}, t("teller")),
        h("dd", {}, `${r.tellerId} · ${r.branchId} · ${r.tellerSerial}`),
        h("dt", {}, t("customer")),
        h("dd", {}, `${r.customer?.name ?? ""} · ${r.customer?.documentNumber ?? ""}`),
        r.decision ? [h("dt", {}, t("decision")), h("dd", {}, `${r.decision.supervisorId} ${r.decision.reasonCode} ${r.decision.comment}`)] : null,
      ),
      extra ? extra(r) : null,
      h("h3", {}, t("timeline")),
      h(
        "table",
        { class: "grid", "data-testid": "timeline" },
        h("thead", {}, h("tr", {}, ["#", t("time"), t("actor"), t("kind"), t("record")].map((c) => h("th", {}, c)))),
        h(
          "tbody",
          {},
          events.map((e) =>
            h(
              "tr",
              {},
              h("td", {}, String(e.index)),
              h("td", {}, dateTime(e.recordedAt ? timestampDate(e.recordedAt) : undefined)),
              h("td", {}, e.actorId),
              h("td", {}, e.kind),
              h("td", {}, h("details", {}, h("summary", {}, t("show")), h("pre", { class: "record" }, new TextDecoder().decode(e.record)))),
            ),
          ),
        ),
      ),
      h("h3", {}, t("images")),
      images,
      h("h3", {}, t("verify")),
      h("label", { class: "wide" }, t("pinnedKey"), key),
      h(
        "div",
        { class: "actions" },
        h("button", { class: "primary", "data-testid": "verify", onclick: () => void exportBundle().then(check).catch((e) => fill(steps, h("li", { class: "fail verdict", "data-testid": "verdict" }, `${t("notVerified")}: ${message(e)}`))) }, t("verify")),
        h(
          "button",
          {
            "data-testid": "export",
            onclick: async () => {
              const text = exported || (await exportBundle());
              const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
              h("a", { href: url, download: `${r.requestId}.bundle.json` }).click();
              setTimeout(() => URL.revokeObjectURL(url), 60_000);
            },
          },
          t("exportBundle"),
        ),
        h("label", { class: "file" }, t("loadBundle"), fileInput),
      ),
      steps,
    );
    for (const ref of r.images) {
      // In the request's order, each filled in when its bytes arrive. TIFF and PDF, which
      // browsers show in no <img>, as a link that opens them in a tab of their own.
      const inline = ["image/png", "image/jpeg"].includes(ref.mediaType);
      const img = inline
        ? h("img", { alt: tOr(`img_${ref.kind}`, ""), "data-testid": "audit-image" })
        : h("a", { target: "_blank", rel: "noopener" }, `${t("openImage")} (${ref.mediaType})`);
      const frame = h("figure", { class: "thumb-frame" }, img, h("figcaption", {}, tOr(`img_${ref.kind}`, "")));
      images.append(frame);
      void api
        .getImage({ sha256: ref.sha256 })
        .then((res) => {
          const url = URL.createObjectURL(new Blob([res.content as BlobPart], { type: ref.mediaType }));
          urls.get(detail)?.push(url);
          img.setAttribute(inline ? "src" : "href", url);
        })
        .catch((e) => frame.append(h("p", { class: "notice error" }, message(e))));
    }
}
