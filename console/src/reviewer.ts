// The reviewer's queue (事后监督): the requests drawn for after-the-fact review
// (ReviewService.ListReviews: pending, confirmed or flagged), each opened with its records,
// images and verification as the auditor sees them, and the reviewer's finding: confirmed, or
// flagged with what was found (ReviewService.Review, recorded in the ledger).

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { h, fill } from "./dom";
import { t, tOr } from "./i18n";
import { dateTime } from "./format";
import { client, message } from "./rpc";
import { ReviewService } from "./gen/countersign/v1/review_pb";
import { ReviewOutcome, ReviewStatus, type AuthorizationRequest } from "./gen/countersign/v1/types_pb";
import { showRequest, summaryTable } from "./auditor";

const api = client(ReviewService);

export function reviewerScreen(main: HTMLElement): void {
  let status = ReviewStatus.PENDING;
  const list = h("section", { class: "panel", "data-testid": "reviews" });
  const detail = h("section", { class: "panel", "data-testid": "detail" });
  const choose = h(
    "select",
    {
      "data-testid": "review-status",
      onchange: (e: Event) => {
        status = Number((e.target as HTMLSelectElement).value);
        void load();
      },
    },
    [ReviewStatus.PENDING, ReviewStatus.CONFIRMED, ReviewStatus.FLAGGED].map((s) => h("option", { value: s }, tOr(`review_${s}`, String(s)))),
  );
  fill(main, h("div", { class: "stats-head" }, h("h2", {}, t("tab_review")), choose, h("button", { onclick: () => void load() }, t("refresh"))), list, detail);

  let tokens: string[] = [""];
  let page = 0;

  async function load(reset = true): Promise<void> {
    if (reset) {
      tokens = [""];
      page = 0;
    }
    try {
      const res = await api.listReviews({ status, pageSize: 100, pageToken: tokens[page] });
      tokens[page + 1] = res.nextPageToken;
      fill(
        list,
        summaryTable(res.requests, "review-row", (id) => void open(id)),
        h(
          "div",
          { class: "actions" },
          page > 0 ? h("button", { onclick: () => ((page -= 1), void load(false)) }, t("prev")) : null,
          res.nextPageToken ? h("button", { onclick: () => ((page += 1), void load(false)) }, t("next")) : null,
        ),
      );
    } catch (e) {
      fill(list, h("p", { class: "notice error" }, t("failed", { msg: message(e) })));
    }
  }

  function open(id: string): Promise<void> {
    return showRequest(detail, id, finding);
  }

  /** The finding form, or the finding already recorded. */
  function finding(r: AuthorizationRequest): HTMLElement {
    const review = r.review;
    if (review && review.status !== ReviewStatus.PENDING) {
      return h(
        "p",
        { class: "notice", "data-testid": "finding" },
        `${tOr(`review_${review.status}`, String(review.status))} · ${review.reviewerId} · ${dateTime(review.reviewedAt ? timestampDate(review.reviewedAt) : undefined)} · ${review.comment}`,
      );
    }
    let comment = "";
    const out = h("div", { class: "notices" });
    const submit = async (outcome: ReviewOutcome) => {
      if (outcome === ReviewOutcome.FLAGGED && !comment.trim()) {
        fill(out, h("p", { class: "notice error" }, t("flagNeedsComment")));
        return;
      }
      try {
        await api.review({ requestId: r.requestId, outcome, comment: comment.trim() });
        await load();
        await open(r.requestId);
      } catch (e) {
        fill(out, h("p", { class: "notice error" }, t("failed", { msg: message(e) })));
      }
    };
    return h(
      "form",
      { class: "dialog", "data-testid": "finding", onsubmit: (e: Event) => e.preventDefault() },
      h("p", {}, t("drawnBecause", { reason: tOr(`drawn_${review?.reason ?? ""}`, review?.reason ?? "") })),
      h("label", {}, t("comment"), h("textarea", { rows: 3, maxlength: 500, "data-testid": "finding-comment", oninput: (e: Event) => (comment = (e.target as HTMLTextAreaElement).value) })),
      h(
        "div",
        { class: "actions" },
        h("button", { class: "primary", type: "button", "data-testid": "confirm-review", onclick: () => void submit(ReviewOutcome.CONFIRMED) }, t("confirmReview")),
        h("button", { class: "danger", type: "button", "data-testid": "flag-review", onclick: () => void submit(ReviewOutcome.FLAGGED) }, t("flagReview")),
      ),
      out,
    );
  }

  void load();
}
