// Driving VS Code's workbench (code-server) in a real browser, the way a person does: the
// keyboard for the command palette and quick picks, the screen for what happened. Every wait has
// a deadline and says what it waited for; no fixed sleeps.
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A deadline for the whole run: every wait takes the smaller of its own limit and what is left. */
export class Deadline {
  constructor(seconds) {
    this.end = Date.now() + seconds * 1000;
    this.seconds = seconds;
  }
  left(ms) {
    const rest = this.end - Date.now();
    if (rest <= 0) throw new Error(`the whole run's deadline (${this.seconds} s) has passed`);
    return Math.min(ms, rest);
  }
}

export function log(message) {
  const stamp = new Date().toISOString().slice(11, 23);
  process.stdout.write(`[e2e ${stamp}] ${message}\n`);
}

/** CSS for an element whose id has dots (status-bar entries are `EXTENSIONID.ITEMID`). */
export function byId(id) {
  return `[id="${id}"]`;
}

export class Workbench {
  constructor({ chromiumPath, userDataDir, artifacts, deadline }) {
    this.chromiumPath = chromiumPath;
    this.userDataDir = userDataDir;
    this.artifacts = artifacts;
    this.deadline = deadline;
    this.shots = 0;
  }

  /** Launches Chromium and opens `url`; `prepare(page)` runs before the page loads (to listen
   * to its websockets from the first). */
  async open(url, prepare = undefined) {
    log(`launching ${this.chromiumPath}`);
    this.context = await chromium.launchPersistentContext(this.userDataDir, {
      executablePath: this.chromiumPath,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1440, height: 900 },
      timeout: this.deadline.left(60_000),
    });
    this.page = this.context.pages()[0] ?? (await this.context.newPage());
    this.consoleErrors = [];
    this.page.on("console", (m) => {
      if (m.type() === "error") this.consoleErrors.push(m.text());
    });
    if (prepare) await prepare(this.page);
    log(`opening ${url}`);
    await this.page.goto(url, { timeout: this.deadline.left(60_000) });
    await this.page.waitForSelector(".monaco-workbench .part.statusbar", {
      timeout: this.deadline.left(90_000),
    });
    log("the workbench is up");
  }

  async close() {
    if (this.context) await this.context.close().catch(() => {});
  }

  async screenshot(name) {
    if (!this.page) return null;
    this.shots += 1;
    const file = path.join(this.artifacts, `${String(this.shots).padStart(2, "0")}-${name}.png`);
    try {
      await this.page.screenshot({ path: file, timeout: 15_000, animations: "disabled" });
      log(`screenshot ${file}`);
      return file;
    } catch (error) {
      log(`could not take screenshot ${name}: ${error.message}`);
      return null;
    }
  }

  /** Polls `probe` (async, returns a truthy value when done) until it succeeds or `ms` pass. */
  async until(what, probe, ms = 30_000, interval = 200) {
    const limit = Date.now() + this.deadline.left(ms);
    let last;
    for (;;) {
      try {
        const value = await probe();
        if (value) return value;
        last = value;
      } catch (error) {
        last = `error: ${error.message}`;
      }
      if (Date.now() > limit) {
        throw new Error(`timed out after ${Math.round(ms / 1000)} s waiting for ${what} (last: ${JSON.stringify(last)})`);
      }
      await this.page.waitForTimeout(interval);
    }
  }

  // -- the quick input (command palette and quick picks) ---------------------------------------

  quickInputVisible() {
    return this.page.locator(".quick-input-widget").isVisible();
  }

  /** The rows the quick input shows now: [{label, description, aria, focused}]. */
  async quickInputRows() {
    return this.page.$$eval(".quick-input-widget .monaco-list-row[role=option]", (rows) =>
      rows.map((row) => ({
        label: (row.querySelector(".label-name")?.textContent ?? "").trim(),
        description: (row.querySelector(".label-description")?.textContent ?? "").trim(),
        aria: row.getAttribute("aria-label") ?? "",
        focused: row.classList.contains("focused"),
      })),
    );
  }

  async quickInputTitle() {
    return (await this.page.locator(".quick-input-widget .quick-input-title").textContent()) ?? "";
  }

  /**
   * F1, type the command's title, move to the row with exactly that title, Enter. The palette
   * lists the commands known when it opened: until the extensions are registered, a new
   * palette is opened every few seconds.
   */
  async runCommand(title, ms = 30_000) {
    log(`command palette: ${title}`);
    this.lastPick = null;
    const limit = Date.now() + this.deadline.left(ms);
    for (let attempt = 1; ; attempt += 1) {
      await this.until("no quick input in the way", async () => {
        if (await this.quickInputVisible()) await this.page.keyboard.press("Escape");
        return !(await this.quickInputVisible());
      }, 10_000);
      await this.page.keyboard.press("F1");
      await this.until("the command palette", () => this.quickInputVisible(), 10_000);
      await this.page.keyboard.type(title);
      const wait = Math.max(Math.min(5_000, limit - Date.now()), 1_000);
      try {
        await this.focusRow(`'${title}' in the command palette`, title, wait);
        break;
      } catch (error) {
        if (Date.now() >= limit) throw error;
        log(`   '${title}' is not in the palette yet (attempt ${attempt}); opening it again`);
      }
    }
    await this.page.keyboard.press("Enter");
  }

  /** Waits for a quick-input row labelled `label`, then moves the focus to it with the arrows. */
  async focusRow(what, label, ms) {
    await this.until(what, async () => {
      const rows = await this.quickInputRows();
      const want = rows.findIndex((r) => r.label === label);
      if (want < 0) return false;
      const at = rows.findIndex((r) => r.focused);
      if (at === want) return true;
      await this.page.keyboard.press(at < want ? "ArrowDown" : "ArrowUp");
      return false;
    }, ms, 100);
  }

  /**
   * The next quick pick of a wizard: wait until it shows a row labelled one of `wanted` (the
   * first that shows wins; `null` in `wanted` means "the first row, whatever it is"), filter by
   * typing the label, check that it is the focused row, Enter. Returns {label, rows, title}.
   */
  async pick(step, wanted, ms = 30_000) {
    const found = await this.until(`the '${step}' quick pick with one of ${JSON.stringify(wanted)}`, async () => {
      if (!(await this.quickInputVisible())) return false;
      const rows = await this.quickInputRows();
      const title = await this.quickInputTitle();
      // The step before may still be on screen: the next one has another title or other rows.
      const signature = JSON.stringify([title, rows.map((r) => r.label)]);
      if (signature === this.lastPick) return false;
      for (const want of wanted) {
        const row = want === null ? rows[0] : rows.find((r) => r.label === want);
        if (row) return { label: row.label, rows, title, signature };
      }
      return false;
    }, ms);
    this.lastPick = found.signature;
    log(`${step}: '${found.title}' offers ${found.rows.map((r) => `${r.label}${r.description ? ` (${r.description})` : ""}`).join("; ")}; picking ${found.label}`);
    await this.page.keyboard.type(found.label);
    await this.focusRow(`'${found.label}' focused in the '${step}' quick pick`, found.label, 10_000);
    await this.page.keyboard.press("Enter");
    return found;
  }

  // -- status bar, notifications, views, terminal, output ---------------------------------------

  /** The visible text of a status-bar entry (codicons are empty spans), or null if absent. */
  async statusText(entryId) {
    const entry = this.page.locator(byId(entryId));
    if ((await entry.count()) === 0) return null;
    // The entry may go between the count and the read: a short timeout, and the caller's
    // wait asks again (Playwright's default would hold it for 30 s).
    return ((await entry.first().innerText({ timeout: 2_000 })) ?? "").replace(/\s+/g, " ").trim();
  }

  async statusTooltip(entryId) {
    const entry = this.page.locator(`${byId(entryId)} a, ${byId(entryId)}`);
    return (await entry.first().getAttribute("aria-label")) ?? "";
  }

  /** The texts of the notifications (toasts and the notification center) now on screen. */
  async notifications() {
    return this.page.$$eval(".notifications-toasts .notification-list-item, .notifications-center .notification-list-item", (items) =>
      items.map((i) => (i.querySelector(".notification-list-item-message")?.textContent ?? i.textContent ?? "").trim()),
    );
  }

  /** Rows of the tree in the view pane whose header says `viewTitle`: [{label, description, aria}]. */
  async treeRows(paneSelector) {
    return this.page.$$eval(`${paneSelector} .monaco-list-row`, (rows) =>
      rows.map((row) => ({
        label: (row.querySelector(".label-name")?.textContent ?? "").trim(),
        description: (row.querySelector(".label-description")?.textContent ?? "").trim(),
        aria: row.getAttribute("aria-label") ?? "",
      })),
    );
  }

  /** Names of the integrated terminals (the tab list, or the single tab's title). */
  async terminalNames() {
    return this.page.$$eval(
      ".terminal-tabs-entry, .single-terminal-tab, .terminal-tab, [id^='terminal'] .monaco-list-row",
      (items) => items.map((i) => (i.getAttribute("aria-label") ?? "") + " | " + (i.textContent ?? "").trim()),
    );
  }

  /** The visible text of the Output panel's editor, in screen order, wrapped lines joined
   * again (the editor wraps long lines into several rows; it loses no character doing so). */
  async outputText() {
    return this.page.$$eval(".part.panel .output-view .view-lines .view-line", (lines) =>
      lines
        .map((l) => [Number.parseFloat(l.style.top) || 0, l.textContent ?? ""])
        .sort((a, b) => a[0] - b[0])
        .map(([, text]) => text)
        .join(""),
    );
  }
}

