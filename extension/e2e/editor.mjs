// A real VS Code remote session through live migrations: the environment's VS Code server
// (code-server, started inside it) in a browser workbench reached through `ssh -L` over
// `leeward proxy`, as Remote-SSH reaches its server; and the local workbench with the Leeward
// extension, whose status bar tells about the same environment.
//
// In the remote workbench: a file opened and edited (left unsaved), a terminal printing a
// counter (`tick N PID TIME`, 20 a second), and the heartbeat extension ticking in the
// environment's extension host. Then, phase by phase, tests/e2e/test_migration_editor.py
// disturbs the path (live migrations, TCP resets, the fleet's DNS stopped) while this driver
// records, with the time of each: every counter line as it first shows, every heartbeat,
// every websocket closed, every console line about reconnecting, and every text matching
// "reconnect|disconnected|..." in the dialogs, notifications and status bar (a
// MutationObserver: throughout, not only at the end); and every text of the Leeward status-bar
// item in the local workbench. At the end the edit must still be there, unsaved, and save.
// Last, the same through plain `ssh -L` (no proxy): what the workbench shows when a migration
// kills its ssh.
//
// The test and this driver take turns through files in CONTROL: the driver writes
// `ready-PHASE` once the phase may start; the test writes `snap-LABEL` for screenshots (the
// driver answers with `snap-LABEL.done`) and `done-PHASE` once its disturbances are over. The
// driver also takes one of each workbench as the local status bar first says reconnecting.
//
// usage: node editor.mjs CONFIG.json   Writes ARTIFACTS/result.json and screenshots.
import fs from "node:fs";
import path from "node:path";
import { Deadline, Workbench, byId, log, readConfig, runScenario, stepper } from "./workbench.mjs";

const config = readConfig();
const deadline = new Deadline(config.deadlineSeconds ?? 300);
const result = { ok: false, steps: [], phases: {} };
const step = stepper(result);
const ALERT = "reconnect|disconnected|connection (was )?lost|cannot reconnect|reload the window|connection closed";

function workbench(profile) {
  return new Workbench({ chromiumPath: config.chromium, userDataDir: profile, artifacts: config.artifacts, deadline });
}
const local = workbench(config.local.browserProfile);
const remote = workbench(config.remote.browserProfile);
const plain = workbench(config.plain.browserProfile);

/** Listens to what the page says about its connection, from before it loads. */
function listen(into) {
  into.socketsClosed = [];
  into.reconnectConsole = [];
  return (page) => {
    page.on("websocket", (ws) => {
      ws.on("close", () => into.socketsClosed.push({ t: Date.now(), url: ws.url() }));
    });
    page.on("console", (m) => {
      const text = m.text();
      if (/\[reconnect\]|disconnect/i.test(text)) into.reconnectConsole.push({ t: Date.now(), text: text.slice(0, 300) });
    });
  };
}

/** MutationObservers in the remote page: counter lines, heartbeats and alerts, each with the
 * time it first showed. Read with `collect`. */
async function observe(page, heartbeatEntry) {
  await page.evaluate(
    ({ alert, heartbeatEntry }) => {
      const w = window;
      w.__lw = { ticks: {}, beats: [], alerts: [] };
      const pattern = new RegExp(alert, "i");
      const record = () => {
        const now = Date.now();
        for (const rows of document.querySelectorAll(".part.panel .xterm-rows")) {
          for (const row of rows.children) {
            const m = /^tick (\d+) (\d+) ([\d.]+)/.exec(row.textContent ?? "");
            if (m && !(m[1] in w.__lw.ticks)) w.__lw.ticks[m[1]] = [now, Number(m[2]), Number(m[3])];
          }
        }
        const beat = document.querySelector(`[id="${heartbeatEntry}"]`)?.textContent?.trim() ?? "";
        const last = w.__lw.beats.at(-1);
        if (beat && (!last || last[1] !== beat)) w.__lw.beats.push([now, beat]);
        // What a person sees (innerText: no style sheets, nothing hidden), of the places VS
        // Code says it lost its server: a dialog, a notification, the status bar.
        const shown = [...document.querySelectorAll(".monaco-dialog-box, .notifications-toasts, .notifications-center, .part.statusbar")]
          .map((e) => (e.innerText ?? "").replace(/\s+/g, " ").trim())
          .filter((text) => pattern.test(text))
          .join(" | ");
        const lastAlert = w.__lw.alerts.at(-1);
        if (shown && (!lastAlert || lastAlert[1] !== shown)) w.__lw.alerts.push([now, shown.slice(0, 500)]);
      };
      new MutationObserver(record).observe(document.body, { subtree: true, childList: true, characterData: true });
      record();
    },
    { alert: ALERT, heartbeatEntry },
  );
}

