// The end-to-end scenario, in a real VS Code workbench (code-server) in headless Chromium:
//   create an environment from the command palette with the keyboard, walking the wizard;
//   see it in the tree view; read the status-bar item until it says healthy; connect (without
//   Remote-SSH: a notification, a terminal running ssh, the Remote-SSH URI in the output channel);
//   make the environment unreachable and see the status bar say so; screenshot the workbench.
//
// usage: node run.mjs CONFIG.json   (tests/e2e/test_vscode.py writes CONFIG; its fields are the
// extension's contract: command titles, view and status-bar ids, labels, how to break it).
// Writes ARTIFACTS/result.json (what was seen) and screenshots; exits 0 only if every step passed.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
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

function fill(template, name) {
  return template.replaceAll("{name}", name);
}

const step = stepper(result);

/** Polls the status-bar entry until its text matches `pattern`; records every distinct text. */
async function waitStatus(what, pattern, ms) {
  return wb.until(
    `the status bar entry ${config.statusEntry} to show ${what}`,
    async () => {
      const text = await wb.statusText(config.statusEntry);
      if (text !== null && text !== result.statusSeen.at(-1)) {
        result.statusSeen.push(text);
        log(`   status bar: ${text}`);
      }
      return text !== null && pattern.test(text) && text;
    },
    ms,
    100,
  );
}

async function showView() {
  await wb.runCommand(config.commands.showView);
  const pane = byId(config.viewContainer);
  await wb.until(`the view container ${config.viewContainer}`, () => wb.page.locator(pane).isVisible(), 15_000);
  return pane;
}

async function breakEnvironment(name) {
  const how = config.breakEnvironment;
  if (how.kind === "write-file") {
    fs.writeFileSync(how.file, how.text);
    log(`wrote '${how.text}' to ${how.file}`);
    return { how: "write-file" };
  }
  if (how.kind === "kill-agent") {
    const shown = JSON.parse(
      execFileSync(how.leeward, ["show", name, "--json"], { encoding: "utf8", timeout: 30_000 }),
    );
    const pidFile = path.join(how.environmentsDir, shown.id, "agent.pid");
    const pid = Number.parseInt(fs.readFileSync(pidFile, "utf8").trim(), 10);
    log(`stopping the agent of ${name} (${shown.id}): pid ${pid} from ${pidFile}`);
    process.kill(pid, how.signal ?? "SIGKILL");
    await wb.until(`agent pid ${pid} to exit`, async () => {
      try {
        process.kill(pid, 0);
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z"); // exited, not yet reaped
      } catch {
        return true;
      }
    }, 15_000);
    return { how: "kill-agent", id: shown.id, pid };
  }
  throw new Error(`unknown breakEnvironment kind ${how.kind}`);
}

