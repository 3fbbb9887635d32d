// The duty manager's screen: the live queue (AdminService.GetQueueStatus, asked again every
// two seconds), each supervisor's state and counts for the day with pause and resume, and the
// policy in force with its hash. A pause by the duty manager is recorded in the ledger as
// theirs and told to the supervisor's console.

import { h, fill, say } from "./dom";
import { t } from "./i18n";
import { dateTime, minutesSeconds } from "./format";
import { client, message } from "./rpc";
import { AdminService, type GetQueueStatusResponse, type SupervisorState } from "./gen/countersign/v1/admin_pb";
import { timestampDate } from "@bufbuild/protobuf/wkt";

const api = client(AdminService);

/** How often the queue is asked again. */
const REFRESH_MS = 2000;

export function adminScreen(main: HTMLElement, status: HTMLElement): void {
  const notices = h("div", { class: "notices", "aria-live": "polite", "data-testid": "notices" });
  const queue = h("section", { class: "panel", "data-testid": "queue" });
  const sups = h("section", { class: "panel", "data-testid": "supervisors" });
  const policy = h("section", { class: "panel", "data-testid": "policy" });
  fill(main, notices, h("div", { class: "dashboard" }, queue, policy), sups);

  const notice = (text: string, kind: "info" | "error" = "info") => say(notices, text, kind);

  async function refresh(): Promise<void> {
    try {
      const q = await api.getQueueStatus({});
      status.dataset.state = "up";
      status.textContent = t("updatedAt", { t: dateTime(q.takenAt ? timestampDate(q.takenAt) : new Date()) });
      renderQueue(q);
      renderSupervisors(q.supervisors);
    } catch (e) {
      status.dataset.state = "down";
      status.textContent = t("failed", { msg: message(e) });
    }
  }

  function tile(label: string, value: string, testid: string, alarm = false): HTMLElement {
    return h(
      "div",
      { class: alarm ? "tile alarm" : "tile" },
      h("div", { class: "tile-value", "data-testid": testid }, value),
      h("div", { class: "tile-label" }, label),
    );
  }

  function renderQueue(q: GetQueueStatusResponse): void {
    fill(
      queue,
      h("h2", {}, t("queue")),
      h(
        "div",
        { class: "tiles" },
        tile(t("queued"), String(q.queued), "queued"),
        tile(t("offered"), String(q.offered), "offered"),
        tile(t("inReview"), String(q.inReview), "in-review"),
        tile(t("returned"), String(q.returned), "returned"),
        tile(t("oldestWait"), minutesSeconds(Number(q.oldestWaitingMs)), "oldest-wait", q.oldestWaitingMs > 300_000n),
        tile(t("unservable"), String(q.unservable), "unservable", q.unservable > 0n),
      ),
      q.unservableRequestIds.length
        ? h("p", { class: "notice error" }, `${t("unservable")}: ${q.unservableRequestIds.join(", ")}`)
        : null,
      h("h3", {}, t("depth")),
      q.depth.length
        ? h(
            "table",
            { class: "grid" },
            h("thead", {}, h("tr", {}, h("th", {}, t("levelNeeded")), h("th", {}, t("priority")), h("th", {}, t("count")))),
            h(
              "tbody",
              {},
              q.depth.map((d) => h("tr", {}, h("td", {}, d.level), h("td", {}, d.priority), h("td", {}, String(d.count)))),
            ),
          )
        : h("p", { class: "muted" }, t("none")),
    );
  }

  function renderSupervisors(list: SupervisorState[]): void {
    fill(
      sups,
      h("h2", {}, t("supervisors")),
      h(
        "table",
        { class: "grid" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", {}, t("name")),
            h("th", {}, t("branch")),
            h("th", {}, t("levelCol")),
            h("th", {}, t("state")),
            h("th", {}, t("busy")),
            h("th", {}, t("today")),
            h("th", {}, t("actions")),
          ),
        ),
        h(
          "tbody",
          {},
          list.map((s) => {
            const state = !s.online ? t("offlineState") : s.paused ? t("pausedState") : t("online");
            return h(
              "tr",
              { "data-testid": `sup-${s.supervisorId}`, class: s.online ? (s.paused ? "paused" : "online") : "offline" },
              h("td", {}, `${s.name} (${s.supervisorId})`),
              h("td", {}, s.branchId),
              h("td", {}, s.level),
              h("td", { "data-testid": `state-${s.supervisorId}` }, state),
              h("td", {}, s.tasks),
              h(
                "td",
                { class: "counts" },
                [s.offersToday, s.acceptsToday, s.declinesToday, s.timeoutsToday, s.approvalsToday, s.rejectionsToday, s.returnsToday].join(" / "),
              ),
              h(
                "td",
                {},
                s.online
                  ? h(
                      "button",
                      {
                        "data-testid": `${s.paused ? "resume" : "pause"}-${s.supervisorId}`,
                        onclick: () => void setPaused(s.supervisorId, !s.paused),
                      },
                      s.paused ? t("resume") : t("pause"),
                    )
                  : null,
              ),
            );
          }),
        ),
      ),
    );
  }

  async function setPaused(id: string, paused: boolean): Promise<void> {
    try {
      if (paused) await api.pauseSupervisor({ supervisorId: id });
      else await api.resumeSupervisor({ supervisorId: id });
      notice(paused ? t("pausedSup", { id }) : t("resumedSup", { id }));
    } catch (e) {
      notice(t("failed", { msg: message(e) }), "error");
    }
    await refresh();
  }

  async function loadPolicy(): Promise<void> {
    try {
      const p = await api.getPolicy({});
      fill(
        policy,
        h("h2", {}, t("policy")),
        h("dl", { class: "facts" }, h("dt", {}, t("policyHash")), h("dd", { class: "hash", "data-testid": "policy-sha256" }, p.sha256)),
        h("h3", {}, t("rules")),
        h("ul", { class: "rules" }, p.ruleNames.map((r) => h("li", {}, r))),
        h("details", {}, h("summary", {}, t("policyText")), h("pre", { class: "policy-text" }, p.text)),
      );
    } catch (e) {
      fill(policy, h("p", { class: "notice error" }, t("failed", { msg: message(e) })));
    }
  }

  void loadPolicy();
  void refresh();
  setInterval(() => void refresh(), REFRESH_MS);
}