async function collect(page) {
  return page.evaluate(() => window.__lw);
}

/** Every text of the Leeward status-bar item in the local workbench, with its time. */
async function observeStatus(page, entry) {
  await page.evaluate((entry) => {
    const w = window;
    w.__lwStatus = [];
    const record = () => {
      const text = (document.querySelector(`[id="${entry}"]`)?.textContent ?? "").replace(/\s+/g, " ").trim();
      const last = w.__lwStatus.at(-1);
      if (!last || last[1] !== text) w.__lwStatus.push([Date.now(), text]);
    };
    new MutationObserver(record).observe(document.querySelector(".part.statusbar") ?? document.body, {
      subtree: true,
      childList: true,
      characterData: true,
      attributes: true,
    });
    record();
  }, entry);
}

async function statusSeen() {
  return local.page.evaluate(() => window.__lwStatus);
}

function control(name) {
  return path.join(config.control, name);
}

/** Waits for `done-PHASE`, taking the screenshots asked for meanwhile, and one of each page
 * when the local status bar first says reconnecting (in the blackout itself). */
async function waitForTest(phase, ms, pages) {
  let blackout = !pages.includes(local);
  await pages[0].until(`the test's disturbances of the ${phase} phase (${control(`done-${phase}`)})`, async () => {
    if (!blackout && ((await local.statusText(config.local.statusEntry)) ?? "").includes("reconnecting")) {
      blackout = true;
      for (const wb of pages) await wb.screenshot(`reconnecting-${phase}-${wb === local ? "local" : "remote"}`);
    }
    for (const file of fs.readdirSync(config.control)) {
      const asked = /^snap-(.+)$/.exec(file);
      if (!asked || asked[1].endsWith(".done")) continue;
      for (const wb of pages) await wb.screenshot(`${asked[1]}-${wb === local ? "local" : "remote"}`);
      fs.renameSync(control(file), control(`${file}.done`));
    }
    return fs.existsSync(control(`done-${phase}`));
  }, ms, 50);
}

/** Opens the workbench at `url`, the file edited, a terminal printing the counter. */
async function setUpRemote(wb, url, into, { edit }) {
  await wb.open(url, listen(into));
  await observe(wb.page, config.heartbeatEntry);
  await wb.until("the heartbeat extension ticking in the environment's extension host", async () =>
    ((await collect(wb.page)).beats.length >= 2), 60_000);
  if (edit) {
    await wb.runCommand("Go to File...");
    await wb.until("the quick open", () => wb.quickInputVisible(), 10_000);
    await wb.page.keyboard.type(config.file);
    await wb.focusRow(`'${config.file}' in the quick open`, config.file, 20_000);
    await wb.page.keyboard.press("Enter");
    await wb.until(`'${config.file}' open in the editor`, async () =>
      (await wb.page.locator(".tabs-container .tab.active").textContent())?.includes(config.file), 20_000);
    await wb.until("the editor to have the keyboard focus", () =>
      wb.page.evaluate(() => Boolean(document.activeElement?.closest(".editor-group-container.active .monaco-editor"))), 10_000);
    await wb.page.keyboard.press("Control+End");
    await wb.page.keyboard.type(config.edit);
    await wb.until("the edit unsaved (a dirty tab)", () => wb.page.locator(".tabs-container .tab.active.dirty").count(), 10_000);
    into.editedText = await editorText(wb);
  }
  await wb.runCommand("Terminal: Create New Terminal");
  await wb.until("the terminal to have the keyboard focus", () =>
    wb.page.evaluate(() => document.activeElement?.classList.contains("xterm-helper-textarea") ?? false), 30_000);
  await wb.page.keyboard.type(config.tickCommand);
  await wb.page.keyboard.press("Enter");
  await wb.until("the counter in the terminal", async () => Object.keys((await collect(wb.page)).ticks).length >= 5, 30_000);
}