async function main() {
  await step("open the workbench", async () => {
    await wb.open(config.url);
  });

  await step(`run '${config.commands.create}' and walk the wizard`, async () => {
    await wb.runCommand(config.commands.create, 60_000);
    result.wizard = [];
    for (const { step: stepName, pick } of config.wizard) {
      const picked = await wb.pick(stepName, pick, 60_000);
      result.wizard.push({ step: stepName, title: picked.title, picked: picked.label, offered: picked.rows });
    }
  });

  let name;
  await step("see the environment in the tree view", async () => {
    // The progress notification ("Creating …") shows while the fleet creates it: recorded when
    // seen (a fast create may be over before it is looked for), not required.
    try {
      await wb.until("a 'Creating' progress notification", async () => {
        for (const text of await wb.notifications()) {
          if (/creating/i.test(text) && !(result.progressSeen ?? []).includes(text)) {
            (result.progressSeen ??= []).push(text);
            log(`   notification: ${text}`);
          }
        }
        return result.progressSeen;
      }, 3_000, 50);
    } catch {
      log("   no 'Creating' notification seen (the create may have been quicker)");
    }
    const pane = await showView();
    const row = await wb.until(
      `a row in ${config.viewContainer} whose description mentions ${config.treeHint}`,
      async () => {
        for (const text of await wb.notifications()) {
          if (/creating/i.test(text) && !(result.progressSeen ?? []).includes(text)) {
            (result.progressSeen ??= []).push(text);
            log(`   notification: ${text}`);
          }
        }
        const rows = await wb.treeRows(pane);
        return rows.find((r) => r.label && (r.description + " " + r.aria).includes(config.treeHint));
      },
      config.createSeconds * 1000,
    );
    name = row.label;
    result.name = name;
    result.treeRow = row;
    log(`   tree view: ${row.label} — ${row.description}`);
  });

  await step("read the status bar until the environment is healthy", async () => {
    const text = await waitStatus(`${name} · ${config.healthy}`, new RegExp(`${escape(name)}.*${config.healthy}`), 90_000);
    result.statusHealthy = text;
    result.statusTooltip = await wb.statusTooltip(config.statusEntry);
    await wb.screenshot("healthy");
  });

  await step(`run '${config.commands.connect}'`, async () => {
    await wb.runCommand(config.commands.connect);
    const terminalName = fill(config.terminalName, name);
    // Connect may ask which environment (a quick pick with NAME) or go straight on.
    let picked = false;
    await wb.until(`the terminal '${terminalName}' (or a quick pick offering ${name})`, async () => {
      if (!picked && (await wb.quickInputVisible())) {
        const rows = await wb.quickInputRows();
        if (rows.some((r) => r.label === name)) {
          picked = true;
          await wb.pick("environment to connect to", [name]);
          return false;
        }
      }
      return (await terminalNames()).some((t) => t.includes(terminalName));
    }, 30_000);
    result.terminals = await terminalNames();
    const notice = await wb.until(`a notification matching /${config.connectNotice}/`, async () =>
      (await wb.notifications()).find((n) => new RegExp(config.connectNotice, "i").test(n)), 20_000);
    result.connectNotification = notice;
    log(`   notification: ${notice}`);
    if (config.terminalCommand) {
      const command = fill(config.terminalCommand, name);
      let shown = "";
      await wb.until(`'${command}' in the terminal`, async () => {
        shown = await terminalText();
        // A long prompt (the workspace's path) wraps the command onto the next row.
        return shown.replace(/\n/g, "").includes(command);
      }, 45_000).catch((error) => {
        throw new Error(`${error.message}; the terminal shows ${JSON.stringify(shown.trim().slice(-300))}`);
      });
    }
    if (config.terminalProcess) {
      const pattern = new RegExp(fill(config.terminalProcess, escape(name)));
      result.terminalProcess = await wb.until(`a process matching /${pattern.source}/`, () => findProcess(pattern), 20_000);
      log(`   terminal process: ${result.terminalProcess}`);
    }
  });

  await step(`type into the terminal '${fill(config.terminalName, name)}'`, async () => {
    // A real shell at the other end: what it prints is computed there, not echoed back.
    await wb.runCommand("Terminal: Focus on Terminal View");
    await wb.until("the terminal to have the keyboard focus", () =>
      wb.page.evaluate(() => document.activeElement?.classList.contains("xterm-helper-textarea") ?? false), 10_000);
    await wb.page.keyboard.type('echo "e2e-$((6*7)) home=$HOME"');
    await wb.page.keyboard.press("Enter");
    result.terminalText = await wb.until("'e2e-42' printed in the terminal", async () => {
      const text = await terminalText();
      const printed = /^e2e-42 home=(.*?)\s*$/m.exec(text);
      if (printed) result.terminalHome = printed[1];
      return printed && text;
    }, config.terminalSeconds * 1000);
    log(`   terminal: ${JSON.stringify(result.terminalText.trim().split("\n").slice(-4).join("\n"))}`);
  });

  await step(`find the Remote-SSH URI in the output channel '${config.outputChannel}'`, async () => {
    const uri = fill(config.remoteUri, name);
    await wb.runCommand("Output: Show Output Channels...");
    await wb.pick("output channel", [config.outputChannel]);
    const shown = Date.now();
    const pattern = new RegExp(`${escape(uri)}[^\\s;,'"]*`);
    result.outputUri = await wb.until(`'${uri}' in the Output panel`, async () => {
      const found = pattern.exec(await wb.outputText());
      // A long log may have scrolled it away: after a moment, show only the matching lines.
      if (!found && Date.now() - shown > 3_000) await filterOutput(uri);
      return found?.[0];
    }, 20_000);
    log(`   output: ${result.outputUri}`);
    await wb.screenshot("connected");
  });

  await step("make the environment unreachable; see the status bar say so", async () => {
    result.broken = await breakEnvironment(name);
    await showView();
    result.statusUnreachable = await waitStatus(
      `${name} · ${config.unreachable}`,
      new RegExp(`${escape(name)}.*${config.unreachable}`),
      config.unreachableSeconds * 1000,
    );
    result.statusTooltipUnreachable = await wb.statusTooltip(config.statusEntry);
    const rows = await wb.treeRows(byId(config.viewContainer));
    result.treeRowUnreachable = rows.find((r) => r.label === name);
  });

  // The final picture: the tree view, the status bar and the notifications as they are now.
  await wb.until("the quick input closed", async () => !(await wb.quickInputVisible()), 10_000);
  result.notificationsAtEnd = await wb.notifications();
  result.finalScreenshot = await wb.screenshot("final");
  if (!result.finalScreenshot) throw new Error("could not save the final screenshot");
}

function escape(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function terminalNames() {
  // Tabs when there are several terminals; the xterm's accessible name ("Terminal N, NAME") always.
  return wb.page.$$eval(".terminal-tabs-entry, .xterm-helper-textarea", (items) =>
    items.map((i) => (i.getAttribute("aria-label") ?? "").split("\n")[0]),
  );
}

async function terminalText() {
  // The DOM renderer (settings: terminal.integrated.gpuAcceleration off) keeps the text readable.
  return wb.page.$$eval(".part.panel .xterm-rows", (rows) => rows.map((r) => r.innerText).join("\n"));
}

/** The command line of a process on this machine matching `pattern`, if there is one. */
function findProcess(pattern) {
  for (const pid of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    let cmdline;
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ");
    } catch {
      continue;
    }
    if (pattern.test(cmdline)) return `${pid}: ${cmdline}`;
  }
  return null;
}

async function filterOutput(text) {
  const filter = wb.page.locator(".part.panel .viewpane-filter input, .part.panel input[placeholder^='Filter']").first();
  if ((await filter.count()) && (await filter.inputValue()) !== text) await filter.fill(text);
}

await runScenario({
  config,
  result,
  workbenches: [wb],
  main,
  statusEntry: config.statusEntry,
  atFailure: async () => {
    if (wb.page) result.quickInputAtFailure = await wb.quickInputRows().catch(() => []);
  },
});
