// The supervisor's screen. Attending is an open Attend stream: offers arrive on it, one at a
// time, each announced (on screen and by a tone) with its accept countdown. Accepting shows
// the whole request (transaction, customer, what the policy asks, the voucher images, earlier
// returns); the supervisor approves, rejects with a reason code, or returns it with a note.
// A dropped stream is opened again on its own, with the state said on screen; what the
// supervisor held when it dropped went back to the queue, and reviews the server hands back
// (ReviewResumed) are shown again.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { h, fill, say } from "./dom";
import { t, tOr } from "./i18n";
import { money, dateTime, minutesSeconds, toMinor } from "./format";
import { client, message, errorInfo, Code, ConnectError } from "./rpc";
import { SupervisorService, type AttendResponse } from "./gen/countersign/v1/supervisor_pb";
import {
  Decision,
  ImageKind,
  RekeyField,
  type AuthorizationRequest,
  type ImageRef,
} from "./gen/countersign/v1/types_pb";

const api = client(SupervisorService);

/** An offer or a review this supervisor holds. */
interface Held {
  kind: "offer" | "review";
  id: string;
  epoch: bigint;
  /** Accept by (offer) or decide by (review). */
  deadline?: Date;
  request: AuthorizationRequest;
  pool?: number;
}

type Presence = "offline" | "attending" | "paused";
type Dialog = { kind: "decline" | "reject" | "return"; code: string; comment: string } | null;

/** The image types a browser shows in an <img>. */
const INLINE = ["image/png", "image/jpeg"];

const REJECT_CODES = ["ID_MISMATCH", "VOUCHER_INVALID", "OVER_AUTHORITY", "SUSPECTED_FRAUD", "POLICY_BREACH", "OTHER"];
const RETURN_CODES = ["IMAGE_UNCLEAR", "MISSING_DOCUMENT", "DATA_MISMATCH", "NEEDS_EXPLANATION", "OTHER"];

/** Waits between attempts to open Attend again: 1, 2, 4, 8, then 15 s. */
function backoff(attempt: number): number {
  return Math.min(15, 2 ** Math.max(0, attempt - 1));
}

/** Shows the screen in `main`; returns whether the supervisor is attending (the language
 * switch reloads the page, which would end the stream). */
