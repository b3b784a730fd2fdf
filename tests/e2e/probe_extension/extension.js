// The e2e harness's own probe: what the Leeward extension does with VS Code's UI, in small, so
// the harness (code-server, Chromium, Playwright, the palette, quick picks, tree view, status
// bar, notifications, terminal, output channel, screenshots) is proven without it.
// `Leeward Probe: Create Item` asks two quick picks and shows the item in its tree view and in
// the status bar item `leewardProbe.status` (`$(vm) NAME · STATE`). `Leeward Probe: Connect`
// shows a notification, logs a URI to the output channel "Leeward Probe" and opens a terminal
// `Probe: NAME` running `echo hello-from-NAME`. STATE is read from the file named by the
// environment variable LEEWARD_PROBE_STATE_FILE (the harness's stand-in for an agent).
const vscode = require("vscode");
const fs = require("fs");

function activate(context) {
  const output = vscode.window.createOutputChannel("Leeward Probe");
  const status = vscode.window.createStatusBarItem(
    "leewardProbe.status",
    vscode.StatusBarAlignment.Left,
    100,
  );
  status.name = "Leeward Probe";
  status.text = "$(vm) Leeward Probe";
  status.show();
  const items = [];
  const changed = new vscode.EventEmitter();
  let current = null;
  let state = "connecting";
  const tree = {
    onDidChangeTreeData: changed.event,
    getTreeItem: (name) => {
      const item = new vscode.TreeItem(name);
      item.description = `probe · north · ${state}`;
      return item;
    },
    getChildren: () => items,
  };
  context.subscriptions.push(
    vscode.window.createTreeView("leewardProbe.items", { treeDataProvider: tree }),
  );
  output.appendLine("activated");

  const render = () => {
    if (!current) return;
    const icon = state === "connecting" || state === "reconnecting" ? "$(sync~spin)" : "$(vm)";
    status.text = `${icon} ${current} · ${state}`;
    status.tooltip = `${current}: north, probe`;
  };
  const watch = setInterval(() => {
    const file = process.env.LEEWARD_PROBE_STATE_FILE;
    if (!current || !file) return;
    let next = "healthy";
    try {
      next = fs.readFileSync(file, "utf8").trim() || next;
    } catch {
      // not written yet: healthy
    }
    if (next !== state) {
      state = next;
      render();
      changed.fire();
    }
  }, 200);
  context.subscriptions.push({ dispose: () => clearInterval(watch) });

  context.subscriptions.push(
    vscode.commands.registerCommand("leewardProbe.create", async () => {
      const kind = await vscode.window.showQuickPick(
        [
          { label: "Alpha", description: "the first" },
          { label: "Beta", description: "the second" },
        ],
        { title: "Probe: kind", ignoreFocusOut: true },
      );
      if (!kind) return;
      const size = await vscode.window.showQuickPick(["small", "large"], {
        title: "Probe: size",
        ignoreFocusOut: true,
      });
      if (!size) return;
      const name = `${kind.label.toLowerCase()}-${size}`;
      await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `Creating ${name}…` },
        () => new Promise((resolve) => setTimeout(resolve, 1000)),
      );
      items.push(name);
      current = name;
      render();
      changed.fire();
    }),
    vscode.commands.registerCommand("leewardProbe.connect", async () => {
      if (!current) return;
      output.appendLine(`would open vscode-remote://ssh-remote+${current}/home`);
      void vscode.window.showInformationMessage(`Probe: no Remote-SSH here; a terminal instead.`);
      const terminal = vscode.window.createTerminal({ name: `Probe: ${current}` });
      terminal.show();
      // Type once the shell's process exists: on a loaded machine the pty host can start late.
      await terminal.processId;
      terminal.sendText(`echo hello-from-${current}`);
    }),
  );
}

function deactivate() {}

module.exports = { activate, deactivate };
