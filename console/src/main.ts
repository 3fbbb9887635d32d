// The console's entry: asks who the caller is (SessionService.GetSession, on the client
// certificate the browser presented) and shows the screen for that role.

import { h, fill } from "./dom";
import { t, tOr, currentLang, setLang } from "./i18n";
import { client, message, Code, ConnectError } from "./rpc";
import { SessionService, PrincipalRole, type GetSessionResponse } from "./gen/countersign/v1/session_pb";
import { supervisorScreen } from "./supervisor";
import { adminScreen } from "./admin";
import { auditorScreen } from "./auditor";
import { statisticsPanel } from "./stats";
import { reviewerScreen } from "./reviewer";

const app = document.getElementById("app")!;
/** Whether the screen holds something a reload would lose. */
let busy = () => false;

const roleKey = {
  [PrincipalRole.UNSPECIFIED]: "role_teller",
  [PrincipalRole.TELLER]: "role_teller",
  [PrincipalRole.SUPERVISOR]: "role_supervisor",
  [PrincipalRole.AUDITOR]: "role_auditor",
  [PrincipalRole.ADMIN]: "role_admin",
  [PrincipalRole.REVIEWER]: "role_reviewer",
} as const;

/** A role's name; a role this page does not know yet by its number. */
function roleName(role: PrincipalRole): string {
  const key = (roleKey as Record<number, string>)[role];
  return key ? tOr(key, key) : String(role);
}

/** The header: who is signed in, the connection's state, the language switch. */
function header(session: GetSessionResponse, status: HTMLElement): HTMLElement {
  return h(
    "header",
    { class: "bar" },
    h("h1", {}, t("title")),
    h(
      "span",
      { class: "who", "data-testid": "who" },
      `${session.name} (${session.principalId}) · ${roleName(session.role)} · ${session.branchId}`,
      session.level > 0 ? ` · ${t("level", { n: session.level })}` : "",
    ),
    status,
    h(
      "button",
      {
        class: "lang",
        "data-testid": "lang",
        onclick: () => {
          // A reload ends an Attend stream, and with it what the supervisor holds.
          if (busy()) {
            alert(t("leaveFirst"));
            return;
          }
          setLang(currentLang() === "en" ? "zh-CN" : "en");
          location.reload();
        },
      },
      t("language"),
    ),
  );
}

/** Screens side by side under tabs; each is built the first time it is shown, then kept
 * (hidden, not rebuilt), so what it holds survives a switch. */
function tabs(main: HTMLElement, screens: [Parameters<typeof t>[0], (panel: HTMLElement) => void][]): void {
  const bar = h("nav", { class: "tabs", role: "tablist" });
  const panels = screens.map(() => h("section", { hidden: true }));
  const built = screens.map(() => false);
  const show = (i: number) => {
    panels.forEach((p, j) => (p.hidden = j !== i));
    bar.querySelectorAll("button").forEach((b, j) => b.classList.toggle("active", j === i));
    if (!built[i]) {
      built[i] = true;
      screens[i][1](panels[i]);
    }
  };
  screens.forEach(([key], i) => bar.append(h("button", { class: "tab", role: "tab", "data-testid": key, onclick: () => show(i) }, t(key))));
  fill(main, bar, ...panels);
  show(0);
}

async function start(): Promise<void> {
  document.documentElement.lang = currentLang();
  document.title = t("title");
  fill(app, h("p", { class: "notice" }, t("connecting")));
  let session: GetSessionResponse;
  try {
    session = await client(SessionService).getSession({});
  } catch (e) {
    const unknown = e instanceof ConnectError && e.code === Code.Unauthenticated;
    fill(app, h("p", { class: "notice error", "data-testid": "refused" }, unknown ? t("unknownPrincipal") : message(e)));
    return;
  }
  const status = h("span", { class: "status", "data-testid": "connection", role: "status" });
  const main = h("main", {});
  fill(app, header(session, status), main);
  switch (session.role) {
    case PrincipalRole.SUPERVISOR:
      if (!session.leader) {
        fill(main, h("p", { class: "notice", "data-testid": "standby" }, t("standby", { leader: session.leaderAddress || "?" })));
        return;
      }
      busy = supervisorScreen(main, status);
      return;
    case PrincipalRole.ADMIN:
      if (!session.leader) {
        fill(main, h("p", { class: "notice", "data-testid": "standby" }, t("standby", { leader: session.leaderAddress || "?" })));
        return;
      }
      tabs(main, [
        ["tab_queue", (panel) => adminScreen(panel, status)],
        ["tab_stats", statisticsPanel],
      ]);
      return;
    case PrincipalRole.AUDITOR:
      // Audit reads are served on a standby too.
      tabs(main, [
        ["tab_search", auditorScreen],
        ["tab_stats", statisticsPanel],
      ]);
      return;
    case PrincipalRole.REVIEWER:
      tabs(main, [
        ["tab_review", reviewerScreen],
        ["tab_search", auditorScreen],
        ["tab_stats", statisticsPanel],
      ]);
      return;
    default:
      fill(
        main,
        h("p", { class: "notice error", "data-testid": "refused" }, t("roleRefused", { role: roleName(session.role) })),
      );
  }
}

void start();
