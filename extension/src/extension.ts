/** Activation: wires the daemon, the store, the views and the commands together. */
import * as vscode from 'vscode';

import { registerCommands } from './commands';
import type { CommandContext } from './commands/context';
import { BackupLists } from './common/backups';
import { Daemon } from './common/daemon';
import { findDaemon } from './common/daemonPath';
import { languageClientFactory } from './common/languageClient';
import { EnvironmentStore } from './common/environments';
import { errorMessage } from './common/format';
import { shownEnvironment, windowAlias } from './common/remote';
import { daemonSettings, restartsDaemon, SECTION, userValue } from './common/settings';
import { statusView } from './common/status';
import { BackupsListRequest } from './protocol/methods';
import { syncFromDaemon } from './common/sync';
import { EnvironmentsTree } from './views/environmentsTree';
import { SetupNoticeWatch, showNotices } from './views/setupNotices';
import { Announcements, Notifications } from './views/announcements';
import { StatusBar } from './views/statusBar';

let daemon: Daemon | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('Leeward', { log: true });
  const store = new EnvironmentStore(context.globalState);
  const config = (): vscode.WorkspaceConfiguration => vscode.workspace.getConfiguration(SECTION);
  const folders = (): string[] =>
    (vscode.workspace.workspaceFolders ?? [])
      .filter((f) => f.uri.scheme === 'file')
      .map((f) => f.uri.fsPath);
  const alias = (): string | undefined =>
    windowAlias(
      vscode.env.remoteName,
      (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.authority),
    );

  daemon = new Daemon(
    log,
    async () => ({
      command: await findDaemon({
        setting: userValue<string>(config(), 'daemonPath'),
        workspaceFolders: folders(),
        trusted: vscode.workspace.isTrusted,
        pathEnv: process.env.PATH,
        platform: process.platform,
      }),
      settings: daemonSettings(config()),
      cwd: folders()[0],
    }),
    languageClientFactory(log),
  );
  const running = daemon;

  const ctx: CommandContext = {
    daemon: running,
    store,
    log,
    windowAlias: alias,
    fleetUrlSetting: () => userValue<string>(config(), 'fleetUrl'),
    now: () => new Date(),
  };
  const announcements = new Announcements(ctx, context.globalState);
  ctx.announcements = announcements;
  const notifications = new Notifications(ctx);

  const backups = new BackupLists((environment) =>
    running.request(BackupsListRequest, { environment }),
  );
  const tree = new EnvironmentsTree(store, undefined, backups);
  const notices = new SetupNoticeWatch();
  const view = vscode.window.createTreeView('leeward.environments', {
    treeDataProvider: tree,
    showCollapseAll: false,
  });
  const statusBar = new StatusBar();
  let shownBefore: string | undefined;
  const redraw = (): void => {
    const environment = shownEnvironment(store.environments, alias(), store.lastUsed, shownBefore);
    shownBefore = environment?.id;
    statusBar.show(
      statusView({
        daemon: running.state,
        daemonReason: running.reason,
        account: store.account,
        environment,
        health: environment && store.healthOf(environment),
        now: new Date(),
      }),
    );
    view.message = tree.message();
  };

  const sync = (): void => {
    syncFromDaemon(running, store).catch((error: unknown) =>
      log.warn(`Fetching the environments from the daemon: ${errorMessage(error)}`),
    );
  };
  let failureShown = false;
  const onState = (): void => {
    const state = running.state;
    void vscode.commands.executeCommand('setContext', 'leeward.daemonState', state);
    if (state === 'running') {
      failureShown = false;
      sync();
    } else if (state === 'failed') {
      store.clear();
      announcements.clear();
      if (!failureShown) {
        failureShown = true;
        const logs = 'Show Logs';
        const settings = 'Open Settings';
        void vscode.window
          .showErrorMessage(`Leeward: ${running.reason}`, logs, settings)
          .then((answer) => {
            if (answer === logs) log.show();
            if (answer === settings) {
              void vscode.commands.executeCommand('workbench.action.openSettings', 'leeward.');
            }
          });
      }
    }
    redraw();
  };

  context.subscriptions.push(
    log,
    store,
    backups,
    tree,
    view,
    statusBar,
    running,
    ...registerCommands(ctx),
    running.onDidChangeState(onState),
    running.onEnvironments((result) => store.setList(result)),
    running.onHealth((record) => store.setHealth(record)),
    running.onStatus((status) => store.setAccount(status)),
    announcements,
    running.onAnnouncements((list) => announcements.update(list.announcements)),
    running.onNotifications((list) => {
      notifications
        .receive(list.notifications)
        .catch((error: unknown) => log.warn(`Showing notifications: ${errorMessage(error)}`));
    }),
    store.onDidChange(() => {
      void vscode.commands.executeCommand('setContext', 'leeward.signedIn', store.signedIn);
      void showNotices(notices.update(store.list?.environments));
      redraw();
    }),
    vscode.workspace.onDidChangeWorkspaceFolders(redraw),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (restartsDaemon((section) => event.affectsConfiguration(section))) {
        log.info('Settings changed: restarting the daemon.');
        void running.restart();
      }
    }),
    vscode.workspace.onDidGrantWorkspaceTrust(() => {
      if (userValue<string>(config(), 'daemonPath') === undefined) void running.restart();
    }),
    every(60_000, () => {
      tree.refresh();
      redraw();
    }),
  );

  redraw();
  void running.restart();
}

export async function deactivate(): Promise<void> {
  await daemon?.stop();
  daemon = undefined;
}

function every(ms: number, tick: () => void): vscode.Disposable {
  const timer = setInterval(tick, ms);
  return { dispose: () => clearInterval(timer) };
}
