// The environment's extension host, alive: a status-bar item whose text is "beat N PID", N going
// up four times a second. The browser shows a new N only when the extension host runs and its
// connection to the workbench carries the update.
const vscode = require("vscode");

function activate(context) {
  const item = vscode.window.createStatusBarItem("heartbeat", vscode.StatusBarAlignment.Right, 1000);
  item.name = "Heartbeat";
  let beats = 0;
  const tick = () => {
    beats += 1;
    item.text = `beat ${beats} ${process.pid}`;
  };
  tick();
  item.show();
  const timer = setInterval(tick, 250);
  context.subscriptions.push(item, { dispose: () => clearInterval(timer) });
}

function deactivate() {}

module.exports = { activate, deactivate };
