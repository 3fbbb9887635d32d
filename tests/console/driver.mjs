// The browser half of the console's end-to-end tests. tests/it/console.rs starts the real
// server, then this driver, and sends it one JSON command per line on stdin; each is answered
// with one JSON line on stdout: {"ok":true,"value":...} or {"ok":false,"error":"..."}.
// The test drives tellers over gRPC itself and the console through these commands, so each
// scenario reads in one place.
//
// Debian's Chromium (CHROMIUM, default /usr/bin/chromium), headless; each `open` is a browser
// context of its own presenting one principal's client certificate from the test's PKI
// (Playwright answers the server's certificate request with it). The server's certificate is
// from the test's own CA, which the browser does not know: certificate errors are ignored for
// the test server's origin only.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { join } from "node:path";

const base = process.env.BASE_URL;
const pki = process.env.PKI_DIR;
const shots = process.env.SCREENSHOT_DIR;
const timeout = Number(process.env.STEP_TIMEOUT_MS ?? 15000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // The machine's network is closed: nothing of Chromium's own may try to reach out.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

/** name -> { context, page, console: [lines the page logged] } */
const pages = new Map();

function page(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page named ${name}: open it first`);
  return p.page;
}

const commands = {
  /** A new browser context presenting `principal`'s certificate: its PEM files, or with
   * `passphrase` its PKCS#12 file (what a person imports). */
  async open({ page: name, principal, lang, passphrase }) {
    const cert =
      passphrase !== undefined
        ? { origin: base, pfxPath: join(pki, `${principal}.p12`), passphrase }
        : { origin: base, certPath: join(pki, `${principal}.pem`), keyPath: join(pki, `${principal}.key`) };
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: 1400, height: 900 },
      clientCertificates: principal ? [cert] : [],
    });
    // The language as a person would have chosen it before: set once, not on every reload
    // (a later switch on the page must stick).
    if (lang) {
      await context.addInitScript((l) => {
        if (!sessionStorage.getItem("lang-set")) {
          localStorage.setItem("countersign.lang", l);
          sessionStorage.setItem("lang-set", "1");
        }
      }, lang);
    }
    const p = await context.newPage();
    const logs = [];
    p.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
    p.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
    pages.set(name, { context, page: p, logs });
    const res = await p.goto(base + "/", { timeout });
    return { status: res?.status(), csp: res?.headers()["content-security-policy"] ?? "" };
  },
  async close({ page: name }) {
    await pages.get(name)?.context.close();
    pages.delete(name);
  },
  async click({ page: name, selector }) {
    await page(name).locator(selector).click({ timeout });
  },
  async press({ page: name, key }) {
    await page(name).keyboard.press(key);
  },
  async fill({ page: name, selector, value }) {
    await page(name).locator(selector).fill(value, { timeout });
  },
  async select({ page: name, selector, value }) {
    await page(name).locator(selector).selectOption(value, { timeout });
  },
  /** Waits until the selector matches a visible element, and returns its text. */
  async text({ page: name, selector }) {
    const l = page(name).locator(selector).first();
    await l.waitFor({ state: "visible", timeout });
    return (await l.innerText()).trim();
  },
  /** Waits until the selector's text contains `needle`. */
  async waitText({ page: name, selector, needle }) {
    const l = page(name).locator(selector, { hasText: needle }).first();
    await l.waitFor({ state: "visible", timeout });
    return (await l.innerText()).trim();
  },
  /** Waits until nothing matches the selector. */
  async gone({ page: name, selector }) {
    await page(name).locator(selector).first().waitFor({ state: "detached", timeout });
  },
  async count({ page: name, selector }) {
    return await page(name).locator(selector).count();
  },
  /** Waits until at least `count` (default 1) <img> match the selector and all have loaded;
   * returns their natural widths. */
  async imagesLoaded({ page: name, selector, count = 1 }) {
    const p = page(name);
    await p.waitForFunction(
      ([s, n]) => {
        const imgs = [...document.querySelectorAll(s)];
        return imgs.length >= n && imgs.every((i) => i.complete && i.naturalWidth > 0);
      },
      [selector, count],
      { timeout },
    );
    return await p.$$eval(selector, (imgs) => imgs.map((i) => i.naturalWidth));
  },
  async screenshot({ page: name, file }) {
    await page(name).screenshot({ path: join(shots, file), fullPage: true });
    return join(shots, file);
  },
  /** What the page logged: errors there (a CSP violation, an exception) fail the tests. */
  async logs({ page: name }) {
    return pages.get(name)?.logs ?? [];
  },
  /** The attribute `name` of every element matching the selector. */
  async attrs({ page: name, selector, attr }) {
    return await page(name).$$eval(selector, (els, a) => els.map((e) => e.getAttribute(a)), attr);
  },
  /** A plain HTTP request from the page's context (its certificate): status and headers. */
  async fetch({ page: name, path, method }) {
    const res = await pages.get(name).context.request.fetch(base + path, { method, timeout });
    return { status: res.status(), headers: res.headers(), body: (await res.text()).slice(0, 200) };
  },
  /** Gives a file input a file, as a person choosing one would. */
  async upload({ page: name, selector, file, base64 }) {
    await page(name)
      .locator(selector)
      .setInputFiles({ name: file, mimeType: "application/json", buffer: Buffer.from(base64, "base64") });
  },
  /** Sets the page offline or back online, as a cut network cable would. */
  async offline({ page: name, on }) {
    await pages.get(name).context.setOffline(on);
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let reply;
  try {
    const cmd = JSON.parse(line);
    const f = commands[cmd.op];
    if (!f) throw new Error(`unknown op ${cmd.op}`);
    reply = { ok: true, value: (await f(cmd)) ?? null };
  } catch (e) {
    reply = { ok: false, error: String(e?.message ?? e) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
await browser.close();