async function editorText(wb) {
  return wb.page.$$eval(".editor-group-container.active .monaco-editor .view-lines .view-line", (lines) =>
    lines
      .map((l) => [Number.parseFloat(l.style.top) || 0, l.textContent ?? ""])
      .sort((a, b) => a[0] - b[0])
      .map(([, text]) => text.replace(/\u00a0/g, " "))
      .join("\n"),
  );
}

async function waitHealthy(what) {
  const name = config.local.environment;
  return local.until(`the Leeward status bar healthy ${what}`, async () => {
    const text = await local.statusText(config.local.statusEntry);
    return text && text.startsWith(`${name} · healthy`) && text;
  }, 30_000);
}

async function main() {
  await step("the local workbench: the Leeward status bar healthy", async () => {
    await local.open(config.local.url);
    result.statusHealthy = await waitHealthy("before");
    await observeStatus(local.page, config.local.statusEntry);
  });

  const relay = (result.relay = {});
  await step("the environment's workbench through ssh -L over leeward proxy: file edited, counter", async () => {
    await setUpRemote(remote, config.remote.url, relay, { edit: true });
    await remote.screenshot("before-remote");
    await local.screenshot("before-local");
  });

  for (const phase of config.phases) {
    await step(`phase ${phase}: the test disturbs the path`, async () => {
      fs.writeFileSync(control(`ready-${phase}`), String(Date.now()));
      await waitForTest(phase, config.phaseSeconds * 1000, [remote, local]);
      result.phases[phase] = { healthyAfter: await waitHealthy(`after the ${phase} phase`) };
    });
  }

  await step("the edit intact, unsaved, then saved", async () => {
    result.editAfter = await editorText(remote);
    result.dirtyAfter = await remote.page.locator(".tabs-container .tab.active.dirty").count();
    await remote.runCommand("View: Focus Active Editor Group");
    await remote.page.keyboard.press("Control+S");
    await remote.until("the tab saved (not dirty)", async () =>
      (await remote.page.locator(".tabs-container .tab.active.dirty").count()) === 0, 20_000);
    result.finalScreenshot = await remote.screenshot("after-remote");
    await local.screenshot("after-local");
    Object.assign(relay, await collect(remote.page));
    relay.collectedAt = Date.now(); // closing the page later closes its websockets
    result.statusSeen = await statusSeen();
  });
  await remote.close();

  if (config.plain.url) {
    const direct = (result.plain = {});
    await step("the same through plain ssh -L (no proxy): a migration", async () => {
      await setUpRemote(plain, config.plain.url, direct, { edit: false });
      await plain.screenshot("plain-before");
      fs.writeFileSync(control("ready-plain"), String(Date.now()));
      await waitForTest("plain", 120_000, [plain]);
      const migrated = Number(fs.readFileSync(control("done-plain"), "utf8"));
      // What the workbench shows: it loses its connections at once; VS Code says so on screen
      // only after its own reconnection attempts fail, tens of seconds later.
      const seen = await plain.until("the workbench to show the connection lost", async () => {
        const now = await collect(plain.page);
        const shown = now.alerts.find(([t]) => t >= migrated);
        return shown && now;
      }, config.plainWaitSeconds * 1000, 250).catch(async (error) => {
        log(`   ${error.message}`);
        return collect(plain.page);
      });
      Object.assign(direct, seen);
      direct.migratedAt = migrated;
      await plain.screenshot("plain-after");
    });
    await plain.close();
  }
}

await runScenario({
  config,
  result,
  workbenches: [local, remote, plain],
  main,
  statusEntry: config.local.statusEntry,
  atFailure: async () => {
    if (local.page) result.statusSeen = await statusSeen().catch(() => null);
    if (remote.page) Object.assign((result.relay ??= {}), await collect(remote.page).catch(() => ({})));
  },
});