export function supervisorScreen(main: HTMLElement, status: HTMLElement): () => boolean {
  let presence: Presence = "offline";
  let stream: AbortController | null = null;
  /** Which run of Attend is current: a Leave, or a new Attend, retires the one before, which
   * checks after each wait whether it is still current. */
  let generation = 0;
  let held: Held[] = [];
  let current: string | null = null;
  let dialog: Dialog = null;
  const rekey: Record<string, string> = {};
  const images = new Map<string, string>();
  const view = { zoom: 1, rotation: 0, sideBySide: false, selected: 0 };
  let audio: AudioContext | null = null;

  const presenceBar = h("section", { class: "presence" });
  const notices = h("div", { class: "notices", "aria-live": "polite", "data-testid": "notices" });
  const tabs = h("nav", { class: "tabs" });
  const task = h("section", { class: "task", "data-testid": "task" });
  fill(main, presenceBar, notices, tabs, task);

  const notice = (text: string, kind: "info" | "error" = "info") => say(notices, text, kind);

  function setConnection(state: "idle" | "connecting" | "connected" | "replaced", attempt = 0, inS = 0): void {
    status.dataset.state = state === "connected" ? "up" : state === "idle" ? "idle" : "down";
    status.textContent =
      state === "connected"
        ? t("connected")
        : state === "connecting" && attempt > 0
          ? t("reconnecting", { s: inS, n: attempt })
          : state === "connecting"
            ? t("connecting")
            : state === "replaced"
              ? t("replaced")
              : "";
  }

  // -- Presence ---------------------------------------------------------------------------

  function renderPresence(): void {
    const state = presence === "offline" ? t("offline") : presence === "paused" ? t("paused") : t("waiting");
    fill(
      presenceBar,
      h("span", { class: `presence-state ${presence}`, "data-testid": "presence" }, state),
      presence === "offline"
        ? h("button", { class: "primary", "data-testid": "attend", onclick: attend }, t("attend"))
        : [
            presence === "paused"
              ? h("button", { "data-testid": "resume", onclick: () => void pause(false) }, t("resume"))
              : h("button", { "data-testid": "pause", onclick: () => void pause(true) }, t("pause")),
            h("button", { "data-testid": "leave", onclick: leave }, t("leave")),
          ],
    );
  }

  function attend(): void {
    // Made on the click, which browsers require before a page may make a sound.
    audio ??= new AudioContext();
    presence = "attending";
    renderPresence();
    void run();
  }

  function leave(): void {
    generation += 1;
    stream?.abort();
    stream = null;
    presence = "offline";
    dropAll();
    setConnection("idle");
    renderPresence();
  }

  async function pause(on: boolean): Promise<void> {
    try {
      if (on) await api.pause({});
      else await api.resume({});
      // Unless they left meanwhile.
      if (presence === "offline") return;
      presence = on ? "paused" : "attending";
      renderPresence();
    } catch (e) {
      notice(t("failed", { msg: message(e) }), "error");
    }
  }

  /** Keeps Attend open while attending: each time it drops, waits and opens it again. */
  async function run(): Promise<void> {
    const mine = ++generation;
    const current = () => mine === generation && presence !== "offline";
    let attempt = 0;
    while (current()) {
      const abort = new AbortController();
      stream = abort;
      setConnection("connecting", attempt, 0);
      try {
        // Connected once the server answers with headers (it sends nothing else until an offer).
        const events = api.attend({}, {
          signal: abort.signal,
          onHeader: () => {
            attempt = 0;
            setConnection("connected");
          },
        });
        for await (const res of events) {
          if (!current()) return;
          onEvent(res.event);
        }
      } catch (e) {
        if (abort.signal.aborted) return;
        if (e instanceof ConnectError && e.code === Code.Aborted) {
          // Another console of ours took over; opening again here would take it back.
          presence = "offline";
          dropAll();
          setConnection("replaced");
          renderPresence();
          return;
        }
        if (e instanceof ConnectError && (e.code === Code.Unauthenticated || e.code === Code.PermissionDenied)) {
          presence = "offline";
          dropAll();
          setConnection("idle");
          renderPresence();
          notice(t("failed", { msg: message(e) }), "error");
          return;
        }
      }
      if (abort.signal.aborted || !current()) return;
      // The stream ended: what we held went back to the queue (reviews come back on the
      // next stream, as ReviewResumed, when the server still keeps them for us).
      dropAll();
      if (presence === "paused") presence = "attending";
      renderPresence();
      attempt += 1;
      for (let s = backoff(attempt); s > 0 && current(); s--) {
        setConnection("connecting", attempt, s);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  function onEvent(event: AttendResponse["event"]): void {
    switch (event.case) {
      case "offer": {
        const o = event.value;
        if (!o.request) return;
        add({
          kind: "offer",
          id: o.requestId,
          epoch: o.epoch,
          deadline: o.acceptBy ? timestampDate(o.acceptBy) : undefined,
          request: o.request,
          pool: o.candidatePoolSize,
        });
        announce();
        return;
      }
      case "reviewResumed": {
        const r = event.value;
        if (!r.request) return;
        add({
          kind: "review",
          id: r.requestId,
          epoch: r.epoch,
          deadline: r.reviewBy ? timestampDate(r.reviewBy) : undefined,
          request: r.request,
        });
        return;
      }
      case "presence": {
        const p = event.value;
        if (presence !== "offline") presence = p.paused ? "paused" : "attending";
        renderPresence();
        notice(p.paused ? t("pausedBy", { by: p.by }) : t("resumedBy", { by: p.by }));
        return;
      }
      case "withdrawn": {
        const w = event.value;
        if (drop(w.requestId, w.epoch)) {
          notice(t("withdrawn", { id: w.requestId, reason: tOr(`reason_${w.reason}`, w.reason) }));
        }
        return;
      }
    }
  }

  // -- What is held -------------------------------------------------------------------------

  function add(item: Held): void {
    held = held.filter((x) => x.id !== item.id).concat(item);
    // A new offer of the request on screen (returned and resubmitted, offered again) starts
    // afresh: its decision may still be in flight from before.
    if (current === item.id) current = null;
    if (current === null || !held.some((x) => x.id === current)) select(item.id);
    else renderTabs();
  }

  /** Drops a held item; true when it was held with that epoch. */
  function drop(id: string, epoch?: bigint): boolean {
    const before = held.length;
    held = held.filter((x) => !(x.id === id && (epoch === undefined || x.epoch === epoch)));
    if (held.length === before) return false;
    if (current === id) select(held[0]?.id ?? null);
    else renderTabs();
    return true;
  }

  function dropAll(): void {
    held = [];
    select(null);
  }

  function select(id: string | null): void {
    if (id !== current) {
      for (const url of images.values()) URL.revokeObjectURL(url);
      images.clear();
      Object.assign(view, { zoom: 1, rotation: 0, selected: 0 });
      for (const k of Object.keys(rekey)) delete rekey[k];
      dialog = null;
    }
    current = id;
    renderTabs();
    renderTask();
  }

  function currentItem(): Held | undefined {
    return held.find((x) => x.id === current);
  }

  /** A tone and the title, so an offer is noticed when the window is not in front. */
  function announce(): void {
    document.title = `【${t("newOffer")}】 ${t("title")}`;
    setTimeout(() => (document.title = t("title")), 10_000);
    if (!audio) return;
    for (const at of [0, 0.25]) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = 880;
      gain.gain.value = 0.2;
      osc.connect(gain).connect(audio.destination);
      osc.start(audio.currentTime + at);
      osc.stop(audio.currentTime + at + 0.15);
    }
  }

  function renderTabs(): void {
    fill(
      tabs,
      held.length > 1
        ? held.map((x) =>
            h(
              "button",
              { class: x.id === current ? "tab active" : "tab", onclick: () => select(x.id) },
              `${x.kind === "offer" ? "●" : "○"} ${x.request.transaction?.code ?? ""} ${x.id}`,
            ),
          )
        : null,
    );
  }

  // -- The task ---------------------------------------------------------------------------

  function renderTask(): void {
    const item = currentItem();
    if (!item) {
      fill(task);
      return;
    }
    if (item.kind === "offer") fill(task, offerCard(item));
    else fill(task, reviewView(item));
  }

  function countdown(deadline: Date | undefined, label: (s: string) => string, testid: string): HTMLElement {
    const el = h("span", { class: "countdown", "data-testid": testid });
    if (deadline) el.dataset.deadline = String(deadline.getTime());
    el.dataset.label = label("{t}");
    tick(el);
    return el;
  }

  function offerCard(item: Held): HTMLElement {
    const r = item.request;
    const tx = r.transaction;
    return h(
      "article",
      { class: "offer", "data-testid": "offer", "data-request": item.id },
      h("h2", {}, t("newOffer")),
      countdown(item.deadline, (s) => t("acceptIn", { s }), "accept-countdown"),
      h(
        "dl",
        { class: "facts" },
        fact(t("code"), tx?.code),
        fact(t("amount"), r.rekeyFields.includes(RekeyField.AMOUNT) ? t("withheld") : tx?.amount ? money(tx.amount.minorUnits, tx.amount.currency) : ""),
        fact(t("branch"), r.branchId),
        fact(t("levelNeeded"), String(r.levelNeeded)),
        fact(t("approvalOf", { k: r.approvals.length + 1, n: r.approvalsNeeded }), ""),
        item.pool ? fact(t("pool", { n: item.pool }), "") : null,
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { class: "primary", "data-testid": "accept", onclick: () => void accept(item) }, `${t("accept")} (A)`),
        h("button", { "data-testid": "decline", onclick: () => openDialog("decline") }, `${t("decline")} (D)`),
      ),
      dialog?.kind === "decline" ? dialogForm(item) : null,
    );
  }

  function reviewView(item: Held): HTMLElement {
    const r = item.request;
    const tx = r.transaction;
    // Fields the rule asks the supervisor to type from the voucher are withheld by the server.
    const typed = (f: RekeyField, shown: string | undefined) => (r.rekeyFields.includes(f) ? t("withheld") : shown);
    const c = r.customer;
    const verification = c?.verification ?? 0;
    return h(
      "article",
      { class: "review", "data-testid": "review", "data-request": item.id },
      h(
        "header",
        { class: "review-head" },
        h("h2", {}, `${tx?.code ?? ""} · ${item.id}`),
        countdown(item.deadline, (s) => t("decideIn", { t: s }), "decide-countdown"),
      ),
      h(
        "div",
        { class: "columns" },
        h(
          "div",
          { class: "details" },
          h("h3", {}, t("transaction")),
          h(
            "dl",
            { class: "facts" },
            fact(t("code"), tx?.code),
            fact(t("amount"), typed(RekeyField.AMOUNT, tx?.amount ? money(tx.amount.minorUnits, tx.amount.currency) : ""), "amount"),
            fact(t("account"), typed(RekeyField.ACCOUNT, tx?.account)),
            fact(t("counterparty"), typed(RekeyField.COUNTERPARTY, tx?.counterparty)),
            ...Object.entries(tx?.attributes ?? {}).map(([k, v]) => fact(k, v)),
            fact(t("teller"), r.tellerId),
            fact(t("branch"), r.branchId),
            fact(t("serial"), r.tellerSerial),
            fact(t("submittedAt"), dateTime(r.submittedAt ? timestampDate(r.submittedAt) : undefined)),
          ),
          h("h3", {}, t("customer")),
          h(
            "dl",
            { class: "facts" },
            fact(t("name"), c?.name),
            fact(t("docType"), tOr(`doc_${c?.documentType ?? 0}`, "")),
            fact(t("docNumber"), c?.documentNumber),
            fact(t("expiry"), c?.expiryDate),
            h("dt", {}, t("verification")),
            h("dd", { class: verification === 2 ? "alarm" : verification === 1 ? "ok" : "" }, tOr(`verify_${verification}`, "")),
          ),
          h("h3", {}, t("requirement")),
          h(
            "dl",
            { class: "facts" },
            fact(t("rule"), r.policyRule),
            fact(t("levelNeeded"), String(r.levelNeeded)),
            h("dt", {}, ""),
            h("dd", { "data-testid": "approval-of" }, t("approvalOf", { k: r.approvals.length + 1, n: r.approvalsNeeded })),
            r.approvals.length ? fact(t("earlierApprovals"), r.approvals.map((a) => a.supervisorId).join(", ")) : null,
          ),
          r.note ? [h("h3", {}, t("note")), h("p", { class: "note" }, r.note)] : null,
          r.returns.length
            ? [
                h("h3", {}, t("returns")),
                h(
                  "ol",
                  { class: "returns" },
                  r.returns.map((x) =>
                    h(
                      "li",
                      {},
                      `${dateTime(x.returnedAt ? timestampDate(x.returnedAt) : undefined)} ${x.supervisorId} ${x.reasonCode}: ${x.comment}`,
                      x.resubmitNote ? h("div", { class: "note" }, `${t("resubmitNote")}: ${x.resubmitNote}`) : null,
                    ),
                  ),
                ),
              ]
            : null,
          r.rekeyFields.length ? rekeyForm(r) : null,
        ),
        imagePanel(item),
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { class: "primary", "data-testid": "approve", onclick: () => void approve(item) }, `${t("approve")} (Y)`),
        h("button", { class: "danger", "data-testid": "reject", onclick: () => openDialog("reject") }, `${t("reject")} (R)`),
        h("button", { "data-testid": "return", onclick: () => openDialog("return") }, `${t("return")} (T)`),
      ),
      dialog && dialog.kind !== "decline" ? dialogForm(item) : null,
    );
  }

  function rekeyForm(r: AuthorizationRequest): HTMLElement {
    const field = (key: string, label: string) =>
      h(
        "label",
        {},
        label,
        h("input", {
          "data-testid": `rekey-${key}`,
          value: rekey[key] ?? "",
          autocomplete: "off",
          oninput: (e: Event) => (rekey[key] = (e.target as HTMLInputElement).value),
        }),
      );
    return h(
      "fieldset",
      { class: "rekey" },
      h("legend", {}, t("rekey")),
      r.rekeyFields.map((f) =>
        f === RekeyField.AMOUNT
          ? field("amount", t("rekeyAmount"))
          : f === RekeyField.ACCOUNT
            ? field("account", t("account"))
            : field("counterparty", t("counterparty")),
      ),
    );
  }

  function imagePanel(item: Held): HTMLElement {
    const refs = item.request.images;
    const panel = h("div", { class: "images", "data-testid": "images" });
    const toolbar = h(
      "div",
      { class: "image-tools" },
      h("button", { "data-testid": "zoom-in", onclick: () => zoom(1.25) }, `${t("zoomIn")} (+)`),
      h("button", { "data-testid": "zoom-out", onclick: () => zoom(0.8) }, `${t("zoomOut")} (-)`),
      h("button", { "data-testid": "rotate", onclick: rotate }, `${t("rotate")} (O)`),
      h(
        "button",
        { "data-testid": "side-by-side", onclick: toggleSide, "aria-pressed": String(view.sideBySide) },
        `${t("sideBySide")} (S)`,
      ),
      refs.length > 1 && !view.sideBySide
        ? refs.map((ref, i) =>
            h(
              "button",
              { class: i === view.selected ? "thumb active" : "thumb", onclick: () => selectImage(i) },
              `${i + 1}. ${tOr(`img_${ref.kind}`, "")}`,
            ),
          )
        : null,
    );
    const shown = view.sideBySide ? refs : refs.slice(view.selected, view.selected + 1);
    const frames = h(
      "div",
      { class: view.sideBySide ? "frames side" : "frames" },
      shown.map((ref) => imageFrame(item, ref)),
    );
    fill(panel, h("h3", {}, t("images")), toolbar, frames);
    return panel;
  }

  function imageFrame(item: Held, ref: ImageRef): HTMLElement {
    if (!INLINE.includes(ref.mediaType)) {
      // TIFF and PDF: browsers show neither in an <img>; open it in a tab of its own.
      const link = h("a", { "data-testid": "image-download", target: "_blank", rel: "noopener" }, `${t("openImage")} (${ref.mediaType})`);
      void load(item, ref).then((url) => {
        if (url) link.setAttribute("href", url);
      });
      return h("figure", { class: "frame" }, link, h("figcaption", {}, tOr(`img_${ref.kind}`, "")));
    }
    const img = h("img", {
      alt: tOr(`img_${ref.kind}`, ""),
      "data-testid": "image",
      style: undefined,
    });
    img.style.transform = `scale(${view.zoom}) rotate(${view.rotation}deg)`;
    const frame = h("figure", { class: "frame" }, img, h("figcaption", {}, `${tOr(`img_${ref.kind ?? ImageKind.UNSPECIFIED}`, "")} · ${ref.mediaType}`));
    void load(item, ref).then((url) => {
      if (url) img.src = url;
    });
    return frame;
  }

  async function load(item: Held, ref: ImageRef): Promise<string | null> {
    const cached = images.get(ref.sha256);
    if (cached) return cached;
    try {
      const res = await api.getOfferImage({ requestId: item.id, sha256: ref.sha256 });
      const url = URL.createObjectURL(new Blob([res.content as BlobPart], { type: res.mediaType }));
      images.set(ref.sha256, url);
      return url;
    } catch (e) {
      notice(t("failed", { msg: message(e) }), "error");
      return null;
    }
  }

  function zoom(by: number): void {
    view.zoom = Math.min(6, Math.max(0.25, view.zoom * by));
    restyleImages();
  }
  function rotate(): void {
    view.rotation = (view.rotation + 90) % 360;
    restyleImages();
  }
  function restyleImages(): void {
    for (const img of task.querySelectorAll<HTMLImageElement>("img[data-testid=image]")) {
      img.style.transform = `scale(${view.zoom}) rotate(${view.rotation}deg)`;
    }
  }
  function toggleSide(): void {
    view.sideBySide = !view.sideBySide;
    renderTask();
  }
  function selectImage(i: number): void {
    view.selected = i;
    renderTask();
  }

  function fact(label: string, value: string | undefined, testid?: string): HTMLElement[] {
    return [h("dt", {}, label), h("dd", testid ? { "data-testid": testid } : {}, value ?? "")];
  }

  // -- Acting -----------------------------------------------------------------------------

  function openDialog(kind: "decline" | "reject" | "return"): void {
    const codes = kind === "reject" ? REJECT_CODES : kind === "return" ? RETURN_CODES : [""];
    dialog = { kind, code: codes[0], comment: "" };
    renderTask();
    task.querySelector<HTMLElement>("[data-testid=dialog] select, [data-testid=dialog] textarea")?.focus();
  }

  function dialogForm(item: Held): HTMLElement {
    const d = dialog!;
    const codes = d.kind === "reject" ? REJECT_CODES : RETURN_CODES;
    return h(
      "form",
      {
        class: "dialog",
        "data-testid": "dialog",
        onsubmit: (e: Event) => {
          e.preventDefault();
          void submitDialog(item);
        },
      },
      d.kind !== "decline"
        ? h(
            "label",
            {},
            t("reasonCode"),
            h(
              "select",
              {
                "data-testid": "reason-code",
                onchange: (e: Event) => (d.code = (e.target as HTMLSelectElement).value),
              },
              codes.map((c) => h("option", { value: c, selected: c === d.code }, `${c} · ${tOr(`rc_${c}`, c)}`)),
            ),
          )
        : null,
      h(
        "label",
        {},
        d.kind === "decline" ? t("declineReason") : t("comment"),
        h("textarea", {
          "data-testid": "comment",
          rows: 3,
          maxlength: 500,
          required: d.kind === "return",
          oninput: (e: Event) => (d.comment = (e.target as HTMLTextAreaElement).value),
        }),
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { class: "primary", type: "submit", "data-testid": "confirm" }, t("confirm")),
        h("button", { type: "button", onclick: closeDialog }, `${t("cancel")} (Esc)`),
      ),
    );
  }

  function closeDialog(): void {
    dialog = null;
    renderTask();
  }

  async function submitDialog(item: Held): Promise<void> {
    const d = dialog;
    if (!d) return;
    if (d.kind === "decline") {
      await act(item, () => api.decline({ requestId: item.id, epoch: item.epoch, reason: d.comment.trim() }), () => {
        drop(item.id, item.epoch);
      });
      return;
    }
    if (d.kind === "return" && !d.comment.trim()) {
      notice(t("commentRequired"), "error");
      return;
    }
    const decision = d.kind === "reject" ? Decision.REJECT : Decision.RETURN;
    await decide(item, decision, d.code, d.comment.trim());
  }

  async function accept(item: Held): Promise<void> {
    await act(item, () => api.accept({ requestId: item.id, epoch: item.epoch }), (res) => {
      if (!res.request) return;
      const review: Held = {
        kind: "review",
        id: item.id,
        epoch: item.epoch,
        deadline: res.reviewBy ? timestampDate(res.reviewBy) : undefined,
        request: res.request,
      };
      held = held.map((x) => (x.id === item.id && x.epoch === item.epoch ? review : x));
      document.title = t("title");
      renderTabs();
      renderTask();
    });
  }

  async function approve(item: Held): Promise<void> {
    const r = item.request;
    const rekeyed: { amountMinorUnits?: bigint; account?: string; counterparty?: string } = {};
    for (const f of r.rekeyFields) {
      const key = f === RekeyField.AMOUNT ? "amount" : f === RekeyField.ACCOUNT ? "account" : "counterparty";
      const v = (rekey[key] ?? "").trim();
      if (!v) {
        notice(t("rekeyRequired"), "error");
        return;
      }
      if (f === RekeyField.AMOUNT) {
        const minor = toMinor(v, r.transaction?.amount?.currency ?? "CNY");
        if (minor === null) {
          notice(t("rekeyRequired"), "error");
          return;
        }
        rekeyed.amountMinorUnits = minor;
      } else if (f === RekeyField.ACCOUNT) rekeyed.account = v;
      else rekeyed.counterparty = v;
    }
    await decide(item, Decision.APPROVE, "", "", r.rekeyFields.length ? rekeyed : undefined);
  }

  async function decide(
    item: Held,
    decision: Decision,
    reasonCode: string,
    comment: string,
    rekeyed?: { amountMinorUnits?: bigint; account?: string; counterparty?: string },
  ): Promise<void> {
    await act(
      item,
      () => api.decide({ requestId: item.id, epoch: item.epoch, decision, reasonCode, comment, rekeyed }),
      () => {
        notice(t(`decided_${decision as 1 | 2 | 3}`, { id: item.id }));
        drop(item.id, item.epoch);
      },
    );
  }

  /** Runs a call on a held item; a refusal that means it is no longer ours drops it. */
  async function act<T>(item: Held, call: () => Promise<T>, done: (res: T) => void): Promise<void> {
    try {
      done(await call());
    } catch (e) {
      const info = errorInfo(e);
      if (info?.reason === "REKEY_MISMATCH") {
        // Recorded. With attempts left the review stays ours: read the voucher again.
        const left = Number(info.metadata["attempts_left"] ?? "0");
        notice(t("rekeyMismatch", { fields: info.metadata["fields"] ?? "", left }), "error");
        if (left === 0) drop(item.id, item.epoch);
        return;
      }
      if (e instanceof ConnectError && (e.code === Code.FailedPrecondition || e.code === Code.NotFound)) {
        notice(t("stale", { id: item.id, msg: e.rawMessage }), "error");
        drop(item.id, item.epoch);
      } else {
        notice(t("failed", { msg: message(e) }), "error");
      }
    }
  }

  // -- Keys and clock ---------------------------------------------------------------------

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const target = e.target as HTMLElement;
    const typing = target.closest("input, textarea, select");
    if (e.key === "Escape" && dialog) {
      closeDialog();
      return;
    }
    if (typing) return;
    const item = currentItem();
    const key = e.key.toLowerCase();
    if (!item) return;
    if (item.kind === "offer") {
      if (key === "a") void accept(item);
      else if (key === "d") openDialog("decline");
      else return;
    } else {
      if (key === "y") void approve(item);
      else if (key === "r") openDialog("reject");
      else if (key === "t") openDialog("return");
      else if (key === "+" || key === "=") zoom(1.25);
      else if (key === "-") zoom(0.8);
      else if (key === "o") rotate();
      else if (key === "s") toggleSide();
      else return;
    }
    e.preventDefault();
  });

  setInterval(() => {
    for (const el of task.querySelectorAll<HTMLElement>(".countdown")) tick(el);
  }, 250);

  renderPresence();
  setConnection("idle");
  return () => presence !== "offline";
}

/** Updates a countdown from its deadline. */
function tick(el: HTMLElement): void {
  const deadline = Number(el.dataset.deadline ?? NaN);
  if (Number.isNaN(deadline)) return;
  const left = deadline - Date.now();
  const text = minutesSeconds(left);
  el.textContent = (el.dataset.label ?? "{t}").replace("{t}", text);
  el.classList.toggle("urgent", left < 15_000);
}