/** `step(name, body)`: runs one named step of a scenario, logged and timed into `result.steps`. */
export function stepper(result) {
  return async function step(name, body) {
    const started = Date.now();
    log(`== ${name}`);
    await body();
    const seconds = (Date.now() - started) / 1000;
    result.steps.push({ name, seconds });
    log(`   ${name}: done in ${seconds.toFixed(1)} s`);
  };
}

/**
 * Runs `main()`, then, passed or failed, writes ARTIFACTS/result.json (`result`, with `ok` and
 * the error) and closes the workbenches; on a failure takes a screenshot of each, records the
 * first one's notifications and the text of its status-bar entry `statusEntry` (if given), and
 * lets `atFailure()` add what else it saw. Exits 0 only if `main` passed.
 */
export async function runScenario({ config, result, workbenches, main, statusEntry, atFailure }) {
  try {
    await main();
    result.ok = true;
  } catch (error) {
    result.error = error.stack ?? String(error);
    log(`FAILED: ${error.message}`);
    for (const wb of workbenches) await wb.screenshot("failure");
    const [first] = workbenches;
    if (first?.page) {
      result.notificationsAtFailure = await first.notifications().catch(() => []);
      if (statusEntry) result.statusAtFailure = await first.statusText(statusEntry).catch(() => null);
    }
    if (atFailure) await atFailure().catch((e) => log(`   (could not read the screen: ${e.message})`));
  } finally {
    result.consoleErrors = workbenches.flatMap((wb) => wb.consoleErrors ?? []).slice(-20);
    for (const wb of workbenches) await wb.close();
    fs.writeFileSync(path.join(config.artifacts, "result.json"), JSON.stringify(result, null, 2));
    log(result.ok ? "PASSED" : "FAILED (see result.json and the screenshots)");
  }
  process.exit(result.ok ? 0 : 1);
}

export function readConfig() {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node run.mjs CONFIG.json");
    process.exit(2);
  }
  const config = JSON.parse(fs.readFileSync(file, "utf8"));
  fs.mkdirSync(config.artifacts, { recursive: true });
  return config;
}
