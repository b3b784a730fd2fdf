// Announcements and notifications in a real VS Code workbench (code-server) in headless
// Chromium, against a real fleet:
//   an expiry warning for the environment reaches the editor as a notification with its Extend
//   button, which extends it; an announcement scoped to the environment's region, posted 2 s
//   ahead, appears at its start in the status bar and as a notification (screenshot); its
//   HTML and script show as text (in the notification and the status bar's tooltip); dismissed,
//   it is gone and does not come back (another announcement shows alone); its text changed, it
//   comes back.
//
// usage: node announce.mjs CONFIG.json   (tests/e2e/test_vscode.py writes CONFIG: the fleet's
// URL and an admin token, the environment, the status-bar ids and the texts to post).
// Writes ARTIFACTS/result.json and screenshots; exits 0 only if every step passed.
import { Deadline, Workbench, byId, log, readConfig, runScenario, stepper } from "./workbench.mjs";

const config = readConfig();
const deadline = new Deadline(config.deadlineSeconds ?? 240);
const result = { ok: false, steps: [], statusSeen: [] };
const wb = new Workbench({
  chromiumPath: config.chromium ?? "/usr/bin/chromium",
  userDataDir: config.browserProfile,
  artifacts: config.artifacts,
  deadline,
});

const step = stepper(result);

