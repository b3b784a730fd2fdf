/** `Leeward: Connect to Environment` (a Remote-SSH window, or a terminal running ssh when
 * Remote-SSH is missing) and `Leeward: Open Terminal`. */
import * as vscode from 'vscode';

import { rttLabel } from '../common/format';
import { REMOTE_SSH_EXTENSION } from '../common/remote';
import type { ConnectResult } from '../protocol/generated';
import { EnvironmentsConnectRequest } from '../protocol/methods';
import type { CommandContext } from './context';
import { resolveEnvironment } from './pick';

export const INSTALL_REMOTE_SSH = 'Install Remote-SSH';

const connectable = (e: { state: string }): boolean =>
  e.state === 'running' || e.state === 'migrating';

async function connectTo(ctx: CommandContext, name: string): Promise<ConnectResult> {
  const result = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Connecting to ${name}…` },
    () => ctx.daemon.request(EnvironmentsConnectRequest, { environment: name }),
  );
  ctx.store.upsert(result.environment);
  await ctx.store.rememberLastUsed(result.environment.name);
  ctx.log.info(
    `${result.environment.name}: ssh ${result.hostAlias} answered in ${rttLabel(result.rttMs)} ` +
      `(ssh config ${result.sshConfig}; certificate valid until ${result.certificateValidBefore}).`,
  );
  return result;
}

export async function connect(ctx: CommandContext, argument?: unknown): Promise<void> {
  const target = await resolveEnvironment(
    ctx,
    argument,
    'Connect to which environment?',
    connectable,
  );
  if (target === undefined) return;
  const result = await connectTo(ctx, target.name);
  if (vscode.extensions.getExtension(REMOTE_SSH_EXTENSION) !== undefined) {
    ctx.log.info(`Opening ${result.remoteUri}`);
    const uri = vscode.Uri.parse(result.remoteUri);
    const forceNewWindow = (vscode.workspace.workspaceFolders?.length ?? 0) > 0;
    await vscode.commands.executeCommand('vscode.openFolder', uri, { forceNewWindow });
    return;
  }
  ctx.log.warn(
    `Remote-SSH (${REMOTE_SSH_EXTENSION}) is not installed: it would open ${result.remoteUri}; ` +
      `a terminal runs ssh ${result.hostAlias} instead.`,
  );
  openSshTerminal(ctx, result);
  void vscode.window
    .showWarningMessage(
      `Remote-SSH is not installed, so VS Code cannot open a window on ${result.environment.name}; ` +
        `meanwhile a terminal runs ssh ${result.hostAlias}.`,
      INSTALL_REMOTE_SSH,
    )
    .then(async (answer) => {
      if (answer !== INSTALL_REMOTE_SSH) return;
      await vscode.commands.executeCommand(
        'workbench.extensions.installExtension',
        REMOTE_SSH_EXTENSION,
      );
      const again = 'Connect';
      const next = await vscode.window.showInformationMessage(
        `Remote-SSH is installed; connect to ${result.environment.name} now?`,
        again,
      );
      if (next === again)
        await vscode.commands.executeCommand('leeward.connect', result.environment.name);
    });
}

export async function openTerminal(ctx: CommandContext, argument?: unknown): Promise<void> {
  const target = await resolveEnvironment(
    ctx,
    argument,
    'Open a terminal on which environment?',
    connectable,
  );
  if (target === undefined) return;
  const alias = ctx.windowAlias();
  if (alias !== undefined && (alias === target.name || alias === target.environment?.fqdn)) {
    // this window is on it: VS Code's own terminals already run there
    vscode.window.createTerminal({ name: `Leeward: ${target.name}` }).show();
    return;
  }
  openSshTerminal(ctx, await connectTo(ctx, target.name));
}

/** An integrated terminal running `ssh ALIAS` with the daemon's ssh config (which pins the
 * host certificate authority and the user's certificate). */
export function openSshTerminal(ctx: CommandContext, result: ConnectResult): vscode.Terminal {
  const name = `Leeward: ${result.environment.name}`;
  const args = ['-F', result.sshConfig, result.hostAlias];
  ctx.log.info(`Terminal "${name}": ssh ${args.join(' ')}`);
  const terminal = vscode.window.createTerminal({
    name,
    shellPath: 'ssh',
    shellArgs: args,
    iconPath: new vscode.ThemeIcon('vm'),
  });
  terminal.show();
  return terminal;
}