async function fleet(method, route, body) {
  const response = await fetch(config.fleetUrl + route, {
    method,
    headers: { Authorization: `Bearer ${config.adminToken}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route}: HTTP ${response.status}: ${text}`);
  return JSON.parse(text);
}

/** The announcements' status-bar text, "" when hidden; every distinct text recorded. */
async function announcementStatus() {
  const entry = wb.page.locator(byId(config.announcementsEntry));
  const text = (await entry.count()) && (await entry.first().isVisible()) ? await wb.statusText(config.announcementsEntry) : "";
  if (text !== result.statusSeen.at(-1)) {
    result.statusSeen.push(text);
    log(`   announcements status: ${JSON.stringify(text)}`);
  }
  return text ?? "";
}

/** A notification toast (or, once toasts hid, one in the notification center) whose message
 * matches `pattern`: its locator and text. */
async function notification(pattern) {
  const items = wb.page.locator(".notifications-toasts .notification-list-item, .notifications-center .notification-list-item");
  const count = await items.count();
  for (let i = 0; i < count; i++) {
    const item = items.nth(i);
    const message = item.locator(".notification-list-item-message");
    const text = ((await message.count()) ? await message.first().textContent() : await item.textContent()) ?? "";
    if (pattern.test(text)) return { item, text: text.trim() };
  }
  return null;
}

async function waitNotification(what, pattern, ms) {
  let opened = false;
  const started = Date.now();
  return wb.until(what, async () => {
    const found = await notification(pattern);
    if (found) return found;
    // A toast hides after a while: look in the notification center too.
    if (!opened && Date.now() - started > 5_000) {
      opened = true;
      await wb.runCommand("Notifications: Show Notifications");
    }
    return null;
  }, ms, 50);
}

/** Presses the notification's button matching `buttonPattern`; returns every button's text. */
async function press(found, buttonPattern) {
  const button = found.item.locator(".monaco-button", { hasText: buttonPattern }).first();
  await wb.until(`a button matching ${buttonPattern} on '${found.text}'`, () => button.isVisible(), 10_000);
  const buttons = await found.item.locator(".monaco-button").allTextContents();
  await button.click();
  return buttons;
}

async function clearNotifications() {
  await wb.runCommand("Notifications: Clear All Notifications");
  await wb.until("no notification left", async () => (await wb.notifications()).length === 0, 10_000);
}

/** Does the element (a toast, the hover) hold any element made of the announcement's HTML? */
async function htmlElementsIn(locator) {
  return locator.evaluate((root) => root.querySelectorAll("script, iframe, img, b, u").length);
}

async function main() {
  await step("open the workbench; the environment in the status bar", async () => {
    await wb.open(config.url);
    result.statusEnvironment = await wb.until(`the status bar to name ${config.environment}`, async () => {
      const text = await wb.statusText(config.statusEntry);
      return text !== null && text.includes(config.environment) && text;
    }, 90_000);
  });

  await step("the expiry warning, with its Extend button, which extends", async () => {
    const warning = await waitNotification("the expiry warning", new RegExp(`${config.environment} expires in`), 60_000);
    result.expiryNotification = warning.text;
    log(`   notification: ${warning.text}`);
    await wb.screenshot("expiry-warning");
    result.expiryButtons = await press(warning, /^Extend/);
    const done = await waitNotification("the extension confirmed", new RegExp(`${config.environment} now expires`), 30_000);
    result.extendedNotification = done.text;
    await clearNotifications();
  });

  let first;
  await step("an announcement 2 s ahead appears at its start: status bar and notification", async () => {
    const startsAt = new Date(Date.now() + 2_000);
    first = await fleet("POST", "/v1/admin/announcements", {
      text: config.text,
      severity: "warning",
      regions: [config.region],
      startsAt: startsAt.toISOString(),
    });
    result.posted = { id: first.id, startsAt: startsAt.toISOString(), postedAt: new Date().toISOString() };
    const text = await wb.until("the announcement in the status bar", async () => {
      const shown = await announcementStatus();
      return shown.includes(config.firstLine) && shown;
    }, 30_000, 25);
    result.statusShownAt = new Date().toISOString();
    result.statusShownAfterStartMs = Date.now() - startsAt.getTime();
    result.statusAnnouncement = text;
    const toast = await waitNotification("the announcement's notification", new RegExp(config.firstLine), 20_000);
    result.announcementNotification = toast.text;
    result.notificationHtmlElements = await htmlElementsIn(toast.item);
    result.notificationButtons = await toast.item.locator(".monaco-button").allTextContents();
    await wb.screenshot("announcement");
  });

  await step("its tooltip renders the text inert", async () => {
    await wb.page.locator(byId(config.announcementsEntry)).first().hover();
    const hover = wb.page.locator(".monaco-hover, .workbench-hover").last();
    await wb.until("the tooltip", () => hover.isVisible(), 10_000);
    result.tooltipText = (await hover.innerText()).trim();
    result.tooltipHtmlElements = await htmlElementsIn(hover);
    result.tooltipLinks = await hover.locator("a").evaluateAll((links) => links.map((a) => a.getAttribute("href") ?? a.dataset.href ?? ""));
    await wb.screenshot("tooltip");
    // Away from the item, not Escape: Escape would also hide the toasts.
    await wb.page.mouse.move(700, 400);
  });

  await step("dismissed: gone, and it does not come back", async () => {
    const toast = await waitNotification("the announcement's notification", new RegExp(config.firstLine), 10_000);
    await press(toast, /^Dismiss$/);
    await wb.until("the announcement gone from the status bar", async () => (await announcementStatus()) === "", 20_000, 50);
    // Another announcement for the region shows, alone: the dismissed one is not counted.
    const second = await fleet("POST", "/v1/admin/announcements", {
      text: config.secondText,
      severity: "info",
      regions: [config.region],
    });
    result.second = second.id;
    result.statusAfterDismiss = await wb.until("the second announcement, alone", async () => {
      const shown = await announcementStatus();
      return shown.includes(firstLineOf(config.secondText)) && shown;
    }, 30_000, 50);
    result.dismissedToastsAfter = (await wb.notifications()).filter((n) => n.includes(config.firstLine));
    await wb.screenshot("dismissed");
  });

  await step("its text changed: it comes back", async () => {
    await clearNotifications();
    const edited = await fleet("PATCH", `/v1/admin/announcements/${first.id}`, { text: config.editedText });
    result.editedRevision = edited.revision;
    result.statusEdited = await wb.until("the edited announcement in the status bar", async () => {
      const shown = await announcementStatus();
      return shown.includes(config.editedFirstLine) && shown;
    }, 30_000, 50);
    const toast = await waitNotification("the edited announcement's notification", new RegExp(escape(config.editedFirstLine)), 20_000);
    result.editedNotification = toast.text;
    await wb.screenshot("edited");
  });

  result.notificationsAtEnd = await wb.notifications();
  result.finalScreenshot = await wb.screenshot("final");
  if (!result.finalScreenshot) throw new Error("could not save the final screenshot");

  if (config.benchSamples > 0) {
    await step(`${config.benchSamples} announcements, each from its creation to the status bar`, async () => {
      result.benchStatusMs = [];
      for (let i = 0; i < config.benchSamples; i++) {
        const text = `Bench announcement ${i}`;
        const shows = async () => ((await wb.statusText(config.announcementsEntry)) ?? "").includes(text);
        // Critical: first in the status bar, before the announcements still shown.
        const posted = await fleet("POST", "/v1/admin/announcements", { text, severity: "critical", regions: [config.region] });
        await wb.until(`'${text}' in the status bar`, shows, 10_000, 5);
        result.benchStatusMs.push(Date.now() - Date.parse(posted.createdAt));
        await fleet("DELETE", `/v1/admin/announcements/${posted.id}`);
        await wb.until(`'${text}' gone from the status bar`, async () => !(await shows()), 10_000, 5);
        await wb.page.waitForTimeout(config.benchGapMs ?? 250); // pacing between samples, not a wait for anything
      }
      log(`   status bar after creation (ms): ${result.benchStatusMs.join(" ")}`);
    });
  }
}

function firstLineOf(text) {
  return text.split("\n")[0].trim();
}

function escape(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

await runScenario({
  config,
  result,
  workbenches: [wb],
  main,
  statusEntry: config.announcementsEntry,
});
